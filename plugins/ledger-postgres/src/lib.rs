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
//! for claim in ledger.claim("worker-1", 8, Duration::from_secs(30), &[])? {
//!     // ... upload claim.key, continuing claim.url when there is one ...
//!     ledger.complete("worker-1", &claim.key)?;
//! }
//! # Ok(()) }
//! ```

use std::fmt;
use std::time::Duration;

use tusflow_core::ledger::{Claim, Ledger, NewEntry, Totals};
use tusflow_core::{Error, Result};

mod db;
mod store;

use db::Db;
pub use db::shown;
pub use store::PgStore;

/// The schema this crate writes and reads: 1, the ledger's table; 2, and the URL
/// store's; 3, the index of claimable files and who enqueued each.
pub const SCHEMA_VERSION: i32 = 3;

/// Rows per `INSERT` when enqueueing.
const INSERT_ROWS: usize = 1000;

/// One named batch on PostgreSQL.
pub struct PgLedger {
    db: Db,
    batch: String,
    /// This value's mark on the files it enqueues (host, process, time).
    run: String,
}

impl fmt::Debug for PgLedger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgLedger")
            .field("database", &self.db.shown)
            .field("batch", &self.batch)
            .finish_non_exhaustive()
    }
}

impl PgLedger {
    /// Connect to the database at `url` (a `postgres://` URL or a `key=value` string)
    /// for the batch `name`, creating or migrating the tables.
    pub fn connect(url: &str, name: &str) -> Result<Self> {
        if name.trim().is_empty() {
            return Err(Error::config("the ledger needs a batch name (--name)"));
        }
        let run = format!(
            "{}:{}:{}",
            tusflow_core::ledger::hostname(),
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        );
        let ledger = PgLedger {
            db: Db::connect(url, "ledger")?,
            batch: name.to_owned(),
            run,
        };
        Ok(ledger)
    }

