//! Resuming across restarts: the URL store and fingerprints against the real server,
//! including a CLI killed with SIGKILL in the middle of an upload.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use support::proxy::FaultProxy;
use support::{TusServer, make_file, pattern};
use tusflow::store::{MemoryStore, UploadRecord, UrlStore};
use tusflow::{Client, Operation};

fn client_with(endpoint: &str, store: &Arc<MemoryStore>) -> Client {
    Client::builder()
        .endpoint(endpoint)
        .store(Arc::clone(store) as Arc<dyn UrlStore>)
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_stored_upload_is_found_again_and_forgotten_on_success() {
    let server = TusServer::start();
    let dir = tempfile::tempdir().unwrap();
    let path = make_file(dir.path(), "a.bin", 3 << 20, 1);
    let store = Arc::new(MemoryStore::new());
    let client = client_with(&server.endpoint, &store);

    let part = client
        .uploader(path.as_path())
        .upload_until(1 << 20)
        .await
        .unwrap();
    assert!(!part.resumed);
    let previous = client.find_previous_uploads(path.as_path()).await.unwrap();
    assert_eq!(previous.len(), 1);
    assert_eq!(previous[0].url, part.url.as_str());
    assert_eq!(previous[0].offset, Some(1 << 20));
    assert_eq!(previous[0].length, Some(3 << 20));

    // A new uploader of the same file (think: the next run) continues it.
    let done = client.uploader(path.as_path()).upload().await.unwrap();
    assert!(done.resumed && done.complete);
    assert_eq!(done.url, part.url);
    server.assert_stored_file(done.url.as_str(), &path);
    assert!(store.list().unwrap().is_empty(), "removed on success");
    assert_eq!(server.upload_count(), 1);
}

#[tokio::test]
async fn gone_expired_and_changed_uploads_start_anew_and_drop_the_record() {
    let server = TusServer::start();
    let proxy = FaultProxy::start(&server.addr).await;
    let endpoint = proxy.url(&server.endpoint);
    let dir = tempfile::tempdir().unwrap();
    let path = make_file(dir.path(), "b.bin", 2 << 20, 2);
    let store = Arc::new(MemoryStore::new());
    let client = client_with(&endpoint, &store);

    // Gone: the server no longer has it.
    let part = client
        .uploader(path.as_path())
        .upload_until(1 << 20)
        .await
        .unwrap();
    let req = client
        .request(Operation::Terminate, &part.url, tusflow::Body::empty())
        .unwrap();
    client.call(req).await.unwrap();
    let done = client.uploader(path.as_path()).upload().await.unwrap();
    assert!(!done.resumed && done.complete);
    assert_ne!(done.url, part.url);
    server.assert_stored_file(done.url.as_str(), &path);
    assert!(store.list().unwrap().is_empty());

    // Expired: created anew without asking the server.
    let part = client
        .uploader(path.as_path())
        .upload_until(1 << 20)
        .await
        .unwrap();
    let mut rec = store.list().unwrap().remove(0);
    rec.expires = Some(1);
    store.add(&rec).unwrap();
    let before = proxy.requests().len();
    let done = client.uploader(path.as_path()).upload().await.unwrap();
    assert!(!done.resumed);
    assert_ne!(done.url, part.url);
    let seen = proxy.requests()[before..].to_vec();
    assert!(
        seen[0].starts_with("POST "),
        "no HEAD of the expired upload: {seen:?}"
    );

    // Another length behind the same fingerprint (say, a fingerprinter that only looks
    // at names): the server's Upload-Length differs, so a new upload, and the stale
    // record goes.
    let data = pattern(1000, 3);
    let first = client
        .uploader(data.clone())
        .upload_until(10)
        .await
        .unwrap();
    let fp = store.list().unwrap()[0].fingerprint.clone();
    let longer = client
        .uploader(pattern(2000, 9))
        .no_store()
        .upload_until(10)
        .await
        .unwrap();
    store.remove(&fp, first.url.as_str()).unwrap();
    store
        .add(&UploadRecord::new(fp.clone(), longer.url.as_str()))
        .unwrap();
    let done = client.uploader(data.clone()).upload().await.unwrap();
    assert!(!done.resumed);
    assert_ne!(done.url, longer.url);
    server.assert_stored(done.url.as_str(), &data);
    assert!(
        store.find(&fp).unwrap().is_empty(),
        "the stale record was removed"
    );
}

#[tokio::test]
async fn a_locked_upload_is_waited_for_and_kept() {
    let server = TusServer::start();
    let proxy = FaultProxy::start(&server.addr).await;
    let store = Arc::new(MemoryStore::new());
    let client = Client::builder()
        .endpoint(proxy.url(&server.endpoint))
        .store(Arc::clone(&store) as Arc<dyn UrlStore>)
        .layer(tusflow::retry::RetryLayer::new().initial_delay(Duration::from_millis(20)))
        .build()
        .unwrap();
    let data = pattern(2 << 20, 4);
    let part = client
        .uploader(data.clone())
        .upload_until(1 << 20)
        .await
        .unwrap();
    proxy.answer(Some("HEAD"), 423, 2);
    let done = client.uploader(data.clone()).upload().await.unwrap();
    assert!(done.resumed);
    assert_eq!(done.url, part.url);
    server.assert_stored(done.url.as_str(), &data);
}

/// Run the CLI; the store is `store`.
fn cli(args: &[&str], store: &std::path::Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tusflow"));
    c.args(args).arg("--store").arg(store);
    c
}

fn json(out: &std::process::Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {text} / {}", String::from_utf8_lossy(&out.stderr)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_upload_resumes_from_the_servers_offset() {
    let server = TusServer::start();
    let proxy = FaultProxy::start(&server.addr).await;
    let endpoint = proxy.url(&server.endpoint);
    let dir = tempfile::tempdir().unwrap();
    let size: u64 = 256 << 20;
    let chunk: u64 = 8 << 20;
    let path = make_file(dir.path(), "big.bin", size, 5);
    let store = dir.path().join("store.redb");
    let args = [
        "upload",
        "-e",
        endpoint.as_str(),
        "--chunk-size",
        "8MiB",
        "--rate-limit",
        "100MB/s",
        "--json",
        path.to_str().unwrap(),
    ];

    let mut first = cli(&args, &store).stdout(Stdio::null()).spawn().unwrap();
    // Wait until the server holds a good part of it, then SIGKILL.
    let stored = loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let biggest = server.stored_sizes().into_iter().max().unwrap_or(0);
        if biggest >= 64 << 20 {
            break biggest;
        }
        assert!(
            first.try_wait().unwrap().is_none(),
            "the first run ended before the kill"
        );
    };
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();
    assert!(stored < size);
    let requests_before = proxy.requests().len();

    let out = cli(&args, &store).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = json(&out);
    assert_eq!(report["resumed"], true);
    assert_eq!(report["complete"], true);
    server.assert_stored_file(report["url"].as_str().unwrap(), &path);
    assert_eq!(server.upload_count(), 1, "no second upload was created");

    // The second run began at the server's offset, not at 0.
    let second = proxy.requests()[requests_before..].to_vec();
    let first_patch = second
        .iter()
        .find(|r| r.starts_with("PATCH"))
        .expect("a PATCH");
    let began: u64 = first_patch
        .rsplit("offset=")
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(began > 0 && began <= size, "{first_patch}");
    assert!(!second.iter().any(|r| r.starts_with("POST")), "{second:?}");
    // In all, at most the file plus one chunk went over the wire.
    let sent = proxy.patch_bytes();
    assert!(sent <= size + chunk, "sent {sent} for {size}");
    eprintln!("killed at {stored} stored bytes; resumed at {began}; sent {sent} for {size}");
}

