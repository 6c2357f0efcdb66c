//! Validation errors shared by every domain type: a list of `{path, message}` that the API
//! returns as `details` of a `ValidationError`.

use serde::Serialize;

/// One thing wrong with an input, located by a path into it (e.g. `data.items[2]`,
/// `condition.and[1]`, `action.params.url`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FieldError {
    pub path: String,
    pub message: String,
}

impl FieldError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Joins a parent path and a child key the way every validator here writes paths.
pub fn join_path(parent: &str, key: &str) -> String {
    if key.is_empty() {
        parent.to_owned()
    } else if key.starts_with('[') {
        // An index path from a nested validator: `condition` + `[1]` → `condition[1]`.
        format!("{parent}{key}")
    } else if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

/// Joins a parent path and an array index.
pub fn index_path(parent: &str, index: usize) -> String {
    format!("{parent}[{index}]")
}
