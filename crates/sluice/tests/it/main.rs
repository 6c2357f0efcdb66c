//! Integration tests: one binary, a module per resource, each story run on SQLite and
//! PostgreSQL against a real server on port 0.

#![allow(clippy::unwrap_used)]

mod helpers;
mod receiver;

mod auth;
mod backpressure;
mod bench;
mod brokers;
mod browser;
mod cli;
mod console;
mod destinations;
mod event_types;
mod events;
mod explain;
mod history;
mod hostile;
mod layers;
mod live;
mod operational;
mod ops;
mod ordering;
mod processing;
mod rate_limits;
mod replay;
mod rules;
mod scheduling;
mod sources;
mod targets;
mod traces;
mod transforms;
mod workers;
