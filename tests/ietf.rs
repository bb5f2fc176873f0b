//! The IETF draft "Resumable Uploads for HTTP", interop 8 and 6, against the draft's
//! test server (checked itself with the real tus-js-client): every test checks what
//! the server stored and whether it holds the upload as complete.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::ietf::{IetfServer, tus_js_upload};
use support::make_file;
use support::proxy::FaultProxy;
use tusflow::core::ietf::{Interop, Problem, Protocol};
use tusflow::{Client, Operation};

const BOTH: [u8; 2] = [8, 6];

fn ietf(n: u8) -> Protocol {
    Protocol::Ietf(Interop::new(n.into()).unwrap())
}

fn client(endpoint: &str, interop: u8) -> Client {
    Client::builder()
        .endpoint(endpoint)
        .protocol(ietf(interop))
        .build()
        .unwrap()
}

fn retrying(endpoint: &str, interop: u8) -> Client {
    Client::builder()
        .endpoint(endpoint)
        .protocol(ietf(interop))
        .layer(tusflow::retry::RetryLayer::new().initial_delay(Duration::from_millis(20)))
        .build()
        .unwrap()
}

/// A client whose appends carry Content-Digest, in pieces of `chunk` bytes.
fn summing(endpoint: &str, chunk: u64) -> Client {
    Client::builder()
        .endpoint(endpoint)
        .protocol(ietf(8))
        .layer(tusflow::checksum::ChecksumLayer::sha256().chunk_size(chunk))
        .build()
        .unwrap()
}

/// The error of uploading `path` with `c`.
async fn upload_err(c: &Client, path: &std::path::Path) -> tusflow::Error {
    c.uploader(path).upload().await.unwrap_err()
}

/// The operation and body size of every request the client sends.
type Seen = Arc<Mutex<Vec<(Operation, u64)>>>;

fn recording(endpoint: &str, interop: u8) -> (Client, Seen) {
    let seen: Seen = Arc::default();
    let s = Arc::clone(&seen);
    let layer = tower::layer::layer_fn(move |inner: tusflow::client::Stack| {
        let s = Arc::clone(&s);
        tower::service_fn(move |req: tusflow::Request| {
            let op = *req.extensions().get::<Operation>().unwrap();
            s.lock().unwrap().push((op, req.body().len()));
            let mut inner = inner.clone();
            async move {
                use tower::{Service, ServiceExt};
                inner.ready().await?.call(req).await
            }
        })
    });
    let c = Client::builder()
        .endpoint(endpoint)
        .protocol(ietf(interop))
        .layer(layer)
        .build()
        .unwrap();
    (c, seen)
}

#[tokio::test]
async fn empty_1_mib_and_64_mib_exact_with_the_target_resources_answer() {
    for interop in BOTH {
        let server = IetfServer::start(interop, &[]);
        let dir = tempfile::tempdir().unwrap();
        let c = client(&server.endpoint, interop);
        for (i, len) in [0u64, 1 << 20, 64 << 20].into_iter().enumerate() {
            let path = make_file(dir.path(), &format!("f{i}.bin"), len, i as u64);
            let done = c.uploader(path.as_path()).upload().await.unwrap();
            assert!(done.complete && !done.resumed, "interop {interop}");
            assert_eq!((done.offset, done.length), (len, Some(len)));
            server.assert_complete(done.url.as_str(), &path);
            // The target resource's own answer to the completing request.
            let a = done.answer.expect("the final answer");
            assert_eq!(a.status, 200);
            let body: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
            assert_eq!(body["size"], len, "{body}");
            // The file's name and type, as the draft carries them.
            let st = server.state(done.url.as_str());
            assert_eq!(st["interop"], interop);
            assert_eq!(st["disposition"], format!("inline; filename=\"f{i}.bin\""));
            assert_eq!(st["contentType"], "application/octet-stream");
        }
    }
}

