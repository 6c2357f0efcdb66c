//! `sluice`: see `sluice --help`.

use sluice::app::{Roles, RunningApp};
use sluice::cli::{Cli, Command};
use sluice::config::Settings;
use std::process::ExitCode;

// glibc's malloc spends a large share of an ingest-heavy profile in contention and
// consolidation; mimalloc is markedly cheaper for many small short-lived JSON values.
// Its version 2 (the `v2` feature): version 3 kept committing memory under a steady load
// (resident size +5 MB a minute at 2,000 events/s, 111 MB after ten minutes) where version 2
// levels off at ~35 MB, at the same ingest and drain rates.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    keep_freed_memory_a_while();
    let cli = Cli::parse_or_exit();
    let command = cli.command;
    // The two commands that need no server: `eval` is synchronous, `bench` has its own runtime.
    let command = match command {
        Command::Eval(args) => return sluice::eval::run(args),
        Command::Bench(args) => return sluice::bench::run(args),
        other => other,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("sluice: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("sluice: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// How long mimalloc keeps memory freed before it returns it to the system, unless
/// `MIMALLOC_PURGE_DELAY` says otherwise. Its default, 10 ms, is shorter than the rhythm of
/// sluice's batches: memory freed by one batch (outcomes written, spans exported on the
/// exporter's thread) was given back and faulted in again, zeroed, by the next. With traces
/// exported that was an eighth of the processes' CPU. A second keeps it for reuse under a
/// steady load and still returns what a burst left behind.
const PURGE_DELAY_MS: std::ffi::c_long = 1_000;

#[allow(unsafe_code)]
fn keep_freed_memory_a_while() {
    // `mi_option_purge_delay` in mimalloc 2's `mi_option_t` (`mimalloc.h`); the sys crate
    // names only some options.
    const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    if !purge_delay_set_by_user() {
        // SAFETY: sets one integer option of the allocator, which reads it when it next
        // purges; any value is valid, and no allocation is in progress on another thread
        // (none has started yet).
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
    }
}

/// Whether the environment sets mimalloc's purge delay (under its name or its older one).
fn purge_delay_set_by_user() -> bool {
    ["MIMALLOC_PURGE_DELAY", "MIMALLOC_RESET_DELAY"]
        .iter()
        .any(|name| std::env::var_os(name).is_some())
}

fn checked(settings: Settings) -> anyhow::Result<Settings> {
    settings.validate().map_err(anyhow::Error::msg)?;
    sluice::telemetry::init(&settings.log_level, settings.log_format)
        .map_err(anyhow::Error::msg)?;
    Ok(settings)
}

async fn serve(settings: Settings, roles: Roles) -> anyhow::Result<()> {
    let app = RunningApp::start(checked(settings)?, roles).await?;
    let database = app.state.store.backend().as_str();
    match app.addr {
        Some(address) => {
            tracing::info!(%address, database, worker = roles.worker, "sluice listening")
        }
        None => tracing::info!(database, "sluice worker running"),
    }
    let stopped = app.run_until_signal().await;
    sluice::traces::shutdown().await;
    stopped
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(settings) => serve(settings, Roles::SERVE).await,
        Command::Api(settings) => serve(settings, Roles::API).await,
        Command::Worker(settings) => serve(settings, Roles::WORKER).await,
        Command::Migrate(settings) => {
            let settings = checked(settings)?;
            let store = sluice_store::connect(&settings.database_url, 2).await?;
            store.migrate().await?;
            tracing::info!(database = store.backend().as_str(), "migrations applied");
            Ok(())
        }
        Command::Keys(args) => sluice::keys_cli::run(args).await,
        Command::Eval(_) | Command::Bench(_) => unreachable_subcommand(),
    }
}

/// `eval` and `bench` are dispatched in `main` before the runtime starts.
fn unreachable_subcommand() -> anyhow::Result<()> {
    anyhow::bail!("this subcommand does not run inside the server runtime")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The option's number is mimalloc's, not the sys crate's: should an upgrade renumber
    /// its options, this fails rather than sluice setting another one.
    #[test]
    #[allow(unsafe_code)]
    fn the_purge_delay_set_is_mimallocs_purge_delay() {
        if purge_delay_set_by_user() {
            return;
        }
        // SAFETY: reads one integer option of the allocator.
        let get = |option| unsafe { libmimalloc_sys::mi_option_get(option) };
        // mimalloc 2's defaults around it: eager_commit_delay 1, purge_delay 10,
        // use_numa_nodes 0.
        assert_eq!((get(14), get(15), get(16)), (1, 10, 0));
        keep_freed_memory_a_while();
        assert_eq!(get(15), PURGE_DELAY_MS);
    }
}
