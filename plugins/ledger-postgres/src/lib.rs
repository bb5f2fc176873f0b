//! A [`Ledger`] on PostgreSQL: one row per file of a named batch, claimed with a lease
//! by any number of workers on any number of machines (`SELECT ... FOR UPDATE SKIP
//! LOCKED`), so a fleet shares one batch and a worker that dies leaves its files to the
//! others, who continue their upload URLs from the server's offset.
//!
//! The crate creates and migrates its tables (`tusflow_schema`, `tusflow_files`) under
//! an advisory lock, and refuses a schema newer than it knows. The database password
//! never reaches a message: errors name the host and port.
//!
//! ```no_run
//! use std::time::Duration;
//! use tusflow_core::ledger::{Ledger, NewEntry};
//! use tusflow_ledger_postgres::PgLedger;
//! # fn run() -> tusflow_core::Result<()> {
//! let ledger = PgLedger::connect("postgres://tus@db.internal/tusflow", "media-2026-12")?;
//! ledger.enqueue(&[NewEntry::new("a/1.mp4", 1 << 30)])?;
//! for claim in ledger.claim("worker-1", 8, Duration::from_secs(30))? {
//!     // ... upload claim.key, continuing claim.url when there is one ...
//!     ledger.complete("worker-1", &claim.key)?;
//! }
//! # Ok(()) }
//! ```

use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use postgres::{Client, NoTls};
use tusflow_core::ledger::{Claim, Ledger, NewEntry, Totals};
use tusflow_core::{Error, Result};

/// The schema this crate writes and reads.
pub const SCHEMA_VERSION: i32 = 1;

/// Rows per `INSERT` when enqueueing.
const INSERT_ROWS: usize = 1000;

/// The advisory lock key under which the schema is created or migrated.
const SCHEMA_LOCK: i64 = 0x0074_7573_666c_6f77; // "tusflow"

/// The connection. `postgres::Client` closes by blocking on a runtime of its own,
/// which panics inside an async runtime: it is dropped on a thread of its own, so a
/// ledger may be dropped anywhere.
struct Conn(Option<Client>);

impl Drop for Conn {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            let _ = std::thread::spawn(move || drop(c)).join();
        }
    }
}

/// One named batch on PostgreSQL.
pub struct PgLedger {
    client: Mutex<Conn>,
    config: postgres::Config,
    batch: String,
    /// `host:port/db`, for messages (never the password).
    shown: String,
}

impl fmt::Debug for PgLedger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgLedger")
            .field("database", &self.shown)
            .field("batch", &self.batch)
            .finish_non_exhaustive()
    }
}

/// `host:port/dbname` of a connection string, without user or password.
pub fn shown(url: &str) -> String {
    match url.parse::<postgres::Config>() {
        Ok(c) => {
            let host = c
                .get_hosts()
                .first()
                .map(|h| match h {
                    postgres::config::Host::Tcp(h) => h.clone(),
                    #[cfg(unix)]
                    postgres::config::Host::Unix(p) => p.display().to_string(),
                })
                .unwrap_or_else(|| "localhost".into());
            let port = c.get_ports().first().copied().unwrap_or(5432);
            let db = c.get_dbname().unwrap_or("");
            format!("{host}:{port}/{db}")
        }
        Err(_) => "(a connection string that does not parse)".into(),
    }
}

impl PgLedger {
    /// Connect to the database at `url` (a `postgres://` URL or a `key=value` string)
    /// for the batch `name`, creating or migrating the tables.
    pub fn connect(url: &str, name: &str) -> Result<Self> {
        let shown = shown(url);
        let config: postgres::Config = url.parse().map_err(|e: postgres::Error| {
            Error::config(format!(
                "the ledger URL is not a PostgreSQL connection string: {}",
                first_line(&e)
            ))
        })?;
        if name.trim().is_empty() {
            return Err(Error::config("the ledger needs a batch name (--name)"));
        }
        let client = open(&config, &shown)?;
        let ledger = PgLedger {
            client: Mutex::new(Conn(Some(client))),
            config,
            batch: name.to_owned(),
            shown,
        };
        ledger.migrate()?;
        Ok(ledger)
    }

