//! The library against the real tus server: every test checks the bytes it stored.

mod support;

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use support::{TusServer, make_file, pattern};
use tower::ServiceExt;
use tusflow::{Client, Operation, Source, Url};

fn client(server: &TusServer) -> Client {
    Client::new(server.endpoint.clone()).unwrap()
}

#[tokio::test]
async fn sizes_zero_one_mib_and_64_mib_in_one_patch() {
    let server = TusServer::start();
    let dir = tempfile::tempdir().unwrap();
    let client = client(&server);
    for (i, len) in [0u64, 1, 1 << 20, 64 << 20].into_iter().enumerate() {
        let path = make_file(dir.path(), &format!("f{i}.bin"), len, i as u64);
        let done = client.uploader(path.as_path()).upload().await.unwrap();
        assert!(done.complete && !done.resumed);
        assert_eq!((done.offset, done.length), (len, Some(len)));
        server.assert_stored_file(done.url.as_str(), &path);
    }
    assert_eq!(server.upload_count(), 4);
}

#[tokio::test]
async fn chunked_upload_counts_one_patch_per_chunk() {
    let server = TusServer::start();
    let dir = tempfile::tempdir().unwrap();
    let path = make_file(dir.path(), "odd.bin", 5 * (1 << 20) + 123, 7);
    let ops = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&ops);
    // A user-written layer: records the operation of every request.
    let record = tower::layer::layer_fn(move |inner: tusflow::client::Stack| {
        let seen = Arc::clone(&seen);
        tower::service_fn(move |req: tusflow::Request| {
            seen.lock()
                .unwrap()
                .push(*req.extensions().get::<Operation>().unwrap());
            inner.clone().oneshot(req)
        })
    });
    let client = Client::builder()
        .endpoint(&server.endpoint)
        .layer(record)
        .build()
        .unwrap();
    let done = client
        .uploader(path.as_path())
        .chunk_size(1 << 20)
        .upload()
        .await
        .unwrap();
    assert!(done.complete);
    server.assert_stored_file(done.url.as_str(), &path);
    // One OPTIONS, the first chunk in the creation (creation-with-upload), then one
    // append per chunk.
    let ops = ops.lock().unwrap().clone();
    assert_eq!(ops[..2], [Operation::Discover, Operation::Create]);
    assert_eq!(ops[2..], [Operation::Append; 5]);
}

#[tokio::test]
async fn stop_at_then_continue_with_the_same_uploader_and_by_url() {
    let server = TusServer::start();
    let dir = tempfile::tempdir().unwrap();
    let path = make_file(dir.path(), "big.bin", 3 << 20, 3);
    let client = client(&server);

    // tuspy style: the same uploader stops, then continues.
    let mut up = client.uploader(path.as_path()).chunk_size(512 << 10);
    let half = up.upload_until(3 << 19).await.unwrap();
    assert!(!half.complete);
    assert_eq!(half.offset, 3 << 19);
    let done = up.upload().await.unwrap();
    assert!(done.complete && done.resumed);
    assert_eq!(done.url, half.url);
    server.assert_stored_file(done.url.as_str(), &path);

    // A new uploader continues a known URL without creating (single PATCH for the rest).
    let part = client
        .uploader(path.as_path())
        .upload_until(1_000_001)
        .await
        .unwrap();
    assert_eq!(part.offset, 1_000_001);
    assert_eq!(client.status(&part.url).await.unwrap().offset, 1_000_001);
    let rest = client
        .uploader(path.as_path())
        .url(part.url.clone())
        .upload()
        .await
        .unwrap();
    assert!(rest.complete && rest.resumed);
    assert_eq!(rest.url, part.url);
    server.assert_stored_file(rest.url.as_str(), &path);
    assert_eq!(server.upload_count(), 2);
}

#[tokio::test]
async fn metadata_round_trips_with_filename_and_filetype_added() {
    let server = TusServer::start();
    let dir = tempfile::tempdir().unwrap();
    let path = make_file(dir.path(), "report.pdf", 1000, 1);
    let client = client(&server);
    let done = client
        .uploader(path.as_path())
        .metadata("owner", "zoë")
        .unwrap()
        .metadata("empty", "")
        .unwrap()
        .upload()
        .await
        .unwrap();
    let st = client.status(&done.url).await.unwrap();
    assert!(st.is_complete());
    let m = st.metadata.expect("server returns Upload-Metadata");
    assert_eq!(m.get_str("owner"), Some("zoë"));
    assert_eq!(m.get_str("empty"), Some(""));
    assert_eq!(m.get_str("filename"), Some("report.pdf"));
    assert_eq!(m.get_str("filetype"), Some("application/pdf"));

    // Given values win over the defaults.
    let done = client
        .uploader(path.as_path())
        .metadata("filename", "other.txt")
        .unwrap()
        .upload()
        .await
        .unwrap();
    let m = client.status(&done.url).await.unwrap().metadata.unwrap();
    assert_eq!(m.get_str("filename"), Some("other.txt"));
}

