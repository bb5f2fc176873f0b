//! The flags, and the config layer they make.

use std::path::PathBuf;

use clap::Args;
use http::header::{HeaderName, HeaderValue};
use serde_json::json;
use tusflow::size::parse_size;

use crate::Failure;

#[derive(Args)]
pub(crate) struct UploadArgs {
    /// Files to upload; "-" reads standard input to its end (its length is sent once
    /// known, with creation-defer-length)
    #[arg(required = true)]
    pub(crate) paths: Vec<PathBuf>,
    /// Continue the existing upload at this URL instead of creating one (one file only)
    #[arg(long, value_name = "UPLOAD_URL")]
    pub(crate) url: Option<String>,
    /// Stop once the server has this many bytes, e.g. 100MiB
    #[arg(long, value_name = "BYTES")]
    pub(crate) stop_at: Option<String>,
    #[command(flatten)]
    pub(crate) common: CommonArgs,
}

#[derive(Args)]
pub(crate) struct BatchArgs {
    /// Files, directories and globs (default: the config's batch.paths)
    pub(crate) paths: Vec<String>,
    /// Globs of paths to leave out (added to the config's batch.exclude)
    #[arg(long, value_name = "GLOB")]
    pub(crate) exclude: Vec<String>,
    /// Upload again files the store records as complete
    #[arg(long)]
    pub(crate) force: bool,
    #[command(flatten)]
    pub(crate) ledger: crate::ledger::LedgerArgs,
    /// How long a claimed file of a shared batch stays this worker's without a
    /// heartbeat, e.g. 30s (the config's ledger.lease)
    #[arg(long, value_name = "DURATION")]
    pub(crate) lease: Option<String>,
    /// Stop each file once the server has this many bytes, e.g. 1MiB (in a shared
    /// batch, the file is given back for another worker to finish)
    #[arg(long, value_name = "SIZE")]
    pub(crate) stop_at: Option<String>,
    #[command(flatten)]
    pub(crate) common: CommonArgs,
}

#[derive(Args)]
pub(crate) struct CommonArgs {
    /// The creation endpoint, e.g. http://127.0.0.1:1080/files/
    #[arg(short, long)]
    pub(crate) endpoint: Option<String>,
    /// Bytes per PATCH, e.g. 8MiB, or "unlimited" (default: the whole rest in one)
    #[arg(long, value_name = "SIZE")]
    pub(crate) chunk_size: Option<String>,
    /// Metadata pair, repeatable; filename and filetype are added unless given
    #[arg(short, long = "meta", value_name = "KEY=VALUE")]
    pub(crate) meta: Vec<String>,
    /// Cap the upload bandwidth, shared by all files, e.g. 20MB/s or 512KiB
    #[arg(long, value_name = "SIZE/s")]
    pub(crate) rate_limit: Option<String>,
    /// Send Upload-Checksum with every chunk: sha256, sha512, sha1, md5, crc32, or
    /// "any" (the strongest the server supports); with --protocol ietf, RFC 9530
    /// Content-Digest: sha256 or sha512 ("any": sha256)
    #[arg(long, value_name = "ALGO")]
    pub(crate) checksum: Option<String>,
    /// Files uploading at once
    #[arg(long, value_name = "N")]
    pub(crate) concurrency: Option<usize>,
    /// Split each file into N partial uploads sent at once, joined on the server
    /// (needs the concatenation extension; else one upload, with a warning)
    #[arg(long, value_name = "N")]
    pub(crate) parallel: Option<usize>,
    /// Write a JSON summary (one entry per file, and totals) to FILE
    #[arg(long, value_name = "FILE")]
    pub(crate) report: Option<PathBuf>,
    /// One JSON object per file on stdout
    #[arg(long)]
    pub(crate) json: bool,
    /// No per-file output (errors still go to stderr)
    #[arg(short, long)]
    pub(crate) quiet: bool,
    #[command(flatten)]
    pub(crate) conn: ConnArgs,
    #[command(flatten)]
    pub(crate) store: StoreArgs,
    /// Do not look up or remember uploads in the store
    #[arg(long, conflicts_with = "path")]
    pub(crate) no_store: bool,
    /// How files are recognised in the store: fast (size, mtime, first and last 64 KiB)
    /// or content (xxh3 of every byte)
    #[arg(long, value_name = "MODE", value_parser = ["fast", "content"])]
    pub(crate) fingerprint: Option<String>,
}

