//! [`TusService`]: the innermost service of every stack. It sends requests with one
//! pooled `reqwest::Client` and maps statuses to typed errors.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, HeaderValue};
use http::{Method, Request, Response};
use http_body::Frame;
use tokio::time::Instant;

use crate::protocol::{self, header};
use crate::{Body, Error, Operation, Result};

mod tls;

/// A rustls client config as the core service builds its own (ring, never a
/// process-wide provider): the platform's roots and `extra_roots` (PEM bundles), or no
/// verification (`insecure`); `identity` a PEM with a certificate chain and its key.
/// ALPN is left for the caller (the service sets h2 and http/1.1). For other clients
/// of the same machine's trust, such as a database connection.
pub fn tls_client_config(
    extra_roots: &[Vec<u8>],
    identity: Option<&[u8]>,
    insecure: bool,
) -> crate::Result<rustls::ClientConfig> {
    let mut c = tls::config(extra_roots, identity, insecure)?;
    c.alpn_protocols.clear();
    Ok(c)
}

/// How long connecting may take by default.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request may go without moving a byte, by default.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// The most of an answer's body that is read; the rest is dropped with the connection.
pub const MAX_RESPONSE_BODY: usize = 64 * 1024;

/// The innermost tower service of a tusflow stack.
///
/// It takes `http::Request<Body>` with an [`Operation`] extension, adds
/// `Tus-Resumable: 1.0.0` to every request but `OPTIONS`, sends it over one pooled,
/// kept-alive `reqwest::Client`, and answers `http::Response<Bytes>` for a 2xx status or
/// an [`Error`] for anything else (with the status, an excerpt of the answer and, for
/// 412, the server's `Tus-Version`).
///
/// A request fails with a stall timeout when no byte moves (sent or received) for
/// [`TusServiceBuilder::stall_timeout`]; a slow but moving upload never times out.
///
/// ```no_run
/// # async fn run() -> Result<(), tusflow_core::Error> {
/// use tower::ServiceExt;
/// use tusflow_core::{Body, Operation, TusService};
/// let svc = TusService::builder().build()?;
/// let req = http::Request::options("http://127.0.0.1:1080/files/")
///     .extension(Operation::Discover)
///     .body(Body::empty())
///     .unwrap();
/// let resp = svc.oneshot(req).await?;
/// println!("{:?}", resp.headers().get("tus-version"));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct TusService {
    client: reqwest::Client,
    shared: Arc<Shared>,
}

struct Shared {
    stall_timeout: Duration,
    method_override: bool,
}

impl fmt::Debug for TusService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TusService")
            .field("stall_timeout", &self.shared.stall_timeout)
            .field("method_override", &self.shared.method_override)
            .finish_non_exhaustive()
    }
}

/// Builds a [`TusService`]. Infallible until [`TusServiceBuilder::build`], which reports
/// the first problem (an unreadable certificate, ...).
pub struct TusServiceBuilder {
    connect_timeout: Duration,
    stall_timeout: Duration,
    root_certificates: Vec<Vec<u8>>,
    identity: Option<Vec<u8>>,
    accept_invalid_certs: bool,
    method_override: bool,
    user_agent: String,
    client: Option<reqwest::Client>,
}

impl fmt::Debug for TusServiceBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TusServiceBuilder")
            .field("connect_timeout", &self.connect_timeout)
            .field("stall_timeout", &self.stall_timeout)
            .field("root_certificates", &self.root_certificates.len())
            .field("identity", &self.identity.as_ref().map(|_| "<redacted>"))
            .field("accept_invalid_certs", &self.accept_invalid_certs)
            .field("method_override", &self.method_override)
            .finish_non_exhaustive()
    }
}

impl Default for TusServiceBuilder {
    fn default() -> Self {
        TusServiceBuilder {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            stall_timeout: DEFAULT_STALL_TIMEOUT,
            root_certificates: Vec::new(),
            identity: None,
            accept_invalid_certs: false,
            method_override: false,
            user_agent: concat!("tusflow/", env!("CARGO_PKG_VERSION")).to_owned(),
            client: None,
        }
    }
}

impl TusServiceBuilder {
    /// How long connecting may take (default 10 s).
    pub fn connect_timeout(mut self, t: Duration) -> Self {
        self.connect_timeout = t;
        self
    }

