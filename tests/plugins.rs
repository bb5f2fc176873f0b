//! The built-in middleware against real tus servers, through the fault-injection
//! proxy: every test checks the bytes the server stored.

mod support;

use std::time::Duration;

use support::proxy::FaultProxy;
use support::{RustusServer, TusServer, make_file, pattern};
use tusflow::checksum::{Algorithm, ChecksumLayer};
use tusflow::retry::RetryLayer;
use tusflow::{Client, Url};

fn fast_retry() -> RetryLayer {
    RetryLayer::new()
        .initial_delay(Duration::from_millis(20))
        .max_delay(Duration::from_millis(200))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_every_5_mib_a_64_mib_upload_completes_without_restarting() {
    let server = TusServer::start();
    let dir = tempfile::tempdir().unwrap();
    let size = 64u64 << 20;
    let path = make_file(dir.path(), "big.bin", size, 21);
    for chunk in [None, Some(8u64 << 20)] {
        let proxy = FaultProxy::start(&server.addr).await;
        proxy.cut_every_connection_after(5 << 20);
        let client = Client::builder()
            .endpoint(proxy.url(&server.endpoint))
            .layer(fast_retry())
            .build()
            .unwrap();
        let mut up = client.uploader(path.as_path());
        if let Some(c) = chunk {
            up = up.chunk_size(c);
        }
        let done = up.upload().await.unwrap();
        assert!(done.complete);
        server.assert_stored_file(done.url.as_str(), &path);
        let cuts = proxy.cuts();
        let sent = proxy.patch_bytes();
        assert!(cuts >= 12, "{cuts} cuts");
        // Each cut costs at most what that connection carried: no restart from 0.
        let per_cut = chunk.unwrap_or(u64::MAX).min(5 << 20);
        assert!(
            sent <= size + cuts * per_cut,
            "sent {sent} with {cuts} cuts ({chunk:?})"
        );
        eprintln!("chunk {chunk:?}: {cuts} cuts, {sent} bytes sent for {size}");
    }
}

#[tokio::test]
async fn three_503_then_success_and_403_fails_at_once() {
    let server = TusServer::start();
    let proxy = FaultProxy::start(&server.addr).await;
    let client = Client::builder()
        .endpoint(proxy.url(&server.endpoint))
        .creation_with_upload(false)
        .layer(fast_retry())
        .build()
        .unwrap();
    let data = pattern(3 << 20, 1);
    proxy.answer(Some("PATCH"), 503, 3);
    let done = client.uploader(data.clone()).upload().await.unwrap();
    server.assert_stored(done.url.as_str(), &data);
    let patches = proxy
        .requests()
        .iter()
        .filter(|r| r.starts_with("PATCH"))
        .count();
    assert_eq!(patches, 4);

    let before = proxy.requests().len();
    proxy.answer(Some("POST"), 403, 1);
    let err = client.uploader(data.clone()).upload().await.unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(403));
    assert!(err.to_string().contains("403"), "{err}");
    assert_eq!(proxy.requests().len(), before + 1, "403 is not retried");
}

#[tokio::test]
async fn locked_and_retry_after_are_waited_out() {
    let server = TusServer::start();
    let proxy = FaultProxy::start(&server.addr).await;
    let client = Client::builder()
        .endpoint(proxy.url(&server.endpoint))
        .layer(fast_retry())
        .build()
        .unwrap();
    let data = pattern(100_000, 2);
    proxy.answer(Some("PATCH"), 423, 2);
    proxy.answer_with(support::proxy::Canned {
        method: Some("PATCH"),
        status: 503,
        headers: vec![("Retry-After", "1".into())],
    });
    let done = client.uploader(data.clone()).upload().await.unwrap();
    server.assert_stored(done.url.as_str(), &data);
}

#[tokio::test]
async fn a_stalled_connection_times_out_and_the_retry_resumes() {
    let server = TusServer::start();
    let proxy = FaultProxy::start(&server.addr).await;
    let client = Client::builder()
        .endpoint(proxy.url(&server.endpoint))
        .stall_timeout(Duration::from_millis(500))
        .layer(fast_retry())
        .build()
        .unwrap();
    let data = pattern(1 << 20, 3);
    let mut up = client.uploader(data.clone());
    let half = up.upload_until(1 << 19).await.unwrap();
    proxy.stall(Duration::from_secs(3), 1);
    let done = up.upload().await.unwrap();
    assert_eq!(done.url, half.url);
    server.assert_stored(done.url.as_str(), &data);
}

#[tokio::test]
async fn bearer_auth_reaches_the_server() {
    let server = TusServer::start_with(&["--require-header", "authorization=Bearer t0k3n"]);
    let data = pattern(50_000, 4);
    let client = Client::builder()
        .endpoint(&server.endpoint)
        .layer(tusflow::auth::AuthLayer::bearer("t0k3n"))
        .build()
        .unwrap();
    let done = client.uploader(data.clone()).upload().await.unwrap();
    server.assert_stored(done.url.as_str(), &data);

    let wrong = Client::builder()
        .endpoint(&server.endpoint)
        .layer(tusflow::auth::AuthLayer::bearer("nope-token"))
        .build()
        .unwrap();
    let err = wrong.uploader(data).upload().await.unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(401));
    assert!(!format!("{err} {err:?}").contains("nope-token"));
}