#[tokio::test]
async fn relative_location_is_resolved_against_the_endpoint() {
    let server = TusServer::start_with(&["--relative-location"]);
    let client = client(&server);
    let data = pattern(300_000, 9);
    let done = client.uploader(data.clone()).upload().await.unwrap();
    let endpoint: Url = server.endpoint.parse().unwrap();
    assert_eq!(done.url.origin(), endpoint.origin());
    assert!(done.url.path().starts_with("/files/"));
    server.assert_stored(done.url.as_str(), &data);
}

#[tokio::test]
async fn bytes_and_stream_sources() {
    let server = TusServer::start();
    let client = client(&server);
    let data = Bytes::from(pattern(2_500_000, 11));
    let done = client
        .uploader(data.clone())
        .chunk_size(1 << 20)
        .upload()
        .await
        .unwrap();
    server.assert_stored(done.url.as_str(), &data);

    // A stream is buffered a chunk at a time and can stop and continue.
    let reader = std::io::Cursor::new(data.to_vec());
    let mut up = client
        .uploader(Source::reader(reader, data.len() as u64))
        .chunk_size(700_000);
    assert_eq!(up.upload_until(1_400_000).await.unwrap().offset, 1_400_000);
    let done = up.upload().await.unwrap();
    assert!(done.complete);
    server.assert_stored(done.url.as_str(), &data);

    // A stream shorter than declared fails clearly and leaves a resumable upload.
    let short = std::io::Cursor::new(data[..1000].to_vec());
    let err = client
        .uploader(Source::reader(short, 5000))
        .upload()
        .await
        .unwrap_err();
    assert!(err.is_io(), "{err:?}");
    assert!(
        err.to_string().contains("before its declared length 5000"),
        "{err}"
    );
}

#[tokio::test]
async fn gone_uploads_and_length_mismatches_are_clear_errors() {
    let server = TusServer::start();
    let client = client(&server);
    let missing: Url = format!("{}0123456789abcdef", server.endpoint)
        .parse()
        .unwrap();
    let err = client.status(&missing).await.unwrap_err();
    assert!(err.is_gone(), "{err:?}");
    assert_eq!(err.status().map(|s| s.as_u16()), Some(404));
    let err = client
        .uploader(Bytes::from_static(b"abc"))
        .url(missing)
        .upload()
        .await
        .unwrap_err();
    assert!(
        err.is_gone() && err.operation() == Some(Operation::Offset),
        "{err:?}"
    );

    let done = client
        .uploader(Bytes::from_static(b"abcdef"))
        .upload_until(2)
        .await
        .unwrap();
    let err = client
        .uploader(Bytes::from_static(b"abcdefgh"))
        .url(done.url.clone())
        .upload()
        .await
        .unwrap_err();
    assert!(err.is_invalid());
    assert!(
        err.to_string()
            .contains("6 bytes long but the source is 8 bytes"),
        "{err}"
    );
    // Nothing was appended by the failed attempt.
    assert_eq!(client.status(&done.url).await.unwrap().offset, 2);
}

#[tokio::test]
async fn method_override_sends_patch_as_post() {
    let server = TusServer::start();
    let client = Client::builder()
        .endpoint(&server.endpoint)
        .method_override(true)
        .build()
        .unwrap();
    let data = pattern(1_500_000, 5);
    let done = client
        .uploader(data.clone())
        .chunk_size(1 << 20)
        .upload()
        .await
        .unwrap();
    assert!(done.complete);
    server.assert_stored(done.url.as_str(), &data);
}

#[tokio::test]
async fn progress_reports_sent_and_acknowledged_without_blocking() {
    let server = TusServer::start();
    let client = client(&server);
    let data = pattern(4 << 20, 2);
    let up = client.uploader(data.clone()).chunk_size(1 << 20);
    let rx = up.progress();
    // A second receiver that nobody ever reads must not hold anything up.
    let _ignored = up.progress();
    let mut up = up;
    let watcher = tokio::spawn(async move {
        let mut rx = rx;
        let mut seen = Vec::new();
        while rx.changed().await.is_ok() {
            let p = *rx.borrow();
            assert!(p.sent >= p.acknowledged, "{p:?}");
            seen.push(p.acknowledged);
        }
        seen
    });
    let done = up.upload().await.unwrap();
    assert!(done.complete);
    drop(up);
    let seen = watcher.await.unwrap();
    assert_eq!(seen.last(), Some(&(4 << 20)));
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
    server.assert_stored(done.url.as_str(), &data);
}

