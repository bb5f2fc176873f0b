//! `tusflow upload`: files (through the batch engine) or standard input.

use std::path::Path;

use serde_json::json;
use tusflow::client::parse_http_url;
use tusflow::size::parse_size;
use tusflow::{Url, batch::Job};

use crate::args::{CommonArgs, UploadArgs, common_overrides};
use crate::batch::{Jobs, run_jobs};
use crate::stack::client_and_metadata;
use crate::{FAILED, Failure, OK};

pub(crate) async fn upload(config: Option<&Path>, args: UploadArgs) -> Result<u8, Failure> {
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
    let loaded = crate::config::load(config, common_overrides(&args.common)?)?;
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
        .map(|p| Job {
            relpath: p.file_name().map_or_else(
                || p.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            ),
            path: p.clone(),
        })
        .collect();
    run_jobs(
        &loaded,
        &args.common,
        Jobs::List(jobs),
        stop_at,
        url,
        false,
        false,
    )
    .await
}

/// `tusflow upload -`: standard input, of unknown length, one chunk buffered at a time.
pub(crate) async fn upload_stdin(
    loaded: &crate::config::Loaded,
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
        let mut out = json!({
            "path": "-",
            "url": done.url.as_str(),
            "size": done.length,
            "offset": done.offset,
            "status": if done.complete { "complete" } else { "partial" },
            "complete": done.complete,
            "seconds": started.elapsed().as_secs_f64(),
        });
        if let Some(a) = done.answer.as_deref() {
            out["answer"] = json!(tusflow::batch::AnswerReport::of(a));
        }
        println!("{out}");
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
