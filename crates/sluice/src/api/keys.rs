//! `POST /api-keys`, `GET /api-keys`, `DELETE /api-keys/{id}` (admin): handlers parse, then
//! call `operations::keys`, and reload this process's keys so the change counts at once here
//! (other processes see it within a second).

use super::extract::{IdPath, JsonBody};
use super::schema::NewKeyIn;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::operations::keys::{self, ApiKeyList, ApiKeyOut, CreatedKeyOut, NewKey};
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

/// Creates a key; the answer holds the key, which is never shown again.
#[utoipa::path(post, path = "/api-keys", tag = "access",
    request_body(content = NewKeyIn, content_type = "application/json"),
    responses(
        (status = 201, description = "Created; `key` is shown this once", body = CreatedKeyOut),
        (status = 400, description = "Bad name or scopes", body = ErrorBody),
    ))]
pub async fn create_key(
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> ApiResult<(StatusCode, Json<CreatedKeyOut>)> {
    let new = NewKey::parse(&body).map_err(ApiError::invalid)?;
    let created = keys::create(state.store.as_ref(), &new).await?;
    state.keys_changed().await;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Every key, newest first, revoked ones included; never a secret.
#[utoipa::path(get, path = "/api-keys", tag = "access",
    responses((status = 200, description = "Newest first", body = ApiKeyList)))]
pub async fn list_keys(State(state): State<AppState>) -> ApiResult<Json<ApiKeyList>> {
    Ok(Json(keys::list(state.store.as_ref()).await?))
}

/// Revokes a key: every process refuses it within seconds, and its console sessions end.
#[utoipa::path(delete, path = "/api-keys/{id}", tag = "access",
    params(("id" = i64, Path, description = "Key id", minimum = 1)),
    responses(
        (status = 200, description = "Revoked (or already revoked)", body = ApiKeyOut),
        (status = 400, description = "Bad id", body = ErrorBody),
        (status = 404, description = "Unknown key", body = ErrorBody),
    ))]
pub async fn revoke_key(
    State(state): State<AppState>,
    IdPath(id): IdPath,
) -> ApiResult<Json<ApiKeyOut>> {
    let revoked = keys::revoke(state.store.as_ref(), id, state.operational.as_deref()).await?;
    state.keys_changed().await;
    Ok(Json(revoked))
}