    /// The database, as messages name it (`host:port/db`).
    pub fn database(&self) -> &str {
        &self.shown
    }

    fn err(&self, e: postgres::Error) -> Error {
        Error::store(format!(
            "the ledger database at {}: {}",
            self.shown,
            first_line(&e)
        ))
    }

    /// Run `f` on the connection; one that was lost (the database restarted, the
    /// network cut) is opened again first. A failed call is not repeated: the caller
    /// decides (a worker backs off and tries again).
    fn with<T>(
        &self,
        f: impl FnOnce(&mut Client) -> std::result::Result<T, postgres::Error>,
    ) -> Result<T> {
        let mut c = self.client.lock().unwrap_or_else(|p| p.into_inner());
        if c.0.as_ref().is_none_or(Client::is_closed) {
            // The old one is dropped on a thread of its own, as at the end.
            drop(Conn(c.0.take()));
            c.0 = Some(open(&self.config, &self.shown)?);
            tracing::info!(database = %self.shown, "reconnected to the ledger database");
        }
        let client = c.0.as_mut().expect("opened above");
        f(client).map_err(|e| self.err(e))
    }

    fn migrate(&self) -> Result<()> {
        let version: i32 = self.with(|c| {
            let mut t = c.transaction()?;
            t.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])?;
            t.batch_execute(
                "CREATE TABLE IF NOT EXISTS tusflow_schema (
                     id INT PRIMARY KEY CHECK (id = 1),
                     version INT NOT NULL
                 );
                 CREATE TABLE IF NOT EXISTS tusflow_files (
                     batch TEXT NOT NULL,
                     key TEXT NOT NULL,
                     size BIGINT NOT NULL,
                     fingerprint TEXT,
                     url TEXT,
                     acked BIGINT NOT NULL DEFAULT 0,
                     state TEXT NOT NULL DEFAULT 'pending',
                     owner TEXT,
                     lease_until TIMESTAMPTZ,
                     attempts INT NOT NULL DEFAULT 0,
                     last_error TEXT,
                     created TIMESTAMPTZ NOT NULL DEFAULT now(),
                     updated TIMESTAMPTZ NOT NULL DEFAULT now(),
                     PRIMARY KEY (batch, key)
                 );
                 CREATE INDEX IF NOT EXISTS tusflow_files_state ON tusflow_files (batch, state);",
            )?;
            t.execute(
                "INSERT INTO tusflow_schema (id, version) VALUES (1, $1) ON CONFLICT (id) DO NOTHING",
                &[&SCHEMA_VERSION],
            )?;
            let v: i32 = t
                .query_one("SELECT version FROM tusflow_schema WHERE id = 1", &[])?
                .get(0);
            t.commit()?;
            Ok(v)
        })?;
        if version > SCHEMA_VERSION {
            return Err(Error::store(format!(
                "the ledger database at {} has schema version {version}, newer than this tusflow's {SCHEMA_VERSION}: upgrade tusflow",
                self.shown
            )));
        }
        Ok(())
    }
}

fn open(config: &postgres::Config, shown: &str) -> Result<Client> {
    config.connect(NoTls).map_err(|e| {
        Error::store(format!(
            "cannot use the ledger database at {shown}: {}",
            first_line(&e)
        ))
    })
}