#[tokio::test]
async fn max_append_size_splits_appends_and_each_is_within_it() {
    for interop in BOTH {
        let server = IetfServer::start(interop, &["--max-append-size", "4194304"]);
        let dir = tempfile::tempdir().unwrap();
        let len = 10 * (1 << 20) + 123;
        let path = make_file(dir.path(), "big.bin", len, 3);
        let (c, seen) = recording(&server.endpoint, interop);
        let done = c.uploader(path.as_path()).upload().await.unwrap();
        server.assert_complete(done.url.as_str(), &path);
        let appends: Vec<u64> = seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(op, _)| *op == Operation::Append)
            .map(|(_, n)| *n)
            .collect();
        assert_eq!(
            appends,
            vec![4 << 20, 4 << 20, (2 << 20) + 123],
            "interop {interop}"
        );
    }
}

#[tokio::test]
async fn max_size_is_refused_before_any_byte_with_options_or_after_creation_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let path = make_file(dir.path(), "large.bin", 5000, 1);
    // OPTIONS told the limit: nothing is created.
    let server = IetfServer::start(8, &["--max-size", "4096"]);
    let (c, seen) = recording(&server.endpoint, 8);
    let e = c.uploader(path.as_path()).upload().await.unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("large.bin") && msg.contains("max-size of 4096"),
        "{msg}"
    );
    assert_eq!(
        seen.lock().unwrap().iter().map(|s| s.0).collect::<Vec<_>>(),
        [Operation::Discover]
    );
    assert!(server.states().is_empty());
    // Without OPTIONS, the creation with its Upload-Length is refused: 413.
    let server = IetfServer::start(8, &["--max-size", "4096", "--no-options"]);
    let e = upload_err(&client(&server.endpoint, 8), &path).await;
    assert_eq!(e.status().map(|s| s.as_u16()), Some(413), "{e}");
    assert!(server.states().is_empty());
}

#[tokio::test]
async fn a_connection_cut_twice_mid_upload_resumes_from_the_servers_offset() {
    for interop in BOTH {
        let server = IetfServer::start(interop, &[]);
        let proxy = FaultProxy::start(&server.addr).await;
        let dir = tempfile::tempdir().unwrap();
        let len = 50 << 20;
        let path = make_file(dir.path(), "cut.bin", len, 9);
        // Every connection is cut once it carried 20 MiB: the 50 MiB append is cut
        // at about 20 and 40 MiB.
        proxy.cut_every_connection_after(20 << 20);
        let c = retrying(&proxy.url(&server.endpoint), interop);
        let done = c.uploader(path.as_path()).upload().await.unwrap();
        assert!(done.complete);
        let url = server.stored_path(done.url.as_str());
        assert!(url.exists());
        server.assert_complete(done.url.as_str(), &path);
        assert_eq!(proxy.cuts(), 2, "interop {interop}");
        // Only the bytes in flight at each cut went twice.
        let sent = proxy.patch_bytes();
        eprintln!(
            "interop {interop}: {len} bytes, {} cuts, {sent} bytes sent in appends ({} again), {:?}",
            proxy.cuts(),
            sent - len,
            proxy.requests()
        );
        assert!(sent >= len && sent < len + (4 << 20), "{sent}");
        let heads = proxy
            .requests()
            .iter()
            .filter(|r| r.starts_with("HEAD"))
            .count();
        assert_eq!(heads, 2, "{:?}", proxy.requests());
    }
}

#[tokio::test]
async fn server_errors_are_retried_and_the_upload_completes() {
    let server = IetfServer::start(8, &["--max-append-size", "1048576"]);
    let proxy = FaultProxy::start(&server.addr).await;
    let dir = tempfile::tempdir().unwrap();
    let path = make_file(dir.path(), "five.bin", 3 << 20, 2);
    proxy.answer(Some("PATCH"), 503, 2);
    proxy.answer(Some("HEAD"), 502, 1);
    let c = retrying(&proxy.url(&server.endpoint), 8);
    let done = c.uploader(path.as_path()).upload().await.unwrap();
    server.assert_complete(done.url.as_str(), &path);
}

