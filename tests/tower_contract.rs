//! The tower contract, as a tower user drives it: each built-in layer alone and the
//! recommended stack, over `ConcurrencyLimitLayer::new(1)` and over `BufferLayer`,
//! called with `ready().await?.call(req)` several times in a row and from several tasks
//! at once, against a real tus server (rustus, which verifies checksums). A hang fails
//! the test by a timeout; every upload is checked byte for byte on the server.
//!
//! And the layer boundary: tower-http's `TimeoutLayer` answers 408 as a *response*;
//! inside `RetryLayer` it is an error that is retried, and the upload completes.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use support::{RustusServer, TusServer, pattern};
use tower::buffer::BufferLayer;
use tower::limit::ConcurrencyLimitLayer;
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service, ServiceBuilder, ServiceExt};
use tusflow::auth::{AuthLayer, Secret, TokenFuture, TokenProvider};
use tusflow::checksum::ChecksumLayer;
use tusflow::core::{BoxError, Endpoint, TusService};
use tusflow::log::LogLayer;
use tusflow::protocol::{self, header};
use tusflow::rate_limit::RateLimitLayer;
use tusflow::retry::RetryLayer;
use tusflow::{Body, Client, Operation, Request, Response, Url};

/// A service as a tower user holds it: any error that converts into a `BoxError`.
type Svc = BoxCloneSyncService<Request, Response, BoxError>;

/// How long one scenario may take before it counts as a hang.
const DEADLINE: Duration = Duration::from_secs(60);

fn request(op: Operation, url: &Url, endpoint: &Url, body: Body) -> Request {
    http::Request::builder()
        .method(op.method())
        .uri(url.as_str())
        .extension(op)
        .extension(Endpoint(endpoint.clone()))
        .body(body)
        .unwrap()
}

/// `svc.ready().await?.call(req).await`, the way tower documents it.
async fn ready_call(svc: &mut Svc, req: Request) -> Result<Response, BoxError> {
    svc.ready().await?.call(req).await
}

/// One upload of `data` in appends of `chunk` bytes, every request by `ready_call` on
/// the same service; returns the upload URL.
async fn upload(svc: &mut Svc, endpoint: &Url, data: &[u8], chunk: usize) -> Url {
    let mut create = request(Operation::Create, endpoint, endpoint, Body::empty());
    create
        .headers_mut()
        .insert(header::UPLOAD_LENGTH, HeaderValue::from(data.len()));
    let resp = ready_call(svc, create).await.expect("create");
    assert_eq!(resp.status(), StatusCode::CREATED);
    let url = protocol::resolve_location(endpoint, resp.headers()).unwrap();
    let mut offset = 0;
    while offset < data.len() {
        let end = (offset + chunk).min(data.len());
        let body = Body::from(Bytes::copy_from_slice(&data[offset..end]));
        let mut append = request(Operation::Append, &url, endpoint, body);
        let h = append.headers_mut();
        h.insert(header::UPLOAD_OFFSET, HeaderValue::from(offset));
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static(protocol::OFFSET_OCTET_STREAM),
        );
        let resp = ready_call(svc, append).await.expect("append");
        offset = protocol::upload_offset(resp.headers()).unwrap() as usize;
        assert_eq!(offset, end);
    }
    let resp = ready_call(
        svc,
        request(Operation::Offset, &url, endpoint, Body::empty()),
    )
    .await
    .expect("offset");
    assert_eq!(
        protocol::upload_offset(resp.headers()).unwrap(),
        data.len() as u64
    );
    url
}

/// The core service under a `ConcurrencyLimit(1)` or a `Buffer(1)`.
fn base(base: &str) -> Svc {
    let core = TusService::builder()
        .build()
        .unwrap()
        .map_err(BoxError::from);
    match base {
        "concurrency-limit" => BoxCloneSyncService::new(ConcurrencyLimitLayer::new(1).layer(core)),
        "buffer" => BoxCloneSyncService::new(BufferLayer::new(1).layer(core)),
        _ => unreachable!(),
    }
}

/// The layer under test over `limited`.
fn over<L>(layer: L, limited: Svc) -> Svc
where
    L: Layer<Svc>,
    L::Service: Service<Request, Response = Response> + Clone + Send + Sync + 'static,
    <L::Service as Service<Request>>::Error: Into<BoxError>,
    <L::Service as Service<Request>>::Future: Send + 'static,
{
    BoxCloneSyncService::new(layer.layer(limited).map_err(Into::into))
}

/// The layer under test, over `base`, over the core service.
fn stack<L>(layer: L, b: &str) -> Svc
where
    L: Layer<Svc>,
    L::Service: Service<Request, Response = Response> + Clone + Send + Sync + 'static,
    <L::Service as Service<Request>>::Error: Into<BoxError>,
    <L::Service as Service<Request>>::Future: Send + 'static,
{
    over(layer, base(b))
}

/// Tokens that take a request of their own through the same limited stack (an
/// `OPTIONS` to the endpoint): the auth layer must not hold the only slot meanwhile.
struct ViaStack(Svc, Url);

impl TokenProvider for ViaStack {
    fn token(&self) -> TokenFuture<'_> {
        Box::pin(async move {
            let mut svc = self.0.clone();
            let req = request(Operation::Discover, &self.1, &self.1, Body::empty());
            let resp = ready_call(&mut svc, req)
                .await
                .map_err(tusflow::Error::from)?;
            assert!(resp.status().is_success());
            Ok(Secret::new("s3cr3t"))
        })
    }
}

