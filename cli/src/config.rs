//! One config for the whole stack, from defaults <- a config file (TOML, YAML or JSON
//! by extension) <- `TUSFLOW_` env vars (nested keys split on `__`) <- CLI flags, with
//! figment. Every error names the file or env var, the key, and what was expected.
//!
//! ```toml
//! endpoint = "http://127.0.0.1:1080/files/"
//! chunk_size = "16 MiB"          # or "unlimited" (the default: one PATCH)
//! parallel = 4                   # partial uploads per file (concatenation)
//! protocol = "tus"               # or "ietf": the IETF draft (the endpoint is then
//! interop = 8                    # the target resource); its interop version, 8 or 6
//! creation_with_upload = true    # first bytes in the POST, when the server allows
//! complete_in_creation = false   # true: a small file in one POST (a lost answer can
//!                                # then leave a second complete copy on the server)
//! trusted_origins = []           # origins besides the endpoint's that get credentials
//! headers = { Authorization = "Bearer ..." }
//! metadata = { project = "x" }
//!
//! [middleware]
//! stack = ["log", "retry", "rate-limit"]   # outermost first
//! [middleware.retry]
//! max_attempts = 8
//! [middleware.rate-limit]
//! bytes_per_second = "50 MB"
//!
//! [store]
//! kind = "redb"                  # "memory" or "none" too
//! path = "uploads.redb"
//! wait = "30s"                   # while another process holds the file
//!
//! [batch]
//! paths = ["media/**/*.mp4"]
//! exclude = ["**/tmp/**"]
//! concurrency = 8
//! metadata = { name = "{relpath}" }
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Json, Serialized, Toml, Yaml};
use figment::value::{Dict, Value};
use serde::{Deserialize, Deserializer, Serialize};

use tusflow::core::config::{duration, parse_size};
use tusflow::core::plugin::{config_error, suggest};
use tusflow::{Error, Result};

/// The env var prefix.
pub(crate) const ENV_PREFIX: &str = "TUSFLOW_";
/// The config file read when none is named.
pub(crate) const DEFAULT_FILE: &str = "tusflow.toml";

/// The whole configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Config {
    /// The creation endpoint.
    pub(crate) endpoint: Option<String>,
    /// Headers sent with every request.
    pub(crate) headers: BTreeMap<String, String>,
    /// Metadata of every upload.
    pub(crate) metadata: BTreeMap<String, String>,
    /// Bytes per PATCH; `None`: the whole rest in one.
    #[serde(deserialize_with = "chunk_size", serialize_with = "ser_chunk")]
    pub(crate) chunk_size: Option<u64>,
    /// Partial uploads per file, sent at once and concatenated (1: one upload).
    #[serde(deserialize_with = "parallel")]
    pub(crate) parallel: usize,
    /// `tus` (tus 1.0) or `ietf` (the IETF resumable upload draft).
    pub(crate) protocol: String,
    /// The IETF draft's interop version (6 or 8; the latest when unset).
    pub(crate) interop: Option<u64>,
    /// Send the first bytes in the creation `POST` when the server advertises
    /// creation-with-upload.
    pub(crate) creation_with_upload: bool,
    /// Let a creation `POST` complete an upload (see
    /// [`ClientBuilder::complete_in_creation`](tusflow::ClientBuilder::complete_in_creation)).
    pub(crate) complete_in_creation: bool,
    /// Origins besides the endpoint's that may receive credential headers.
    pub(crate) trusted_origins: Vec<String>,
    /// How long connecting may take.
    #[serde(with = "duration")]
    pub(crate) connect_timeout: Duration,
    /// How long a request may go without moving a byte.
    #[serde(with = "duration")]
    pub(crate) stall_timeout: Duration,
    /// Do NOT verify TLS certificates.
    pub(crate) insecure: bool,
    /// Send PATCH and DELETE as POST with X-HTTP-Method-Override.
    pub(crate) method_override: bool,
    /// Extra CA certificates (PEM).
    pub(crate) cacert: Option<PathBuf>,
    /// Client certificate and key (PEM).
    pub(crate) cert: Option<PathBuf>,
    /// The middleware stack and each plugin's section.
    pub(crate) middleware: Middleware,
    /// The URL store.
    pub(crate) store: StoreConfig,
    /// Fingerprints.
    pub(crate) fingerprint: FingerprintConfig,
    /// Batch uploads.
    pub(crate) batch: BatchConfig,
    /// Where a batch's ledger is.
    pub(crate) ledger: LedgerConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            endpoint: None,
            headers: BTreeMap::new(),
            metadata: BTreeMap::new(),
            chunk_size: None,
            parallel: 1,
            protocol: "tus".into(),
            interop: None,
            creation_with_upload: true,
            complete_in_creation: false,
            trusted_origins: Vec::new(),
            connect_timeout: tusflow::core::service::DEFAULT_CONNECT_TIMEOUT,
            stall_timeout: tusflow::core::service::DEFAULT_STALL_TIMEOUT,
            insecure: false,
            method_override: false,
            cacert: None,
            cert: None,
            middleware: Middleware::default(),
            store: StoreConfig::default(),
            fingerprint: FingerprintConfig::default(),
            batch: BatchConfig::default(),
            ledger: LedgerConfig::default(),
        }
    }
}