#[test]
fn a_changed_file_is_a_new_upload_and_list_and_forget() {
    let server = TusServer::start();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store.redb");
    let path = make_file(dir.path(), "c.bin", 5 << 20, 6);
    let p = path.to_str().unwrap();
    let ep = server.endpoint.as_str();

    let out = cli(
        &["upload", "-e", ep, "--stop-at", "2MiB", "--json", p],
        &store,
    )
    .output()
    .unwrap();
    let first = json(&out);
    assert_eq!(first["complete"], false);

    let out = cli(&["list", "--json"], &store).output().unwrap();
    let listed = json(&out);
    assert_eq!(listed["url"], first["url"]);
    assert_eq!(listed["path"], p);
    assert_eq!(listed["offset"], 2 << 20);
    assert_eq!(listed["size"], 5 << 20);

    // Same path, other content and size.
    std::fs::write(&path, pattern(3 << 20, 7)).unwrap();
    let out = cli(&["upload", "-e", ep, "--json", p], &store)
        .output()
        .unwrap();
    let second = json(&out);
    assert_eq!(second["resumed"], false);
    assert_eq!(second["complete"], true);
    assert_ne!(second["url"], first["url"]);
    server.assert_stored_file(second["url"].as_str().unwrap(), &path);
    let out = cli(&["list", "--json"], &store).output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).trim().is_empty(),
        "stale record dropped"
    );

    // forget by URL, and --all.
    let other = make_file(dir.path(), "d.bin", 1 << 20, 8);
    let out = cli(
        &[
            "upload",
            "-e",
            ep,
            "--stop-at",
            "1000",
            "--json",
            other.to_str().unwrap(),
        ],
        &store,
    )
    .output()
    .unwrap();
    let url = json(&out)["url"].as_str().unwrap().to_owned();
    let out = cli(&["forget", &url], &store).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "forgot 1 upload"
    );
    let out = cli(&["forget", &url], &store).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let out = cli(&["forget", "--all"], &store).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "forgot 0 uploads"
    );

    // --no-store: nothing is remembered.
    let out = cli(&["upload", "-e", ep, "--stop-at", "1000", p], &store)
        .arg("--no-store")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "--store and --no-store conflict"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_tusflow"))
        .args(["upload", "-e", ep, "--stop-at", "1000", "--no-store", p])
        .env("XDG_DATA_HOME", dir.path().join("data"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(!dir.path().join("data/tusflow/uploads.redb").exists());
}

#[test]
fn a_corrupt_store_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("broken.redb");
    std::fs::write(&store, vec![0x42u8; 5000]).unwrap();
    let f = make_file(dir.path(), "e.bin", 10, 9);
    let out = cli(
        &[
            "upload",
            "-e",
            "http://127.0.0.1:9/files/",
            f.to_str().unwrap(),
        ],
        &store,
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("broken.redb"), "{err}");
}
