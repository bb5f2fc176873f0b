//! The `tusflow` command: resumable uploads from the shell.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

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
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print every setting, where it came from, secrets redacted
    Show,
}

#[derive(Args)]
struct UploadArgs {
    /// Files to upload; "-" reads standard input to its end (its length is sent once
    /// known, with creation-defer-length)
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Continue the existing upload at this URL instead of creating one (one file only)
    #[arg(long, value_name = "UPLOAD_URL")]
    url: Option<String>,
    /// Stop once the server has this many bytes, e.g. 100MiB
    #[arg(long, value_name = "BYTES")]
    stop_at: Option<String>,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Args)]
struct BatchArgs {
    /// Files, directories and globs (default: the config's batch.paths)
    paths: Vec<String>,
    /// Globs of paths to leave out (added to the config's batch.exclude)
    #[arg(long, value_name = "GLOB")]
    exclude: Vec<String>,
    /// Upload again files the store records as complete
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Args)]
struct CommonArgs {
    /// The creation endpoint, e.g. http://127.0.0.1:1080/files/
    #[arg(short, long)]
    endpoint: Option<String>,
    /// Bytes per PATCH, e.g. 8MiB, or "unlimited" (default: the whole rest in one)
    #[arg(long, value_name = "SIZE")]
    chunk_size: Option<String>,
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
    /// Files uploading at once
    #[arg(long, value_name = "N")]
    concurrency: Option<usize>,
    /// Split each file into N partial uploads sent at once, joined on the server
    /// (needs the concatenation extension; else one upload, with a warning)
    #[arg(long, value_name = "N")]
    parallel: Option<usize>,
    /// Write a JSON summary (one entry per file, and totals) to FILE
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// One JSON object per file on stdout
    #[arg(long)]
    json: bool,
    /// No per-file output (errors still go to stderr)
    #[arg(short, long)]
    quiet: bool,
    #[command(flatten)]
    conn: ConnArgs,
    #[command(flatten)]
    store: StoreArgs,
    /// Do not look up or remember uploads in the store
    #[arg(long, conflicts_with = "path")]
    no_store: bool,
    /// How files are recognised in the store: fast (size, mtime, first and last 64 KiB)
    /// or content (xxh3 of every byte)
    #[arg(long, value_name = "MODE", value_parser = ["fast", "content"])]
    fingerprint: Option<String>,
}

#[derive(Args)]
struct ConnArgs {
    /// Header sent with every request, repeatable: 'Name: value'
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// Seconds connecting may take (default 10)
    #[arg(long, value_name = "SECS")]
    connect_timeout: Option<f64>,
    /// Seconds a request may go without moving a byte (default 30)
    #[arg(long, value_name = "SECS")]
    stall_timeout: Option<f64>,
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
    #[arg(long, value_name = "N")]
    retries: Option<u32>,
}

