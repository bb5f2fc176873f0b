//! The client a config describes: its middleware, transport, store and fingerprints.

use std::path::PathBuf;
use std::sync::Arc;

use tusflow::Client;

use crate::Failure;
use crate::args::{CommonArgs, StoreArgs, adjust_stack};

/// The client the config describes.
pub(crate) fn client_from(
    loaded: &crate::config::Loaded,
    stack: Vec<String>,
    keep_records: bool,
) -> Result<Client, Failure> {
    use crate::config::{FingerprintMode, StoreKind};
    let c = &loaded.config;
    let registry = tusflow::plugins::builtin();
    let mut l = loaded.clone();
    l.config.middleware.stack = stack;
    l.layers(&registry)?;
    let layers = registry.build(&l.config.middleware.stack, &l.figment)?;
    let protocol = tusflow::core::Protocol::from_name(&c.protocol, c.interop).map_err(|e| {
        // The key that is wrong: an unknown protocol, or an interop version that is
        // not one, or one without the IETF draft.
        let key = if tusflow::core::Protocol::from_name(&c.protocol, None).is_err() {
            "protocol"
        } else {
            "interop"
        };
        Failure::Usage(format!("{key}{}: {e}", loaded.source_of(key)))
    })?;
    let mut b = Client::builder()
        .protocol(protocol)
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
        StoreKind::Postgres => Some(Arc::new(postgres_store(&c.store)?)),
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

/// The shared store on PostgreSQL the config names (`store.url`). Its blocking
/// connect runs outside the async runtime's own threads.
pub(crate) fn postgres_store(
    c: &crate::config::StoreConfig,
) -> Result<tusflow::store::postgres::PgStore, Failure> {
    let Some(url) = c.url.as_deref() else {
        return Err(Failure::Usage(
            "store.kind = \"postgres\" needs store.url: the database's connection string (postgres://USER@HOST/DB; env TUSFLOW_STORE__URL)".into(),
        ));
    };
    let connect = || tusflow::store::postgres::PgStore::connect(url);
    let store = match tokio::runtime::Handle::try_current() {
        Ok(_) => tokio::task::block_in_place(connect),
        Err(_) => connect(),
    };
    Ok(store?)
}

pub(crate) fn read_file(what: &str, path: &PathBuf) -> Result<Vec<u8>, Failure> {
    std::fs::read(path).map_err(|e| {
        Failure::Usage(format!(
            "cannot read the {what} file {}: {e}",
            path.display()
        ))
    })
}

/// The client for an upload or a batch, and the config's metadata.
pub(crate) fn client_and_metadata(
    loaded: &crate::config::Loaded,
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
