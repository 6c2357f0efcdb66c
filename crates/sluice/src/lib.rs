//! The sluice binary's library: configuration, telemetry, the HTTP API, group-commit ingest
//! and the CLI subcommands. `main.rs` only parses the command line and calls into here; the
//! integration tests start the same code on port 0.

pub mod actions;
pub mod api;
pub mod app;
pub mod auth;
pub mod bench;
pub mod bus;
pub mod cli;
pub mod config;
pub mod console;
pub mod consumers;
pub mod delivery;
pub mod error;
pub mod eval;
pub mod evaluation;
pub mod event_types;
pub mod ingest;
pub mod keys_cli;
pub mod operational;
pub mod operations;
pub mod rule_pass;
pub mod serve;
pub mod sources;
pub mod state;
pub mod telemetry;
pub mod traces;
pub mod upkeep;
pub mod worker;
