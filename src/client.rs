//! [`Client`]: an endpoint, default headers and the tower stack every request goes
//! through.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use http::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use reqwest::Url;
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service, ServiceExt};

use crate::core::protocol::{self, header};
use crate::core::store::{Fingerprinter, UploadRecord, UrlStore};
use crate::core::{
    Body, BoxError, Capabilities, Error, Metadata, Operation, Result, TusService, TusServiceBuilder,
};
use crate::upload::{Source, Uploader};

pub use crate::core::Stack;

/// A tus client: an endpoint, default headers, and a tower stack of middleware around
/// the [`TusService`]. Cheap to clone; clones share the connection pool.
///
/// ```no_run
/// # async fn run() -> Result<(), tusflow::Error> {
/// let client = tusflow::Client::new("http://127.0.0.1:1080/files/")?;
/// let done = client.uploader("video.mp4").chunk_size(8 << 20).upload().await?;
/// println!("{} bytes at {}", done.offset, done.url);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    endpoint: Option<Url>,
    headers: RwLock<Arc<HeaderMap>>,
    stack: Stack,
    resume: Resume,
    /// The endpoint's answer to `OPTIONS`, asked once.
    capabilities: tokio::sync::OnceCell<std::result::Result<Arc<Capabilities>, Error>>,
    /// The largest body the endpoint took after a 413 (`u64::MAX`: no limit met).
    chunk_limit: AtomicU64,
    creation_with_upload: bool,
    complete_in_creation: bool,
    /// Origins besides the endpoint's that may receive credential headers.
    trusted: Vec<reqwest::Url>,
}

/// The smallest body a 413 answer halves the chunk size to; a 413 for a body this
/// small is an error.
pub const MIN_CHUNK_SIZE: u64 = 64 << 10;

/// The most bytes sent in a creation `POST` (creation-with-upload): a lost `POST`
/// leaves no URL to resume, so it carries at most this much; `PATCH` sends the rest.
pub const MAX_CREATION_BODY: u64 = 8 << 20;

/// Where uploads are remembered between runs, and how sources are recognised.
#[derive(Clone, Default)]
pub(crate) struct Resume {
    pub(crate) store: Option<Arc<dyn UrlStore>>,
    pub(crate) fingerprinter: Option<Arc<dyn Fingerprinter>>,
    pub(crate) keep_on_success: bool,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field(
                "endpoint",
                &self.inner.endpoint.as_ref().map(protocol::redact_url),
            )
            .field("headers", &self.headers().keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Builds a [`Client`]. Infallible until [`ClientBuilder::build`], which reports the
/// first problem (a bad endpoint, header or certificate).
pub struct ClientBuilder {
    endpoint: Option<String>,
    headers: HeaderMap,
    service: TusServiceBuilder,
    transport: Option<Stack>,
    layers: Vec<crate::core::BoxLayer>,
    resume: Resume,
    creation_with_upload: bool,
    complete_in_creation: bool,
    trusted: Vec<reqwest::Url>,
    error: Option<Error>,
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field(
                "endpoint",
                &self
                    .endpoint
                    .as_ref()
                    .map(|e| e.split('?').next().unwrap_or("")),
            )
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("service", &self.service)
            .field("layers", &self.layers.len())
            .finish_non_exhaustive()
    }
}

pub use crate::core::protocol::is_credential_header as is_sensitive_header;

fn mark(name: &HeaderName, mut value: HeaderValue) -> HeaderValue {
    if is_sensitive_header(name) {
        value.set_sensitive(true);
    }
    value
}

impl ClientBuilder {
    fn fail(&mut self, e: Error) {
        self.error.get_or_insert(e);
    }

    /// The creation endpoint, e.g. `http://127.0.0.1:1080/files/`.
    pub fn endpoint(mut self, url: impl Into<String>) -> Self {
        self.endpoint = Some(url.into());
        self
    }

