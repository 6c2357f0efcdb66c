//! API keys: create (the only time the key is shown), list (never a secret), revoke. Shared
//! by `POST/GET/DELETE /api-keys`, the console's Keys page and `sluice keys`, which runs with
//! no server — so these take the store, not the app state.

use crate::auth::{keys, Scope, Scopes};
use crate::error::{ApiError, ApiResult};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sluice_core::FieldError;
use sluice_store::{ApiKeyRecord, NewApiKey, Store};
use utoipa::ToSchema;

/// Longest key name, in characters.
pub const MAX_NAME_CHARS: usize = 100;

/// A key to create, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct NewKey {
    pub name: String,
    pub scopes: Scopes,
}

impl NewKey {
    /// From a name and scope names, with one detail per problem.
    pub fn new<S: AsRef<str>>(name: &str, scopes: &[S]) -> Result<NewKey, Vec<FieldError>> {
        let mut errors = Vec::new();
        let name = check_name(name, &mut errors);
        let scopes = check_scopes(scopes, &mut errors);
        if errors.is_empty() {
            Ok(NewKey { name, scopes })
        } else {
            Err(errors)
        }
    }

    /// From a JSON body `{"name", "scopes": [...]}`.
    pub fn parse(body: &Value) -> Result<NewKey, Vec<FieldError>> {
        let Some(object) = body.as_object() else {
            return Err(vec![FieldError::new("", "body must be a JSON object")]);
        };
        let mut errors = Vec::new();
        for key in object.keys() {
            if !matches!(key.as_str(), "name" | "scopes") {
                errors.push(FieldError::new(
                    key.as_str(),
                    "is not a key field (expected name, scopes)",
                ));
            }
        }
        let name = match object.get("name") {
            Some(Value::String(name)) => check_name(name, &mut errors),
            _ => {
                errors.push(FieldError::new("name", "is required and must be a string"));
                String::new()
            }
        };
        let scopes = match object.get("scopes") {
            Some(Value::Array(items)) if items.len() <= Scope::ALL.len() * 2 => {
                let names: Vec<&str> = items.iter().map(|i| i.as_str().unwrap_or("?")).collect();
                check_scopes(&names, &mut errors)
            }
            _ => {
                errors.push(FieldError::new(
                    "scopes",
                    "is required: a list of ingest, read, admin",
                ));
                Scopes::default()
            }
        };
        if errors.is_empty() {
            Ok(NewKey { name, scopes })
        } else {
            Err(errors)
        }
    }
}

fn check_name(name: &str, errors: &mut Vec<FieldError>) -> String {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        errors.push(FieldError::new(
            "name",
            format!("must be 1 to {MAX_NAME_CHARS} characters"),
        ));
    } else if name.chars().any(char::is_control) {
        errors.push(FieldError::new(
            "name",
            "must not contain control characters",
        ));
    }
    name.to_owned()
}

fn check_scopes<S: AsRef<str>>(names: &[S], errors: &mut Vec<FieldError>) -> Scopes {
    if names.is_empty() {
        errors.push(FieldError::new(
            "scopes",
            "must name at least one of ingest, read, admin",
        ));
    }
    let mut scopes = Vec::new();
    for (i, name) in names.iter().enumerate() {
        match Scope::parse(name.as_ref().trim()) {
            Some(scope) => scopes.push(scope),
            None => errors.push(FieldError::new(
                format!("scopes[{i}]"),
                "must be one of ingest, read, admin",
            )),
        }
    }
    Scopes::new(scopes)
}

/// A key as listed: its public prefix, never the key or its hash.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ApiKeyOut {
    pub id: i64,
    pub name: String,
    /// The key's first characters, to tell keys apart.
    pub prefix: String,
    pub scopes: Vec<Scope>,
    pub created_at: DateTime<Utc>,
    /// Recorded every few seconds, not per request.
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<ApiKeyRecord> for ApiKeyOut {
    fn from(record: ApiKeyRecord) -> Self {
        ApiKeyOut {
            id: record.id,
            name: record.name,
            prefix: record.prefix,
            scopes: Scopes::from_names(&record.scopes).as_slice().to_vec(),
            created_at: record.created_at,
            last_used_at: record.last_used_at,
            revoked_at: record.revoked_at,
        }
    }
}

/// The answer to creating a key: the only time `key` is shown.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct CreatedKeyOut {
    pub id: i64,
    pub name: String,
    pub prefix: String,
    pub scopes: Vec<Scope>,
    /// The key itself. It is not stored and cannot be shown again.
    pub key: String,
    pub created_at: DateTime<Utc>,
}

/// Every key, newest first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ApiKeyList {
    pub data: Vec<ApiKeyOut>,
    pub count: usize,
}

/// Makes and stores a new key.
pub async fn create(store: &dyn Store, new: &NewKey) -> ApiResult<CreatedKeyOut> {
    let generated = keys::generate();
    let record = store
        .create_api_key(&NewApiKey {
            name: new.name.clone(),
            prefix: generated.prefix.clone(),
            key_hash: keys::to_hex(&generated.hash),
            scopes: new.scopes.names(),
        })
        .await?;
    Ok(CreatedKeyOut {
        id: record.id,
        name: record.name,
        prefix: record.prefix,
        scopes: new.scopes.as_slice().to_vec(),
        key: generated.key,
        created_at: record.created_at,
    })
}

pub async fn list(store: &dyn Store) -> ApiResult<ApiKeyList> {
    let data: Vec<ApiKeyOut> = store
        .api_keys()
        .await?
        .into_iter()
        .map(ApiKeyOut::from)
        .collect();
    Ok(ApiKeyList {
        count: data.len(),
        data,
    })
}

/// Revokes a key (again is harmless); 404 if unknown.
/// Revokes a key; with `operational`, reports it as `sluice.key.revoked`.
pub async fn revoke(
    store: &dyn Store,
    id: i64,
    operational: Option<&crate::operational::Operational>,
) -> ApiResult<ApiKeyOut> {
    let revoked = store
        .revoke_api_key(id)
        .await?
        .map(ApiKeyOut::from)
        .ok_or_else(|| ApiError::not_found(format!("API key {id} not found")))?;
    if let Some(operational) = operational {
        let at = revoked.revoked_at.unwrap_or_else(Utc::now);
        operational.key_revoked(revoked.id, &revoked.name, &revoked.prefix, at);
    }
    Ok(revoked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_key_needs_a_name_and_known_scopes() {
        let key =
            NewKey::parse(&json!({"name": " ops ", "scopes": ["admin", "read"]})).expect("valid");
        assert_eq!(key.name, "ops");
        assert_eq!(key.scopes.as_slice(), &[Scope::Read, Scope::Admin]);
        let errors =
            NewKey::parse(&json!({"name": "", "scopes": ["root"], "x": 1})).expect_err("invalid");
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["x", "name", "scopes[0]"]);
        let errors = NewKey::parse(&json!({"scopes": []})).expect_err("invalid");
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["name", "scopes"]);
    }
}