fn fast_retry() -> RetryLayer {
    RetryLayer::new()
        .initial_delay(Duration::from_millis(20))
        .max_delay(Duration::from_millis(200))
}

/// Builds the service under test over a base ("concurrency-limit" or "buffer") for
/// the endpoint.
type Make = fn(&str, &Url) -> Svc;

/// Every layer and the recommended stack, by name.
fn layers() -> Vec<(&'static str, Make)> {
    vec![
        ("log", |b, _| stack(LogLayer::new(), b)),
        ("retry", |b, _| stack(fast_retry(), b)),
        ("auth", |b, _| stack(AuthLayer::bearer("s3cr3t"), b)),
        ("auth with a token provider", |b, e| {
            let limited = base(b);
            let provider = ViaStack(limited.clone(), e.clone());
            over(AuthLayer::provider(provider), limited)
        }),
        ("rate-limit", |b, _| {
            stack(RateLimitLayer::bytes_per_second(50 << 20), b)
        }),
        ("rate-limit requests", |b, _| {
            stack(RateLimitLayer::unlimited().requests_per_second(200.0), b)
        }),
        ("checksum", |b, _| {
            stack(ChecksumLayer::sha256().chunk_size(100_000), b)
        }),
        ("recommended stack", |b, _| {
            stack(
                ServiceBuilder::new()
                    .layer(LogLayer::new())
                    .layer(fast_retry())
                    .layer(AuthLayer::bearer("s3cr3t"))
                    .layer(RateLimitLayer::bytes_per_second(50 << 20))
                    .layer(ChecksumLayer::sha256().chunk_size(100_000)),
                b,
            )
        }),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_layer_over_concurrency_limit_and_buffer_with_ready_call() {
    let rustus = RustusServer::start(&[]);
    let endpoint = Url::parse(&rustus.endpoint).unwrap();
    for base in ["concurrency-limit", "buffer"] {
        for (name, make) in layers() {
            let what = format!("{name} over {base}");
            let mut svc = make(base, &endpoint);
            let endpoint = endpoint.clone();
            let data = pattern(250_000, 3);
            // Several uploads in a row on one service, then several tasks at once on
            // clones of it.
            let run = async {
                for i in 0..3 {
                    let url = upload(&mut svc, &endpoint, &data, 100_000).await;
                    let stored = std::fs::read(rustus.stored_path(url.as_str())).unwrap();
                    assert!(stored == data, "{what}: upload {i} stored other bytes");
                }
                let tasks: Vec<_> = (0..4)
                    .map(|t| {
                        let mut svc = svc.clone();
                        let endpoint = endpoint.clone();
                        let data = pattern(120_000, 10 + t);
                        tokio::spawn(async move {
                            let url = upload(&mut svc, &endpoint, &data, 50_000).await;
                            (url, data)
                        })
                    })
                    .collect();
                for t in tasks {
                    let (url, data) = t.await.expect("task");
                    let stored = std::fs::read(rustus.stored_path(url.as_str())).unwrap();
                    assert!(
                        stored == data,
                        "{what}: a concurrent upload stored other bytes"
                    );
                }
            };
            tokio::time::timeout(DEADLINE, run)
                .await
                .unwrap_or_else(|_| {
                    panic!("{what}: hung (a layer held capacity of the stack below that it did not use)")
                });
            eprintln!("{what}: ok");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_408_response_from_tower_http_timeout_is_retried_and_the_upload_completes() {
    let server = TusServer::start();
    let slowed = Arc::new(AtomicBool::new(false));
    let slow = |slowed: &Arc<AtomicBool>| {
        let slowed = Arc::clone(slowed);
        tower::layer::layer_fn(move |inner: tusflow::core::Stack| {
            let slowed = Arc::clone(&slowed);
            tower::service_fn(move |req: Request| {
                let inner = inner.clone();
                // The first append waits past the timeout; the try after it does not.
                let slow = req.extensions().get::<Operation>() == Some(&Operation::Append)
                    && !slowed.swap(true, Ordering::SeqCst);
                async move {
                    if slow {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                    }
                    inner.oneshot(req).await
                }
            })
        })
    };
    let timeout = || {
        tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_millis(500),
        )
    };
    let client = Client::builder()
        .endpoint(&server.endpoint)
        .layer(fast_retry())
        .layer(timeout())
        .layer(slow(&slowed))
        .build()
        .unwrap();
    let data = pattern(300_000, 8);
    let (done, retries) =
        tusflow::core::attempts::count(client.uploader(data.clone()).upload()).await;
    let done = done.expect("the 408 is retried");
    assert!(slowed.load(Ordering::SeqCst), "the first append was held");
    assert!(retries >= 1, "no retry was counted");
    assert!(done.complete);
    server.assert_stored(done.url.as_str(), &data);

    // Without retry, the 408 is an error that names the status, not a missing header.
    let slowed = Arc::new(AtomicBool::new(false));
    let client = Client::builder()
        .endpoint(&server.endpoint)
        .layer(timeout())
        .layer(slow(&slowed))
        .build()
        .unwrap();
    let err = client.uploader(data).upload().await.unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::REQUEST_TIMEOUT), "{err}");
    assert!(err.is_retryable(), "{err}");
}
