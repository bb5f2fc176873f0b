//! `tusflow ledger status | retry-failed | forget`: a batch shared on PostgreSQL, seen
//! from any machine.

use std::path::Path;

use clap::{Args, Subcommand};
use serde_json::json;
use tusflow::ledger::Ledger as _;
use tusflow::ledger::postgres::PgLedger;

use crate::{Failure, OK};

/// The failed files `ledger status` shows, most recent first.
const SHOW_FAILURES: usize = 10;

/// Which ledger and batch (flags, else the config's `[ledger]`).
#[derive(Args)]
pub(crate) struct LedgerArgs {
    /// The PostgreSQL connection string of the shared ledger, e.g.
    /// postgres://tus@db.internal/tusflow (the config's ledger.url)
    #[arg(long = "ledger", value_name = "URL")]
    pub(crate) url: Option<String>,
    /// The batch's name, the same on every machine (the config's ledger.name)
    #[arg(long, value_name = "NAME")]
    pub(crate) name: Option<String>,
}

#[derive(Subcommand)]
pub(crate) enum LedgerCommand {
    /// The batch's totals, for all workers
    Status {
        #[command(flatten)]
        ledger: LedgerArgs,
        /// One JSON object
        #[arg(long)]
        json: bool,
    },
    /// Make the batch's failed files pending again
    RetryFailed {
        #[command(flatten)]
        ledger: LedgerArgs,
    },
    /// Drop the batch from the ledger (the server keeps the uploads)
    Forget {
        #[command(flatten)]
        ledger: LedgerArgs,
    },
}

impl LedgerArgs {
    /// The flags given, as config overrides (`ledger.url`, `ledger.name`; a URL given
    /// makes the ledger `postgres`).
    pub(crate) fn overrides(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut ledger = serde_json::Map::new();
        if let Some(u) = &self.url {
            ledger.insert("url".into(), json!(u));
            ledger.insert("kind".into(), json!("postgres"));
        }
        if let Some(n) = &self.name {
            ledger.insert("name".into(), json!(n));
        }
        ledger
    }
}

/// The ledger URL and batch name the flags or the config give.
fn target(config: Option<&Path>, args: &LedgerArgs) -> Result<(String, String), Failure> {
    let loaded = crate::config::load(config, json!({ "ledger": args.overrides() }))?;
    shared_target(&loaded.config.ledger)
}

/// The URL and batch name of a shared ledger's config.
pub(crate) fn shared_target(c: &crate::config::LedgerConfig) -> Result<(String, String), Failure> {
    let Some(url) = c.url.clone() else {
        return Err(Failure::Usage(
            "this needs the shared ledger: --ledger postgres://USER@HOST/DB, or ledger.url in the config".into(),
        ));
    };
    let Some(name) = c.name.clone() else {
        return Err(Failure::Usage(
            "this needs the batch's name: --name NAME, or ledger.name in the config".into(),
        ));
    };
    Ok((url, name))
}

/// Connect to the ledger `url` for the batch `name`, off the async runtime.
pub(crate) async fn connect((url, name): (String, String)) -> Result<PgLedger, Failure> {
    let out = tokio::task::spawn_blocking(move || PgLedger::connect(&url, &name))
        .await
        .map_err(|e| Failure::Usage(format!("the ledger task failed: {e}")))?;
    Ok(out?)
}

/// Connect to the ledger `url` for the batch `name` and run `f` on it, off the async
/// runtime (the client is blocking).
async fn with_ledger<T: Send + 'static>(
    target: (String, String),
    f: impl FnOnce(&PgLedger) -> tusflow::Result<T> + Send + 'static,
) -> Result<T, Failure> {
    let ledger = connect(target).await?;
    let out = tokio::task::spawn_blocking(move || f(&ledger))
        .await
        .map_err(|e| Failure::Usage(format!("the ledger task failed: {e}")))?;
    Ok(out?)
}

pub(crate) async fn run(config: Option<&Path>, command: LedgerCommand) -> Result<u8, Failure> {
    match command {
        LedgerCommand::Status { ledger, json } => {
            let target = target(config, &ledger)?;
            let name = target.1.clone();
            let (t, database, failures) = with_ledger(target, |l| {
                Ok((
                    l.totals()?,
                    l.database().to_owned(),
                    l.failures(SHOW_FAILURES)?,
                ))
            })
            .await?;
            if json {
                println!(
                    "{}",
                    json!({
                        "name": name,
                        "total": t.total,
                        "pending": t.pending,
                        "active": t.active,
                        "complete": t.complete,
                        "failed": t.failed,
                        "bytes_total": t.bytes_total,
                        "bytes_done": t.bytes_done,
                        "failures": failures
                            .iter()
                            .map(|(key, error)| json!({ "key": key, "error": error }))
                            .collect::<Vec<_>>(),
                    })
                );
            } else {
                println!(
                    "{} files in {database}: {} complete, {} active, {} pending, {} failed; {} of {}",
                    t.total,
                    t.complete,
                    t.active,
                    t.pending,
                    t.failed,
                    indicatif::HumanBytes(t.bytes_done),
                    indicatif::HumanBytes(t.bytes_total),
                );
                if t.total == 0 {
                    println!("  (no batch by the name {name:?} here: is the name right?)");
                }
                for (key, error) in &failures {
                    println!(
                        "  failed: {}: {}",
                        crate::text::shown(key),
                        crate::text::shown(error)
                    );
                }
                if t.failed > failures.len() as u64 {
                    println!("  ... and {} more", t.failed - failures.len() as u64);
                }
                if t.failed > 0 {
                    println!("  (tusflow ledger retry-failed makes them pending again)");
                }
            }
        }
        LedgerCommand::RetryFailed { ledger } => {
            let n = with_ledger(target(config, &ledger)?, |l| l.retry_failed()).await?;
            println!("{n} failed files are pending again");
        }
        LedgerCommand::Forget { ledger } => {
            let n = with_ledger(target(config, &ledger)?, |l| l.forget()).await?;
            println!("forgot the batch ({n} files); the server keeps their uploads");
        }
    }
    Ok(OK)
}
