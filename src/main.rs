//! The `tusflow` command: resumable uploads from the shell.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use http::header::{HeaderName, HeaderValue};
use serde_json::json;
use tusflow::client::parse_http_url;
use tusflow::size::parse_size;
use tusflow::store::UrlStore as _;
use tusflow::{Client, Error, Url, protocol};

/// Exit code when every upload completed.
const OK: u8 = 0;
/// Exit code when an upload or request failed.
const FAILED: u8 = 1;
/// Exit code for usage and configuration errors.
const USAGE: u8 = 2;

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
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Upload files (a new upload each, or continue one with --url)
    Upload(Box<UploadArgs>),
    /// Show a server's capabilities (OPTIONS)
    Info {
        /// The creation endpoint, e.g. http://127.0.0.1:1080/files/
        endpoint: String,
        #[command(flatten)]
        conn: ConnArgs,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// List the stored uploads that a later `upload` of the same file would continue
    List {
        #[command(flatten)]
        store: StoreArgs,
        /// One JSON object per upload
        #[arg(long)]
        json: bool,
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
}

#[derive(Args)]
struct UploadArgs {
    /// Files to upload
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// The creation endpoint, e.g. http://127.0.0.1:1080/files/
    #[arg(short, long)]
    endpoint: Option<String>,
    /// Continue the existing upload at this URL instead of creating one (one file only)
    #[arg(long, value_name = "UPLOAD_URL")]
    url: Option<String>,
    /// Bytes per PATCH, e.g. 8MiB (default: the whole rest of the file in one)
    #[arg(long, value_name = "SIZE")]
    chunk_size: Option<String>,
    /// Stop once the server has this many bytes, e.g. 100MiB
    #[arg(long, value_name = "BYTES")]
    stop_at: Option<String>,
    /// Metadata pair, repeatable; filename and filetype are added unless given
    #[arg(short, long = "meta", value_name = "KEY=VALUE")]
    meta: Vec<String>,
    /// Cap the upload bandwidth, shared by all files, e.g. 20MB/s or 512KiB
    #[arg(long, value_name = "SIZE/s")]
    rate_limit: Option<String>,
    /// Send Upload-Checksum with every chunk: sha256, sha512, sha1, md5, crc32, or
    /// "any" (the strongest the server supports)
    #[arg(long, value_name = "ALGO")]
    checksum: Option<String>,
    #[command(flatten)]
    conn: ConnArgs,
    #[command(flatten)]
    store: StoreArgs,
    /// Do not look up or remember uploads in the store
    #[arg(long, conflicts_with = "path")]
    no_store: bool,
    /// How files are recognised in the store: fast (size, mtime, first and last 64 KiB)
    /// or content (xxh3 of every byte)
    #[arg(long, value_name = "MODE", default_value = "fast", value_parser = ["fast", "content"])]
    fingerprint: String,
    /// One JSON object per file on stdout
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct StoreArgs {
    /// The store of upload URLs (default: tusflow/uploads.redb in the user's data
    /// directory)
    #[arg(long = "store", value_name = "PATH")]
    path: Option<PathBuf>,
}

impl StoreArgs {
    fn path(&self) -> Result<PathBuf, Failure> {
        self.path
            .clone()
            .or_else(tusflow::store::redb::default_path)
            .ok_or_else(|| {
                Failure::Usage("no data directory to keep the store in: give --store PATH".into())
            })
    }

    fn open(&self) -> Result<tusflow::store::redb::RedbStore, Failure> {
        Ok(tusflow::store::redb::RedbStore::open(self.path()?)?)
    }
}

#[derive(Args)]
struct ConnArgs {
    /// Header sent with every request, repeatable: 'Name: value'
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// Seconds connecting may take
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    connect_timeout: f64,
    /// Seconds a request may go without moving a byte
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    stall_timeout: f64,
    /// Also trust the CA certificates in this PEM file
    #[arg(long, value_name = "FILE")]
    cacert: Option<PathBuf>,
    /// Client certificate: a PEM file with the certificate and its private key
    #[arg(long, value_name = "FILE")]
    cert: Option<PathBuf>,
    /// Do NOT verify the server's TLS certificate (test servers only)
    #[arg(long)]
    insecure: bool,
    /// Send PATCH and DELETE as POST with X-HTTP-Method-Override
    #[arg(long)]
    method_override: bool,
    /// Retries after a failure without progress (backoff, offset re-sync); 0 = none
    #[arg(long, value_name = "N", default_value_t = 5)]
    retries: u32,
}

/// A usage or configuration problem (exit 2), or a failure (exit 1).
enum Failure {
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
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
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
    let result = rt.block_on(async {
        match cli.command {
            Command::Upload(args) => upload(*args).await,
            Command::List { store, json } => list(&store, json),
            Command::Forget {
                upload_url,
                all,
                expired,
                store,
            } => forget(upload_url.as_deref(), all, expired, &store),
            Command::Info {
                endpoint,
                conn,
                json,
            } => info(&endpoint, &conn, json).await,
            Command::Status {
                upload_url,
                conn,
                json,
            } => status(&upload_url, &conn, json).await,
        }
    });
    match result {
        Ok(code) => ExitCode::from(code),
        Err(Failure::Usage(msg)) => {
            eprintln!("tusflow: {msg}");
            ExitCode::from(USAGE)
        }
        Err(Failure::Failed) => ExitCode::from(FAILED),
    }
}

fn secs(what: &str, s: f64) -> Result<Duration, Failure> {
    Duration::try_from_secs_f64(s)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            Failure::Usage(format!(
                "invalid --{what} {s}: expected a positive number of seconds"
            ))
        })
}