fn chunk_size<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum V {
        N(u64),
        S(String),
    }
    match Option::<V>::deserialize(d)? {
        None | Some(V::N(0)) => Ok(None),
        Some(V::N(n)) => Ok(Some(n)),
        Some(V::S(s)) if s.eq_ignore_ascii_case("unlimited") => Ok(None),
        Some(V::S(s)) => parse_size(&s)
            .map(|n| (n > 0).then_some(n))
            .map_err(serde::de::Error::custom),
    }
}

fn parallel<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<usize, D::Error> {
    match usize::deserialize(d)? {
        0 => Err(serde::de::Error::custom(
            "expected at least 1 (1: one upload, no partial uploads)",
        )),
        n => Ok(n),
    }
}

fn ser_chunk<S: serde::Serializer>(v: &Option<u64>, s: S) -> std::result::Result<S::Ok, S::Error> {
    match v {
        Some(n) => s.serialize_u64(*n),
        None => s.serialize_str("unlimited"),
    }
}

/// `[middleware]`: the stack (outermost first) and one table per plugin, which the
/// plugin itself reads.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct Middleware {
    /// Plugin names, outermost first.
    pub(crate) stack: Vec<String>,
    /// The plugins' sections, checked by each plugin.
    #[serde(flatten)]
    pub(crate) sections: BTreeMap<String, Value>,
}

impl Default for Middleware {
    fn default() -> Self {
        Middleware {
            stack: vec!["log".into(), "retry".into()],
            sections: BTreeMap::new(),
        }
    }
}

/// `[store]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct StoreConfig {
    /// `redb` (default), `memory` or `none`.
    pub(crate) kind: StoreKind,
    /// The redb file (default: in the user's data directory).
    pub(crate) path: Option<PathBuf>,
    /// How long to wait while another process has the file open, before failing.
    #[serde(with = "duration")]
    pub(crate) wait: Duration,
    /// With `kind = "postgres"`: the database's connection string, shared by every
    /// machine (`postgres://user@host/db`).
    pub(crate) url: Option<String>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            kind: StoreKind::Redb,
            path: None,
            wait: Duration::from_secs(30),
            url: None,
        }
    }
}

/// Which store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum StoreKind {
    /// The embedded redb file.
    Redb,
    /// In memory: resumes within one run only.
    Memory,
    /// PostgreSQL (`store.url`): every machine resumes every machine's uploads.
    Postgres,
    /// No store.
    None,
}

/// `[ledger]`: a batch shared by many machines (default: local, in the store).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct LedgerConfig {
    /// `local` (default) or `postgres`.
    pub(crate) kind: LedgerKind,
    /// The PostgreSQL connection string (`postgres://user@host/db`).
    pub(crate) url: Option<String>,
    /// The batch's name, the same on every machine.
    pub(crate) name: Option<String>,
    /// How long a claimed file stays a worker's without a heartbeat.
    #[serde(with = "duration")]
    pub(crate) lease: Duration,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig {
            kind: LedgerKind::Local,
            url: None,
            name: None,
            lease: Duration::from_secs(30),
        }
    }
}