#[derive(Args)]
pub(crate) struct ConnArgs {
    /// Header sent with every request, repeatable: 'Name: value'
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    pub(crate) headers: Vec<String>,
    /// Seconds connecting may take (default 10)
    #[arg(long, value_name = "SECS")]
    pub(crate) connect_timeout: Option<f64>,
    /// Seconds a request may go without moving a byte (default 30)
    #[arg(long, value_name = "SECS")]
    pub(crate) stall_timeout: Option<f64>,
    /// Also trust the CA certificates in this PEM file
    #[arg(long, value_name = "FILE")]
    pub(crate) cacert: Option<PathBuf>,
    /// Client certificate: a PEM file with the certificate and its private key
    #[arg(long, value_name = "FILE")]
    pub(crate) cert: Option<PathBuf>,
    /// Do NOT verify the server's TLS certificate (test servers only)
    #[arg(long)]
    pub(crate) insecure: bool,
    /// Send PATCH and DELETE as POST with X-HTTP-Method-Override
    #[arg(long)]
    pub(crate) method_override: bool,
    /// Retries after a failure without progress (backoff, offset re-sync); 0 = none
    #[arg(long, value_name = "N")]
    pub(crate) retries: Option<u32>,
    /// The protocol: tus (tus 1.0, the default) or ietf (the IETF draft "Resumable
    /// Uploads for HTTP"; the endpoint is then the target resource)
    #[arg(long, value_name = "PROTO", value_parser = ["tus", "ietf"], ignore_case = true)]
    pub(crate) protocol: Option<String>,
    /// The IETF draft's interop version: 8 (the default, the latest) or 6 (drafts -04
    /// and -05: tusd, Apple, tus-js-client's ietf-draft-05)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(6..=8))]
    pub(crate) interop: Option<u64>,
}

#[derive(Args)]
pub(crate) struct StoreArgs {
    /// The store of upload URLs (default: tusflow/uploads.redb in the user's data
    /// directory)
    #[arg(long = "store", value_name = "PATH")]
    pub(crate) path: Option<PathBuf>,
    /// How long to wait for another process holding the store (the config's
    /// `store.wait`; its default when not given).
    #[arg(skip)]
    pub(crate) wait: Option<std::time::Duration>,
}

impl StoreArgs {
    pub(crate) fn path(&self) -> Result<PathBuf, Failure> {
        self.path
            .clone()
            .or_else(tusflow::store::redb::default_path)
            .ok_or_else(|| {
                Failure::Usage("no data directory to keep the store in: give --store PATH".into())
            })
    }

    pub(crate) fn open(&self) -> Result<tusflow::store::redb::RedbStore, Failure> {
        let wait = self
            .wait
            .unwrap_or_else(|| crate::config::StoreConfig::default().wait);
        Ok(tusflow::store::redb::RedbStore::open_waiting(
            self.path()?,
            wait,
        )?)
    }
}

/// Parse `Name: value`; the error names the header but never shows its value.
pub(crate) fn parse_header(text: &str) -> Result<(String, String), Failure> {
    let Some((name, value)) = text.split_once(':') else {
        let name = text.split_whitespace().next().unwrap_or("");
        return Err(Failure::Usage(format!(
            "invalid header {name:?}: expected 'Name: value'"
        )));
    };
    let name = name.trim();
    HeaderName::try_from(name)
        .map_err(|_| Failure::Usage(format!("invalid header name {name:?}")))?;
    HeaderValue::try_from(value.trim())
        .map_err(|_| Failure::Usage(format!("invalid value for header {name:?}")))?;
    Ok((name.to_owned(), value.trim().to_owned()))
}

/// The flags that were given, as the top layer of the config.
pub(crate) fn conn_overrides(
    conn: &ConnArgs,
    o: &mut serde_json::Map<String, serde_json::Value>,
) -> Result<(), Failure> {
    if !conn.headers.is_empty() {
        let mut h = serde_json::Map::new();
        for text in &conn.headers {
            let (n, v) = parse_header(text)?;
            h.insert(n, v.into());
        }
        o.insert("headers".into(), h.into());
    }
    if let Some(p) = &conn.protocol {
        o.insert("protocol".into(), json!(p));
    }
    if let Some(n) = conn.interop {
        tusflow::core::ietf::Interop::new(n)?;
        o.insert("interop".into(), json!(n));
    }
    for (key, v) in [
        ("connect_timeout", conn.connect_timeout),
        ("stall_timeout", conn.stall_timeout),
    ] {
        if let Some(s) = v {
            if !(s.is_finite() && s > 0.0) {
                return Err(Failure::Usage(format!(
                    "invalid --{} {s}: expected a positive number of seconds",
                    key.replace('_', "-")
                )));
            }
            o.insert(key.into(), json!(s));
        }
    }
    if let Some(p) = &conn.cacert {
        o.insert("cacert".into(), json!(p));
    }
    if let Some(p) = &conn.cert {
        o.insert("cert".into(), json!(p));
    }
    if conn.insecure {
        o.insert("insecure".into(), json!(true));
    }
    if conn.method_override {
        o.insert("method_override".into(), json!(true));
    }
    if let Some(n) = conn.retries {
        o.insert(
            "middleware".into(),
            json!({ "retry": { "max_attempts": n + 1 } }),
        );
    }
    Ok(())
}