    /// A header sent with every request (tuspy's `headers`). Credentials are marked
    /// sensitive (see [`is_sensitive_header`]).
    pub fn header<K, V>(mut self, name: K, value: V) -> Self
    where
        K: TryInto<HeaderName>,
        V: TryInto<HeaderValue>,
    {
        match (name.try_into(), value.try_into()) {
            (Ok(n), Ok(v)) => {
                let v = mark(&n, v);
                self.headers.insert(n, v);
            }
            (Err(_), _) => self.fail(Error::invalid("invalid header name")),
            (Ok(n), Err(_)) => self.fail(Error::invalid(format!("invalid value for header {n}"))),
        }
        self
    }

    /// Headers sent with every request, added to those set before.
    pub fn headers(mut self, headers: HeaderMap) -> Self {
        for (n, v) in headers {
            if let Some(n) = n {
                let v = mark(&n, v);
                self.headers.insert(n, v);
            }
        }
        self
    }

    /// How long connecting may take (default 10 s).
    pub fn connect_timeout(mut self, t: Duration) -> Self {
        self.service = self.service.connect_timeout(t);
        self
    }

    /// How long a request may go without moving a byte (default 30 s).
    pub fn stall_timeout(mut self, t: Duration) -> Self {
        self.service = self.service.stall_timeout(t);
        self
    }

    /// Trust the CA certificates of this PEM bundle too.
    pub fn add_root_certificate_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.service = self.service.add_root_certificate_pem(pem);
        self
    }

