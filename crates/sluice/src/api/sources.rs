//! `PUT`/`GET`/`DELETE /sources/{name}`, `GET /sources` (configuring sources), and
//! `POST /sources/{name}/events` (an inbound webhook). Handlers parse, then call
//! `operations::sources`.

use super::extract::{JsonBody, JsonText};
use crate::auth::access::presented_key;
use crate::auth::Caller;
use crate::error::{ApiResult, ErrorBody};
use crate::operations::events::IngestedOut;
use crate::operations::sources::{self, Inbound, SourceList, SourceOut};
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Json;

/// Every source, by name, secrets masked.
#[utoipa::path(get, path = "/sources", tag = "sources",
    responses((status = 200, description = "By name", body = SourceList)))]
pub async fn list_sources(State(state): State<AppState>) -> ApiResult<Json<SourceList>> {
    Ok(Json(sources::list(&state).await?))
}

/// One source, secrets masked, with what came through it.
#[utoipa::path(get, path = "/sources/{name}", tag = "sources",
    params(("name" = String, Path, description = "The source's name")),
    responses(
        (status = 200, description = "The source", body = SourceOut),
        (status = 404, description = "Unknown source", body = ErrorBody),
    ))]
pub async fn get_source(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<SourceOut>> {
    sources::parse_name(&name)?;
    Ok(Json(sources::get(&state, &name).await?))
}

/// Creates or replaces a source: an inbound webhook endpoint (`kind: webhook`, with how to
/// verify requests) or a broker queue (`nats`, `rabbitmq`), and where each event's `id`,
/// `type` and `data` come from. A secret left out, or sent back masked, keeps the stored one.
#[utoipa::path(put, path = "/sources/{name}", tag = "sources",
    params(("name" = String, Path, description = "The source's name: a-z, 0-9, '_', '.', '-'")),
    request_body(content = Object, content_type = "application/json"),
    responses(
        (status = 201, description = "Created", body = SourceOut),
        (status = 200, description = "Replaced", body = SourceOut),
        (status = 400, description = "Invalid source (details name each field)", body = ErrorBody),
    ))]
pub async fn put_source(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<(StatusCode, Json<SourceOut>)> {
    let (source, created) = sources::put(&state, &name, &body, caller.name()).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(source)))
}

/// Deletes a source.
#[utoipa::path(delete, path = "/sources/{name}", tag = "sources",
    params(("name" = String, Path, description = "The source's name")),
    responses(
        (status = 200, description = "Deleted; the source as it was", body = SourceOut),
        (status = 404, description = "Unknown source", body = ErrorBody),
    ))]
pub async fn delete_source(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<SourceOut>> {
    Ok(Json(sources::delete(&state, &name).await?))
}

/// Takes a provider's webhook as it is: verified by the source's scheme (the signature is the
/// credential; a source with `scheme: none` needs an `ingest` key instead), mapped to an
/// event, stored, and answered once committed. The same delivery again is a duplicate.
#[utoipa::path(post, path = "/sources/{name}/events", tag = "sources",
    params(("name" = String, Path, description = "The source's name")),
    request_body(content = Object, content_type = "application/json"),
    responses(
        (status = 201, description = "Stored (or a duplicate: duplicate=true, header Idempotent-Replayed: true)", body = IngestedOut),
        (status = 400, description = "Not JSON, or no id, type or data where the source says", body = ErrorBody),
        (status = 401, description = "Not verified: a signature missing, stale or wrong (or, for scheme none, no valid key)", body = ErrorBody),
        (status = 403, description = "Scheme none: the key lacks the ingest scope", body = ErrorBody),
        (status = 404, description = "No webhook source of that name", body = ErrorBody),
        (status = 409, description = "Same id already stored with a different payload", body = ErrorBody),
        (status = 413, description = "Body over 1 MiB", body = ErrorBody),
        (status = 415, description = "Not application/json", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    ))]
pub async fn receive(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    JsonText(body): JsonText,
) -> ApiResult<Response> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let inbound = Inbound {
        header: &header,
        body: &body,
        key: presented_key(&headers),
    };
    Ok(super::events::stored(
        sources::receive(&state, &name, inbound).await?,
    ))
}
