//! `tusflow list` and `tusflow forget`: the store of upload URLs.

use serde_json::json;
use tusflow::store::UrlStore;

use crate::args::StoreArgs;
use crate::{Failure, OK};

/// The stored uploads, each with what its server has now (`HEAD`, 8 at once, 10 s
/// each) unless `conn` is `None` (`--offline`): the stored offset is only the last
/// one written, which a single streaming `PATCH` cut by Ctrl-C leaves behind.
pub(crate) async fn list(
    config: Option<&std::path::Path>,
    store: &StoreArgs,
    json: bool,
    conn: Option<&crate::args::ConnArgs>,
) -> Result<u8, Failure> {
    let (store, place) = match open(config, store)? {
        Ok(found) => found,
        Err(missing) => {
            if !json {
                println!("no stored uploads ({} does not exist)", missing.display());
            }
            return Ok(OK);
        }
    };
    let records = tokio::task::block_in_place(|| store.list())?;
    let asked = match conn {
        Some(conn) if !records.is_empty() => server_offsets(config, conn, &records).await?,
        _ => vec![None; records.len()],
    };
    let now = tusflow::store::unix_now();
    for (r, asked) in records.iter().zip(asked) {
        let age = now.saturating_sub(r.created);
        let (server_offset, server_error) = match &asked {
            Some(Ok(o)) => (Some(*o), None),
            Some(Err(e)) => (None, Some(e.clone())),
            None => (None, None),
        };
        if json {
            println!(
                "{}",
                json!({
                    "path": r.source,
                    "url": r.url,
                    "size": r.length,
                    "offset": server_offset.or(r.offset),
                    "stored_offset": r.offset,
                    "server_offset": server_offset,
                    "server_error": server_error,
                    "age_seconds": age,
                    "expires": r.expires,
                    "expired": r.is_expired(now),
                    "fingerprint": r.fingerprint,
                })
            );
        } else {
            let length = r.length.map_or("?".into(), |l| l.to_string());
            let offset = match (&asked, r.offset) {
                (Some(Ok(o)), _) => format!("{o}/{length} bytes on the server"),
                (_, stored) => format!(
                    "{}/{length} bytes when last stored{}",
                    stored.map_or("?".into(), |o| o.to_string()),
                    match &server_error {
                        Some(e) => format!(" (the server: {e})"),
                        None => String::new(),
                    }
                ),
            };
            println!(
                "{}  {}  {offset}  {}{}",
                crate::text::shown(r.source.as_deref().unwrap_or("(bytes)")),
                crate::text::shown(&r.url),
                human_age(age),
                if r.is_expired(now) { "  (expired)" } else { "" }
            );
        }
    }
    if !json && records.is_empty() {
        println!("no stored uploads in {place}");
    }
    Ok(OK)
}

/// An open store and where it is, for people; or the path of a redb file that does
/// not exist.
type Opened = Result<(Box<dyn UrlStore>, String), std::path::PathBuf>;

/// The store the config names (`store.kind`, `store.path`, `store.wait`, `store.url`)
/// unless `--store PATH` is given, and where it is, for people; or the path of a redb
/// file that does not exist. The config is checked as every command checks it.
fn open(config: Option<&std::path::Path>, store: &StoreArgs) -> Result<Opened, Failure> {
    let loaded = crate::config::load(config, json!({}))?;
    let c = &loaded.config.store;
    if store.path.is_none() && c.kind == crate::config::StoreKind::Postgres {
        let pg = crate::stack::postgres_store(c)?;
        let place = format!("the store database at {}", pg.database());
        return Ok(Ok((Box::new(pg), place)));
    }
    let args = StoreArgs {
        path: store.path.clone().or(c.path.clone()),
        wait: store.wait.or(Some(c.wait)),
    };
    let path = args.path()?;
    if !path.exists() {
        return Ok(Err(path));
    }
    Ok(Ok((Box::new(args.open()?), path.display().to_string())))
}

/// What each record's server has: its offset, or why it could not say.
async fn server_offsets(
    config: Option<&std::path::Path>,
    conn: &crate::args::ConnArgs,
    records: &[tusflow::store::UploadRecord],
) -> Result<Vec<Option<Result<u64, String>>>, Failure> {
    // A client per endpoint the records name, so credentials (headers, the auth
    // plugin's token) go only to that endpoint's origin, as they did on upload.
    let mut clients: std::collections::HashMap<String, tusflow::Client> = Default::default();
    for r in records {
        let Some(endpoint) = &r.endpoint else {
            continue;
        };
        if clients.contains_key(endpoint) {
            continue;
        }
        let mut o = serde_json::Map::new();
        crate::args::conn_overrides(conn, &mut o)?;
        o.insert("store".into(), json!({ "kind": "none" }));
        // A record of the IETF draft says so after its endpoint: asked in its protocol.
        let (e, protocol) = tusflow::core::Protocol::untag_key(endpoint);
        o.insert("endpoint".into(), json!(e));
        o.insert("protocol".into(), json!(protocol.name()));
        match protocol.interop() {
            Some(i) => o.insert("interop".into(), json!(i.get())),
            None => o.remove("interop"),
        };
        let loaded = crate::config::load(config, serde_json::Value::from(o))?;
        let mut stack = loaded.config.middleware.stack.clone();
        // One try each: a listing should not wait out a retry budget per upload.
        stack.retain(|s| s != "retry");
        crate::args::adjust_stack(&mut stack, conn, None);
        let client = crate::stack::client_from(&loaded, stack, false)?;
        clients.insert(endpoint.clone(), client);
    }
    let limit = std::sync::Arc::new(tokio::sync::Semaphore::new(8));
    let mut set = tokio::task::JoinSet::new();
    let mut out = vec![None; records.len()];
    for (i, r) in records.iter().enumerate() {
        let Some(client) = r.endpoint.as_ref().and_then(|e| clients.get(e)).cloned() else {
            out[i] = Some(Err("not asked: the record names no endpoint".to_owned()));
            continue;
        };
        let (limit, url) = (limit.clone(), r.url.clone());
        set.spawn(async move {
            let _permit = limit.acquire_owned().await;
            let asked = async {
                let url = tusflow::Url::parse(&url).map_err(|e| e.to_string())?;
                match tokio::time::timeout(std::time::Duration::from_secs(10), client.status(&url))
                    .await
                {
                    Ok(Ok(st)) => Ok(st.offset),
                    Ok(Err(e)) if e.is_gone() => Err("the upload is gone".to_owned()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err("no answer in 10 s".to_owned()),
                }
            };
            (i, asked.await)
        });
    }
    while let Some(done) = set.join_next().await {
        if let Ok((i, asked)) = done {
            out[i] = Some(asked);
        }
    }
    Ok(out)
}

pub(crate) fn human_age(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s ago"),
        s if s < 7200 => format!("{}m ago", s / 60),
        s if s < 172_800 => format!("{}h ago", s / 3600),
        s => format!("{}d ago", s / 86_400),
    }
}

pub(crate) fn forget(
    config: Option<&std::path::Path>,
    url: Option<&str>,
    all: bool,
    expired: bool,
    store: &StoreArgs,
) -> Result<u8, Failure> {
    let Ok((store, _)) = open(config, store)? else {
        println!("forgot 0 uploads");
        return Ok(OK);
    };
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