    /// Present a client certificate: one PEM with the chain and the private key.
    pub fn identity_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.service = self.service.identity_pem(pem);
        self
    }

    /// Accept any server certificate. Dangerous: for test servers only.
    pub fn danger_accept_invalid_certs(mut self, accept: bool) -> Self {
        if accept {
            tracing::warn!("TLS certificate verification is OFF");
        }
        self.service = self.service.danger_accept_invalid_certs(accept);
        self
    }

    /// Send `PATCH` and `DELETE` as `POST` with `X-HTTP-Method-Override`.
    pub fn method_override(mut self, on: bool) -> Self {
        self.service = self.service.method_override(on);
        self
    }

    /// Replace the innermost service (normally a [`TusService`] built from this
    /// builder's options) with another: a `TusService` of your own, or a test double.
    pub fn transport<S>(mut self, service: S) -> Self
    where
        S: Service<crate::Request, Response = crate::Response, Error = Error>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.transport = Some(BoxCloneSyncService::new(service));
        self
    }

    /// Wrap the stack in a tower layer. Layers added first are outermost, as with
    /// `tower::ServiceBuilder`: `.layer(a).layer(b)` sends requests through `a`, then
    /// `b`, then the [`TusService`].
    ///
    /// Any layer over `http::Request<Body>` works, including tower-http's; an error
    /// type other than [`Error`] is wrapped into one, and a non-2xx response from the
    /// layer becomes an [`Error`] (so tower-http's timeout answer, a 408, is a
    /// retryable error for the layers around it).
    pub fn layer<L>(mut self, layer: L) -> Self
    where
        L: Layer<Stack> + Send + Sync + 'static,
        L::Service:
            Service<crate::Request, Response = crate::Response> + Clone + Send + Sync + 'static,
        <L::Service as Service<crate::Request>>::Error: Into<BoxError>,
        <L::Service as Service<crate::Request>>::Future: Send + 'static,
    {
        self.layers.push(crate::core::BoxLayer::new("layer", layer));
        self
    }

    /// Wrap the stack in these layers, outermost first (what
    /// [`Registry::build`](crate::plugins::Registry::build) returns).
    pub fn layers(mut self, layers: impl IntoIterator<Item = crate::core::BoxLayer>) -> Self {
        self.layers.extend(layers);
        self
    }

    /// Remember uploads in `store` under the fingerprint of their source, so that an
    /// upload of the same source (in this run or a later one) continues the stored
    /// upload instead of starting over (tuspy's `store_url` + `url_storage`). Without a
    /// fingerprinter set, files get xxh3 fingerprints in fast mode when the
    /// `fingerprint-xxh3` feature is on.
    pub fn store(mut self, store: Arc<dyn UrlStore>) -> Self {
        self.resume.store = Some(store);
        self
    }

    /// How sources are recognised (tuspy's `fingerprinter`).
    pub fn fingerprinter(mut self, f: Arc<dyn Fingerprinter>) -> Self {
        self.resume.fingerprinter = Some(f);
        self
    }

    /// Send the first bytes of an upload in its creation `POST` when the server
    /// advertises `creation-with-upload` (default: on). That saves a round trip per
    /// upload, which is most of the cost of small files.
    pub fn creation_with_upload(mut self, on: bool) -> Self {
        self.creation_with_upload = on;
        self
    }

    /// Let a creation complete an upload (default: off): a small file goes in one
    /// request, its creation `POST` carrying every byte, and an empty file is created
    /// with its length.
    ///
    /// Off, a file that would fit in its creation goes in one `PATCH` to the URL the
    /// creation answered (and an empty file is created with a deferred length, when
    /// the server allows), so only a request to a known URL completes an upload. That is what keeps an
    /// upload from being stored twice: when a creation's answer is lost (a cut
    /// connection, a server that dies before answering, a process killed before it
    /// records the URL), tus gives the client no way to learn the URL, so it creates
    /// another. The one it never heard of is then unfinished, and expires, instead of
    /// being a second complete copy that the server's "upload finished" hooks would
    /// process. On, batches of 64 KiB files go about 1.2x faster (1.33x with a
    /// store) on @tus/server.
    pub fn complete_in_creation(mut self, on: bool) -> Self {
        self.complete_in_creation = on;
        self
    }

    /// Also send credential headers ([`is_sensitive_header`]: `Authorization`, cookies,
    /// API keys) to `origin` (e.g. `https://uploads.example.com`). By default they go
    /// only to the endpoint's origin: a server's `Location` (or a partial upload's URL)
    /// on another origin gets the other headers but not these.
    pub fn trust_origin(mut self, origin: &str) -> Self {
        match parse_http_url("trusted origin", origin) {
            Ok(u) => self.trusted.push(u),
            Err(e) => self.fail(e),
        }
        self
    }

    /// Keep a completed upload's record in the store (default: removed on success, as
    /// tus-js-client's `removeFingerprintOnSuccess`).
    pub fn keep_records_on_success(mut self, keep: bool) -> Self {
        self.resume.keep_on_success = keep;
        self
    }

    /// Build the client.
    pub fn build(self) -> Result<Client> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let endpoint = self
            .endpoint
            .map(|e| parse_http_url("endpoint", &e))
            .transpose()?;
        let stack = match self.transport {
            Some(t) => t,
            None => BoxCloneSyncService::new(self.service.build()?),
        };
        let stack = crate::core::plugin::apply(&self.layers, stack);
        let mut resume = self.resume;
        if resume.store.is_some() && resume.fingerprinter.is_none() {
            resume.fingerprinter = default_fingerprinter();
        }
        Ok(Client {
            inner: Arc::new(Inner {
                endpoint,
                headers: RwLock::new(Arc::new(self.headers)),
                stack,
                resume,
                capabilities: tokio::sync::OnceCell::new(),
                chunk_limit: AtomicU64::new(u64::MAX),
                creation_with_upload: self.creation_with_upload,
                complete_in_creation: self.complete_in_creation,
                trusted: self.trusted,
            }),
        })
    }
}

/// Parse an `http` or `https` URL; the error names `what` and the URL (without query).
pub fn parse_http_url(what: &str, text: &str) -> Result<Url> {
    let shown = text.split('?').next().unwrap_or_default();
    let url = Url::parse(text.trim())
        .map_err(|e| Error::invalid(format!("invalid {what} {shown:?}: {e}")))?;
    match url.scheme() {
        "http" | "https" if url.has_host() => Ok(url),
        _ => Err(Error::invalid(format!(
            "invalid {what} {shown:?}: expected an http:// or https:// URL"
        ))),
    }
}

