//! [`Client`]: an endpoint, default headers and the tower stack every request goes
//! through.

use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use http::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use reqwest::Url;
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service, ServiceExt};

use crate::core::protocol::{self, header};
use crate::core::store::{Fingerprinter, UrlStore};
use crate::core::{
    Body, BoxError, Capabilities, Error, Metadata, Operation, Result, TusService, TusServiceBuilder,
};
pub use crate::endpoint::{FIRST_CONTACT_TRIES, UNREACHABLE_HOLD};
use crate::endpoint::{Learned, Resume};

pub use crate::core::Stack;

mod builder;
mod ietf;
pub use builder::ClientBuilder;
pub use ietf::Answer;

pub use crate::core::protocol::is_credential_header as is_sensitive_header;

pub(crate) fn mark(name: &HeaderName, mut value: HeaderValue) -> HeaderValue {
    if is_sensitive_header(name) {
        value.set_sensitive(true);
    }
    value
}

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
    learned: Learned,
    creation_with_upload: bool,
    complete_in_creation: bool,
    protocol: crate::core::Protocol,
    /// Origins besides the endpoint's that may receive credential headers.
    trusted: Vec<reqwest::Url>,
}

pub use crate::endpoint::MIN_CHUNK_SIZE;

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

/// Parse an `http` or `https` URL; the error names `what` and the URL (without query).
pub fn parse_http_url(what: &str, text: &str) -> Result<Url> {
    let shown = without_secrets(text);
    let url = Url::parse(text.trim())
        .map_err(|e| Error::invalid(format!("invalid {what} {shown:?}: {e}")))?;
    match url.scheme() {
        "http" | "https" if url.has_host() => Ok(url),
        _ => Err(Error::invalid(format!(
            "invalid {what} {shown:?}: expected an http:// or https:// URL"
        ))),
    }
}

/// Headers that frame a request or carry the tus protocol: tusflow sets them for each
/// request, and a default value would corrupt the request (or the next one on a
/// kept-alive connection).
pub fn is_reserved_header(name: &HeaderName) -> bool {
    const RESERVED: [&str; 18] = [
        "content-length",
        "transfer-encoding",
        "host",
        "connection",
        "keep-alive",
        "upgrade",
        "te",
        "trailer",
        "content-type",
        "upload-offset",
        "upload-length",
        "upload-defer-length",
        "upload-concat",
        "x-http-method-override",
        "upload-complete",
        "upload-draft-interop-version",
        "content-digest",
        "repr-digest",
    ];
    RESERVED.contains(&name.as_str())
}

pub(crate) fn reserved_error(name: &HeaderName) -> Error {
    Error::invalid(format!(
        "the header {name} cannot be a default header: tusflow sets it for each request (it frames the request or carries the tus protocol)"
    ))
}

/// `text` (a URL, maybe invalid) fit to show: no query, no user info.
fn without_secrets(text: &str) -> String {
    let text = text.split('?').next().unwrap_or_default();
    match text.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let host = authority.rsplit('@').next().unwrap_or(authority);
            format!("{scheme}://{host}{path}")
        }
        None => text.to_owned(),
    }
}

