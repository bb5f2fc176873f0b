//! One connection to PostgreSQL, opened again when it was lost; TLS with rustls (the
//! same trust as the tus client's: the platform's roots, plus `sslrootcert`); and
//! messages that name `host:port/db`, never the password.

use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use postgres::{Client, Socket};
use tusflow_core::{Error, Result};

/// How long a connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the server may take over a statement (and the network over sending it).
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

/// The advisory lock key under which the schema is created or migrated.
const SCHEMA_LOCK: i64 = 0x0074_7573_666c_6f77; // "tusflow"

/// Every table and index of the current version, each created when missing: version
/// 1 is `tusflow_files` (the ledger), version 2 adds `tusflow_uploads` (the URL store),
/// version 3 `tusflow_files.enqueued_by` (who added a file: a set of paths refused is
/// withdrawn) and the index of claimable files in key order, in place of version 1's index by
/// state (a claim then never walks the files done, whatever the planner's statistics
/// say of a table that grew since they were taken).
const SCHEMA: &str = "
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
        enqueued_by TEXT,
        created TIMESTAMPTZ NOT NULL DEFAULT now(),
        updated TIMESTAMPTZ NOT NULL DEFAULT now(),
        PRIMARY KEY (batch, key)
    );
    ALTER TABLE tusflow_files ADD COLUMN IF NOT EXISTS enqueued_by TEXT;
    DROP INDEX IF EXISTS tusflow_files_state;
    CREATE INDEX IF NOT EXISTS tusflow_files_claimable ON tusflow_files (batch, key)
        WHERE state IN ('pending', 'active');
    CREATE TABLE IF NOT EXISTS tusflow_uploads (
        fingerprint TEXT NOT NULL,
        url TEXT NOT NULL,
        host TEXT NOT NULL,
        source TEXT,
        endpoint TEXT,
        updated BIGINT NOT NULL,
        record TEXT NOT NULL,
        PRIMARY KEY (fingerprint, url)
    );
    CREATE INDEX IF NOT EXISTS tusflow_uploads_source ON tusflow_uploads (host, source);
";

/// The connection. `postgres::Client` closes by blocking on a runtime of its own,
/// which panics inside an async runtime: it is dropped on a thread of its own, so a
/// ledger or store may be dropped anywhere.
struct Conn(Option<Client>);

impl Drop for Conn {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            let _ = std::thread::spawn(move || drop(c)).join();
        }
    }
}

/// A database: its connection, and how to open it again.
pub(crate) struct Db {
    client: Mutex<Conn>,
    config: postgres::Config,
    tls: Tls,
    /// `host:port/db`, for messages (never the password).
    pub(crate) shown: String,
    /// What it is for, in messages: "ledger", "store".
    what: &'static str,
}