/// A new upload.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Created {
    /// Its URL.
    pub url: Url,
    /// `Upload-Expires`, when the server gives one.
    pub expires: Option<SystemTime>,
    /// `Upload-Offset`, when the creation carried bytes (creation-with-upload) or
    /// concatenated partial uploads.
    pub offset: Option<u64>,
}

/// The answer to an append.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Appended {
    /// The server's new offset.
    pub offset: u64,
    /// `Upload-Expires`, when the server gives one.
    pub expires: Option<SystemTime>,
}

/// True when the server answered `OPTIONS`, just not with capabilities (a status, or
/// headers that do not parse): worth remembering, unlike a network error.
fn answered(e: &Error) -> bool {
    e.status().is_some() || e.is_protocol()
}

/// The fingerprinter used with a store when none is set.
fn default_fingerprinter() -> Option<Arc<dyn Fingerprinter>> {
    #[cfg(feature = "fingerprint-xxh3")]
    return Some(Arc::new(tusflow_fingerprint_xxh3::Xxh3Fingerprinter::fast()));
    #[cfg(not(feature = "fingerprint-xxh3"))]
    None
}

/// What `HEAD` says about an upload.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct UploadStatus {
    /// `Upload-Offset`: how many bytes the server has.
    pub offset: u64,
    /// `Upload-Length`, when known (absent while deferred).
    pub length: Option<u64>,
    /// `Upload-Expires`, when the server gives one.
    pub expires: Option<SystemTime>,
    /// `Upload-Metadata`, when the server returns it.
    pub metadata: Option<Metadata>,
}

impl UploadStatus {
    /// True when the server has every byte.
    pub fn is_complete(&self) -> bool {
        self.length == Some(self.offset)
    }
}

impl Client {
    /// A client for `endpoint` with the defaults.
    pub fn new(endpoint: impl Into<String>) -> Result<Self> {
        Client::builder().endpoint(endpoint).build()
    }

    /// A builder.
    pub fn builder() -> ClientBuilder {
        ClientBuilder {
            endpoint: None,
            headers: HeaderMap::new(),
            service: TusService::builder(),
            transport: None,
            layers: Vec::new(),
            resume: Resume::default(),
            creation_with_upload: true,
            complete_in_creation: false,
            trusted: Vec::new(),
            error: None,
        }
    }

    pub(crate) fn resume(&self) -> &Resume {
        &self.inner.resume
    }

    /// The stored uploads of `source` that could be continued, most recent first
    /// (tus-js-client's `findPreviousUploads`). Empty without a store, or for a source
    /// without a fingerprint.
    pub async fn find_previous_uploads(
        &self,
        source: impl Into<Source>,
    ) -> Result<Vec<UploadRecord>> {
        let mut up = self.uploader(source);
        up.previous_uploads().await
    }

    /// The creation endpoint, if one was given.
    pub fn endpoint(&self) -> Option<&Url> {
        self.inner.endpoint.as_ref()
    }

    fn endpoint_or_err(&self) -> Result<&Url> {
        self.endpoint()
            .ok_or_else(|| Error::invalid("no endpoint configured: a new upload needs one"))
    }

