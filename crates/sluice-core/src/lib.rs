//! sluice's domain, with no I/O: the values sluice stores and validates, the JSONLogic
//! compiler and evaluator with its operation budget, templates, actions and retry policy.
//!
//! Invariant: nothing here touches the network, the file system, a clock or a database.
//! Callers pass in what would need I/O (the current time, a random jitter).

pub mod action;
pub mod error;
pub mod event;
pub mod hash;
pub mod idempotency;
pub mod json_text;
pub mod logic;
pub mod retry;
pub mod rule;
pub mod source;
pub mod template;

pub use error::FieldError;