#[tokio::test]
async fn tower_http_layers_compose_with_the_stack() {
    use http::header::HeaderValue;
    use tower_http::set_header::SetRequestHeaderLayer;
    let server = TusServer::start();
    // tower-http's layer sets Upload-Metadata on every request that lacks it: the
    // server stores it, which shows the layer ran inside the stack.
    let client = Client::builder()
        .endpoint(&server.endpoint)
        .layer(SetRequestHeaderLayer::if_not_present(
            tusflow::protocol::header::UPLOAD_METADATA,
            HeaderValue::from_static("via dG93ZXItaHR0cA=="),
        ))
        .build()
        .unwrap();
    let data = pattern(10_000, 4);
    let done = client.uploader(data.clone()).upload().await.unwrap();
    let m = client.status(&done.url).await.unwrap().metadata.unwrap();
    assert_eq!(m.get_str("via"), Some("tower-http"));
    server.assert_stored(done.url.as_str(), &data);
}

#[tokio::test]
async fn capabilities_from_options() {
    let server = TusServer::start();
    let caps = client(&server).capabilities().await.unwrap();
    assert!(caps.speaks_our_version());
    for ext in [
        "creation",
        "creation-with-upload",
        "creation-defer-length",
        "termination",
        "expiration",
    ] {
        assert!(caps.supports(ext), "{ext} in {caps:?}");
    }
}

