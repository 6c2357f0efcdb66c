//! The JSON rendering of [`ApiError`]: its status, and `{"error", "message", "details"?}`.

use crate::error::ApiError;
use axum::response::{IntoResponse, Response};
use axum::Json;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.name.status(), Json(self.into_body())).into_response()
    }
}
