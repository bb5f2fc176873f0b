//! Every tus 1.0 extension, each against a real server that advertises it: @tus/server
//! (creation-with-upload, creation-defer-length, expiration, termination) and rustus
//! (concatenation, and its 256 KiB default body limit for 413 adaptation).

#[path = "../../tests/support/mod.rs"]
mod support;

use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tower::ServiceExt;
use tusflow::store::{MemoryStore, UrlStore};
use tusflow::{Client, Operation, Source};

use support::{RustusServer, TusServer, make_file, pattern};

/// What a layer saw of one request.
#[derive(Clone, Debug)]
struct Seen {
    op: Operation,
    body: u64,
    headers: http::HeaderMap,
}

/// A client for `endpoint` that records every request it sends.
fn recording_client(
    endpoint: &str,
    edit: impl FnOnce(tusflow::ClientBuilder) -> tusflow::ClientBuilder,
) -> (Client, Arc<Mutex<Vec<Seen>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let record = tower::layer::layer_fn(move |inner: tusflow::client::Stack| {
        let log = Arc::clone(&log);
        tower::service_fn(move |req: tusflow::Request| {
            log.lock().unwrap().push(Seen {
                op: *req.extensions().get::<Operation>().unwrap(),
                body: req.body().len(),
                headers: req.headers().clone(),
            });
            inner.clone().oneshot(req)
        })
    });
    let builder = Client::builder().endpoint(endpoint).layer(record);
    (edit(builder).build().unwrap(), seen)
}

fn ops(seen: &Mutex<Vec<Seen>>) -> Vec<Operation> {
    seen.lock().unwrap().iter().map(|s| s.op).collect()
}