    /// The headers sent with every request.
    pub fn headers(&self) -> HeaderMap {
        HeaderMap::clone(&self.inner.headers.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Add or replace headers sent with every later request, on this client and its
    /// clones (tuspy's `set_headers`).
    pub fn set_headers(&self, headers: HeaderMap) {
        let mut guard = self
            .inner
            .headers
            .write()
            .unwrap_or_else(|p| p.into_inner());
        let mut merged = HeaderMap::clone(&guard);
        for (n, v) in headers {
            if let Some(n) = n {
                let v = mark(&n, v);
                merged.insert(n, v);
            }
        }
        *guard = Arc::new(merged);
    }

    /// An uploader for `source` (a path, `Bytes`, or a [`Source`]).
    pub fn uploader(&self, source: impl Into<Source>) -> Uploader {
        Uploader::new(self.clone(), source.into())
    }

    /// A request for `op` on `url`, with the default headers and the [`Operation`] and
    /// [`Endpoint`](crate::core::Endpoint) extensions (the endpoint is the client's, or
    /// `url` itself when the client has none).
    pub fn request(&self, op: Operation, url: &Url, body: Body) -> Result<crate::Request> {
        let endpoint = self.endpoint().unwrap_or(url).clone();
        let mut req = http::Request::builder()
            .method(op.method())
            .uri(url.as_str())
            .extension(op)
            .extension(crate::core::Endpoint(endpoint))
            .body(body)
            .map_err(|e| Error::invalid(format!("invalid request URL: {e}")))?;
        if let Some(Ok(caps)) = self.inner.capabilities.get() {
            req.extensions_mut()
                .insert(crate::core::KnownCapabilities(Arc::clone(caps)));
        }
        if let Some(counter) = crate::core::attempts::RetryCounter::current() {
            req.extensions_mut().insert(counter);
        }
        let defaults = Arc::clone(&self.inner.headers.read().unwrap_or_else(|p| p.into_inner()));
        // Credentials go to the endpoint's origin (and trusted ones) only: a hostile or
        // mistaken Location must not collect them.
        let origin = url.origin();
        let trusted = self.endpoint().is_none_or(|e| e.origin() == origin)
            || self.inner.trusted.iter().any(|t| t.origin() == origin);
        for (n, v) in defaults.iter() {
            if !trusted && is_sensitive_header(n) {
                tracing::debug!(header = %n, url = %protocol::redact_url(url), "not sending a credential to another origin");
                continue;
            }
            req.headers_mut().insert(n.clone(), v.clone());
        }
        Ok(req)
    }

    /// Send a request through the stack.
    pub async fn call(&self, req: crate::Request) -> Result<crate::Response> {
        self.inner.stack.clone().oneshot(req).await
    }

    /// The server's capabilities, from `OPTIONS` on the endpoint, asked once per client
    /// (the answer, or the error, is kept).
    pub async fn capabilities(&self) -> Result<Capabilities> {
        let caps = self
            .inner
            .capabilities
            .get_or_try_init(|| async {
                match self.discover().await {
                    Ok(caps) => Ok(Ok(Arc::new(caps))),
                    // The server answered, just not with capabilities: remember that.
                    Err(e) if answered(&e) => Ok(Err(e)),
                    // The network or the server is down: ask again next time.
                    Err(e) => Err(e),
                }
            })
            .await?;
        caps.as_deref().cloned().map_err(Error::clone)
    }

    async fn discover(&self) -> Result<Capabilities> {
        let req = self.request(Operation::Discover, self.endpoint_or_err()?, Body::empty())?;
        let resp = self.call(req).await?;
        Capabilities::from_headers(resp.headers())
            .map_err(|e| e.with_operation(Operation::Discover))
    }

    /// The capabilities when the server tells them; `None` when it answers `OPTIONS`
    /// with an error (then only the core protocol and creation are used). Network
    /// errors are errors.
    pub(crate) async fn discovered(&self) -> Result<Option<Capabilities>> {
        match self.capabilities().await {
            Ok(c) => Ok(Some(c)),
            Err(e) if answered(&e) => {
                tracing::debug!(error = %e, "no capabilities from OPTIONS; using the core protocol");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Whether creation `POST`s carry the first bytes when the server allows it.
    pub fn uses_creation_with_upload(&self) -> bool {
        self.inner.creation_with_upload
    }

    /// Whether a creation may complete an upload
    /// ([`ClientBuilder::complete_in_creation`]).
    pub fn completes_in_creation(&self) -> bool {
        self.inner.complete_in_creation
    }

    /// The largest body the endpoint accepted after answering 413 Payload Too Large;
    /// later uploads with this client send no larger bodies. `None` until a 413.
    pub fn chunk_limit(&self) -> Option<u64> {
        match self.inner.chunk_limit.load(Ordering::Relaxed) {
            u64::MAX => None,
            n => Some(n),
        }
    }

    /// After a 413 for a body of `failed` bytes: halve the limit (not below
    /// [`MIN_CHUNK_SIZE`]) and return it, or `None` when it cannot shrink further.
    pub(crate) fn shrink_chunk_limit(&self, failed: u64) -> Option<u64> {
        if failed <= MIN_CHUNK_SIZE {
            return None;
        }
        let new = (failed / 2).max(MIN_CHUNK_SIZE);
        let was = self.inner.chunk_limit.fetch_min(new, Ordering::Relaxed);
        let now = was.min(new);
        if was > new {
            tracing::warn!(
                rejected = failed,
                chunk_size = now,
                "the server answered 413 Payload Too Large: sending at most {now} bytes per request to this endpoint"
            );
        }
        Some(now)
    }

    /// Create an upload of `length` bytes (`None`: deferred) with `metadata`; return
    /// its URL, resolved against the endpoint when the server sends a relative one.
    pub async fn create(&self, length: Option<u64>, metadata: &Metadata) -> Result<Created> {
        self.post(length, metadata, Body::empty(), None).await
    }

    /// Create an upload and send its first bytes in the same request
    /// (creation-with-upload); [`Created::offset`] says how many the server took.
    pub async fn create_with_upload(
        &self,
        length: Option<u64>,
        metadata: &Metadata,
        body: Body,
    ) -> Result<Created> {
        self.post(length, metadata, body, None).await
    }

    /// Create a partial upload of `length` bytes (concatenation), optionally with its
    /// first bytes.
    pub async fn create_partial(&self, length: u64, body: Body) -> Result<Created> {
        let concat = HeaderValue::from_static("partial");
        self.post(Some(length), &Metadata::new(), body, Some(concat))
            .await
    }

    /// Create the final upload of a concatenation: the `partials` in order, carrying
    /// `metadata`. The server assembles it when every partial is complete (or at once,
    /// when they are).
    pub async fn create_final(&self, partials: &[Url], metadata: &Metadata) -> Result<Created> {
        let list = partials
            .iter()
            .map(Url::as_str)
            .collect::<Vec<_>>()
            .join(" ");
        let concat = HeaderValue::try_from(format!("final;{list}"))
            .map_err(|_| Error::invalid("a partial upload URL is not a valid header value"))?;
        self.post(None, metadata, Body::empty(), Some(concat)).await
    }

    async fn post(
        &self,
        length: Option<u64>,
        metadata: &Metadata,
        body: Body,
        concat: Option<HeaderValue>,
    ) -> Result<Created> {
        let endpoint = self.endpoint_or_err()?;
        let with_body = !body.is_empty();
        let mut req = self.request(Operation::Create, endpoint, body)?;
        let h = req.headers_mut();
        match (&concat, length) {
            (Some(c), _) if c.as_bytes().starts_with(b"final") => {}
            (_, Some(n)) => {
                h.insert(header::UPLOAD_LENGTH, HeaderValue::from(n));
            }
            (_, None) => {
                h.insert(header::UPLOAD_DEFER_LENGTH, HeaderValue::from_static("1"));
            }
        }
        if let Some(c) = concat {
            h.insert(header::UPLOAD_CONCAT, c);
        }
        if !metadata.is_empty() {
            h.insert(header::UPLOAD_METADATA, metadata.to_header_value());
        }
        if with_body {
            h.insert(
                CONTENT_TYPE,
                HeaderValue::from_static(protocol::OFFSET_OCTET_STREAM),
            );
        }
        let resp = self.call(req).await?;
        let annotate = |e: Error| e.with_operation(Operation::Create);
        let url = protocol::resolve_location(endpoint, resp.headers()).map_err(annotate)?;
        let offset = if resp.headers().contains_key(header::UPLOAD_OFFSET) {
            Some(protocol::upload_offset(resp.headers()).map_err(annotate)?)
        } else {
            None
        };
        tracing::debug!(url = %protocol::redact_url(&url), length, offset, "upload created");
        let expires = protocol::upload_expires(resp.headers()).unwrap_or(None);
        Ok(Created {
            url,
            expires,
            offset,
        })
    }

    /// Terminate the upload at `url` (`DELETE`, the termination extension): the
    /// server frees it and it cannot be resumed. Its record goes from the store too,
    /// even when the server no longer knows it (then the error says so:
    /// [`Error::is_gone`]).
    pub async fn terminate(&self, url: &Url) -> Result<()> {
        let req = self.request(Operation::Terminate, url, Body::empty())?;
        let result = self.call(req).await.map(drop).map_err(|e| {
            e.with_operation(Operation::Terminate)
                .with_url(protocol::redact_url(url))
        });
        if let Some(store) = self.inner.resume.store.clone() {
            let url = url.as_str().to_owned();
            crate::upload::blocking(move || {
                for r in store.list()? {
                    if r.url == url || r.partial_urls.contains(&url) {
                        store.remove(&r.fingerprint, &r.url)?;
                    }
                }
                Ok(())
            })
            .await?;
        }
        if result.is_ok() {
            tracing::info!(url = %protocol::redact_url(url), "upload terminated");
        }
        result
    }

    /// What the server knows of the upload at `url` (`HEAD`). A missing upload
    /// (404, 410, 403) is an error for which [`Error::is_gone`] is true.
    pub async fn status(&self, url: &Url) -> Result<UploadStatus> {
        let req = self.request(Operation::Offset, url, Body::empty())?;
        let resp = self.call(req).await?;
        let h = resp.headers();
        let annotate = |e: Error| {
            e.with_operation(Operation::Offset)
                .with_url(protocol::redact_url(url))
        };
        let offset = protocol::upload_offset(h).map_err(annotate)?;
        let length = protocol::upload_length(h).map_err(annotate)?;
        if let Some(len) = length
            && offset > len
        {
            return Err(annotate(Error::protocol(
                "Upload-Offset",
                format!("offset {offset} is beyond Upload-Length {len}"),
            )));
        }
        // Informational headers: a malformed one is logged, not fatal.
        let expires = protocol::upload_expires(h)
            .inspect_err(|e| tracing::debug!(error = %e, "ignoring Upload-Expires"))
            .unwrap_or(None);
        let metadata = protocol::upload_metadata(h)
            .inspect_err(|e| tracing::debug!(error = %e, "ignoring Upload-Metadata"))
            .unwrap_or(None);
        Ok(UploadStatus {
            offset,
            length,
            expires,
            metadata,
        })
    }

    /// Append `body` at `offset` to the upload at `url` (`PATCH`); return the server's
    /// new offset. `length` sends `Upload-Length` along, for an upload whose length was
    /// deferred.
    pub async fn append(
        &self,
        url: &Url,
        offset: u64,
        body: Body,
        length: Option<u64>,
    ) -> Result<Appended> {
        let mut req = self.request(Operation::Append, url, body)?;
        let h = req.headers_mut();
        h.insert(header::UPLOAD_OFFSET, HeaderValue::from(offset));
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static(protocol::OFFSET_OCTET_STREAM),
        );
        if let Some(n) = length {
            h.insert(header::UPLOAD_LENGTH, HeaderValue::from(n));
        }
        let resp = self.call(req).await?;
        let offset = protocol::upload_offset(resp.headers()).map_err(|e| {
            e.with_operation(Operation::Append)
                .with_url(protocol::redact_url(url))
        })?;
        let expires = protocol::upload_expires(resp.headers()).unwrap_or(None);
        Ok(Appended { offset, expires })
    }
}