#[tokio::test]
async fn a_409_problem_is_a_typed_error_with_both_offsets() {
    let server = IetfServer::start(8, &[]);
    let c = client(&server.endpoint, 8);
    let created = c.create(Some(10), &tusflow::Metadata::new()).await.unwrap();
    let e = c
        .append(&created.url, 4, tusflow::Body::from(vec![1u8; 6]), None)
        .await
        .unwrap_err();
    assert_eq!(e.status().map(|s| s.as_u16()), Some(409));
    assert!(e.is_offset_mismatch());
    assert_eq!(
        e.problem(),
        Some(&Problem::MismatchingOffset {
            expected: Some(0),
            provided: Some(4)
        })
    );
    assert!(
        e.to_string()
            .contains("the server has 0, the request said 4"),
        "{e}"
    );
    // Appending to a completed upload: the completed-upload problem.
    let done = c
        .append(
            &created.url,
            0,
            tusflow::Body::from(vec![7u8; 10]),
            Some(10),
        )
        .await
        .unwrap();
    assert_eq!(done.offset, 10);
    let st = c.status(&created.url).await.unwrap();
    assert!(st.is_complete() && st.complete == Some(true));
    let e = c
        .append(&created.url, 10, tusflow::Body::empty(), None)
        .await
        .unwrap_err();
    assert_eq!(e.problem(), Some(&Problem::CompletedUpload), "{e}");
}

#[tokio::test]
async fn stop_at_then_continue_by_url_and_terminate() {
    for interop in BOTH {
        let server = IetfServer::start(interop, &[]);
        let dir = tempfile::tempdir().unwrap();
        let len = 3 << 20;
        let path = make_file(dir.path(), "half.bin", len, 5);
        let c = client(&server.endpoint, interop);
        let half = c
            .uploader(path.as_path())
            .chunk_size(1 << 20)
            .upload_until(1 << 20)
            .await
            .unwrap();
        assert!(!half.complete);
        let st = server.state(half.url.as_str());
        assert_eq!(
            (st["offset"].as_u64(), &st["complete"]),
            (Some(1 << 20), &false.into())
        );
        let done = c
            .uploader(path.as_path())
            .url(half.url.clone())
            .upload()
            .await
            .unwrap();
        assert!(done.resumed && done.complete);
        server.assert_complete(done.url.as_str(), &path);
        // A complete upload resource is complete: nothing more is sent.
        let (rc, seen) = recording(&server.endpoint, interop);
        let again = rc
            .uploader(path.as_path())
            .url(half.url.clone())
            .upload()
            .await
            .unwrap();
        assert!(again.complete && again.answer.is_none());
        assert_eq!(*seen.lock().unwrap(), [(Operation::Offset, 0)]);
        // Cancellation: DELETE frees the upload resource.
        let other = c
            .uploader(path.as_path())
            .upload_until(1 << 20)
            .await
            .unwrap();
        c.terminate(&other.url).await.unwrap();
        assert!(!server.stored_path(other.url.as_str()).exists());
        let e = c.status(&other.url).await.unwrap_err();
        assert!(e.is_gone(), "{e}");
    }
}

#[tokio::test]
async fn a_stream_of_unknown_length_ends_with_an_empty_completing_append() {
    let server = IetfServer::start(8, &[]);
    let data = support::pattern(3 * (1 << 20) + 17, 4);
    let (c, seen) = recording(&server.endpoint, 8);
    let source = tusflow::Source::stream(std::io::Cursor::new(data.clone()));
    let done = c
        .uploader(source)
        .chunk_size(1 << 20)
        .upload()
        .await
        .unwrap();
    assert!(done.complete);
    assert!(std::fs::read(server.stored_path(done.url.as_str())).unwrap() == data);
    assert_eq!(server.state(done.url.as_str())["complete"], true);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.iter().filter(|s| s.0 == Operation::Append).count(), 4);
    assert!(done.answer.is_some());
}

