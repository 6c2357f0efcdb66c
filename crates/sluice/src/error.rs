//! The one error type every operation returns: a closed set of names, each with exactly one
//! HTTP status, and the body clients see. Internal errors are logged with their cause and
//! shown to clients as a generic message. Rendering it as a response is `api::error`'s job;
//! the console shows it as a page.

use axum::http::StatusCode;
use serde::Serialize;
use sluice_core::FieldError;
use sluice_store::StoreError;

/// The documented error names; each has exactly one status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub enum ErrorName {
    ValidationError,
    Unauthorized,
    Forbidden,
    NotFoundError,
    ConflictError,
    PayloadTooLarge,
    UnsupportedMediaType,
    InternalServerError,
    ServiceUnavailable,
}

impl ErrorName {
    pub fn status(self) -> StatusCode {
        match self {
            ErrorName::ValidationError => StatusCode::BAD_REQUEST,
            ErrorName::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorName::Forbidden => StatusCode::FORBIDDEN,
            ErrorName::NotFoundError => StatusCode::NOT_FOUND,
            ErrorName::ConflictError => StatusCode::CONFLICT,
            ErrorName::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorName::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorName::InternalServerError => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorName::ServiceUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorName::ValidationError => "ValidationError",
            ErrorName::Unauthorized => "Unauthorized",
            ErrorName::Forbidden => "Forbidden",
            ErrorName::NotFoundError => "NotFoundError",
            ErrorName::ConflictError => "ConflictError",
            ErrorName::PayloadTooLarge => "PayloadTooLarge",
            ErrorName::UnsupportedMediaType => "UnsupportedMediaType",
            ErrorName::InternalServerError => "InternalServerError",
            ErrorName::ServiceUnavailable => "ServiceUnavailable",
        }
    }
}

/// An error answer: `{"error", "message", "details"?}`.
#[derive(Debug)]
pub struct ApiError {
    pub name: ErrorName,
    pub message: String,
    pub details: Vec<FieldError>,
}

/// The body of every error answer: `{"error", "message", "details"?}`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorName,
    pub message: String,
    /// One entry per problem, located by a path into the request.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<FieldError>,
}

impl ApiError {
    pub fn new(name: ErrorName, message: impl Into<String>) -> Self {
        Self {
            name,
            message: message.into(),
            details: Vec::new(),
        }
    }

    pub fn with_details(mut self, details: Vec<FieldError>) -> Self {
        self.details = details;
        self
    }

    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(ErrorName::ValidationError, message)
    }

    /// A 400 whose message summarises the field errors and whose details list them all.
    pub fn invalid(details: Vec<FieldError>) -> Self {
        let message = match details.as_slice() {
            [one] => format!("invalid request: {one}"),
            many => format!("invalid request: {} problems (see details)", many.len()),
        };
        Self::validation(message).with_details(details)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorName::Unauthorized, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorName::ServiceUnavailable, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorName::Forbidden, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorName::NotFoundError, message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorName::ConflictError, message)
    }

    /// Logs the cause here (the only place it is seen) and answers a generic 500.
    pub fn internal(cause: &dyn std::error::Error) -> Self {
        tracing::error!(error = %cause, source = ?cause.source(), "internal error");
        Self::new(ErrorName::InternalServerError, "internal server error")
    }

    pub fn into_body(self) -> ErrorBody {
        ErrorBody {
            error: self.name,
            message: self.message,
            details: self.details,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        ApiError::from_store(&error)
    }
}

impl ApiError {
    /// 503 for an unreachable database, 409 for a conflict, a logged 500 for anything else.
    pub fn from_store(error: &StoreError) -> Self {
        match error {
            StoreError::Unavailable(cause) => {
                tracing::warn!(error = %cause, "database unavailable");
                ApiError::new(
                    ErrorName::ServiceUnavailable,
                    "the database is unavailable; try again shortly",
                )
            }
            StoreError::Conflict(message) => ApiError::conflict(message.clone()),
            other => ApiError::internal(other),
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