fn read_file(what: &str, path: &PathBuf) -> Result<Vec<u8>, Failure> {
    std::fs::read(path).map_err(|e| {
        Failure::Usage(format!(
            "cannot read the {what} file {}: {e}",
            path.display()
        ))
    })
}

/// Parse `Name: value`; the error names the header but never shows its value.
fn parse_header(text: &str) -> Result<(HeaderName, HeaderValue), Failure> {
    let Some((name, value)) = text.split_once(':') else {
        let name = text.split_whitespace().next().unwrap_or("");
        return Err(Failure::Usage(format!(
            "invalid header {name:?}: expected 'Name: value'"
        )));
    };
    let name = name.trim();
    let n = HeaderName::try_from(name)
        .map_err(|_| Failure::Usage(format!("invalid header name {name:?}")))?;
    let v = HeaderValue::try_from(value.trim())
        .map_err(|_| Failure::Usage(format!("invalid value for header {name:?}")))?;
    Ok((n, v))
}

/// The middleware stack the flags describe, built by the plugin registry exactly as a
/// config file's `middleware` section would be.
fn middleware(
    conn: &ConnArgs,
    rate_limit: Option<&str>,
    checksum: Option<&str>,
    chunk_size: Option<u64>,
) -> Result<Vec<tusflow::core::BoxLayer>, Failure> {
    let mut stack = vec!["log".to_owned()];
    let mut config = serde_json::Map::new();
    if conn.retries > 0 {
        stack.push("retry".into());
        config.insert("retry".into(), json!({ "max_attempts": conn.retries + 1 }));
    }
    if let Some(rate) = rate_limit {
        let bytes = parse_size(rate.trim().trim_end_matches("/s")).map_err(|_| {
            Failure::Usage(format!(
                "invalid --rate-limit {rate:?}: expected a size per second, e.g. 20MB/s"
            ))
        })?;
        stack.push("rate-limit".into());
        config.insert("rate-limit".into(), json!({ "bytes_per_second": bytes }));
    }
    if let Some(algo) = checksum {
        let algorithms = if algo.eq_ignore_ascii_case("any") {
            json!(["sha256", "sha512", "sha1", "md5", "crc32"])
        } else {
            json!([algo])
        };
        let mut section = json!({ "algorithms": algorithms });
        if let Some(c) = chunk_size {
            section["chunk_size"] = json!(c);
        }
        stack.push("checksum".into());
        config.insert("checksum".into(), section);
    }
    let figment = figment::Figment::from(figment::providers::Serialized::defaults(
        json!({ "middleware": config }),
    ));
    Ok(tusflow::plugins::builtin().build(&stack, &figment)?)
}