#[tokio::test]
async fn another_protocol_or_interop_version_is_found_and_said() {
    let server = IetfServer::start(8, &[]);
    let dir = tempfile::tempdir().unwrap();
    let path = make_file(dir.path(), "v6.bin", 1000, 1);
    // OPTIONS says which interop version the server speaks.
    let e = upload_err(&client(&server.endpoint, 6), &path).await;
    assert!(
        e.to_string()
            .contains("speaks interop version 8 of the IETF draft, not 6"),
        "{e}"
    );
    // A tus client sees the draft's server for what it is.
    let e = upload_err(&Client::new(server.endpoint.clone()).unwrap(), &path).await;
    assert!(
        e.to_string()
            .contains("offers the IETF draft's resumable uploads (interop version 8), not tus 1.0"),
        "{e}"
    );
    // And a draft client sees a tus server.
    let tus = support::TusServer::start();
    let e = upload_err(&client(&tus.endpoint, 8), &path).await;
    assert!(e.to_string().contains("speaks tus 1.0"), "{e}");
    assert_eq!(tus.upload_count(), 0);
    // Without OPTIONS, the creation's answer shows it: a conventional upload, no
    // upload resource.
    let quiet = IetfServer::start(8, &["--no-options"]);
    let e = upload_err(&client(&quiet.endpoint, 6), &path).await;
    assert!(
        e.to_string()
            .contains("does not offer resumable uploads of interop version 6"),
        "{e}"
    );
    assert!(server.states().is_empty() && quiet.states().is_empty());
}

/// The fixture is not only our reading of the draft: the real tus-js-client 4.3.1
/// (`protocol: 'ietf-draft-05'`, interop 6) uploads to it, through cuts too.
#[tokio::test]
async fn tus_js_client_uploads_to_the_draft_server_exactly() {
    let server = IetfServer::start(6, &[]);
    let dir = tempfile::tempdir().unwrap();
    let path = make_file(dir.path(), "js.bin", 10_000_000, 8);
    let out = tus_js_upload(&server.endpoint, &path, 3_000_000, true);
    let url = out["url"].as_str().unwrap_or_else(|| panic!("{out}"));
    server.assert_complete(url, &path);
    // Through cuts: tus-js-client asks the offset with HEAD and resumes.
    let proxy = FaultProxy::start(&server.addr).await;
    proxy.cut_every_connection_after(2_000_000);
    let endpoint = proxy.url(&server.endpoint);
    let out = tokio::task::spawn_blocking(move || tus_js_upload(&endpoint, &path, 3_000_000, true))
        .await
        .unwrap();
    let url = out["url"].as_str().unwrap_or_else(|| panic!("{out}"));
    server.assert_complete(url, &dir.path().join("js.bin"));
    assert!(proxy.cuts() >= 4, "{}", proxy.cuts());
}