    /// How long a request may go without moving a byte (default 30 s).
    pub fn stall_timeout(mut self, t: Duration) -> Self {
        self.stall_timeout = t;
        self
    }

    /// Trust the CA certificates in this PEM bundle too (tuspy's custom CA).
    pub fn add_root_certificate_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.root_certificates.push(pem.into());
        self
    }

    /// Present this client certificate: one PEM with the certificate chain and the
    /// private key (tuspy's `client_cert`). The key is never logged.
    pub fn identity_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.identity = Some(pem.into());
        self
    }

    /// Accept any server certificate. Dangerous: only for test servers (tuspy's
    /// `verify_tls_cert=False`). Off by default.
    pub fn danger_accept_invalid_certs(mut self, accept: bool) -> Self {
        self.accept_invalid_certs = accept;
        self
    }

    /// Send `PATCH` and `DELETE` as `POST` with `X-HTTP-Method-Override`, for networks
    /// that block those methods.
    pub fn method_override(mut self, on: bool) -> Self {
        self.method_override = on;
        self
    }

    /// The `User-Agent` header (default `tusflow/VERSION`).
    pub fn user_agent(mut self, ua: impl Into<String>) -> Self {
        self.user_agent = ua.into();
        self
    }

    /// Use this `reqwest::Client` instead of building one; the timeout and TLS options
    /// of this builder are then ignored, but the stall timeout still applies.
    pub fn client(mut self, client: reqwest::Client) -> Self {
        self.client = Some(client);
        self
    }

    /// Build the service.
    pub fn build(self) -> Result<TusService> {
        let client = match self.client {
            Some(c) => c,
            None => reqwest::Client::builder()
                .connect_timeout(self.connect_timeout)
                .tcp_nodelay(true)
                .pool_idle_timeout(Duration::from_secs(60))
                .redirect(same_origin_redirects())
                .user_agent(self.user_agent)
                .tls_backend_preconfigured(tls::config(
                    &self.root_certificates,
                    self.identity.as_deref(),
                    self.accept_invalid_certs,
                )?)
                .build()
                .map_err(|e| Error::invalid(format!("cannot build the HTTP client: {e}")))?,
        };
        Ok(TusService {
            client,
            shared: Arc::new(Shared {
                stall_timeout: self.stall_timeout,
                method_override: self.method_override,
            }),
        })
    }
}

/// Follow at most 5 redirects, and only within the origin of the request: a redirect to
/// another origin is answered as it is (an error), so no header of the request (no
/// credential of any name) ever reaches another host.
fn same_origin_redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let first = attempt.previous().first().map(|u| u.origin());
        if attempt.previous().len() > 5 {
            attempt.error("too many redirects")
        } else if first.is_some_and(|o| o == attempt.url().origin()) {
            attempt.follow()
        } else {
            tracing::warn!(to = %protocol::redact_url(attempt.url()), "not following a redirect to another origin");
            attempt.stop()
        }
    })
}

impl TusService {
    /// A builder with the defaults.
    pub fn builder() -> TusServiceBuilder {
        TusServiceBuilder::default()
    }

    /// The underlying pooled `reqwest::Client`.
    pub fn http_client(&self) -> &reqwest::Client {
        &self.client
    }
}

/// The future of [`TusService`] as a [`tower::Service`].
pub type ResponseFuture = Pin<Box<dyn Future<Output = Result<Response<Bytes>>> + Send>>;

impl tower::Service<Request<Body>> for TusService {
    type Response = Response<Bytes>;
    type Error = Error;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        Box::pin(send(self.client.clone(), Arc::clone(&self.shared), req))
    }
}

/// When a byte last moved, in milliseconds since the request started.
struct Clock {
    base: Instant,
    last: AtomicU64,
}

impl Clock {
    fn tick(&self) {
        let ms = self.base.elapsed().as_millis() as u64;
        self.last.fetch_max(ms, Ordering::Relaxed);
    }
}

/// Resolves when the clock has not moved for `stall`.
async fn watchdog(clock: &Clock, stall: Duration) {
    loop {
        let last = clock.last.load(Ordering::Relaxed);
        tokio::time::sleep_until(clock.base + Duration::from_millis(last) + stall).await;
        if clock.last.load(Ordering::Relaxed) == last {
            return;
        }
    }
}

