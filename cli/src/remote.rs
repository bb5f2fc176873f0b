//! `tusflow info`, `status` and `terminate`: one request to a server.

use std::path::Path;

use serde_json::json;
use tusflow::client::parse_http_url;
use tusflow::protocol;

use crate::args::{ConnArgs, StoreArgs, adjust_stack, conn_overrides};
use crate::stack::client_from;
use crate::{FAILED, Failure, OK};

pub(crate) async fn info(
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
    let loaded = crate::config::load(config, serde_json::Value::from(o))?;
    if loaded.config.endpoint.is_none() {
        return Err(Failure::Usage(
            "info needs an ENDPOINT argument or `endpoint` in the config".into(),
        ));
    }
    let mut stack = loaded.config.middleware.stack.clone();
    adjust_stack(&mut stack, conn, None);
    let client = client_from(&loaded, stack, false)?;
    if let Some(interop) = client.protocol().interop() {
        return info_ietf(&client, interop.get(), json).await;
    }
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
                crate::text::shown(&v.join(", "))
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

/// `info` for the IETF draft: the limits the target resource announces.
async fn info_ietf(client: &tusflow::Client, interop: u8, json: bool) -> Result<u8, Failure> {
    let l = client.upload_limits().await?;
    let age = l.max_age.map(|d| d.as_secs());
    if json {
        println!(
            "{}",
            json!({
                "protocol": "ietf",
                "interop": interop,
                "max_size": l.max_size,
                "min_size": l.min_size,
                "max_append_size": l.max_append_size,
                "min_append_size": l.min_append_size,
                "max_age": age,
            })
        );
        return Ok(OK);
    }
    let bytes = |v: Option<u64>| v.map_or("(not given)".to_owned(), |n| format!("{n} bytes"));
    println!("protocol:        ietf (interop {interop})");
    println!("max size:        {}", bytes(l.max_size));
    println!("min size:        {}", bytes(l.min_size));
    println!("max append size: {}", bytes(l.max_append_size));
    println!("min append size: {}", bytes(l.min_append_size));
    println!(
        "max age:         {}",
        age.map_or("(not given)".to_owned(), |s| format!("{s} s"))
    );
    Ok(OK)
}

pub(crate) async fn terminate(
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
    let loaded = crate::config::load(config, serde_json::Value::from(o))?;
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

pub(crate) async fn status(
    config: Option<&Path>,
    upload_url: &str,
    conn: &ConnArgs,
    json: bool,
) -> Result<u8, Failure> {
    let url = parse_http_url("upload URL", upload_url)?;
    let mut o = serde_json::Map::new();
    conn_overrides(conn, &mut o)?;
    o.insert("store".into(), json!({ "kind": "none" }));
    let mut loaded = crate::config::load(config, serde_json::Value::from(o))?;
    // Judged as an endpoint of its own: a dead server gets the first-contact tries, not
    // a full retry budget.
    loaded
        .config
        .endpoint
        .get_or_insert_with(|| upload_url.to_owned());
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
            println!(
                "metadata: {} = {}",
                crate::text::shown(&k),
                crate::text::shown(v.as_str().unwrap_or_default())
            );
        }
    }
    Ok(OK)
}