/// What tus-js-client 4.3.1 does with a stream: every byte arrives, but its last
/// append says `Upload-Complete: ?0` (the stream had not ended when the slice was
/// read), and it never completes the upload. tusflow, over the same server, does.
#[tokio::test]
async fn tus_js_client_never_completes_a_stream_which_tusflow_does() {
    let server = IetfServer::start(6, &[]);
    let dir = tempfile::tempdir().unwrap();
    let path = make_file(dir.path(), "stream.bin", 10_000_000, 6);
    let out = tus_js_upload(&server.endpoint, &path, 3_000_000, false);
    let url = out["url"].as_str().unwrap_or_else(|| panic!("{out}"));
    let st = server.state(url);
    assert_eq!(
        (st["offset"].as_u64(), &st["complete"]),
        (Some(10_000_000), &false.into())
    );
    support::assert_same_files(&server.stored_path(url), &path);
    // tusflow continues that resource: every byte is there, so one empty append with
    // Upload-Complete: ?1 completes it.
    let (c, seen) = recording(&server.endpoint, 6);
    let done = c
        .uploader(path.as_path())
        .url(url.parse().unwrap())
        .upload()
        .await
        .unwrap();
    assert!(done.complete && done.resumed);
    server.assert_complete(url, &path);
    assert_eq!(
        *seen.lock().unwrap(),
        [(Operation::Offset, 0), (Operation::Append, 0)]
    );
    let file = tokio::fs::File::open(&path).await.unwrap();
    let done = client(&server.endpoint, 6)
        .uploader(tusflow::Source::stream(file))
        .chunk_size(3_000_000)
        .upload()
        .await
        .unwrap();
    server.assert_complete(done.url.as_str(), &path);
}

/// The checksum layer sends RFC 9530 `Content-Digest` in IETF mode (no
/// `Upload-Checksum`), one per piece, and only the last piece completes the upload.
#[tokio::test]
async fn the_checksum_layer_sends_content_digests_which_the_server_checks() {
    let server = IetfServer::start(8, &[]);
    let proxy = FaultProxy::start(&server.addr).await;
    let dir = tempfile::tempdir().unwrap();
    let path = make_file(dir.path(), "sum.bin", 3 * (1 << 20) + 512 * 1024, 7);
    let done = summing(&server.endpoint, 1 << 20)
        .uploader(path.as_path())
        .upload()
        .await
        .unwrap();
    server.assert_complete(done.url.as_str(), &path);
    assert_eq!(server.state(done.url.as_str())["digests"], 4);
    // A byte flipped on the way: the server refuses the piece, nothing is appended.
    proxy.flip_byte(1000, 1);
    let e = summing(&proxy.url(&server.endpoint), 1 << 20)
        .uploader(path.as_path())
        .upload()
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("Content-Digest does not match"),
        "{e}"
    );
    let bad = server
        .states()
        .into_iter()
        .find(|s| s["id"].as_str() != done.url.as_str().rsplit('/').next())
        .unwrap();
    assert_eq!(
        (bad["offset"].as_u64(), &bad["complete"]),
        (Some(0), &false.into())
    );
}

/// Seeded chaos through the fault proxy: cuts at random bytes, 5xx, 423 and 409
/// answers to appends. Every upload completes with exactly its bytes, in one upload
/// resource each.
#[tokio::test]
async fn random_cuts_5xx_and_409s_leave_every_upload_complete_and_exact() {
    for interop in BOTH {
        let server = IetfServer::start(interop, &["--max-append-size", "1048576"]);
        let proxy = FaultProxy::start(&server.addr).await;
        proxy.chaos(support::proxy::Chaos {
            seed: 16 + u64::from(interop),
            cut: 120,
            server_error: 60,
            locked: 30,
            conflict: 60,
            stall: 0,
            stall_for: Duration::ZERO,
        });
        let dir = tempfile::tempdir().unwrap();
        let c = Client::builder()
            .endpoint(proxy.url(&server.endpoint))
            .protocol(ietf(interop))
            .layer(
                tusflow::retry::RetryLayer::new()
                    .initial_delay(Duration::from_millis(5))
                    .max_attempts(50),
            )
            .build()
            .unwrap();
        for i in 0..6u64 {
            let path = make_file(dir.path(), &format!("c{i}.bin"), (1 << 20) * i + 4321, i);
            let done = c.uploader(path.as_path()).upload().await.unwrap();
            server.assert_complete(done.url.as_str(), &path);
        }
        let injected = proxy.injected();
        assert!(injected.cuts > 0 && injected.conflicts > 0, "{injected:?}");
        // (A creation whose answer was cut may leave an empty resource behind.)
        let complete = server
            .states()
            .iter()
            .filter(|s| s["complete"] == true)
            .count();
        assert_eq!(complete, 6);
    }
}