#[tokio::test]
async fn rate_limited_upload_is_exact() {
    let server = TusServer::start();
    let data = pattern(2 << 20, 5);
    let client = Client::builder()
        .endpoint(&server.endpoint)
        .layer(tusflow::rate_limit::RateLimitLayer::bytes_per_second(
            16_000_000,
        ))
        .build()
        .unwrap();
    let done = client.uploader(data.clone()).upload().await.unwrap();
    server.assert_stored(done.url.as_str(), &data);
}

#[tokio::test]
async fn checksums_against_rustus_and_a_flipped_byte_is_resent() {
    let rustus = RustusServer::start(&[]);
    let proxy = FaultProxy::start(&rustus.addr).await;
    let data = pattern(1_000_000, 6);
    for algo in [
        Algorithm::Sha256,
        Algorithm::Sha1,
        Algorithm::Md5,
        Algorithm::Sha512,
    ] {
        // rustus takes bodies of at most 256 KiB by default: chunks of 200 kB.
        let client = Client::builder()
            .endpoint(proxy.url(&rustus.endpoint))
            .layer(fast_retry())
            .layer(ChecksumLayer::negotiate([algo]).chunk_size(200_000))
            .build()
            .unwrap();
        let done = client.uploader(data.clone()).upload().await.unwrap();
        assert!(done.complete);
        assert_eq!(
            std::fs::read(rustus.stored_path(done.url.as_str())).unwrap(),
            data,
            "{algo}"
        );

        // Corrupt one byte of the next two appends: the server says 460 and the chunk
        // goes again.
        let patches_before = proxy
            .requests()
            .iter()
            .filter(|r| r.starts_with("PATCH"))
            .count();
        proxy.flip_byte(1000, 2);
        let done = client.uploader(data.clone()).upload().await.unwrap();
        assert_eq!(
            std::fs::read(rustus.stored_path(done.url.as_str())).unwrap(),
            data,
            "{algo}"
        );
        let patches = proxy
            .requests()
            .iter()
            .filter(|r| r.starts_with("PATCH"))
            .count()
            - patches_before;
        assert_eq!(patches, 5 + 2, "5 chunks and 2 re-sends ({algo})");
    }
}

#[tokio::test]
async fn checksum_against_a_server_without_the_extension() {
    let server = TusServer::start();
    let client = Client::builder()
        .endpoint(&server.endpoint)
        .layer(ChecksumLayer::sha256())
        .build()
        .unwrap();
    let err = client
        .uploader(pattern(1000, 7))
        .upload()
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("does not support the tus checksum extension"),
        "{err}"
    );
    assert_eq!(
        server.upload_count(),
        0,
        "an upload was created before the refusal"
    );
    let skip = Client::builder()
        .endpoint(&server.endpoint)
        .layer(ChecksumLayer::sha256().required(false))
        .build()
        .unwrap();
    let data = pattern(1000, 7);
    let done = skip.uploader(data.clone()).upload().await.unwrap();
    server.assert_stored(done.url.as_str(), &data);
}

#[tokio::test]
async fn a_stack_from_config_names_and_sections() {
    let server = TusServer::start();
    let proxy = FaultProxy::start(&server.addr).await;
    let config = figment::Figment::from(figment::providers::Serialized::defaults(
        serde_json::json!({
            "middleware": {
                "retry": { "initial_delay": "20ms", "max_attempts": 4 },
                "rate-limit": { "bytes_per_second": "100 MB" },
                "log": { "request_id": true },
            }
        }),
    ));
    let stack: Vec<String> = ["log", "retry", "rate-limit"].map(String::from).to_vec();
    let layers = tusflow::plugins::builtin().build(&stack, &config).unwrap();
    let client = Client::builder()
        .endpoint(proxy.url(&server.endpoint))
        .layers(layers)
        .build()
        .unwrap();
    proxy.answer(Some("PATCH"), 500, 3);
    let data = pattern(500_000, 8);
    let done = client.uploader(data.clone()).upload().await.unwrap();
    server.assert_stored(done.url.as_str(), &data);
    let _: Url = done.url;
}

/// The README's middleware snippet, as written there, against the project's own test
/// server (which has no checksum extension) and against rustus (which has): both
/// uploads complete with the bytes intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_middleware_snippet_uploads_to_both_test_servers() {
    use tusflow::auth::AuthLayer;
    let readme = std::fs::read_to_string(support::root().join("README.md")).unwrap();
    let snippet = ".layer(ChecksumLayer::any().required(false).chunk_size(8 << 20))";
    assert!(readme.contains(snippet), "the README's snippet changed");
    let dir = tempfile::tempdir().unwrap();
    let path = make_file(dir.path(), "f.bin", 3 << 20, 77);
    let node = TusServer::start();
    let rustus = RustusServer::start(&[]);
    for endpoint in [node.endpoint.as_str(), rustus.endpoint.as_str()] {
        let client = Client::builder()
            .endpoint(endpoint)
            .layer(RetryLayer::with_delays(
                [0, 1000, 3000, 5000].map(Duration::from_millis),
            ))
            .layer(AuthLayer::bearer("s3cr3t"))
            .layer(ChecksumLayer::any().required(false).chunk_size(8 << 20))
            .build()
            .unwrap();
        let done = client.uploader(path.as_path()).upload().await.unwrap();
        assert!(done.complete, "{endpoint}");
        let stored = if endpoint == node.endpoint {
            std::fs::read(node.stored_path(done.url.as_str())).unwrap()
        } else {
            std::fs::read(rustus.stored_path(done.url.as_str())).unwrap()
        };
        assert_eq!(stored, std::fs::read(&path).unwrap(), "{endpoint}");
    }
}