    /// The database, as messages name it (`host:port/db`).
    pub fn database(&self) -> &str {
        &self.db.shown
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut postgres::Client) -> std::result::Result<T, postgres::Error>,
    ) -> Result<T> {
        self.db.with(f)
    }

    /// The upload URL and acknowledged offset of `owner`'s `key`; rows changed.
    fn write_record(
        &self,
        c: &mut postgres::Client,
        owner: &str,
        key: &str,
        url: &str,
        offset: u64,
    ) -> std::result::Result<u64, postgres::Error> {
        c.execute(
            "UPDATE tusflow_files SET url = $4, acked = GREATEST(acked, $5), updated = now()
             WHERE batch = $1 AND key = $2 AND owner = $3 AND state = 'active'",
            &[&self.batch, &key, &owner, &url, &to_i64(offset)],
        )
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64().max(0.001)
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Ledger for PgLedger {
    /// Atomic per call; and a key that conflicts (another size) withdraws every file
    /// this ledger value enqueued that no worker has touched yet, so a set of paths
    /// refused is not half in the batch.
    fn enqueue(&self, entries: &[NewEntry]) -> Result<u64> {
        let mut seen = std::collections::HashSet::with_capacity(entries.len());
        if let Some(dup) = entries.iter().find(|e| !seen.insert(e.key.as_str())) {
            return Err(Error::invalid(format!(
                "two files have the key {:?}: give the directory above them, so their keys keep the directories that tell them apart",
                dup.key
            )));
        }
        let outcome = self.with(|c| {
            let mut t = c.transaction()?;
            let mut added = 0;
            for chunk in entries.chunks(INSERT_ROWS) {
                let keys: Vec<&str> = chunk.iter().map(|e| e.key.as_str()).collect();
                let sizes: Vec<i64> = chunk.iter().map(|e| to_i64(e.size)).collect();
                let fps: Vec<Option<&str>> =
                    chunk.iter().map(|e| e.fingerprint.as_deref()).collect();
                // One statement: new keys go in; a key the batch has with another
                // size comes back (as not inserted: `xmax` is 0 only for a new row),
                // and nothing of it changes.
                let rows = t.query(
                    "INSERT INTO tusflow_files AS f (batch, key, size, fingerprint, enqueued_by)
                     SELECT $1, k, s, fp, $5 FROM unnest($2::text[], $3::bigint[], $4::text[]) AS t(k, s, fp)
                     ON CONFLICT (batch, key) DO UPDATE SET size = f.size
                         WHERE f.size <> EXCLUDED.size
                     RETURNING f.key, f.size, (f.xmax = 0) AS inserted",
                    &[&self.batch, &keys, &sizes, &fps, &self.run],
                )?;
                for r in &rows {
                    if r.get::<_, bool>(2) {
                        added += 1;
                        continue;
                    }
                    let key: String = r.get(0);
                    let theirs = u64::try_from(r.get::<_, i64>(1)).unwrap_or(0);
                    let ours = chunk.iter().find(|e| e.key == key).map_or(0, |e| e.size);
                    // (The transaction rolls back as it drops.)
                    return Ok(Err((key, theirs, ours)));
                }
            }
            t.commit()?;
            Ok(Ok(added))
        })?;
        match outcome {
            Ok(added) => Ok(added),
            Err((key, theirs, ours)) => {
                let withdrawn = self.with(|c| {
                    c.execute(
                        "DELETE FROM tusflow_files
                         WHERE batch = $1 AND enqueued_by = $2 AND state = 'pending' AND attempts = 0",
                        &[&self.batch, &self.run],
                    )
                })?;
                if withdrawn > 0 {
                    tracing::info!(withdrawn, "withdrew the files this set of paths had added");
                }
                Err(tusflow_core::ledger::conflict(&key, theirs, ours))
            }
        }
    }

    fn claim(&self, owner: &str, n: usize, lease: Duration, skip: &[String]) -> Result<Vec<Claim>> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let limit = i64::try_from(n).unwrap_or(i64::MAX);
        let rows = self.with(|c| {
            let mut t = c.transaction()?;
            // The claimable index in key order, whatever the planner's statistics say:
            // taken just after a batch was enqueued, they see a few rows, and a plan
            // that sorts all of them (120 ms a claim at 100,000 rows).
            t.batch_execute(
                "SET LOCAL enable_sort = off; SET LOCAL enable_bitmapscan = off;
                 SET LOCAL enable_seqscan = off",
            )?;
            let rows = t.query(
                // (A CTE: evaluated once. A LIMIT in an UPDATE's FROM subquery may
                // be run again per row, and claim more than asked. The rows are
                // updated by their ctid, as locked.)
                "WITH free AS (
                     SELECT ctid FROM tusflow_files
                     WHERE batch = $1 AND state IN ('pending', 'active')
                       AND (state = 'pending' OR lease_until < now())
                       AND NOT (key = ANY($5))
                     ORDER BY key
                     LIMIT $4
                     FOR UPDATE SKIP LOCKED
                 )
                 UPDATE tusflow_files f
                 SET state = 'active', owner = $2,
                     lease_until = now() + make_interval(secs => $3),
                     attempts = f.attempts + 1, updated = now()
                 FROM free
                 WHERE f.ctid = free.ctid
                 RETURNING f.key, f.size, f.url, f.acked, f.attempts",
                &[&self.batch, &owner, &secs(lease), &limit, &skip],
            )?;
            t.commit()?;
            Ok(rows)
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
        let n = self.with(|c| self.write_record(c, owner, key, url, offset))?;
        Ok(n == 1)
    }

    fn note_progress(&self, owner: &str, key: &str, url: &str, offset: u64) -> Result<bool> {
        let note = |c: &mut postgres::Client| self.write_record(c, owner, key, url, offset);
        match self.db.try_with(note) {
            Some(n) => Ok(n? == 1),
            // Busy (a slow database): skipped, the upload does not wait on it.
            None => Ok(true),
        }
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

    fn unfinished(&self, skip: &[String]) -> Result<bool> {
        self.with(|c| {
            Ok(c.query_one(
                "SELECT EXISTS (SELECT 1 FROM tusflow_files
                                WHERE batch = $1 AND state IN ('pending', 'active')
                                  AND NOT (key = ANY($2)))",
                &[&self.batch, &skip],
            )?
            .get(0))
        })
    }

    fn failures(&self, limit: usize) -> Result<Vec<(String, String)>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self.with(|c| {
            c.query(
                "SELECT key, COALESCE(last_error, '') FROM tusflow_files
                 WHERE batch = $1 AND state = 'failed' ORDER BY updated DESC LIMIT $2",
                &[&self.batch, &limit],
            )
        })?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    fn retry_failed(&self) -> Result<u64> {
        self.with(|c| {
            c.execute(
                "UPDATE tusflow_files SET state = 'pending', last_error = NULL, updated = now()
                 WHERE batch = $1 AND state = 'failed'",
                &[&self.batch],
            )
        })
    }

    fn forget(&self) -> Result<u64> {
        self.with(|c| c.execute("DELETE FROM tusflow_files WHERE batch = $1", &[&self.batch]))
    }
}