/// An error answer with `Upload-Complete: ?1`: every byte arrived and the target
/// resource failed to process them. Resuming cannot help: not retried, said so.
#[tokio::test]
async fn an_error_to_a_completed_upload_is_not_retried() {
    let server = IetfServer::start(8, &["--fail-processing"]);
    let dir = tempfile::tempdir().unwrap();
    let path = make_file(dir.path(), "p.bin", 100_000, 3);
    let seen: Seen = Arc::default();
    let s = Arc::clone(&seen);
    let c = Client::builder()
        .endpoint(&server.endpoint)
        .protocol(ietf(8))
        .layer(tusflow::retry::RetryLayer::new().initial_delay(Duration::from_millis(5)))
        .layer(tower::layer::layer_fn(
            move |inner: tusflow::client::Stack| {
                let s = Arc::clone(&s);
                tower::service_fn(move |req: tusflow::Request| {
                    s.lock().unwrap().push((
                        *req.extensions().get::<Operation>().unwrap(),
                        req.body().len(),
                    ));
                    let mut inner = inner.clone();
                    async move {
                        use tower::{Service, ServiceExt};
                        inner.ready().await?.call(req).await
                    }
                })
            },
        ))
        .build()
        .unwrap();
    let e = c.uploader(path.as_path()).upload().await.unwrap_err();
    assert!(e.is_upload_complete() && !e.is_retryable(), "{e}");
    assert!(
        e.to_string()
            .contains("the upload is complete, but the target resource answered 500"),
        "{e}"
    );
    let appends = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.0 == Operation::Append)
        .count();
    assert_eq!(appends, 1);
}

/// An interop 8 server need not say the offset in an append's answer: a success took
/// the whole content, with or without the checksum layer's pieces.
#[tokio::test]
async fn append_answers_without_upload_offset_are_a_whole_success() {
    let server = IetfServer::start(8, &["--no-append-offset", "--max-append-size", "1048576"]);
    let dir = tempfile::tempdir().unwrap();
    let path = make_file(dir.path(), "n.bin", 3 * (1 << 20) + 99, 4);
    let done = client(&server.endpoint, 8)
        .uploader(path.as_path())
        .upload()
        .await
        .unwrap();
    server.assert_complete(done.url.as_str(), &path);
    let summed = summing(&server.endpoint, 300_000);
    let done = summed.uploader(path.as_path()).upload().await.unwrap();
    server.assert_complete(done.url.as_str(), &path);
    // Three 1 MiB appends of 4 pieces each, and the last 99 bytes.
    assert_eq!(server.state(done.url.as_str())["digests"], 13);
}