fn client(
    endpoint: Option<&str>,
    conn: &ConnArgs,
    layers: Vec<tusflow::core::BoxLayer>,
) -> Result<Client, Failure> {
    let mut b = Client::builder()
        .layers(layers)
        .connect_timeout(secs("connect-timeout", conn.connect_timeout)?)
        .stall_timeout(secs("stall-timeout", conn.stall_timeout)?)
        .method_override(conn.method_override);
    if let Some(e) = endpoint {
        b = b.endpoint(e);
    }
    for h in &conn.headers {
        let (n, v) = parse_header(h)?;
        b = b.header(n, v);
    }
    if let Some(p) = &conn.cacert {
        b = b.add_root_certificate_pem(read_file("--cacert", p)?);
    }
    if let Some(p) = &conn.cert {
        b = b.identity_pem(read_file("--cert", p)?);
    }
    if conn.insecure {
        eprintln!("tusflow: WARNING: --insecure: the server's TLS certificate is NOT verified");
        b = b.danger_accept_invalid_certs(true);
    }
    Ok(b.build()?)
}

async fn upload(args: UploadArgs) -> Result<u8, Failure> {
    if args.endpoint.is_none() && args.url.is_none() {
        return Err(Failure::Usage(
            "upload needs --endpoint URL (or --url UPLOAD_URL to continue an upload)".into(),
        ));
    }
    let url = match &args.url {
        Some(u) if args.paths.len() > 1 => {
            let _ = u;
            return Err(Failure::Usage(
                "--url continues one upload: give exactly one file".into(),
            ));
        }
        Some(u) => Some(parse_http_url("--url", u)?),
        None => None,
    };
    let chunk_size = args.chunk_size.as_deref().map(parse_size).transpose()?;
    let stop_at = args.stop_at.as_deref().map(parse_size).transpose()?;
    let mut meta = tusflow::Metadata::new();
    for m in &args.meta {
        let (k, v) = m
            .split_once('=')
            .ok_or_else(|| Failure::Usage(format!("invalid --meta {m:?}: expected KEY=VALUE")))?;
        meta.insert(k, v)?;
    }
    let layers = middleware(
        &args.conn,
        args.rate_limit.as_deref(),
        args.checksum.as_deref(),
        chunk_size,
    )?;
    let mut client = client(args.endpoint.as_deref(), &args.conn, layers)?;
    if !args.no_store {
        let mode = match args.fingerprint.as_str() {
            "content" => tusflow::fingerprint::Mode::Content,
            _ => tusflow::fingerprint::Mode::Fast,
        };
        client = client.with_resume(
            std::sync::Arc::new(args.store.open()?),
            std::sync::Arc::new(tusflow::fingerprint::Xxh3Fingerprinter::new(mode)),
        );
    }

    let mut failed = false;
    for path in &args.paths {
        let mut up = client.uploader(path.as_path()).with_metadata(meta.clone());
        if let Some(c) = chunk_size {
            up = up.chunk_size(c);
        }
        if let Some(u) = &url {
            up = up.url(u.clone());
        }
        let result = match stop_at {
            Some(s) => up.upload_until(s).await,
            None => up.upload().await,
        };
        match result {
            Ok(done) => {
                if args.json {
                    println!(
                        "{}",
                        json!({
                            "path": path.display().to_string(),
                            "url": done.url.as_str(),
                            "size": done.length,
                            "offset": done.offset,
                            "complete": done.complete,
                            "resumed": done.resumed,
                        })
                    );
                } else if done.complete {
                    println!(
                        "{}: complete, {} bytes -> {}",
                        path.display(),
                        done.length,
                        done.url
                    );
                } else {
                    println!(
                        "{}: stopped at {} of {} bytes -> {}",
                        path.display(),
                        done.offset,
                        done.length,
                        done.url
                    );
                }
            }
            Err(e) => {
                failed = true;
                eprintln!("tusflow: {}: {e}", path.display());
                if args.json {
                    println!(
                        "{}",
                        json!({
                            "path": path.display().to_string(),
                            "url": up.upload_url().map(Url::as_str),
                            "complete": false,
                            "error": e.to_string(),
                        })
                    );
                }
            }
        }
    }
    Ok(if failed { FAILED } else { OK })
}

