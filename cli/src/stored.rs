//! `tusflow list` and `tusflow forget`: the store of upload URLs.

use serde_json::json;
use tusflow::store::UrlStore as _;

use crate::args::StoreArgs;
use crate::{Failure, OK};

pub(crate) fn list(store: &StoreArgs, json: bool) -> Result<u8, Failure> {
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
                crate::text::shown(r.source.as_deref().unwrap_or("(bytes)")),
                crate::text::shown(&r.url),
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

pub(crate) fn human_age(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s ago"),
        s if s < 7200 => format!("{}m ago", s / 60),
        s if s < 172_800 => format!("{}h ago", s / 3600),
        s => format!("{}d ago", s / 86_400),
    }
}

pub(crate) fn forget(
    url: Option<&str>,
    all: bool,
    expired: bool,
    store: &StoreArgs,
) -> Result<u8, Failure> {
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