/// min-append-size: no append but the last is smaller, whether the driver, a
/// `--stop-at`, the checksum layer's pieces or a re-send after a cut would make it so
/// (the server refuses smaller ones with a 400 that is not retried).
#[tokio::test]
async fn min_append_size_holds_for_stop_at_pieces_and_re_sends() {
    let limits = [
        "--min-append-size",
        "1048576",
        "--max-append-size",
        "2097152",
    ];
    let server = IetfServer::start(8, &limits);
    let proxy = FaultProxy::start(&server.addr).await;
    let dir = tempfile::tempdir().unwrap();
    let len = 5 * (1 << 20) + 10;
    let path = make_file(dir.path(), "min.bin", len, 5);
    let (c, seen) = recording(&server.endpoint, 8);
    let half = c
        .uploader(path.as_path())
        .chunk_size(100_000)
        .upload_until(100_000)
        .await
        .unwrap();
    assert_eq!(
        half.offset,
        1 << 20,
        "stopped past stop_at, at min-append-size"
    );
    let done = c
        .uploader(path.as_path())
        .url(half.url.clone())
        .chunk_size(100_000)
        .upload()
        .await
        .unwrap();
    server.assert_complete(done.url.as_str(), &path);
    let appends: Vec<u64> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.0 == Operation::Append)
        .map(|s| s.1)
        .collect();
    // The first stopped at 1 MiB; then 1 MiB each, and the 10 bytes that complete it.
    assert_eq!(appends, [1 << 20, 1 << 20, 1 << 20, 1 << 20, 1 << 20, 10]);
    // The checksum layer's pieces: 300 000 bytes asked, 1 MiB sent; the 10-byte tail
    // joins the piece before it (appends of 2, 2 and 1 MiB + 10: 2 + 2 + 1 pieces).
    let summed = summing(&server.endpoint, 300_000);
    let done = summed.uploader(path.as_path()).upload().await.unwrap();
    server.assert_complete(done.url.as_str(), &path);
    assert_eq!(server.state(done.url.as_str())["digests"], 5);
    // Cuts every 1.3 MB: the rest of a cut append is often under the minimum, and
    // the driver sends from the server's offset instead.
    proxy.cut_every_connection_after(1_300_000);
    let done = retrying(&proxy.url(&server.endpoint), 8)
        .uploader(path.as_path())
        .upload()
        .await
        .unwrap();
    server.assert_complete(done.url.as_str(), &path);
    assert!(proxy.cuts() >= 3, "{}", proxy.cuts());
}

/// max-age (interop 8) and expires (interop 6) become the stored upload's expiry.
#[tokio::test]
async fn the_upload_resources_lifetime_is_its_expiry_in_the_store() {
    for interop in BOTH {
        let server = IetfServer::start(interop, &["--max-age", "3600"]);
        let dir = tempfile::tempdir().unwrap();
        let path = make_file(dir.path(), "life.bin", 2 << 20, 6);
        let store = Arc::new(tusflow::store::MemoryStore::new());
        let c = Client::builder()
            .endpoint(&server.endpoint)
            .protocol(ietf(interop))
            .store(store.clone())
            .build()
            .unwrap();
        let half = c
            .uploader(path.as_path())
            .upload_until(1 << 20)
            .await
            .unwrap();
        use tusflow::store::UrlStore;
        let recs = store.list().unwrap();
        assert_eq!(recs.len(), 1);
        let now = tusflow::core::store::unix_now();
        let expires = recs[0].expires.expect("an expiry");
        assert!(
            (now + 3590..=now + 3610).contains(&expires),
            "{expires} vs {now}"
        );
        assert!(
            recs[0]
                .endpoint
                .as_deref()
                .unwrap()
                .ends_with(&format!("(ietf interop {interop})"))
        );
        let done = c.uploader(path.as_path()).upload().await.unwrap();
        assert!(done.resumed && done.url == half.url);
        server.assert_complete(done.url.as_str(), &path);
    }
}

/// The draft lets the server's offset be less than what the client sent, even less
/// than where the cut append began: the retry layer hands it to the driver, which
/// sends again from there (it holds the file).
#[tokio::test]
async fn an_offset_that_went_back_after_a_cut_is_sent_again_from_there() {
    for interop in BOTH {
        let server = IetfServer::start(
            interop,
            &["--backtrack", "1500000", "--max-append-size", "2097152"],
        );
        let proxy = FaultProxy::start(&server.addr).await;
        proxy.cut_every_connection_after(3_000_000);
        let dir = tempfile::tempdir().unwrap();
        let path = make_file(dir.path(), "back.bin", 9_000_000, 21);
        let done = retrying(&proxy.url(&server.endpoint), interop)
            .uploader(path.as_path())
            .upload()
            .await
            .unwrap();
        server.assert_complete(done.url.as_str(), &path);
        let st = server.state(done.url.as_str());
        assert!(st["backtracked"].as_u64().unwrap_or(0) >= 2, "{st}");
    }
}
