//! Typed operations: everything the JSON API and the console do, written once. Each takes a
//! typed request (a validated domain value such as `NewEvent`/`NewRule`, or a request struct
//! parsed from the query or body) and returns an `…Out` struct — serialized by the JSON
//! handlers in `api/`, rendered by the console — or an [`ApiError`](crate::error::ApiError).
//!
//! Output types are their own structs, mapped explicitly from store rows: a column the store
//! adds (a lease, a hash) reaches no client unless an output type names it, and the OpenAPI
//! document is derived from these same types.
//!
//! Below `api/` and `console/`: operations never import either, nor `app` (the layering
//! test in `tests/it/layers.rs` reads the imports and fails otherwise).

pub mod event_types;
pub mod events;
pub mod keys;
pub mod query;
pub mod replay;
pub mod rules;
pub mod sources;
pub mod targets;
