//! The `tusflow` command: resumable uploads from the shell.

//!
//! One module per command (`upload`, `batch`, `stored` for `list` and `forget`,
//! `remote` for `info`, `status` and `terminate`); `args` holds the flags, `config`
//! the config file and env vars, `stack` the client they describe, `walk` the files a
//! batch names.

mod args;
mod batch;
mod config;
mod ledger;
mod remote;
mod shared;
mod stack;
mod stored;
mod text;
mod upload;
mod walk;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde_json::json;
use tusflow::Error;

use args::{BatchArgs, ConnArgs, StoreArgs, UploadArgs};

/// Exit code when every upload completed.
pub(crate) const OK: u8 = 0;
/// Exit code when an upload or request failed.
pub(crate) const FAILED: u8 = 1;
/// Exit code for usage and configuration errors.
pub(crate) const USAGE: u8 = 2;

#[derive(Parser)]
#[command(
    name = "tusflow",
    version,
    about = "Resumable uploads with the tus protocol"
)]
struct Cli {
    /// More log output on stderr (-v info, -vv debug, -vvv trace)
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// The config file (TOML, YAML or JSON by extension; default: ./tusflow.toml if present)
    #[arg(short = 'c', long = "config", value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Upload files (a new upload each, continued if stored, or continue one with --url)
    Upload(Box<UploadArgs>),
    /// Upload many files from the config's [batch] or the command line; a re-run
    /// continues partial files and skips completed ones
    Batch(Box<BatchArgs>),
    /// List the stored uploads that a later `upload` of the same file would continue
    List {
        #[command(flatten)]
        store: StoreArgs,
        /// One JSON object per upload
        #[arg(long)]
        json: bool,
        /// Do not ask the servers for their offsets (HEAD); show the offsets last
        /// stored
        #[arg(long)]
        offline: bool,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Remove stored uploads from the store (the server keeps them)
    Forget {
        /// The upload URL to forget
        #[arg(required_unless_present_any = ["all", "expired"], conflicts_with_all = ["all", "expired"])]
        upload_url: Option<String>,
        /// Forget every stored upload
        #[arg(long)]
        all: bool,
        /// Forget the uploads whose Upload-Expires has passed
        #[arg(long, conflicts_with = "all")]
        expired: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Show a server's capabilities (OPTIONS)
    Info {
        /// The creation endpoint (default: the config's)
        endpoint: Option<String>,
        #[command(flatten)]
        conn: ConnArgs,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Show an upload's offset and length (HEAD)
    Status {
        /// The upload URL
        upload_url: String,
        #[command(flatten)]
        conn: ConnArgs,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Terminate uploads on the server (DELETE) and forget their stored records
    Terminate {
        /// The upload URLs
        #[arg(required = true)]
        upload_urls: Vec<String>,
        #[command(flatten)]
        conn: ConnArgs,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// The effective configuration
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// A batch shared by many machines on PostgreSQL: its totals, its failed files
    Ledger {
        #[command(subcommand)]
        command: ledger::LedgerCommand,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print every setting, where it came from, secrets redacted
    Show,
}

/// A usage or configuration problem (exit 2), or a failure (exit 1).
pub(crate) enum Failure {
    Usage(String),
    Failed,
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        if e.is_invalid() {
            Failure::Usage(e.to_string())
        } else {
            eprintln!("tusflow: {e}");
            Failure::Failed
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => tracing::Level::WARN,
        1 => tracing::Level::INFO,
        2 => tracing::Level::DEBUG,
        _ => tracing::Level::TRACE,
    };
    // At the default verbosity a failure is the one line the command prints: the log
    // middleware's lines (each request that failed) come from -v up.
    let filter = tracing_subscriber::filter::Targets::new()
        .with_default(level)
        .with_target(
            "tusflow_log",
            if cli.verbose == 0 {
                tracing_subscriber::filter::LevelFilter::OFF
            } else {
                level.into()
            },
        );
    {
        use tracing_subscriber::prelude::*;
        tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_target(false)
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                    .with_filter(filter),
            )
            .init();
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tusflow: cannot start the async runtime: {e}");
            return ExitCode::from(FAILED);
        }
    };
    let config = cli.config.clone();
    let result = rt.block_on(async {
        let config = config.as_deref();
        match cli.command {
            Command::Upload(args) => upload::upload(config, *args).await,
            Command::Batch(args) => batch::batch(config, *args).await,
            Command::List {
                store,
                json,
                offline,
                conn,
            } => stored::list(config, &store, json, (!offline).then_some(&conn)).await,
            Command::Forget {
                upload_url,
                all,
                expired,
                store,
            } => tokio::task::block_in_place(|| {
                stored::forget(config, upload_url.as_deref(), all, expired, &store)
            }),
            Command::Info {
                endpoint,
                conn,
                json,
            } => remote::info(config, endpoint, &conn, json).await,
            Command::Status {
                upload_url,
                conn,
                json,
            } => remote::status(config, &upload_url, &conn, json).await,
            Command::Terminate {
                upload_urls,
                conn,
                store,
            } => remote::terminate(config, &upload_urls, &conn, &store).await,
            Command::Ledger { command } => ledger::run(config, command).await,
            Command::Config {
                command: ConfigCommand::Show,
            } => {
                let loaded = crate::config::load(config, json!({}))?;
                loaded.layers(&tusflow::plugins::builtin())?;
                println!("{}", loaded.show()?);
                Ok(OK)
            }
        }
    });
    // A blocking task that is still stuck (a database that stopped answering) does not
    // hold the process past its end.
    rt.shutdown_timeout(std::time::Duration::from_secs(3));
    match result {
        Ok(code) => ExitCode::from(code),
        Err(Failure::Usage(msg)) => {
            eprintln!("tusflow: {msg}");
            ExitCode::from(USAGE)
        }
        Err(Failure::Failed) => ExitCode::from(FAILED),
    }
}
