//! Integration tests: one binary, a module per resource, each story run on SQLite and
//! PostgreSQL against a real server on port 0.

mod helpers;

mod events;
mod ops;