impl Db {
    /// Connect to `url` (a `postgres://` URL or a `key=value` string; `sslrootcert`
    /// names a PEM of CAs to trust besides the platform's; without a password in it,
    /// `PGPASSWORD` is used when set).
    pub(crate) fn connect(url: &str, what: &'static str) -> Result<Self> {
        let shown = shown(url);
        if let Some((scheme, _)) = url.split_once("://")
            && !matches!(scheme, "postgres" | "postgresql")
        {
            return Err(Error::config(format!(
                "the {what} URL is a {scheme}:// URL: it takes postgres://USER@HOST/DB (or key=value pairs)"
            )));
        }
        let (url, rootcert) = take_sslrootcert(url);
        let mut config: postgres::Config = url.parse().map_err(|e: postgres::Error| {
            Error::config(format!(
                "the {what} URL is not a PostgreSQL connection string: {}",
                first_line(&e)
            ))
        })?;
        // As libpq: a password not in the URL may come from PGPASSWORD, so that it is
        // in no command line.
        if config.get_password().is_none()
            && let Some(pw) = std::env::var_os("PGPASSWORD")
        {
            config.password(pw.as_encoded_bytes());
        }
        let mut roots = Vec::new();
        if let Some(path) = rootcert {
            roots.push(
                std::fs::read(&path)
                    .map_err(|e| Error::config(format!("cannot read sslrootcert {path}: {e}")))?,
            );
        }
        // A dead host or a cut network is found out in seconds, not at the kernel's
        // two hours; a server that takes a statement and never answers it is bounded
        // by the session's statement and lock timeouts (set at connect).
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        config
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(10))
            .keepalives_interval(Duration::from_secs(5))
            .keepalives_retries(3)
            .tcp_user_timeout(STATEMENT_TIMEOUT);
        // As libpq: `sslmode=prefer` (the default) encrypts when the server can, without
        // checking its certificate (psql connects where tusflow does); `require`
        // checks it against the platform's roots and `sslrootcert`.
        let verify = config.get_ssl_mode() == postgres::config::SslMode::Require;
        let tls = Tls(Arc::new(tusflow_core::service::tls_client_config(
            &roots, None, !verify,
        )?));
        let client = open(&config, &tls, &shown, what)?;
        let db = Db {
            client: Mutex::new(Conn(Some(client))),
            config,
            tls,
            shown,
            what,
        };
        db.migrate()?;
        Ok(db)
    }

    /// Create the tables, or bring them to this version, under an advisory lock (many
    /// workers start at once); a schema newer than this crate's is refused before
    /// anything is changed.
    fn migrate(&self) -> Result<()> {
        // The schema as it is, read without a lock or a write: most connects end here
        // (and a role that may only read can still ask for totals).
        let current: Option<i32> = self.with(|c| {
            let exists: bool = c
                .query_one("SELECT to_regclass('tusflow_schema') IS NOT NULL", &[])?
                .get(0);
            if !exists {
                return Ok(None);
            }
            Ok(
                c.query_opt("SELECT version FROM tusflow_schema WHERE id = 1", &[])?
                    .map(|r| r.get(0)),
            )
        })?;
        if current.is_some_and(|v| v >= crate::SCHEMA_VERSION) {
            return self.refuse_newer(current);
        }
        let version = self.with(|c| {
            let mut t = c.transaction()?;
            t.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])?;
            t.batch_execute(
                "CREATE TABLE IF NOT EXISTS tusflow_schema (
                     id INT PRIMARY KEY CHECK (id = 1),
                     version INT NOT NULL
                 )",
            )?;
            let found: Option<i32> = t
                .query_opt("SELECT version FROM tusflow_schema WHERE id = 1", &[])?
                .map(|r| r.get(0));
            if found.is_some_and(|v| v > crate::SCHEMA_VERSION) {
                return Ok(found);
            }
            t.batch_execute(SCHEMA)?;
            t.execute(
                "INSERT INTO tusflow_schema (id, version) VALUES (1, $1)
                 ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version",
                &[&crate::SCHEMA_VERSION],
            )?;
            t.commit()?;
            Ok(found)
        })?;
        if version.is_some_and(|v| v < crate::SCHEMA_VERSION) {
            tracing::info!(database = %self.shown, from = version, to = crate::SCHEMA_VERSION, "migrated the schema");
        }
        self.refuse_newer(version)
    }

    /// An error when `version` is newer than this crate's.
    fn refuse_newer(&self, version: Option<i32>) -> Result<()> {
        match version {
            Some(v) if v > crate::SCHEMA_VERSION => Err(Error::store(format!(
                "the {} database at {} has schema version {v}, newer than this tusflow's {}: upgrade tusflow",
                self.what,
                self.shown,
                crate::SCHEMA_VERSION
            ))),
            _ => Ok(()),
        }
    }

    /// [`Db::with`], unless another call has the connection now: then `None`, at once.
    pub(crate) fn try_with<T>(
        &self,
        f: impl FnOnce(&mut Client) -> std::result::Result<T, postgres::Error>,
    ) -> Option<Result<T>> {
        let c = match self.client.try_lock() {
            Ok(c) => c,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        Some(self.run(c, f))
    }

    /// Run `f` on the connection; one that was lost (the database restarted, the
    /// network cut) is opened again first. A failed call is not repeated: the caller
    /// decides (a worker backs off and tries again).
    pub(crate) fn with<T>(
        &self,
        f: impl FnOnce(&mut Client) -> std::result::Result<T, postgres::Error>,
    ) -> Result<T> {
        let c = self.client.lock().unwrap_or_else(|p| p.into_inner());
        self.run(c, f)
    }

    fn run<T>(
        &self,
        mut c: std::sync::MutexGuard<'_, Conn>,
        f: impl FnOnce(&mut Client) -> std::result::Result<T, postgres::Error>,
    ) -> Result<T> {
        if c.0.as_ref().is_none_or(Client::is_closed) {
            // The old one is dropped on a thread of its own, as at the end.
            drop(Conn(c.0.take()));
            c.0 = Some(open(&self.config, &self.tls, &self.shown, self.what)?);
            tracing::info!(database = %self.shown, "reconnected to the {} database", self.what);
        }
        let client = c.0.as_mut().expect("opened above");
        f(client).map_err(|e| {
            Error::store(format!(
                "the {} database at {}: {}",
                self.what,
                self.shown,
                first_line(&e)
            ))
        })
    }
}