/// Which ledger.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LedgerKind {
    /// One machine: the store.
    Local,
    /// Many machines: PostgreSQL.
    Postgres,
}

/// `[fingerprint]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct FingerprintConfig {
    /// `fast` (default) or `content`.
    pub(crate) mode: FingerprintMode,
}

/// Fingerprint modes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum FingerprintMode {
    /// Size, modification time, first and last 64 KiB.
    #[default]
    Fast,
    /// Every byte.
    Content,
}

/// `[batch]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct BatchConfig {
    /// Files, directories (recursive) and globs.
    pub(crate) paths: Vec<String>,
    /// Globs of paths to leave out.
    pub(crate) exclude: Vec<String>,
    /// Files uploading at once.
    pub(crate) concurrency: usize,
    /// Metadata templates: `{filename}`, `{relpath}`, `{size}`.
    pub(crate) metadata: BTreeMap<String, String>,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            paths: Vec::new(),
            exclude: Vec::new(),
            concurrency: 4,
            metadata: BTreeMap::new(),
        }
    }
}

/// A loaded config: the values, and the figment they came from (for provenance and
/// the plugins' sections).
#[derive(Clone, Debug)]
pub(crate) struct Loaded {
    /// The values.
    pub(crate) config: Config,
    /// Where each value came from.
    pub(crate) figment: Figment,
}

/// Load the config: defaults <- `file` (or `./tusflow.toml` if present) <- `TUSFLOW_`
/// env vars <- `overrides` (the CLI flags that were given).
pub(crate) fn load(file: Option<&Path>, overrides: impl Serialize) -> Result<Loaded> {
    let mut figment = Figment::from(Serialized::defaults(Config::default()));
    let file = match file {
        Some(f) => {
            if !f.is_file() {
                return Err(Error::config(format!(
                    "the config file {} does not exist",
                    f.display()
                )));
            }
            Some(f.to_path_buf())
        }
        None => Some(PathBuf::from(DEFAULT_FILE)).filter(|p| p.is_file()),
    };
    if let Some(f) = &file {
        let ext = f
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        figment = match ext.as_str() {
            "toml" => figment.merge(Toml::file_exact(f)),
            "yaml" | "yml" => figment.merge(Yaml::file_exact(f)),
            "json" => figment.merge(Json::file_exact(f)),
            _ => {
                return Err(Error::config(format!(
                    "the config file {} has no known format: name it .toml, .yaml or .json",
                    f.display()
                )));
            }
        };
    }
    let env = Env::prefixed(ENV_PREFIX).split("__").map(|k| {
        let k = k
            .as_str()
            .replacen("middleware.rate_limit", "middleware.rate-limit", 1);
        // An env var cannot spell a `-`: `TUSFLOW_HEADERS__X_TOKEN` is `X-Token`.
        match k
            .get(..8)
            .filter(|p| p.eq_ignore_ascii_case("headers."))
            .map(|_| &k[8..])
        {
            Some(name) => format!("headers.{}", name.replace('_', "-")).into(),
            None => k.into(),
        }
    });
    figment = figment.merge(env);
    // What the file and env say is checked as written, before any flag replaces it:
    // a bad value is an error for every command, not only those that use it.
    figment
        .extract::<Config>()
        .map_err(|e| config_error("", e))?;
    figment = figment.merge(CommandLine(Serialized::defaults(overrides)));
    let config: Config = figment.extract().map_err(|e| config_error("", e))?;
    Ok(Loaded { config, figment })
}

/// The flags given, as a provider that says so in messages ("in the command line").
struct CommandLine<T>(Serialized<T>);

impl<T: Serialize> figment::Provider for CommandLine<T> {
    fn metadata(&self) -> figment::Metadata {
        figment::Metadata::named(COMMAND_LINE)
    }

    fn data(
        &self,
    ) -> std::result::Result<figment::value::Map<figment::Profile, Dict>, figment::Error> {
        self.0.data()
    }
}

const COMMAND_LINE: &str = "the command line";