#[tokio::test]
async fn default_headers_reach_the_server_and_secrets_stay_out_of_debug() {
    let server = TusServer::start_with(&["--require-header", "x-api-token=s3cr3t-value"]);
    let bad = Client::builder()
        .endpoint(&server.endpoint)
        .header("x-api-token", "not-the-token")
        .build()
        .unwrap();
    let err = bad
        .uploader(Bytes::from_static(b"x"))
        .upload()
        .await
        .unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(401), "{err:?}");
    assert!(!err.to_string().contains("not-the-token"), "{err}");
    assert!(!format!("{err:?}").contains("not-the-token"));

    let good = Client::builder()
        .endpoint(&server.endpoint)
        .header("x-api-token", "s3cr3t-value")
        .build()
        .unwrap();
    assert!(!format!("{:?}", good.headers()).contains("s3cr3t"));
    let data = pattern(2000, 8);
    let done = good.uploader(data.clone()).upload().await.unwrap();
    server.assert_stored(done.url.as_str(), &data);

    // set_headers changes later requests of the client and its clones (tuspy).
    let clone = bad.clone();
    let mut h = http::HeaderMap::new();
    h.insert("x-api-token", "s3cr3t-value".parse().unwrap());
    bad.set_headers(h);
    let done = clone.uploader(data.clone()).upload().await.unwrap();
    server.assert_stored(done.url.as_str(), &data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_changed_during_the_upload_is_never_reported_complete() {
    let server = TusServer::start();
    let dir = tempfile::tempdir().unwrap();
    // Chunked: stopped before the next chunk. One streaming PATCH: the server gets
    // every byte, but the upload is reported as an error, never as complete.
    for (grow, chunked) in [(false, true), (true, true), (false, false)] {
        let path = make_file(dir.path(), "live.bin", 8 << 20, 30);
        // Paced, so the upload is still going when the file changes.
        let client = Client::builder()
            .endpoint(&server.endpoint)
            .layer(
                tusflow::rate_limit::RateLimitLayer::bytes_per_second(8_000_000).burst(256 << 10),
            )
            .build()
            .unwrap();
        let mut up = client.uploader(path.as_path());
        if chunked {
            up = up.chunk_size(1 << 20);
        }
        let mut progress = up.progress();
        let target = path.clone();
        let changer = tokio::spawn(async move {
            progress.wait_for(|p| p.sent >= 2 << 20).await.unwrap();
            use std::io::{Seek, SeekFrom, Write};
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .open(&target)
                .unwrap();
            let at = if grow {
                SeekFrom::End(0)
            } else {
                SeekFrom::Start(6 << 20)
            };
            f.seek(at).unwrap();
            f.write_all(b"changed").unwrap();
        });
        let err = up.upload().await.unwrap_err();
        changer.await.unwrap();
        assert!(err.is_io(), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains("live.bin") && msg.contains("changed during the upload"),
            "{msg}"
        );
        if chunked {
            let url = up.upload_url().unwrap();
            let st = client.status(url).await.unwrap();
            assert!(!st.is_complete(), "stopped before the end: {st:?}");
        }
    }
}

/// The batch engine reads its jobs as it goes: at any file's start, it has read at
/// most the files started plus what its bounded read-ahead holds; every file is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_reads_its_jobs_as_it_goes_and_stores_every_file() {
    use std::sync::atomic::{AtomicU64, Ordering};
    let server = TusServer::start();
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<_> = (0..120u64)
        .map(|i| make_file(dir.path(), &format!("f{i}.bin"), 2_000 + i, i))
        .collect();
    let pulled = Arc::new(AtomicU64::new(0));
    let started = Arc::new(AtomicU64::new(0));
    let worst = Arc::new(AtomicU64::new(0));
    let jobs = {
        let pulled = Arc::clone(&pulled);
        files.clone().into_iter().map(move |path| {
            pulled.fetch_add(1, Ordering::SeqCst);
            tusflow::batch::Job {
                relpath: path.file_name().unwrap().to_string_lossy().into_owned(),
                path,
            }
        })
    };
    let on_start: tusflow::batch::OnStart = {
        let (pulled, started, worst) = (pulled.clone(), started.clone(), worst.clone());
        Arc::new(move |_job, _size, _progress| {
            let s = started.fetch_add(1, Ordering::SeqCst) + 1;
            let ahead = pulled.load(Ordering::SeqCst).saturating_sub(s);
            worst.fetch_max(ahead, Ordering::SeqCst);
        })
    };
    let mut opts = tusflow::batch::Options::default();
    opts.concurrency = 3;
    let client = client(&server);
    let mut urls = Vec::new();
    let (summary, interrupted) = tusflow::batch::run(
        &client,
        jobs,
        &opts,
        Some(on_start),
        |r| urls.push((r.path.clone(), r.url.clone().unwrap())),
        std::future::pending(),
    )
    .await;
    assert!(!interrupted);
    assert_eq!(
        (summary.files, summary.complete, summary.failed),
        (120, 120, 0)
    );
    // Read ahead: the channel's 2 per slot, one more the reader holds, and the other
    // slots' jobs already spawned that have not reached their start yet: O(concurrency)
    // (all 120 when jobs were collected up front).
    let worst = worst.load(Ordering::SeqCst);
    assert!(
        worst <= 2 * 3 + 1 + (3 - 1),
        "read {worst} jobs ahead of the uploads"
    );
    for (path, url) in urls {
        server.assert_stored_file(&url, std::path::Path::new(&path));
    }
}

/// What is not a regular file is never uploaded as empty: a FIFO and a file that says
/// it is empty but is not (`/proc`) are read as streams (deferred length) and stored
/// exactly; a device is refused before anything is created.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_and_a_proc_file_are_streams_and_a_device_is_refused() {
    let server = TusServer::start();
    let dir = tempfile::tempdir().unwrap();
    let client = client(&server);

    let fifo = dir.path().join("pipe");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let data = pattern(700_000, 41);
    let writer = {
        let (fifo, data) = (fifo.clone(), data.clone());
        std::thread::spawn(move || std::fs::write(fifo, data).unwrap())
    };
    let done = client.uploader(fifo.as_path()).upload().await.unwrap();
    writer.join().unwrap();
    assert!(done.complete);
    assert_eq!((done.offset, done.length), (700_000, Some(700_000)));
    server.assert_stored(done.url.as_str(), &data);

    let proc_file = std::path::Path::new("/proc/version");
    assert_eq!(
        std::fs::metadata(proc_file).unwrap().len(),
        0,
        "procfs says 0"
    );
    let expected = std::fs::read(proc_file).unwrap();
    let done = client.uploader(proc_file).upload().await.unwrap();
    assert!(done.complete && done.offset > 0);
    server.assert_stored(done.url.as_str(), &expected);

    let before = server.upload_count();
    let e = client
        .uploader(std::path::Path::new("/dev/null"))
        .upload()
        .await
        .unwrap_err();
    assert!(
        e.is_invalid() && e.to_string().contains("/dev/null is a device"),
        "{e}"
    );
    assert_eq!(
        server.upload_count(),
        before,
        "nothing created for a device"
    );
}