/// Take the user info out of `url`, as `(user, password)` percent-decoded.
pub(crate) fn take_userinfo(url: &mut Url) -> Option<(String, String)> {
    if url.username().is_empty() && url.password().is_none() {
        return None;
    }
    let decode = |s: &str| {
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            match (
                b[i],
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            ) {
                (b'%', Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                }
                (c, _, _) => {
                    out.push(c);
                    i += 1;
                }
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    let user = decode(url.username());
    let password = decode(url.password().unwrap_or(""));
    let _ = url.set_username("");
    let _ = url.set_password(None);
    Some((user, password))
}

/// True when `uri` is on `url`'s origin (scheme, host, port), compared in place: this
/// runs for every request.
fn same_origin(url: &Url, uri: &http::Uri) -> bool {
    let default_port = |scheme: &str| match scheme {
        "https" => Some(443),
        "http" => Some(80),
        _ => None,
    };
    let Some(scheme) = uri.scheme_str() else {
        return false;
    };
    scheme.eq_ignore_ascii_case(url.scheme())
        && uri
            .host()
            .zip(url.host_str())
            .is_some_and(|(a, b)| a.eq_ignore_ascii_case(b))
        && uri.port_u16().or(default_port(scheme)) == url.port_or_known_default()
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
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Appended {
    /// The server's new offset.
    pub offset: u64,
    /// `Upload-Expires` (tus) or the `max-age` limit (IETF), when the server gives one.
    pub expires: Option<SystemTime>,
    /// IETF mode: the server says the upload is complete (`Upload-Complete: ?1`).
    pub complete: bool,
    /// IETF mode: the target resource's answer to the append that completed the upload
    /// (`None` when that answer was lost and a re-sync found the upload complete).
    pub answer: Option<Arc<Answer>>,
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
    /// IETF mode: `Upload-Complete`, whether the upload was completed.
    pub complete: Option<bool>,
}

impl UploadStatus {
    /// True when the server has every byte (IETF mode: when it says the upload is
    /// complete).
    pub fn is_complete(&self) -> bool {
        self.complete
            .unwrap_or_else(|| self.length == Some(self.offset))
    }
}

impl Client {
    /// A client for `endpoint` with the defaults.
    pub fn new(endpoint: impl Into<String>) -> Result<Self> {
        Client::builder().endpoint(endpoint).build()
    }

    /// A builder.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::new()
    }

    pub(crate) fn resume(&self) -> &Resume {
        &self.inner.resume
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
                if is_reserved_header(&n) {
                    tracing::warn!("{}", reserved_error(&n));
                    continue;
                }
                let v = mark(&n, v);
                merged.insert(n, v);
            }
        }
        *guard = Arc::new(merged);
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
        if let Some(Ok(caps)) = self.inner.learned.capabilities.get() {
            req.extensions_mut()
                .insert(crate::core::KnownCapabilities(Arc::clone(caps)));
        }
        let proto = self.inner.protocol;
        req.extensions_mut().insert(proto);
        if let Some(i) = proto.interop() {
            req.headers_mut().insert(
                crate::core::ietf::header::UPLOAD_DRAFT_INTEROP_VERSION,
                HeaderValue::from(u16::from(i.get())),
            );
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
    ///
    /// Until the endpoint first answers, a request to its origin gets at most
    /// [`FIRST_CONTACT_TRIES`] tries (the
    /// [`MaxTries`](crate::core::attempts::MaxTries) extension), and one that gets no
    /// answer at all (a refused connection, a timeout) finds the endpoint unreachable:
    /// this and every request for the next
    /// [`UNREACHABLE_HOLD`] fail with
    /// [`Error::is_unreachable`], so the uploads sharing the client learn it once.
    pub async fn call(&self, mut req: crate::Request) -> Result<crate::Response> {
        let learned = &self.inner.learned;
        // Only the endpoint's origin is judged: a client without an endpoint, or a
        // request elsewhere (a Location on another host), goes as it is.
        let ours = self.endpoint().is_some_and(|e| same_origin(e, req.uri()));
        if !ours {
            return self.inner.stack.clone().oneshot(req).await;
        }
        if let Some(e) = learned.down() {
            return Err(e);
        }
        let first_contact = !learned.has_answered();
        if first_contact {
            req.extensions_mut()
                .insert(crate::core::attempts::MaxTries(FIRST_CONTACT_TRIES));
        }
        let started = std::time::Instant::now();
        let result = self.inner.stack.clone().oneshot(req).await;
        match &result {
            Ok(_) => learned.answered(),
            Err(e) if answered(e) => learned.answered(),
            Err(e)
                if first_contact
                    && (e.is_transport() || e.is_timeout())
                    && !e.is_certificate_error()
                    && !learned.has_answered() =>
            {
                let shown = self
                    .endpoint()
                    .map(protocol::redact_url)
                    .unwrap_or_default();
                let down = Error::unreachable(shown, started.elapsed(), e.clone());
                learned.found_down(&down);
                return Err(down);
            }
            Err(_) => {}
        }
        result
    }

    /// The server's capabilities, from `OPTIONS` on the endpoint, asked once per client
    /// (the answer, or the error, is kept).
    pub async fn capabilities(&self) -> Result<Capabilities> {
        let caps = self
            .inner
            .learned
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
        if let Some(e) = self.other_protocol(resp.headers()) {
            return Err(e);
        }
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

    /// The protocol this client speaks: tus 1.0 (the default) or the IETF draft.
    pub fn protocol(&self) -> crate::core::Protocol {
        self.inner.protocol
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
        self.inner.learned.chunk_limit()
    }

    /// What the client learned about its endpoint.
    pub(crate) fn learned(&self) -> &Learned {
        &self.inner.learned
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
        if self.protocol().is_ietf() {
            if concat.is_some() || !body.is_empty() {
                return Err(Error::invalid(
                    "the IETF draft has no partial uploads or creation with content here: upload with one upload per file",
                ));
            }
            return self.ietf_create(length, metadata).await;
        }
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
            crate::endpoint::blocking(move || {
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
        if self.protocol().is_ietf() {
            return self.ietf_status(url).await;
        }
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
            complete: None,
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
        self.append_to(url, offset, body, length, length).await
    }

    /// An append of `body` at `offset` to `url` as `content_type`: `length` declared
    /// (`Upload-Length`), `total` as the [`UploadLength`](crate::core::UploadLength)
    /// extension.
    pub(crate) fn append_request(
        &self,
        url: &Url,
        (offset, body): (u64, Body),
        (length, total): (Option<u64>, Option<u64>),
        content_type: &'static str,
    ) -> Result<crate::Request> {
        let mut req = self.request(Operation::Append, url, body)?;
        if let Some(total) = total {
            req.extensions_mut()
                .insert(crate::core::UploadLength(total));
        }
        let h = req.headers_mut();
        h.insert(header::UPLOAD_OFFSET, HeaderValue::from(offset));
        h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        if let Some(n) = length {
            h.insert(header::UPLOAD_LENGTH, HeaderValue::from(n));
        }
        Ok(req)
    }

    /// [`Client::append`] of an upload whose length the client knows to be `total`
    /// (the [`UploadLength`](crate::core::UploadLength) extension, which a re-sync
    /// checks the server's `Upload-Length` against).
    pub(crate) async fn append_to(
        &self,
        url: &Url,
        offset: u64,
        body: Body,
        length: Option<u64>,
        total: Option<u64>,
    ) -> Result<Appended> {
        if self.protocol().is_ietf() {
            return self.ietf_append(url, offset, body, length, total).await;
        }
        let req = self.append_request(
            url,
            (offset, body),
            (length, total),
            protocol::OFFSET_OCTET_STREAM,
        )?;
        let resp = self.call(req).await?;
        let offset = protocol::upload_offset(resp.headers()).map_err(|e| {
            e.with_operation(Operation::Append)
                .with_url(protocol::redact_url(url))
        })?;
        let expires = protocol::upload_expires(resp.headers()).unwrap_or(None);
        Ok(Appended {
            offset,
            expires,
            complete: false,
            answer: None,
        })
    }
}

#[cfg(test)]
mod tests;