/// The first line of a database error: the server's message, or the driver's words
/// and their causes ("error connecting to server: Connection refused"). A connection
/// string is never in them.
fn first_line(e: &postgres::Error) -> String {
    let text = match e.as_db_error() {
        Some(db) => db.message().to_owned(),
        None => {
            let mut t = e.to_string();
            let mut src = std::error::Error::source(e);
            while let Some(s) = src {
                let more = s.to_string();
                if !t.contains(&more) {
                    t = format!("{t}: {more}");
                }
                src = s.source();
            }
            t
        }
    };
    text.lines().next().unwrap_or("").to_owned()
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64().max(0.001)
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Ledger for PgLedger {
    fn enqueue(&self, entries: &[NewEntry]) -> Result<u64> {
        let mut added = 0;
        for chunk in entries.chunks(INSERT_ROWS) {
            let keys: Vec<&str> = chunk.iter().map(|e| e.key.as_str()).collect();
            let sizes: Vec<i64> = chunk.iter().map(|e| to_i64(e.size)).collect();
            let fps: Vec<Option<&str>> = chunk.iter().map(|e| e.fingerprint.as_deref()).collect();
            let (n, clash) = self.with(|c| {
                let n = c.execute(
                    "INSERT INTO tusflow_files (batch, key, size, fingerprint)
                     SELECT $1, k, s, f FROM unnest($2::text[], $3::bigint[], $4::text[]) AS t(k, s, f)
                     ON CONFLICT (batch, key) DO NOTHING",
                    &[&self.batch, &keys, &sizes, &fps],
                )?;
                // A key the batch has with another size: another file.
                let clash = c.query_opt(
                    "SELECT t.k, f.size, t.s FROM unnest($2::text[], $3::bigint[]) AS t(k, s)
                     JOIN tusflow_files f ON f.batch = $1 AND f.key = t.k
                     WHERE f.size <> t.s LIMIT 1",
                    &[&self.batch, &keys, &sizes],
                )?;
                Ok((n, clash))
            })?;
            if let Some(r) = clash {
                let size = |i| u64::try_from(r.get::<_, i64>(i)).unwrap_or(0);
                return Err(tusflow_core::ledger::conflict(r.get(0), size(1), size(2)));
            }
            added += n;
        }
        Ok(added)
    }

    fn claim(&self, owner: &str, n: usize, lease: Duration) -> Result<Vec<Claim>> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let limit = i64::try_from(n).unwrap_or(i64::MAX);
        let rows = self.with(|c| {
            c.query(
                // (A CTE: evaluated once. A LIMIT in an UPDATE's FROM subquery may
                // be run again per row, and claim more than asked.)
                "WITH free AS (
                     SELECT key FROM tusflow_files
                     WHERE batch = $1
                       AND (state = 'pending' OR (state = 'active' AND lease_until < now()))
                     ORDER BY key
                     LIMIT $4
                     FOR UPDATE SKIP LOCKED
                 )
                 UPDATE tusflow_files f
                 SET state = 'active', owner = $2,
                     lease_until = now() + make_interval(secs => $3),
                     attempts = f.attempts + 1, updated = now()
                 FROM free
                 WHERE f.batch = $1 AND f.key = free.key
                 RETURNING f.key, f.size, f.url, f.acked, f.attempts",
                &[&self.batch, &owner, &secs(lease), &limit],
            )
        })?;
        Ok(rows
            .into_iter()
            .map(|r| Claim {
                key: r.get(0),
                size: u64::try_from(r.get::<_, i64>(1)).unwrap_or(0),
                url: r.get(2),
                offset: u64::try_from(r.get::<_, i64>(3)).unwrap_or(0),
                attempts: u32::try_from(r.get::<_, i32>(4)).unwrap_or(0),
            })
            .collect())
    }

    fn heartbeat(&self, owner: &str, keys: &[String], lease: Duration) -> Result<Vec<String>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let rows = self.with(|c| {
            c.query(
                "UPDATE tusflow_files
                 SET lease_until = now() + make_interval(secs => $3), updated = now()
                 WHERE batch = $1 AND owner = $2 AND state = 'active' AND key = ANY($4)
                 RETURNING key",
                &[&self.batch, &owner, &secs(lease), &keys],
            )
        })?;
        Ok(rows.into_iter().map(|r| r.get(0)).collect())
    }

    fn record(&self, owner: &str, key: &str, url: &str, offset: u64) -> Result<bool> {
        let n = self.with(|c| {
            c.execute(
                "UPDATE tusflow_files SET url = $4, acked = GREATEST(acked, $5), updated = now()
                 WHERE batch = $1 AND key = $2 AND owner = $3 AND state = 'active'",
                &[&self.batch, &key, &owner, &url, &to_i64(offset)],
            )
        })?;
        Ok(n == 1)
    }

    fn drop_url(&self, owner: &str, key: &str) -> Result<bool> {
        let n = self.with(|c| {
            c.execute(
                "UPDATE tusflow_files SET url = NULL, acked = 0, updated = now()
                 WHERE batch = $1 AND key = $2 AND owner = $3 AND state = 'active'",
                &[&self.batch, &key, &owner],
            )
        })?;
        Ok(n == 1)
    }

    fn complete(&self, owner: &str, key: &str) -> Result<bool> {
        let n = self.with(|c| {
            c.execute(
                "UPDATE tusflow_files
                 SET state = 'complete', acked = size, owner = NULL, lease_until = NULL,
                     last_error = NULL, updated = now()
                 WHERE batch = $1 AND key = $2 AND owner = $3 AND state = 'active'",
                &[&self.batch, &key, &owner],
            )
        })?;
        Ok(n == 1)
    }

    fn fail(&self, owner: &str, key: &str, reason: &str) -> Result<bool> {
        let n = self.with(|c| {
            c.execute(
                "UPDATE tusflow_files
                 SET state = 'failed', owner = NULL, lease_until = NULL, last_error = $4,
                     updated = now()
                 WHERE batch = $1 AND key = $2 AND owner = $3 AND state = 'active'",
                &[&self.batch, &key, &owner, &reason],
            )
        })?;
        Ok(n == 1)
    }

    fn release(&self, owner: &str, key: &str) -> Result<bool> {
        let n = self.with(|c| {
            c.execute(
                "UPDATE tusflow_files
                 SET state = 'pending', owner = NULL, lease_until = NULL, updated = now()
                 WHERE batch = $1 AND key = $2 AND owner = $3 AND state = 'active'",
                &[&self.batch, &key, &owner],
            )
        })?;
        Ok(n == 1)
    }

    fn totals(&self) -> Result<Totals> {
        let row = self.with(|c| {
            c.query_one(
                "SELECT count(*),
                        count(*) FILTER (WHERE state = 'pending'
                                         OR (state = 'active' AND lease_until < now())),
                        count(*) FILTER (WHERE state = 'active' AND lease_until >= now()),
                        count(*) FILTER (WHERE state = 'complete'),
                        count(*) FILTER (WHERE state = 'failed'),
                        COALESCE(sum(size), 0)::BIGINT,
                        COALESCE(sum(size) FILTER (WHERE state = 'complete'), 0)::BIGINT
                 FROM tusflow_files WHERE batch = $1",
                &[&self.batch],
            )
        })?;
        let n = |i: usize| u64::try_from(row.get::<_, i64>(i)).unwrap_or(0);
        Ok(Totals {
            total: n(0),
            pending: n(1),
            active: n(2),
            complete: n(3),
            failed: n(4),
            bytes_total: n(5),
            bytes_done: n(6),
        })
    }

    fn retry_failed(&self) -> Result<u64> {
        self.with(|c| {
            c.execute(
                "UPDATE tusflow_files SET state = 'pending', updated = now()
                 WHERE batch = $1 AND state = 'failed'",
                &[&self.batch],
            )
        })
    }

    fn forget(&self) -> Result<u64> {
        self.with(|c| c.execute("DELETE FROM tusflow_files WHERE batch = $1", &[&self.batch]))
    }
}