pub(crate) fn common_overrides(c: &CommonArgs) -> Result<serde_json::Value, Failure> {
    let mut o = serde_json::Map::new();
    conn_overrides(&c.conn, &mut o)?;
    if let Some(e) = &c.endpoint {
        o.insert("endpoint".into(), json!(e));
    }
    if let Some(cs) = &c.chunk_size {
        if !cs.eq_ignore_ascii_case("unlimited") {
            parse_size(cs)?;
        }
        o.insert("chunk_size".into(), json!(cs));
    }
    if !c.meta.is_empty() {
        let mut m = serde_json::Map::new();
        for pair in &c.meta {
            let (k, v) = pair.split_once('=').ok_or_else(|| {
                Failure::Usage(format!("invalid --meta {pair:?}: expected KEY=VALUE"))
            })?;
            tusflow::Metadata::validate_key(k)?;
            m.insert(k.into(), v.into());
        }
        o.insert("metadata".into(), m.into());
    }
    let mw = o.entry("middleware").or_insert_with(|| json!({}));
    if let Some(rate) = &c.rate_limit {
        let bytes = parse_size(rate.trim().trim_end_matches("/s")).map_err(|_| {
            Failure::Usage(format!(
                "invalid --rate-limit {rate:?}: expected a size per second, e.g. 20MB/s"
            ))
        })?;
        mw["rate-limit"] = json!({ "bytes_per_second": bytes });
    }
    if let Some(algo) = &c.checksum {
        let ietf = c
            .conn
            .protocol
            .as_deref()
            .is_some_and(|p| p.eq_ignore_ascii_case("ietf"));
        if ietf
            && !["any", "sha256", "sha512"]
                .iter()
                .any(|a| algo.eq_ignore_ascii_case(a))
        {
            return Err(Failure::Usage(format!(
                "invalid --checksum {algo:?} with --protocol ietf: the draft's Content-Digest (RFC 9530) takes sha256 or sha512"
            )));
        }
        let algorithms = if algo.eq_ignore_ascii_case("any") {
            json!(["sha256", "sha512", "sha1", "md5", "crc32"])
        } else {
            json!([algo])
        };
        mw["checksum"] = json!({ "algorithms": algorithms });
        if let Some(cs) = &c.chunk_size {
            mw["checksum"]["chunk_size"] = json!(cs);
        }
    }
    if let Some(n) = c.parallel {
        if n == 0 {
            return Err(Failure::Usage(
                "invalid --parallel 0: expected at least 1 (1: one upload, no partial uploads)"
                    .into(),
            ));
        }
        o.insert("parallel".into(), json!(n));
    }
    if let Some(n) = c.concurrency {
        if n == 0 {
            return Err(Failure::Usage(
                "invalid --concurrency 0: expected at least 1".into(),
            ));
        }
        o.insert("batch".into(), json!({ "concurrency": n }));
    }
    if c.no_store {
        o.insert("store".into(), json!({ "kind": "none" }));
    } else if let Some(p) = &c.store.path {
        o.insert("store".into(), json!({ "kind": "redb", "path": p }));
    }
    if let Some(m) = &c.fingerprint {
        o.insert("fingerprint".into(), json!({ "mode": m }));
    }
    Ok(o.into())
}

/// The plugins the flags switch on or off, in their recommended places.
pub(crate) fn adjust_stack(stack: &mut Vec<String>, conn: &ConnArgs, common: Option<&CommonArgs>) {
    let mut want = |name: &str, on: bool| {
        if on && !stack.iter().any(|s| s == name) {
            let rank = |n: &str| {
                tusflow::plugins::RECOMMENDED_ORDER
                    .iter()
                    .position(|x| *x == n)
                    .unwrap_or(usize::MAX)
            };
            let at = stack
                .iter()
                .position(|s| rank(s) > rank(name))
                .unwrap_or(stack.len());
            stack.insert(at, name.to_owned());
        } else if !on {
            stack.retain(|s| s != name);
        }
    };
    if let Some(n) = conn.retries {
        want("retry", n > 0);
    }
    if let Some(c) = common {
        if c.rate_limit.is_some() {
            want("rate-limit", true);
        }
        if c.checksum.is_some() {
            want("checksum", true);
        }
    }
}