/// A body that ticks the clock on every frame it hands out, and counts its bytes.
struct Ticking {
    inner: Body,
    clock: Arc<Clock>,
    sent: Arc<AtomicU64>,
}

impl http_body::Body for Ticking {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>>>> {
        let res = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &res {
            self.clock.tick();
            if let Some(data) = frame.data_ref() {
                self.sent.fetch_add(data.len() as u64, Ordering::Relaxed);
            }
        }
        res
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

async fn send(
    client: reqwest::Client,
    shared: Arc<Shared>,
    req: Request<Body>,
) -> Result<Response<Bytes>> {
    let (mut parts, body) = req.into_parts();
    let op = parts.extensions.get::<Operation>().copied();
    let url = reqwest::Url::parse(&parts.uri.to_string())
        .map_err(|e| Error::invalid(format!("request URI is not an absolute URL: {e}")))?;
    let shown = protocol::redact_url(&url);
    let annotate = |e: Error| {
        let e = e.with_url(shown.clone());
        match op {
            Some(op) => e.with_operation(op),
            None => e,
        }
    };

    // (The IETF draft has no Tus-Resumable: its requests carry their interop version.)
    let ietf = crate::ietf::Protocol::of(&parts.extensions).is_ietf();
    if parts.method != Method::OPTIONS
        && !ietf
        && !parts.headers.contains_key(header::TUS_RESUMABLE)
    {
        parts.headers.insert(
            header::TUS_RESUMABLE,
            HeaderValue::from_static(protocol::TUS_VERSION),
        );
    }
    if shared.method_override && (parts.method == Method::PATCH || parts.method == Method::DELETE) {
        let real = HeaderValue::from_str(parts.method.as_str()).expect("method is a token");
        parts.headers.insert(header::X_HTTP_METHOD_OVERRIDE, real);
        parts.method = Method::POST;
    }
    let len = body.len();
    if len > 0 || matches!(parts.method, Method::POST | Method::PATCH) {
        parts.headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
    }

    let clock = Arc::new(Clock {
        base: Instant::now(),
        last: AtomicU64::new(0),
    });
    // Where the bytes of this request start in the upload (a creation starts at 0).
    let start = match op {
        Some(Operation::Append) => protocol::upload_offset(&parts.headers).ok(),
        Some(Operation::Create) => Some(0),
        _ => None,
    };
    let mut rreq = reqwest::Request::new(parts.method, url);
    *rreq.headers_mut() = parts.headers;
    *rreq.version_mut() = parts.version;
    let sent = Arc::new(AtomicU64::new(0));
    if len > 0 {
        *rreq.body_mut() = Some(reqwest::Body::wrap(Ticking {
            inner: body,
            clock: Arc::clone(&clock),
            sent: Arc::clone(&sent),
        }));
    }

    tracing::trace!(operation = op.map(Operation::as_str), url = %shown, len, "sending");
    // Until the head is in, the stall timeout: nothing moving in either direction.
    let head = tokio::select! {
        r = client.execute(rreq) => r.map_err(|e| from_reqwest(e, op)),
        _ = watchdog(&clock, shared.stall_timeout) => Err(Error::timeout("stall")),
    };
    let mut resp = head.map_err(annotate)?;
    let status = resp.status();
    // The head is in, and with it all that tus reads of an answer: its body (an
    // error's excerpt, at most MAX_RESPONSE_BODY) gets one stall timeout in all, so a
    // server dripping a byte at a time cannot hold the upload, and one that sends no
    // body at all costs the excerpt, not the answer. A body cut short or badly framed
    // costs only the excerpt (and the connection), never a creation the server made
    // (retrying it would leave orphan uploads).
    let deadline = Instant::now() + shared.stall_timeout;
    let mut body = BytesMut::new();
    while body.len() < MAX_RESPONSE_BODY {
        match tokio::time::timeout_at(deadline, resp.chunk()).await {
            Ok(Ok(Some(chunk))) => {
                let room = MAX_RESPONSE_BODY - body.len();
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(Ok(None)) => break,
            Ok(Err(e)) => {
                tracing::debug!(status = status.as_u16(), error = %e, "the answer's body was cut short or badly framed");
                break;
            }
            Err(_) => {
                tracing::debug!(
                    status = status.as_u16(),
                    read = body.len(),
                    "the answer's body did not end in time"
                );
                break;
            }
        }
    }
    let mut out = Response::builder().status(status).version(resp.version());
    if let Some(h) = out.headers_mut() {
        *h = std::mem::take(resp.headers_mut());
    }
    let result: Result<Response<Bytes>> = Ok(out
        .body(body.freeze())
        .expect("status and headers are valid"));
    let resp = result.map_err(annotate)?;
    // The client knows what it handed over: a success that acknowledges more than that
    // came before the body was read (or was queued on the connection), and says
    // nothing about what the server stored.
    if let (Some(start), true) = (start, resp.status().is_success())
        && let Ok(acked) = protocol::upload_offset(resp.headers())
    {
        let sent = sent.load(Ordering::Relaxed);
        // (With the whole body handed over, a larger offset is the driver's mismatch.)
        if sent < len && acked > start.saturating_add(sent) {
            return Err(annotate(Error::protocol(
                "Upload-Offset",
                format!(
                    "the server acknowledged offset {acked}, but only {sent} bytes from offset {start} were sent: it answered before reading them"
                ),
            )));
        }
    }
    tracing::trace!(
        operation = op.map(Operation::as_str),
        status = resp.status().as_u16(),
        "answered"
    );
    error_for_status(resp).map_err(annotate)
}

/// The response for a 2xx status, else an [`Error`] with the status, an excerpt of the
/// body, `Tus-Version` for 412 and `Retry-After` when given (in the manner of reqwest's
/// `error_for_status`). Layers that answer errors as responses (tower-http's timeout
/// answers 408) are turned into errors with this at every layer boundary.
pub fn error_for_status(resp: Response<Bytes>) -> Result<Response<Bytes>> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let tus_version = (status == http::StatusCode::PRECONDITION_FAILED)
        .then(|| protocol::comma_list(resp.headers(), &header::TUS_VERSION).ok())
        .flatten()
        .map(|v| v.join(", "))
        .filter(|v| !v.is_empty());
    let mut err = Error::from_status(status, resp.body(), tus_version);
    let content_type = resp
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    if let Some(p) = crate::ietf::Problem::parse(content_type, resp.body()) {
        err = err.with_problem(p);
    }
    if matches!(
        crate::ietf::boolean(resp.headers(), &crate::ietf::header::UPLOAD_COMPLETE),
        Ok(Some(true))
    ) {
        err = err.with_upload_complete();
    }
    if let Some(after) = protocol::retry_after(resp.headers(), std::time::SystemTime::now()) {
        err = err.with_retry_after(after);
    }
    Err(err)
}

/// Map a reqwest error of a request for `op`; an error of our own body (a local read
/// failure) comes back as itself.
fn from_reqwest(e: reqwest::Error, op: Option<Operation>) -> Error {
    let mut tls = false;
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(mut err) = cur {
        if let Some(ours) = err.downcast_ref::<Error>() {
            return ours.clone();
        }
        // An io::Error hides what it wraps from `source()`.
        while let Some(inner) = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            err = inner;
        }
        if let Some(h) = err.downcast_ref::<hyper::Error>()
            && h.is_parse()
            && op == Some(Operation::Create)
        {
            // The server answered a creation, but not in HTTP: it may have made the
            // upload, and a creation tried again would leave another one behind.
            // (Other requests are tried again: stray bytes on a kept-alive connection
            // garble the next answer once.)
            return Error::protocol("HTTP", format!("the answer is not valid HTTP/1.1 ({h})"));
        }
        tls |= err.downcast_ref::<rustls::Error>().is_some();
        if let Some(rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType)) =
            err.downcast_ref::<rustls::Error>()
        {
            // Not a network fault: trying again gets the same answer.
            return Error::invalid(
                "the server answered plain HTTP on a TLS connection: use http:// for it, not https://",
            );
        }
        cur = err.source();
    }
    // (A TLS failure while connecting keeps its cause: a certificate error must stay
    // one, not retried and not taken for a server that cannot be reached.)
    if e.is_connect() && !e.is_timeout() && !tls {
        // The innermost cause is the system's word ("Connection refused").
        let mut last: &(dyn std::error::Error + 'static) = &e;
        while let Some(next) = last.source() {
            last = next;
        }
        return Error::connect(last.to_string());
    }
    if e.is_timeout() {
        Error::timeout(if e.is_connect() { "connect" } else { "request" })
    } else {
        Error::transport(e.without_url())
    }
}

#[cfg(test)]
mod tests;
