//! The command line: `sluice [serve|api|worker|migrate|keys|eval|bench]`, `serve` by default.

use crate::config::Settings;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "sluice",
    version,
    about = "Event processing platform: ingest, rules, actions, replay, live trace."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// API, worker and console in one process (the default).
    Serve(Settings),
    /// The HTTP API (and console) only.
    Api(Settings),
    /// A worker only: processes events, serves no HTTP.
    Worker(Settings),
    /// Apply database migrations and exit.
    Migrate(Settings),
    /// Load generator: post events, wait until processed, report rates, latency and memory.
    Bench(crate::bench::BenchArgs),
    /// Evaluate a JSONLogic rule: --rule/--data, or JSON lines {"rule","data"} on stdin.
    Eval(EvalArgs),
    /// Manage API keys (for AUTH=api_key) in the configured database; no server needed.
    Keys(KeysArgs),
}

#[derive(Debug, clap::Args)]
pub struct KeysArgs {
    /// Database: postgres://… or sqlite://path.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://sluice.db",
        hide_env_values = true,
        global = true
    )]
    pub database_url: String,
    /// Store `sluice.key.revoked` when a key is revoked, as a server does with
    /// OPERATIONAL_EVENTS on.
    #[arg(long, env = "OPERATIONAL_EVENTS", default_value_t = false, action = clap::ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true", global = true)]
    pub operational_events: bool,
    #[command(subcommand)]
    pub command: KeysCommand,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key and print it (the only time it is shown).
    Create {
        /// Who or what will use the key (recorded on what it does).
        #[arg(long)]
        name: String,
        /// Comma-separated: ingest, read, admin.
        #[arg(long, value_delimiter = ',', required = true)]
        scopes: Vec<String>,
        /// Print one JSON object (with `key`) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List keys (never their secrets).
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key: every process refuses it within seconds.
    Revoke {
        /// The key's id (see `sluice keys list`).
        id: i64,
    },
}

#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// The rule, as JSON.
    #[arg(long, requires = "data")]
    pub rule: Option<String>,
    /// The data to evaluate it against, as JSON.
    #[arg(long, requires = "rule")]
    pub data: Option<String>,
    /// Also say why: the summary and every node with its value (JSON lines get
    /// `{"result", "matched", "summary", "explanation"}`).
    #[arg(long)]
    pub explain: bool,
}

impl Cli {
    /// Parses the command line; on a usage or configuration error prints one line and exits 2.
    pub fn parse_or_exit() -> Cli {
        let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
        // `sluice` and `sluice --port 4000` mean `sluice serve …`.
        let first = args.get(1).and_then(|a| a.to_str()).map(str::to_owned);
        let implicit_serve = match first.as_deref() {
            None => true,
            Some("-h" | "--help" | "-V" | "--version") => false,
            Some(flag) => flag.starts_with('-'),
        };
        if implicit_serve {
            args.insert(1, "serve".into());
        }
        match Cli::try_parse_from(args) {
            Ok(cli) => cli,
            Err(error) => {
                use clap::error::ErrorKind;
                if matches!(
                    error.kind(),
                    ErrorKind::DisplayHelp
                        | ErrorKind::DisplayVersion
                        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
                ) {
                    error.exit();
                }
                let rendered = error.to_string();
                let first = rendered.lines().next().unwrap_or("invalid arguments");
                eprintln!("sluice: {}", first.trim_start_matches("error: "));
                std::process::exit(2);
            }
        }
    }
}