fn open(config: &postgres::Config, tls: &Tls, shown: &str, what: &str) -> Result<Client> {
    let cannot = |e: postgres::Error| {
        Error::store(format!(
            "cannot use the {what} database at {shown}: {}",
            first_line(&e)
        ))
    };
    let mut client = config.connect(tls.clone()).map_err(cannot)?;
    client
        .batch_execute(&format!(
            "SET statement_timeout = {}; SET lock_timeout = {}",
            STATEMENT_TIMEOUT.as_millis(),
            (STATEMENT_TIMEOUT / 3).as_millis()
        ))
        .map_err(cannot)?;
    Ok(client)
}

/// `url` without its `sslrootcert` parameter (rustls reads it here; the driver does
/// not know it), and the parameter's path.
fn take_sslrootcert(url: &str) -> (String, Option<String>) {
    let is_url = url.starts_with("postgres://") || url.starts_with("postgresql://");
    if is_url {
        let Some((base, query)) = url.split_once('?') else {
            return (url.to_owned(), None);
        };
        let mut path = None;
        let kept: Vec<&str> = query
            .split('&')
            .filter(|p| match p.strip_prefix("sslrootcert=") {
                Some(v) => {
                    path = Some(percent_decode(v));
                    false
                }
                None => true,
            })
            .collect();
        let url = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        (url, path)
    } else {
        let mut path = None;
        let kept: Vec<&str> = url
            .split_whitespace()
            .filter(|p| match p.strip_prefix("sslrootcert=") {
                Some(v) => {
                    path = Some(v.trim_matches('\'').to_owned());
                    false
                }
                None => true,
            })
            .collect();
        (kept.join(" "), path)
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && let (Some(h), Some(l)) = (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `host:port/dbname` of a connection string, without user or password.
pub fn shown(url: &str) -> String {
    let (url, _) = take_sslrootcert(url);
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

/// The first line of a database error: the server's message, or the driver's words
/// and their causes ("error connecting to server: Connection refused"). A connection
/// string is never in them. A certificate the platform does not trust says how to
/// trust it.
pub(crate) fn first_line(e: &postgres::Error) -> String {
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
    let line = text.lines().next().unwrap_or("").to_owned();
    if line.contains("certificate") {
        format!(
            "{line} (the database's TLS certificate is not trusted: give its CA with sslrootcert=PATH in the URL)"
        )
    } else {
        line
    }
}

/// TLS to the database with rustls (no channel binding: SCRAM goes without it, as
/// with most drivers).
#[derive(Clone)]
struct Tls(Arc<rustls::ClientConfig>);

impl MakeTlsConnect<Socket> for Tls {
    type Stream = Stream;
    type TlsConnect = Connect;
    type Error = rustls::pki_types::InvalidDnsNameError;

    fn make_tls_connect(&mut self, domain: &str) -> std::result::Result<Connect, Self::Error> {
        let name = rustls::pki_types::ServerName::try_from(domain.to_owned())?;
        Ok(Connect(Arc::clone(&self.0), name))
    }
}

struct Connect(
    Arc<rustls::ClientConfig>,
    rustls::pki_types::ServerName<'static>,
);

impl TlsConnect<Socket> for Connect {
    type Stream = Stream;
    type Error = std::io::Error;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<Stream>> + Send>>;

    fn connect(self, socket: Socket) -> Self::Future {
        let connector = tokio_rustls::TlsConnector::from(self.0);
        Box::pin(async move { Ok(Stream(connector.connect(self.1, socket).await?)) })
    }
}

/// A TLS stream to the database.
pub(crate) struct Stream(tokio_rustls::client::TlsStream<Socket>);

impl TlsStream for Stream {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

impl tokio::io::AsyncRead for Stream {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Stream {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslrootcert_is_taken_out_of_both_forms() {
        assert_eq!(
            take_sslrootcert("postgres://u:p@h/db?sslmode=require&sslrootcert=%2Fetc%2Fca.pem"),
            (
                "postgres://u:p@h/db?sslmode=require".into(),
                Some("/etc/ca.pem".into())
            )
        );
        assert_eq!(
            take_sslrootcert("postgres://h/db?sslrootcert=ca.pem"),
            ("postgres://h/db".into(), Some("ca.pem".into()))
        );
        assert_eq!(
            take_sslrootcert("host=h sslrootcert=/ca.pem dbname=d"),
            ("host=h dbname=d".into(), Some("/ca.pem".into()))
        );
        assert_eq!(
            shown("postgres://u:SECRET@db.internal:6000/t?sslrootcert=x"),
            "db.internal:6000/t"
        );
    }
}