impl Loaded {
    /// Check that every `[middleware.NAME]` section names a known plugin, and build the
    /// stack's layers.
    pub(crate) fn layers(
        &self,
        registry: &tusflow::plugins::Registry,
    ) -> Result<Vec<tusflow::core::BoxLayer>> {
        let known: Vec<&str> = registry.names().collect();
        for name in self.config.middleware.sections.keys() {
            if !known.contains(&name.as_str()) {
                let hint = suggest(name, &known)
                    .map(|s| format!(" (did you mean {s:?}?)"))
                    .unwrap_or_default();
                let source = self.source_of(&format!("middleware.{name}"));
                return Err(Error::config(format!(
                    "unknown plugin section `middleware.{name}`{hint}{source}; known plugins are: {}",
                    known.join(", ")
                )));
            }
        }
        registry
            .build(&self.config.middleware.stack, &self.figment)
            .map_err(|e| {
                // A name in the stack that is not a plugin: say where the stack is set.
                let msg = e.to_string();
                match msg.strip_prefix("middleware.stack: unknown plugin") {
                    Some(rest) => {
                        let source = self.source_of("middleware.stack");
                        Error::config(format!("middleware.stack{source}: unknown plugin{rest}"))
                    }
                    None => e,
                }
            })
    }

    /// ` in <source>` for a key, when known.
    pub(crate) fn source_of(&self, key: &str) -> String {
        self.figment
            .find_metadata(key)
            .map(|m| match &m.source {
                // A default or a flag: the key alone says it (no line of our source).
                Some(figment::Source::Code(_)) => String::new(),
                Some(s) => format!(" in {s}"),
                None => format!(" in {}", m.name),
            })
            .unwrap_or_default()
    }

    /// Every value as `key = value  # source` lines, secrets redacted.
    pub(crate) fn show(&self) -> Result<String> {
        let value: Value = self.figment.extract().map_err(|e| config_error("", e))?;
        let mut lines = Vec::new();
        walk(&value, &mut Vec::new(), &mut |path, v| {
            let key = path.join(".");
            let shown = if is_secret_key(path) {
                "\"<redacted>\"".to_owned()
            } else if key == "ledger.url" || key == "store.url" {
                v.as_str()
                    .map(|u| format!("{:?}", without_password(u)))
                    .unwrap_or_else(|| render(v))
            } else {
                render(v)
            };
            let source = self
                .figment
                .find_metadata(&key)
                .map(|m| match &m.source {
                    // Values serialized in code: the defaults, or the flags given.
                    Some(figment::Source::Code(_)) if m.name.ends_with("::Config") => {
                        "default".to_owned()
                    }
                    Some(s) => format!("{} {s}", m.name),
                    None if m.name == COMMAND_LINE => "command line".to_owned(),
                    None => m.name.to_string(),
                })
                .unwrap_or_else(|| "default".into());
            lines.push(format!("{key} = {shown}    # {source}"));
        });
        Ok(lines.join("\n"))
    }
}

fn walk(v: &Value, path: &mut Vec<String>, f: &mut dyn FnMut(&[String], &Value)) {
    match v {
        Value::Dict(_, d) if !d.is_empty() => walk_dict(d, path, f),
        other => f(path, other),
    }
}

fn walk_dict(d: &Dict, path: &mut Vec<String>, f: &mut dyn FnMut(&[String], &Value)) {
    for (k, v) in d {
        path.push(k.clone());
        walk(v, path, f);
        path.pop();
    }
}

fn render(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "?".into())
}

