//! A [`UrlStore`] on PostgreSQL: the upload URLs of every machine in one table, so an
//! upload one machine began is continued by another (`tusflow upload` on machine B
//! finds machine A's upload of the same file by its fingerprint: the content's, or
//! the fast one's size, time and edges, never its absolute path).

use std::fmt;

use tusflow_core::store::{UploadRecord, UrlStore};
use tusflow_core::{Error, Result};

use crate::db::Db;

/// Upload URLs shared by every machine that uses the database.
pub struct PgStore {
    db: Db,
    /// This machine: a record's source (its path) means something only here.
    host: String,
}

impl fmt::Debug for PgStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgStore")
            .field("database", &self.db.shown)
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connect to the database at `url`, creating or migrating the tables.
    pub fn connect(url: &str) -> Result<Self> {
        Ok(PgStore {
            db: Db::connect(url, "store")?,
            host: tusflow_core::ledger::hostname(),
        })
    }

    /// The database, as messages name it (`host:port/db`).
    pub fn database(&self) -> &str {
        &self.db.shown
    }

    fn records(&self, rows: Vec<postgres::Row>) -> Result<Vec<UploadRecord>> {
        rows.into_iter()
            .map(|r| {
                let text: String = r.get(0);
                serde_json::from_str(&text).map_err(|e| {
                    Error::store(format!(
                        "the store database at {} holds a record that does not read back: {e}",
                        self.db.shown
                    ))
                })
            })
            .collect()
    }
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl UrlStore for PgStore {
    fn find(&self, fingerprint: &str) -> Result<Vec<UploadRecord>> {
        let rows = self.db.with(|c| {
            c.query(
                "SELECT record FROM tusflow_uploads WHERE fingerprint = $1 ORDER BY updated DESC",
                &[&fingerprint],
            )
        })?;
        self.records(rows)
    }

    fn add(&self, record: &UploadRecord) -> Result<()> {
        let text = serde_json::to_string(record)
            .map_err(|e| Error::internal(format!("a record does not serialize: {e}")))?;
        self.db.with(|c| {
            c.execute(
                "INSERT INTO tusflow_uploads (fingerprint, url, host, source, endpoint, updated, record)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (fingerprint, url) DO UPDATE
                 SET host = $3, source = $4, endpoint = $5, updated = $6, record = $7",
                &[
                    &record.fingerprint,
                    &record.url,
                    &self.host,
                    &record.source,
                    &record.endpoint,
                    &to_i64(record.updated),
                    &text,
                ],
            )
        })?;
        Ok(())
    }

    fn remove(&self, fingerprint: &str, url: &str) -> Result<bool> {
        let n = self.db.with(|c| {
            c.execute(
                "DELETE FROM tusflow_uploads WHERE fingerprint = $1 AND url = $2",
                &[&fingerprint, &url],
            )
        })?;
        Ok(n > 0)
    }

    fn list(&self) -> Result<Vec<UploadRecord>> {
        let rows = self.db.with(|c| {
            c.query(
                "SELECT record FROM tusflow_uploads ORDER BY updated DESC",
                &[],
            )
        })?;
        self.records(rows)
    }

    /// This machine's records of `source` only: the same path on another machine is
    /// another file.
    fn find_by_source(&self, endpoint: Option<&str>, source: &str) -> Result<Vec<UploadRecord>> {
        let rows = self.db.with(|c| {
            c.query(
                "SELECT record FROM tusflow_uploads
                 WHERE host = $1 AND source = $2 AND endpoint IS NOT DISTINCT FROM $3
                 ORDER BY updated DESC",
                &[&self.host, &source, &endpoint],
            )
        })?;
        self.records(rows)
    }

    fn remove_url(&self, url: &str) -> Result<usize> {
        let n = self
            .db
            .with(|c| c.execute("DELETE FROM tusflow_uploads WHERE url = $1", &[&url]))?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    fn location(&self) -> String {
        format!("postgres {}", self.db.shown)
    }
}