fn list(store: &StoreArgs, json: bool) -> Result<u8, Failure> {
    let path = store.path()?;
    if !path.exists() {
        if !json {
            println!("no stored uploads ({} does not exist)", path.display());
        }
        return Ok(OK);
    }
    let records = store.open()?.list()?;
    let now = tusflow::store::unix_now();
    for r in &records {
        let age = now.saturating_sub(r.created);
        if json {
            println!(
                "{}",
                json!({
                    "path": r.source,
                    "url": r.url,
                    "size": r.length,
                    "offset": r.offset,
                    "age_seconds": age,
                    "expires": r.expires,
                    "expired": r.is_expired(now),
                    "fingerprint": r.fingerprint,
                })
            );
        } else {
            println!(
                "{}  {}  {}/{} bytes  {}{}",
                r.source.as_deref().unwrap_or("(bytes)"),
                r.url,
                r.offset.map_or("?".into(), |o| o.to_string()),
                r.length.map_or("?".into(), |l| l.to_string()),
                human_age(age),
                if r.is_expired(now) { "  (expired)" } else { "" }
            );
        }
    }
    if !json && records.is_empty() {
        println!("no stored uploads in {}", path.display());
    }
    Ok(OK)
}

fn human_age(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s ago"),
        s if s < 7200 => format!("{}m ago", s / 60),
        s if s < 172_800 => format!("{}h ago", s / 3600),
        s => format!("{}d ago", s / 86_400),
    }
}

fn forget(url: Option<&str>, all: bool, expired: bool, store: &StoreArgs) -> Result<u8, Failure> {
    let path = store.path()?;
    if !path.exists() {
        println!("forgot 0 uploads");
        return Ok(OK);
    }
    let store = store.open()?;
    let now = tusflow::store::unix_now();
    let mut n = 0;
    match url {
        Some(u) => {
            n = store.remove_url(u)?;
            if n == 0 {
                eprintln!(
                    "tusflow: no stored upload has the URL {}",
                    u.split('?').next().unwrap_or(u)
                );
                return Err(Failure::Failed);
            }
        }
        None => {
            for r in store.list()? {
                if all || (expired && r.is_expired(now)) {
                    n += usize::from(store.remove(&r.fingerprint, &r.url)?);
                }
            }
        }
    }
    println!("forgot {n} upload{}", if n == 1 { "" } else { "s" });
    Ok(OK)
}

async fn info(endpoint: &str, conn: &ConnArgs, json: bool) -> Result<u8, Failure> {
    let client = client(Some(endpoint), conn, middleware(conn, None, None, None)?)?;
    let caps = client.capabilities().await?;
    if json {
        println!(
            "{}",
            json!({
                "versions": caps.versions,
                "extensions": caps.extensions,
                "max_size": caps.max_size,
                "checksum_algorithms": caps.checksum_algorithms,
            })
        );
    } else {
        let list = |v: &[String]| {
            if v.is_empty() {
                "(none)".to_owned()
            } else {
                v.join(", ")
            }
        };
        println!("versions:            {}", list(&caps.versions));
        println!("extensions:          {}", list(&caps.extensions));
        println!(
            "max size:            {}",
            caps.max_size
                .map_or("(not given)".to_owned(), |n| format!("{n} bytes"))
        );
        println!("checksum algorithms: {}", list(&caps.checksum_algorithms));
    }
    Ok(OK)
}

async fn status(upload_url: &str, conn: &ConnArgs, json: bool) -> Result<u8, Failure> {
    let url = parse_http_url("upload URL", upload_url)?;
    let client = client(None, conn, middleware(conn, None, None, None)?)?;
    let st = match client.status(&url).await {
        Ok(st) => st,
        Err(e) if e.is_gone() => {
            eprintln!("tusflow: {e} (the upload does not exist any more)");
            return Err(Failure::Failed);
        }
        Err(e) => return Err(e.into()),
    };
    let expires = st.expires.map(httpdate::fmt_http_date);
    let metadata: serde_json::Map<String, serde_json::Value> = st
        .metadata
        .iter()
        .flat_map(|m| m.iter())
        .map(|(k, v)| (k.to_owned(), String::from_utf8_lossy(v).into_owned().into()))
        .collect();
    if json {
        println!(
            "{}",
            json!({
                "url": url.as_str(),
                "offset": st.offset,
                "length": st.length,
                "complete": st.is_complete(),
                "expires": expires,
                "metadata": metadata,
            })
        );
    } else {
        println!("url:      {}", protocol::redact_url(&url));
        println!("offset:   {}", st.offset);
        println!(
            "length:   {}",
            st.length.map_or("(deferred)".to_owned(), |n| n.to_string())
        );
        println!("complete: {}", st.is_complete());
        if let Some(e) = expires {
            println!("expires:  {e}");
        }
        for (k, v) in metadata {
            println!("metadata: {k} = {}", v.as_str().unwrap_or_default());
        }
    }
    Ok(OK)
}