/// Keys whose values are credentials: header values of credential headers, and every
/// value of the auth plugin.
/// A connection URL with its password shown as `<redacted>` (a `key=value` string,
/// which cannot be parsed as a URL, is redacted whole).
pub(crate) fn without_password(url: &str) -> String {
    let Ok(mut u) = tusflow::Url::parse(url) else {
        // A key=value connection string: its password=... redacted.
        return url
            .split_whitespace()
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=<redacted>"),
                _ => kv.to_owned(),
            })
            .collect::<Vec<_>>()
            .join(" ");
    };
    if u.password().is_some() {
        let _ = u.set_password(Some("redacted"));
    }
    // A password given as a parameter (postgres://h/db?password=...) is one too.
    if u.query_pairs()
        .any(|(k, _)| k.eq_ignore_ascii_case("password"))
    {
        let pairs: Vec<(String, String)> = u
            .query_pairs()
            .map(|(k, v)| {
                let v = if k.eq_ignore_ascii_case("password") {
                    "redacted".to_owned()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        u.query_pairs_mut().clear().extend_pairs(pairs);
    }
    u.as_str()
        .replace(":redacted@", ":<redacted>@")
        .replace("password=redacted", "password=<redacted>")
}

fn is_secret_key(path: &[String]) -> bool {
    let p: Vec<&str> = path.iter().map(String::as_str).collect();
    match p.as_slice() {
        ["headers", name, ..] => http::HeaderName::try_from(*name)
            .is_ok_and(|n| tusflow::client::is_sensitive_header(&n)),
        ["middleware", "auth", rest @ ..] => !matches!(rest, ["allowed_origins", ..]),
        _ => p.iter().any(|k| {
            let k = k.to_ascii_lowercase();
            ["password", "token", "secret"]
                .iter()
                .any(|w| k.contains(w))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_file(name: &str, text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        (dir, p)
    }

    #[test]
    fn database_urls_are_shown_without_any_password() {
        for (url, shown) in [
            (
                "postgres://tus:S3CRET@db:5432/t?sslmode=require",
                "postgres://tus:<redacted>@db:5432/t?sslmode=require",
            ),
            (
                "postgres://tus@db/t?password=S3CRET&sslmode=require",
                "postgres://tus@db/t?password=<redacted>&sslmode=require",
            ),
            (
                "host=db user=tus password=S3CRET dbname=t",
                "host=db user=tus password=<redacted> dbname=t",
            ),
        ] {
            assert_eq!(without_password(url), shown);
        }
    }

    #[test]
    fn file_values_and_errors_name_file_and_key() {
        let (_d, p) = with_file(
            "c.toml",
            "endpoint = \"http://h/files/\"\nchunk_size = \"16 MiB\"\n[batch]\nconcurrency = 8\n",
        );
        let l = load(Some(&p), BTreeMap::<String, String>::new()).unwrap();
        assert_eq!(l.config.chunk_size, Some(16 << 20));
        assert_eq!(l.config.batch.concurrency, 8);

        let (_d, p) = with_file("c.toml", "[batch]\nconcurrency = \"lots\"\n");
        let e = load(Some(&p), BTreeMap::<String, String>::new())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("batch.concurrency") && e.contains("c.toml"),
            "{e}"
        );

        let (_d, p) = with_file("c.yaml", "endpont: http://h/files/\n");
        let e = load(Some(&p), BTreeMap::<String, String>::new())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("endpont") && e.contains("did you mean `endpoint`?") && e.contains("c.yaml"),
            "{e}"
        );

        let (_d, p) = with_file(
            "c.json",
            "{\"middleware\": {\"stack\": [\"log\"], \"retyr\": {}}}",
        );
        let l = load(Some(&p), BTreeMap::<String, String>::new()).unwrap();
        let e = l
            .layers(&tusflow::plugins::builtin())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("middleware.retyr")
                && e.contains("did you mean \"retry\"?")
                && e.contains("c.json"),
            "{e}"
        );
    }

    #[test]
    fn show_names_sources_and_redacts_secrets() {
        let (_d, p) = with_file(
            "c.toml",
            "headers = { Authorization = \"Bearer hunter2\", X-Trace = \"on\" }\n[middleware.auth]\nbearer = \"hunter3\"\n",
        );
        let l = load(
            Some(&p),
            BTreeMap::from([("endpoint", "http://flag/files/")]),
        )
        .unwrap();
        let shown = l.show().unwrap();
        assert!(
            !shown.contains("hunter2") && !shown.contains("hunter3"),
            "{shown}"
        );
        assert!(shown.contains("headers.X-Trace = \"on\""), "{shown}");
        assert!(shown.contains("c.toml"), "{shown}");
        assert!(
            shown.contains("endpoint = \"http://flag/files/\"    # command line"),
            "{shown}"
        );
        assert!(
            shown.contains("batch.concurrency = 4    # default"),
            "{shown}"
        );
    }
}