fn tusflow_cli(args: &[&str], stdin: Option<&std::path::Path>) -> Output {
    let data = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tusflow"));
    cmd.args(args)
        .env("XDG_DATA_HOME", data.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    match stdin {
        Some(p) => cmd.stdin(std::fs::File::open(p).unwrap()),
        None => cmd.stdin(Stdio::null()),
    };
    cmd.output().expect("run tusflow")
}

/// A client that remembers uploads in a memory store.
fn stored_client(endpoint: &str) -> (Client, Arc<MemoryStore>) {
    let store = Arc::new(MemoryStore::new());
    let client = Client::builder()
        .endpoint(endpoint)
        .store(store.clone())
        .build()
        .unwrap();
    (client, store)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn capabilities_are_asked_once_and_tus_max_size_is_checked_first() {
    let server = TusServer::start_with(&["--max-size", "1000000"]);
    let (client, seen) = recording_client(&server.endpoint, |b| b);
    for seed in 0..3 {
        let data = pattern(100_000, seed);
        let done = client.uploader(data.clone()).upload().await.unwrap();
        server.assert_stored(done.url.as_str(), &data);
    }
    let discovers = ops(&seen)
        .iter()
        .filter(|o| **o == Operation::Discover)
        .count();
    assert_eq!(discovers, 1, "one OPTIONS per client: {:?}", ops(&seen));
    assert_eq!(
        client.capabilities().await.unwrap().max_size,
        Some(1_000_000)
    );

    let before = server.upload_count();
    let err = client
        .uploader(pattern(1_000_001, 9))
        .upload()
        .await
        .unwrap_err();
    assert!(err.is_invalid(), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("1000001") && msg.contains("Tus-Max-Size of 1000000"),
        "{msg}"
    );
    assert_eq!(server.upload_count(), before, "nothing was created");
}

#[tokio::test]
async fn creation_with_upload_sends_a_small_file_in_one_request() {
    let server = TusServer::start();
    let dir = tempfile::tempdir().unwrap();
    let path = make_file(dir.path(), "small.bin", 64 << 10, 4);

    // By default a file that fits in its creation goes in one PATCH after a bare
    // creation: only a request to the URL the client knows completes an upload.
    let (client, seen) = recording_client(&server.endpoint, |b| b);
    let done = client.uploader(path.as_path()).upload().await.unwrap();
    assert!(done.complete);
    server.assert_stored_file(done.url.as_str(), &path);
    let log = seen.lock().unwrap().clone();
    assert_eq!(
        ops(&seen),
        [Operation::Discover, Operation::Create, Operation::Append]
    );
    assert_eq!(log[1].body, 0);
    assert_eq!(log[2].body, 64 << 10);

    // Allowed to complete in the creation: one request.
    let (client, seen) = recording_client(&server.endpoint, |b| b.complete_in_creation(true));
    let done = client.uploader(path.as_path()).upload().await.unwrap();
    assert!(done.complete);
    server.assert_stored_file(done.url.as_str(), &path);
    assert_eq!(ops(&seen), [Operation::Discover, Operation::Create]);
    let log = seen.lock().unwrap().clone();
    assert_eq!(log[1].body, 64 << 10);
    assert_eq!(
        log[1].headers["content-type"],
        "application/offset+octet-stream"
    );

    // An empty file is created with a deferred length, then given its length 0.
    let empty = make_file(dir.path(), "empty.bin", 0, 4);
    let (client, seen) = recording_client(&server.endpoint, |b| b);
    let done = client.uploader(empty.as_path()).upload().await.unwrap();
    assert!(done.complete);
    server.assert_stored_file(done.url.as_str(), &empty);
    let log = seen.lock().unwrap().clone();
    assert_eq!(
        ops(&seen),
        [Operation::Discover, Operation::Create, Operation::Append]
    );
    assert_eq!(log[1].headers["upload-defer-length"], "1");
    assert_eq!(log[2].headers["upload-length"], "0");
    let head = client.status(&done.url).await.unwrap();
    assert_eq!((head.offset, head.length), (0, Some(0)));

    // Switched off: the creation is bare and one append follows.
    let (client, seen) = recording_client(&server.endpoint, |b| b.creation_with_upload(false));
    let done = client.uploader(path.as_path()).upload().await.unwrap();
    server.assert_stored_file(done.url.as_str(), &path);
    assert_eq!(
        ops(&seen),
        [Operation::Discover, Operation::Create, Operation::Append]
    );
    assert_eq!(seen.lock().unwrap()[1].body, 0);

    // A larger file: the first chunk rides in the creation, the rest in appends.
    let big = make_file(dir.path(), "big.bin", (3 << 20) + 7, 5);
    let (client, seen) = recording_client(&server.endpoint, |b| b);
    let done = client
        .uploader(big.as_path())
        .chunk_size(1 << 20)
        .upload()
        .await
        .unwrap();
    server.assert_stored_file(done.url.as_str(), &big);
    let bodies: Vec<u64> = seen.lock().unwrap().iter().map(|s| s.body).collect();
    assert_eq!(bodies, [0, 1 << 20, 1 << 20, 1 << 20, 7]);
}

#[tokio::test]
async fn a_stream_of_unknown_length_defers_its_length() {
    let server = TusServer::start();
    for (len, chunk) in [
        ((5 << 20) + 123, 1 << 20),
        (4 << 20, 1 << 20),
        (100, 1 << 20),
    ] {
        let data = pattern(len, len as u64);
        let (client, seen) = recording_client(&server.endpoint, |b| b);
        let reader = std::io::Cursor::new(data.clone());
        let mut up = client.uploader(Source::stream(reader)).chunk_size(chunk);
        let done = up.upload().await.unwrap();
        assert!(done.complete);
        assert_eq!(done.length, Some(len as u64));
        server.assert_stored(done.url.as_str(), &data);
        let log = seen.lock().unwrap().clone();
        let create = log.iter().find(|s| s.op == Operation::Create).unwrap();
        let with_length: Vec<&Seen> = log
            .iter()
            .filter(|s| s.headers.contains_key("upload-length"))
            .collect();
        // Upload-Length goes exactly once: on the creation when the stream ended within
        // its first chunk, else on the append that carried the last byte.
        assert_eq!(with_length.len(), 1, "{len}: {log:?}");
        if len as u64 <= chunk {
            assert!(!create.headers.contains_key("upload-defer-length"));
            assert_eq!(log.len(), 3, "OPTIONS, POST, one PATCH: {log:?}");
        } else {
            assert_eq!(create.headers["upload-defer-length"], "1");
            assert_eq!(with_length[0].op, Operation::Append);
            assert_eq!(
                with_length[0].headers["upload-length"],
                len.to_string().as_str()
            );
            // One chunk buffered at a time: no request carries more than a chunk.
            assert!(log.iter().all(|s| s.body <= chunk), "{log:?}");
        }
    }
}

#[test]
fn cat_100_mib_into_tusflow_upload_dash() {
    let server = TusServer::start();
    let dir = tempfile::tempdir().unwrap();
    let path = make_file(dir.path(), "in.bin", 100 << 20, 6);
    let out = tusflow_cli(
        &["upload", "-", "-e", &server.endpoint, "--json"],
        Some(&path),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(line["size"], 100 << 20);
    server.assert_stored_file(line["url"].as_str().unwrap(), &path);
    let info: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            server
                .stored_path(line["url"].as_str().unwrap())
                .with_extension("json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        info["size"],
        100 << 20,
        "the deferred length reached the server"
    );
}

#[tokio::test]
async fn expiration_is_read_stored_and_honoured() {
    let server = TusServer::start_with(&["--expiration-ms", "1500"]);
    let (client, store) = stored_client(&server.endpoint);
    let data = pattern(3 << 20, 8);
    let mut up = client.uploader(data.clone()).chunk_size(1 << 20);
    let half = up.upload_until(1 << 20).await.unwrap();
    assert!(!half.complete);
    let records = store.list().unwrap();
    assert_eq!(records.len(), 1);
    let now = tusflow::store::unix_now();
    let expires = records[0].expires.expect("Upload-Expires is stored");
    assert!(
        expires >= now.saturating_sub(2) && expires <= now + 2,
        "{expires} vs {now}"
    );

    // Past its expiry: the server answers 410, and a new upload of the same source
    // starts over instead of resuming.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let err = client.status(&half.url).await.unwrap_err();
    assert!(err.is_gone(), "{err:?}");
    let done = client.uploader(data.clone()).upload().await.unwrap();
    assert!(done.complete && !done.resumed);
    assert_ne!(done.url, half.url);
    server.assert_stored(done.url.as_str(), &data);
    assert!(store.list().unwrap().is_empty());
}

#[tokio::test]
async fn termination_removes_the_upload_and_its_record() {
    let server = TusServer::start();
    let (client, store) = stored_client(&server.endpoint);
    assert!(client.capabilities().await.unwrap().supports("termination"));
    let data = pattern(2 << 20, 10);
    let half = client
        .uploader(data.clone())
        .chunk_size(1 << 20)
        .upload_until(1 << 20)
        .await
        .unwrap();
    assert!(server.stored_path(half.url.as_str()).exists());
    assert_eq!(store.list().unwrap().len(), 1);

    client.terminate(&half.url).await.unwrap();
    assert!(!server.stored_path(half.url.as_str()).exists());
    assert!(client.status(&half.url).await.unwrap_err().is_gone());
    assert!(store.list().unwrap().is_empty(), "the record went too");
    let again = client.terminate(&half.url).await.unwrap_err();
    assert!(again.is_gone(), "{again:?}");

    // The CLI, on another upload.
    let half = client
        .uploader(pattern(2 << 20, 11))
        .chunk_size(1 << 20)
        .upload_until(1 << 20)
        .await
        .unwrap();
    let out = tusflow_cli(&["terminate", half.url.as_str()], None);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("terminated"));
    assert!(!server.stored_path(half.url.as_str()).exists());
    let out = tusflow_cli(&["terminate", half.url.as_str()], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("does not exist"), "{}", stderr(&out));
}

/// A client paced to `bytes_per_second`, so an upload can be stopped midway.
fn slow_client(endpoint: &str, bytes_per_second: u64, store: Arc<MemoryStore>) -> Client {
    Client::builder()
        .endpoint(endpoint)
        .layer(
            tusflow::rate_limit::RateLimitLayer::bytes_per_second(bytes_per_second)
                .burst(256 << 10),
        )
        .store(store)
        .build()
        .unwrap()
}

/// Abort `up` once the server acknowledged at least `after` bytes.
fn abort_after(up: &tusflow::Uploader, after: u64, terminate: bool) {
    let mut progress = up.progress();
    let handle = up.abort_handle();
    tokio::spawn(async move {
        let _ = progress.wait_for(|p| p.acknowledged >= after).await;
        if terminate {
            handle.terminate()
        } else {
            handle.abort()
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_in_flight_is_aborted_with_or_without_termination() {
    let server = TusServer::start();
    let dir = tempfile::tempdir().unwrap();
    let path = make_file(dir.path(), "abort.bin", 8 << 20, 12);
    let store = Arc::new(MemoryStore::new());
    let client = slow_client(&server.endpoint, 8_000_000, store.clone());

    // Aborted: the server and the store keep it, and the next upload continues it.
    let mut up = client.uploader(path.as_path()).chunk_size(512 << 10);
    abort_after(&up, 1 << 20, false);
    let err = up.upload().await.unwrap_err();
    assert!(err.is_cancelled(), "{err:?}");
    assert_eq!(err.to_string(), "upload aborted");
    let url = up.upload_url().unwrap().clone();
    assert_eq!(store.list().unwrap().len(), 1);
    let done = client.uploader(path.as_path()).upload().await.unwrap();
    assert!(done.resumed && done.complete);
    assert_eq!(done.url, url);
    server.assert_stored_file(done.url.as_str(), &path);

    // Aborted and terminated: nothing is left, on the server or in the store.
    let before = server.upload_count();
    let mut up = client.uploader(path.as_path()).chunk_size(512 << 10);
    abort_after(&up, 1 << 20, true);
    let err = up.upload().await.unwrap_err();
    assert!(err.is_cancelled(), "{err:?}");
    assert!(err.to_string().contains("terminated"), "{err}");
    assert_eq!(server.upload_count(), before);
    assert!(store.list().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_uploads_are_concatenated_and_resume_each_part() {
    let rustus = RustusServer::start(&["--max-body-size", "16777216"]);
    let dir = tempfile::tempdir().unwrap();
    let path = make_file(dir.path(), "par.bin", (16 << 20) + 5, 13);
    let store = Arc::new(MemoryStore::new());

    // Interrupted midway, then continued: each part resumes where the server has it.
    let client = slow_client(&rustus.endpoint, 16_000_000, store.clone());
    let mut up = client
        .uploader(path.as_path())
        .parallel(4)
        .chunk_size(1 << 20);
    abort_after(&up, 6 << 20, false);
    assert!(up.upload().await.unwrap_err().is_cancelled());
    assert_eq!(up.partial_urls().len(), 4);
    let records = store.list().unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].partial_urls.len(), 4);

    let (client, seen) = recording_client(&rustus.endpoint, |b| b.store(store.clone()));
    let done = client
        .uploader(path.as_path())
        .metadata("owner", "tests")
        .unwrap()
        .upload()
        .await
        .unwrap();
    assert!(done.complete && done.resumed);
    assert_eq!(done.parts, 4);
    support::assert_same_files(&rustus.stored_path(done.url.as_str()), &path);
    let log = seen.lock().unwrap().clone();
    let appended: u64 = log
        .iter()
        .filter(|s| s.op == Operation::Append)
        .map(|s| s.body)
        .sum();
    assert!(appended < (12 << 20), "only the rest was sent: {appended}");
    let last = log.last().unwrap();
    assert_eq!(last.op, Operation::Offset, "the final upload is checked");
    let fin = log
        .iter()
        .find(|s| s.headers.contains_key("upload-concat"))
        .unwrap();
    let concat = fin.headers["upload-concat"].to_str().unwrap();
    assert!(concat.starts_with("final;"), "{concat}");
    assert_eq!(concat.split(' ').count(), 4);
    assert!(fin.headers.contains_key("upload-metadata"));
    assert!(store.list().unwrap().is_empty());
    let st = client.status(&done.url).await.unwrap();
    assert_eq!(
        st.metadata.unwrap().get("owner"),
        Some(&b"tests"[..]),
        "the final upload carries the metadata"
    );
}

#[tokio::test]
async fn parallel_falls_back_to_one_upload_without_concatenation() {
    let server = TusServer::start();
    let dir = tempfile::tempdir().unwrap();
    let path = make_file(dir.path(), "one.bin", 4 << 20, 14);
    let client = Client::new(&server.endpoint).unwrap();
    let done = client
        .uploader(path.as_path())
        .parallel(4)
        .upload()
        .await
        .unwrap();
    assert_eq!(done.parts, 1);
    server.assert_stored_file(done.url.as_str(), &path);
    assert_eq!(server.upload_count(), 1);
}

#[test]
fn cli_parallel_4_to_rustus() {
    let rustus = RustusServer::start(&["--max-body-size", "16777216"]);
    let dir = tempfile::tempdir().unwrap();
    let path = make_file(dir.path(), "cli.bin", 32 << 20, 15);
    let out = tusflow_cli(
        &[
            "upload",
            "-e",
            &rustus.endpoint,
            "--parallel",
            "4",
            "--json",
            "--no-store",
            path.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    support::assert_same_files(&rustus.stored_path(line["url"].as_str().unwrap()), &path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_413_halves_the_chunk_size_and_the_client_remembers() {
    // rustus with its default body limit (256 KiB) answers 413 to larger bodies.
    let rustus = RustusServer::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let path = make_file(dir.path(), "large.bin", 64 << 20, 16);
    let (client, seen) = recording_client(&rustus.endpoint, |b| b);
    assert_eq!(client.chunk_limit(), None);
    let done = client.uploader(path.as_path()).upload().await.unwrap();
    assert!(done.complete);
    support::assert_same_files(&rustus.stored_path(done.url.as_str()), &path);
    let limit = client.chunk_limit().expect("a limit was learned");
    assert!((64 << 10..=256 << 10).contains(&limit), "{limit}");

    // The next upload starts within the limit: no request above it.
    seen.lock().unwrap().clear();
    let data = pattern(3 << 20, 17);
    let done = client.uploader(data.clone()).upload().await.unwrap();
    let stored = std::fs::read(rustus.stored_path(done.url.as_str())).unwrap();
    assert!(stored == data);
    assert!(seen.lock().unwrap().iter().all(|s| s.body <= limit));

    // Unchunked appends adapt too (creation-with-upload off).
    let (client, _) = recording_client(&rustus.endpoint, |b| b.creation_with_upload(false));
    let done = client.uploader(path.as_path()).upload().await.unwrap();
    support::assert_same_files(&rustus.stored_path(done.url.as_str()), &path);
    assert!(client.chunk_limit().is_some());
}

#[test]
fn the_blocking_facade_uploads_and_resumes() {
    let server = TusServer::start();
    let dir = tempfile::tempdir().unwrap();
    let path = make_file(dir.path(), "blocking.bin", 3 << 20, 18);
    let client = tusflow::blocking::Client::new(&server.endpoint).unwrap();
    assert!(client.capabilities().unwrap().supports("creation"));
    let mut up = client
        .uploader(path.as_path())
        .chunk_size(1 << 20)
        .metadata("k", "v")
        .unwrap();
    let half = up.upload_until(1 << 20).unwrap();
    assert_eq!(half.offset, 1 << 20);
    let done = up.upload().unwrap();
    assert!(done.complete);
    server.assert_stored_file(done.url.as_str(), &path);
    assert!(client.status(&done.url).unwrap().is_complete());

    // Inside an async runtime it refuses with a clear error instead of a panic.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let err = rt
        .block_on(async { tusflow::blocking::Client::new(&server.endpoint) })
        .unwrap_err();
    assert!(err.to_string().contains("inside an async runtime"), "{err}");
}

/// No server we can install advertises concatenation-unfinished, so this one test uses
/// an in-process double of the protocol (it keeps bytes and answers as the tus 1.0
/// text says) through `ClientBuilder::transport`.
mod unfinished {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use bytes::Bytes;
    use http::{Method, StatusCode};
    use http_body_util::BodyExt;

    #[derive(Default)]
    struct Upload {
        length: Option<u64>,
        data: Vec<u8>,
        parts: Vec<String>,
    }

    #[derive(Default)]
    pub(super) struct Fake {
        uploads: Mutex<HashMap<String, Upload>>,
        pub(super) log: Mutex<Vec<String>>,
    }

    impl Fake {
        /// A final upload's bytes: its parts', once every part is complete.
        fn assembled(&self, id: &str) -> (Option<u64>, Vec<u8>) {
            let uploads = self.uploads.lock().unwrap();
            let u = &uploads[id];
            if u.parts.is_empty() {
                return (u.length, u.data.clone());
            }
            let parts: Vec<&Upload> = u.parts.iter().map(|p| &uploads[p]).collect();
            let length = parts.iter().map(|p| p.length.unwrap()).sum();
            if parts.iter().all(|p| p.length == Some(p.data.len() as u64)) {
                (
                    Some(length),
                    parts.iter().flat_map(|p| p.data.clone()).collect(),
                )
            } else {
                (Some(length), Vec::new())
            }
        }

        pub(super) fn bytes(&self, url: &str) -> Vec<u8> {
            self.assembled(url.rsplit('/').next().unwrap()).1
        }

        pub(super) async fn handle(
            self: Arc<Self>,
            req: tusflow::Request,
        ) -> Result<tusflow::Response, tusflow::Error> {
            let (parts, body) = req.into_parts();
            let body = body.collect().await?.to_bytes();
            let id = parts.uri.path().rsplit('/').next().unwrap().to_owned();
            let h = &parts.headers;
            let num = |name: &str| {
                h.get(name)
                    .map(|v| v.to_str().unwrap().parse::<u64>().unwrap())
            };
            self.log
                .lock()
                .unwrap()
                .push(format!("{} {}", parts.method, parts.uri.path()));
            let ok = http::Response::builder().header("Tus-Resumable", "1.0.0");
            let resp = match parts.method {
                Method::OPTIONS => ok.status(204).header(
                    "Tus-Extension",
                    "creation,concatenation,concatenation-unfinished",
                ),
                Method::POST => {
                    let mut uploads = self.uploads.lock().unwrap();
                    let new = format!("u{}", uploads.len());
                    let concat = h
                        .get("upload-concat")
                        .map(|v| v.to_str().unwrap().to_owned());
                    let upload = match concat.as_deref().and_then(|c| c.strip_prefix("final;")) {
                        Some(list) => Upload {
                            parts: list
                                .split(' ')
                                .map(|u| u.rsplit('/').next().unwrap().to_owned())
                                .collect(),
                            ..Upload::default()
                        },
                        None => Upload {
                            length: num("upload-length"),
                            data: body.to_vec(),
                            ..Upload::default()
                        },
                    };
                    let offset = upload.data.len();
                    uploads.insert(new.clone(), upload);
                    ok.status(201)
                        .header("Location", format!("http://fake.invalid/files/{new}"))
                        .header("Upload-Offset", offset)
                }
                Method::HEAD => {
                    let (length, data) = self.assembled(&id);
                    let mut r = ok.status(200).header("Upload-Offset", data.len());
                    if let Some(l) = length {
                        r = r.header("Upload-Length", l);
                    }
                    r
                }
                Method::PATCH => {
                    let mut uploads = self.uploads.lock().unwrap();
                    let u = uploads.get_mut(&id).unwrap();
                    if num("upload-offset") != Some(u.data.len() as u64) {
                        return Err(tusflow::Error::from_status(StatusCode::CONFLICT, b"", None));
                    }
                    u.data.extend_from_slice(&body);
                    ok.status(204).header("Upload-Offset", u.data.len())
                }
                _ => ok.status(405),
            };
            Ok(resp.body(Bytes::new()).unwrap())
        }
    }
}

#[tokio::test]
async fn concatenation_unfinished_creates_the_final_upload_first() {
    let fake = Arc::new(unfinished::Fake::default());
    let f = Arc::clone(&fake);
    let client = Client::builder()
        .endpoint("http://fake.invalid/files/")
        .transport(tower::service_fn(move |req| Arc::clone(&f).handle(req)))
        .build()
        .unwrap();
    let data = pattern((1 << 20) + 3, 19);
    let done = client
        .uploader(data.clone())
        .parallel(3)
        .chunk_size(256 << 10)
        .upload()
        .await
        .unwrap();
    assert_eq!(done.parts, 3);
    assert!(
        fake.bytes(done.url.as_str()) == data,
        "assembled bytes differ"
    );
    let log = fake.log.lock().unwrap().clone();
    let first_patch = log.iter().position(|l| l.starts_with("PATCH")).unwrap();
    let posts: Vec<usize> = (0..log.len())
        .filter(|i| log[*i].starts_with("POST"))
        .collect();
    assert_eq!(posts.len(), 4, "three partials and the final: {log:?}");
    assert!(
        posts[3] < first_patch,
        "the final came before any bytes: {log:?}"
    );
}

/// Cuts every connection after 3 MiB: each append is re-sent from the server's offset,
/// for a stream out of its buffered chunk, for parallel parts out of their windows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_and_parallel_parts_survive_cut_connections() {
    let retry = || {
        tusflow::retry::RetryLayer::new()
            .initial_delay(Duration::from_millis(10))
            .max_delay(Duration::from_millis(50))
    };
    let server = TusServer::start();
    let proxy = support::proxy::FaultProxy::start(&server.addr).await;
    proxy.cut_every_connection_after(3 << 20);
    let client = Client::builder()
        .endpoint(proxy.url(&server.endpoint))
        .layer(retry())
        .build()
        .unwrap();
    let data = pattern((12 << 20) + 9, 20);
    let done = client
        .uploader(Source::stream(std::io::Cursor::new(data.clone())))
        .chunk_size(4 << 20)
        .upload()
        .await
        .unwrap();
    assert!(done.complete);
    server.assert_stored(done.url.as_str(), &data);
    assert!(proxy.cuts() >= 3, "{} cuts", proxy.cuts());

    let rustus = RustusServer::start(&["--max-body-size", "16777216"]);
    let proxy = support::proxy::FaultProxy::start(&rustus.addr).await;
    proxy.cut_every_connection_after(3 << 20);
    let client = Client::builder()
        .endpoint(proxy.url(&rustus.endpoint))
        .layer(retry())
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = make_file(dir.path(), "cut.bin", 16 << 20, 21);
    // rustus keeps nothing of a cut PATCH (it reads the whole body first), so the
    // parts go in 1 MiB chunks: a cut costs the chunk in flight.
    let done = client
        .uploader(path.as_path())
        .parallel(4)
        .chunk_size(1 << 20)
        .upload()
        .await
        .unwrap();
    assert_eq!(done.parts, 4);
    support::assert_same_files(&rustus.stored_path(done.url.as_str()), &path);
    // 16 MiB over connections cut at 3 MiB each (how many depends on reuse).
    assert!(proxy.cuts() >= 2, "{} cuts", proxy.cuts());
}
