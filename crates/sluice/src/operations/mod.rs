//! Typed operations: everything the JSON API and the console do, written once. Each takes a
//! typed request (a validated domain value such as `NewEvent`/`NewRule`, or a request struct
//! parsed from the query or body) and returns an `…Out` struct — serialized by the JSON
//! handlers in `api/`, rendered by the console — or an [`ApiError`].
//!
//! Output types are their own structs, mapped explicitly from store rows: a column the store
//! adds (a lease, a hash) reaches no client unless an output type names it, and the OpenAPI
//! document is derived from these same types.

pub mod event_types;
pub mod events;
pub mod keys;
pub mod replay;
pub mod rules;
pub mod targets;

pub use crate::api::error::{ApiError, ApiResult};