#[derive(Args)]
struct StoreArgs {
    /// The store of upload URLs (default: tusflow/uploads.redb in the user's data
    /// directory)
    #[arg(long = "store", value_name = "PATH")]
    path: Option<PathBuf>,
    /// How long to wait for another process holding the store (the config's
    /// `store.wait`; its default when not given).
    #[arg(skip)]
    wait: Option<std::time::Duration>,
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
        let wait = self
            .wait
            .unwrap_or_else(|| tusflow::config::StoreConfig::default().wait);
        Ok(tusflow::store::redb::RedbStore::open_waiting(
            self.path()?,
            wait,
        )?)
    }
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
    let config = cli.config.clone();
    let result = rt.block_on(async {
        let config = config.as_deref();
        match cli.command {
            Command::Upload(args) => upload(config, *args).await,
            Command::Batch(args) => batch(config, *args).await,
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
            } => info(config, endpoint, &conn, json).await,
            Command::Status {
                upload_url,
                conn,
                json,
            } => status(config, &upload_url, &conn, json).await,
            Command::Terminate {
                upload_urls,
                conn,
                store,
            } => terminate(config, &upload_urls, &conn, &store).await,
            Command::Config {
                command: ConfigCommand::Show,
            } => {
                let loaded = tusflow::config::load(config, json!({}))?;
                loaded.layers(&tusflow::plugins::builtin())?;
                println!("{}", loaded.show()?);
                Ok(OK)
            }
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

/// Parse `Name: value`; the error names the header but never shows its value.
fn parse_header(text: &str) -> Result<(String, String), Failure> {
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
fn conn_overrides(
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

fn common_overrides(c: &CommonArgs) -> Result<serde_json::Value, Failure> {
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
fn adjust_stack(stack: &mut Vec<String>, conn: &ConnArgs, common: Option<&CommonArgs>) {
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

/// The client the config describes.
fn client_from(
    loaded: &tusflow::config::Loaded,
    stack: Vec<String>,
    keep_records: bool,
) -> Result<Client, Failure> {
    use tusflow::config::{FingerprintMode, StoreKind};
    let c = &loaded.config;
    let registry = tusflow::plugins::builtin();
    let mut l = loaded.clone();
    l.config.middleware.stack = stack;
    l.layers(&registry)?;
    let layers = registry.build(&l.config.middleware.stack, &l.figment)?;
    let mut b = Client::builder()
        .layers(layers)
        .connect_timeout(c.connect_timeout)
        .stall_timeout(c.stall_timeout)
        .method_override(c.method_override)
        .creation_with_upload(c.creation_with_upload)
        .complete_in_creation(c.complete_in_creation)
        .keep_records_on_success(keep_records);
    for origin in &c.trusted_origins {
        b = b.trust_origin(origin);
    }
    if let Some(e) = &c.endpoint {
        b = b.endpoint(e);
    }
    for (n, v) in &c.headers {
        b = b.header(n.as_str(), v.as_str());
    }
    if let Some(p) = &c.cacert {
        b = b.add_root_certificate_pem(read_file("cacert", p)?);
    }
    if let Some(p) = &c.cert {
        b = b.identity_pem(read_file("cert", p)?);
    }
    if c.insecure {
        eprintln!("tusflow: WARNING: insecure: the server's TLS certificate is NOT verified");
        b = b.danger_accept_invalid_certs(true);
    }
    let store: Option<Arc<dyn tusflow::store::UrlStore>> = match c.store.kind {
        StoreKind::None => None,
        StoreKind::Memory => Some(Arc::new(tusflow::store::MemoryStore::new())),
        StoreKind::Redb => {
            let args = StoreArgs {
                path: c.store.path.clone(),
                wait: Some(c.store.wait),
            };
            Some(Arc::new(args.open()?))
        }
    };
    if let Some(s) = store {
        let mode = match c.fingerprint.mode {
            FingerprintMode::Fast => tusflow::fingerprint::Mode::Fast,
            FingerprintMode::Content => tusflow::fingerprint::Mode::Content,
        };
        b = b
            .store(s)
            .fingerprinter(Arc::new(tusflow::fingerprint::Xxh3Fingerprinter::new(mode)));
    }
    Ok(b.build()?)
}

fn read_file(what: &str, path: &PathBuf) -> Result<Vec<u8>, Failure> {
    std::fs::read(path).map_err(|e| {
        Failure::Usage(format!(
            "cannot read the {what} file {}: {e}",
            path.display()
        ))
    })
}

async fn upload(config: Option<&Path>, args: UploadArgs) -> Result<u8, Failure> {
    let url = match &args.url {
        Some(_) if args.paths.len() > 1 => {
            return Err(Failure::Usage(
                "--url continues one upload: give exactly one file".into(),
            ));
        }
        Some(u) => Some(parse_http_url("--url", u)?),
        None => None,
    };
    let stop_at = args.stop_at.as_deref().map(parse_size).transpose()?;
    let loaded = tusflow::config::load(config, common_overrides(&args.common)?)?;
    if loaded.config.endpoint.is_none() && url.is_none() {
        return Err(Failure::Usage(
            "upload needs --endpoint URL (or --url UPLOAD_URL to continue an upload)".into(),
        ));
    }
    if args.paths.iter().any(|p| p.as_os_str() == "-") {
        if args.paths.len() > 1 {
            return Err(Failure::Usage(
                "\"-\" (standard input) is uploaded alone: give no other files".into(),
            ));
        }
        return upload_stdin(&loaded, &args.common, stop_at, url).await;
    }
    let jobs = args
        .paths
        .iter()
        .map(|p| tusflow::batch::Job {
            relpath: p.file_name().map_or_else(
                || p.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            ),
            path: p.clone(),
        })
        .collect();
    run_jobs(&loaded, &args.common, jobs, stop_at, url, false, false).await
}

/// The client for an upload or a batch, and the config's metadata.
fn client_and_metadata(
    loaded: &tusflow::config::Loaded,
    common: &CommonArgs,
    keep_records: bool,
) -> Result<(Client, tusflow::Metadata), Failure> {
    let mut stack = loaded.config.middleware.stack.clone();
    adjust_stack(&mut stack, &common.conn, Some(common));
    let client = client_from(loaded, stack, keep_records)?;
    let mut metadata = tusflow::Metadata::new();
    for (k, v) in &loaded.config.metadata {
        metadata.insert(k, v)?;
    }
    Ok((client, metadata))
}

/// `tusflow upload -`: standard input, of unknown length, one chunk buffered at a time.
async fn upload_stdin(
    loaded: &tusflow::config::Loaded,
    common: &CommonArgs,
    stop_at: Option<u64>,
    url: Option<Url>,
) -> Result<u8, Failure> {
    let (client, metadata) = client_and_metadata(loaded, common, false)?;
    let mut up = client
        .uploader(tusflow::Source::stream(tokio::io::stdin()))
        .with_metadata(metadata);
    if let Some(c) = loaded.config.chunk_size {
        up = up.chunk_size(c);
    }
    if let Some(u) = url {
        up = up.url(u);
    }
    let started = std::time::Instant::now();
    let result = tokio::select! {
        r = async {
            match stop_at {
                Some(s) => up.upload_until(s).await,
                None => up.upload().await,
            }
        } => r,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("tusflow: interrupted: standard input cannot be read again, so this upload cannot be continued");
            return Ok(FAILED);
        }
    };
    let done = match result {
        Ok(done) => done,
        Err(e) => {
            eprintln!("tusflow: -: {e}");
            return Ok(FAILED);
        }
    };
    if common.json {
        println!(
            "{}",
            json!({
                "path": "-",
                "url": done.url.as_str(),
                "size": done.length,
                "offset": done.offset,
                "status": if done.complete { "complete" } else { "partial" },
                "complete": done.complete,
                "seconds": started.elapsed().as_secs_f64(),
            })
        );
    } else if !common.quiet {
        let url = done.url.as_str();
        if done.complete {
            println!("-: complete, {} bytes -> {url}", done.offset);
        } else {
            println!("-: stopped at {} bytes -> {url}", done.offset);
        }
    }
    Ok(OK)
}

async fn batch(config: Option<&Path>, args: BatchArgs) -> Result<u8, Failure> {
    let loaded = tusflow::config::load(config, common_overrides(&args.common)?)?;
    if loaded.config.endpoint.is_none() {
        return Err(Failure::Usage(
            "batch needs an endpoint: --endpoint URL or `endpoint` in the config".into(),
        ));
    }
    let paths = if args.paths.is_empty() {
        loaded.config.batch.paths.clone()
    } else {
        args.paths.clone()
    };
    if paths.is_empty() {
        return Err(Failure::Usage(
            "batch needs files: PATH or GLOB arguments, or batch.paths in the config".into(),
        ));
    }
    let mut exclude = loaded.config.batch.exclude.clone();
    exclude.extend(args.exclude.iter().cloned());
    let jobs = match tusflow::batch::expand(&paths, &exclude) {
        Ok(j) => j,
        Err(e) if e.is_io() => return Err(Failure::Usage(e.to_string())),
        Err(e) => return Err(e.into()),
    };
    run_jobs(&loaded, &args.common, jobs, None, None, true, args.force).await
}

#[allow(clippy::too_many_arguments)]
async fn run_jobs(
    loaded: &tusflow::config::Loaded,
    common: &CommonArgs,
    jobs: Vec<tusflow::batch::Job>,
    stop_at: Option<u64>,
    url: Option<Url>,
    ledger: bool,
    force: bool,
) -> Result<u8, Failure> {
    let (client, metadata) = client_and_metadata(loaded, common, ledger)?;
    let opts = tusflow::batch::Options {
        concurrency: loaded.config.batch.concurrency,
        chunk_size: loaded.config.chunk_size,
        parallel: loaded.config.parallel,
        stop_at,
        metadata,
        templates: loaded.config.batch.metadata.clone(),
        skip_complete: ledger,
        force,
        url,
    };
    let total = jobs.len();
    let (json_out, quiet) = (common.json, common.quiet);
    let bars =
        (!json_out && !quiet && std::io::IsTerminal::is_terminal(&std::io::stderr())).then(|| {
            progress_bars(
                jobs.iter()
                    .filter_map(|j| std::fs::metadata(&j.path).ok())
                    .map(|m| m.len())
                    .sum(),
            )
        });
    let started = std::time::Instant::now();
    let stop = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let on_start = bars
        .as_ref()
        .map(|(multi, all)| file_bar_hook(multi.clone(), all.clone()));
    let printer = bars.as_ref().map(|(multi, _)| multi.clone());
    let (reports, interrupted) = tusflow::batch::run(
        &client,
        jobs,
        &opts,
        on_start,
        move |r| {
            let say = |line: String| match &printer {
                Some(m) => {
                    let _ = m.println(line);
                }
                None => println!("{line}"),
            };
            if let Some(e) = &r.error {
                eprintln!("tusflow: {}: {e}", r.path);
            }
            if json_out {
                println!("{}", serde_json::to_string(r).expect("a report serializes"));
            } else if !quiet {
                let url = r.url.as_deref().unwrap_or("-");
                let size = r.size.unwrap_or(0);
                say(match r.status {
                    "complete" if r.resumed => {
                        format!("{}: complete (resumed), {size} bytes -> {url}", r.path)
                    }
                    "complete" => format!("{}: complete, {size} bytes -> {url}", r.path),
                    "skipped" => format!("{}: already uploaded -> {url}", r.path),
                    "partial" => format!(
                        "{}: stopped at {} of {size} bytes -> {url}",
                        r.path,
                        r.offset.unwrap_or(0)
                    ),
                    _ => format!("{}: failed", r.path),
                });
            }
        },
        stop,
    )
    .await;
    if let Some((_, all)) = &bars {
        all.finish();
    }
    let count = |s: &str| reports.iter().filter(|r| r.status == s).count();
    let failed = count("failed");
    if let Some(path) = &common.report {
        let report = json!({
            "files": reports,
            "totals": {
                "files": total,
                "complete": count("complete"),
                "skipped": count("skipped"),
                "partial": count("partial"),
                "failed": failed,
                "not_started": total - reports.len(),
                "resumed": reports.iter().filter(|r| r.resumed).count(),
                "bytes": reports.iter().filter(|r| r.status == "complete").map(|r| r.size.unwrap_or(0)).sum::<u64>(),
                "seconds": started.elapsed().as_secs_f64(),
                "interrupted": interrupted,
            }
        });
        std::fs::write(
            path,
            serde_json::to_string_pretty(&report).expect("serializes"),
        )
        .map_err(|e| Failure::Usage(format!("cannot write the report {}: {e}", path.display())))?;
    }
    if interrupted {
        let args: Vec<String> = std::env::args().collect();
        eprintln!(
            "tusflow: interrupted: {} of {total} files done; unfinished uploads are stored. To continue, run:\n  {}",
            count("complete") + count("skipped"),
            args.join(" ")
        );
        return Ok(FAILED);
    }
    Ok(if failed > 0 { FAILED } else { OK })
}

/// A total bar (bytes, rate, ETA) under a set of per-file bars, on stderr.
fn progress_bars(total_bytes: u64) -> (indicatif::MultiProgress, indicatif::ProgressBar) {
    let multi = indicatif::MultiProgress::with_draw_target(indicatif::ProgressDrawTarget::stderr());
    let all = multi.add(indicatif::ProgressBar::new(total_bytes));
    all.set_style(
        indicatif::ProgressStyle::with_template(
            "total {bar:30} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        )
        .expect("a valid template"),
    );
    (multi, all)
}

/// For each file that starts: a bar of its own that follows its progress, and the
/// total bar moved by the same bytes. The bar goes when the upload ends.
fn file_bar_hook(
    multi: indicatif::MultiProgress,
    all: indicatif::ProgressBar,
) -> tusflow::batch::OnStart {
    Arc::new(move |job, size, mut rx| {
        let bar = multi.insert_before(&all, indicatif::ProgressBar::new(size));
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg:30!} {bar:30} {bytes}/{total_bytes} {binary_bytes_per_sec}",
            )
            .expect("a valid template"),
        );
        bar.set_message(job.relpath.clone());
        let all = all.clone();
        tokio::spawn(async move {
            let mut seen = rx.borrow().acknowledged;
            bar.set_position(seen);
            all.inc(seen);
            while rx.changed().await.is_ok() {
                let now = rx.borrow().sent;
                if now > seen {
                    all.inc(now - seen);
                    seen = now;
                }
                bar.set_position(seen);
            }
            bar.finish_and_clear();
        });
    })
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

async fn info(
    config: Option<&Path>,
    endpoint: Option<String>,
    conn: &ConnArgs,
    json: bool,
) -> Result<u8, Failure> {
    let mut o = serde_json::Map::new();
    conn_overrides(conn, &mut o)?;
    if let Some(e) = endpoint {
        o.insert("endpoint".into(), json!(e));
    }
    o.insert("store".into(), json!({ "kind": "none" }));
    let loaded = tusflow::config::load(config, serde_json::Value::from(o))?;
    if loaded.config.endpoint.is_none() {
        return Err(Failure::Usage(
            "info needs an ENDPOINT argument or `endpoint` in the config".into(),
        ));
    }
    let mut stack = loaded.config.middleware.stack.clone();
    adjust_stack(&mut stack, conn, None);
    let client = client_from(&loaded, stack, false)?;
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

async fn terminate(
    config: Option<&Path>,
    upload_urls: &[String],
    conn: &ConnArgs,
    store: &StoreArgs,
) -> Result<u8, Failure> {
    let urls = upload_urls
        .iter()
        .map(|u| parse_http_url("upload URL", u))
        .collect::<Result<Vec<_>, _>>()?;
    let mut o = serde_json::Map::new();
    conn_overrides(conn, &mut o)?;
    if let Some(p) = &store.path {
        o.insert("store".into(), json!({ "path": p }));
    }
    let loaded = tusflow::config::load(config, serde_json::Value::from(o))?;
    let mut stack = loaded.config.middleware.stack.clone();
    adjust_stack(&mut stack, conn, None);
    let client = client_from(&loaded, stack, false)?;
    let mut code = OK;
    for url in &urls {
        match client.terminate(url).await {
            Ok(()) => println!("terminated {}", protocol::redact_url(url)),
            Err(e) => {
                let gone = if e.is_gone() {
                    " (the upload does not exist any more; its record is forgotten)"
                } else {
                    ""
                };
                eprintln!("tusflow: {e}{gone}");
                code = FAILED;
            }
        }
    }
    Ok(code)
}

async fn status(
    config: Option<&Path>,
    upload_url: &str,
    conn: &ConnArgs,
    json: bool,
) -> Result<u8, Failure> {
    let url = parse_http_url("upload URL", upload_url)?;
    let mut o = serde_json::Map::new();
    conn_overrides(conn, &mut o)?;
    o.insert("store".into(), json!({ "kind": "none" }));
    let loaded = tusflow::config::load(config, serde_json::Value::from(o))?;
    let mut stack = loaded.config.middleware.stack.clone();
    adjust_stack(&mut stack, conn, None);
    let client = client_from(&loaded, stack, false)?;
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
