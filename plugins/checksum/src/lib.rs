//! Checksum middleware for tusflow: `Upload-Checksum` on every append.
//!
//! The algorithm is negotiated once per endpoint from `OPTIONS` (`Tus-Extension:
//! checksum` and `Tus-Checksum-Algorithm`): the first of the layer's preferences that the
//! server supports. Appends are split into chunks of at most the layer's chunk size,
//! each with its own digest; a chunk the server rejects with a checksum mismatch (460,
//! or 417 from some servers) is re-sent. A server without the extension gets a clear
//! error, or plain appends when the layer is not `required`.
//!
//! Servers do not verify `Upload-Checksum` on a creation `POST`, so when checksums are
//! in use a creation that carries bytes (creation-with-upload) goes without them (the
//! driver reads the server's answer, which has no `Upload-Offset`): every byte then
//! travels in a checksummed append. The capabilities come from the request's
//! [`KnownCapabilities`] extension when the client has them, so the layer asks
//! `OPTIONS` only without it.
//!
//! Each chunk is read once into memory, hashed, and sent from there; the next chunk
//! is read and hashed on the blocking pool while this one is on the wire. Memory: two
//! chunks (4 MiB each by default).
//!
//! # Order
//!
//! Innermost of the built-ins (`log -> retry -> auth -> rate-limit -> checksum`): a
//! retry re-sends from the server's offset and the chunks are digested anew.
//!
//! ```
//! use tusflow_checksum::{Algorithm, ChecksumLayer};
//! let sha256 = ChecksumLayer::sha256();
//! let any = ChecksumLayer::negotiate([Algorithm::Sha256, Algorithm::Sha1]).chunk_size(4 << 20);
//! # let _ = (sha256, any);
//! ```

mod algorithm;
mod config;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use http::HeaderValue;
use http_body_util::BodyExt;
use tower::Layer;
use tusflow_core::ietf;
use tusflow_core::middleware::{Layered, Middleware, Next};
use tusflow_core::protocol::{self, header};
use tusflow_core::service::ResponseFuture;
use tusflow_core::{
    Body, Capabilities, Endpoint, Error, KnownCapabilities, Operation, Request, Response, Result,
    Url,
};

pub use algorithm::{Algorithm, Hasher};
pub use config::{ChecksumConfig, ChecksumPlugin};

/// The default chunk size: 4 MiB.
pub const DEFAULT_CHUNK_SIZE: u64 = 4 << 20;

/// The largest chunk size: each chunk is held in memory (twice, while the next is
/// hashed), so a larger setting is capped here.
pub const MAX_CHUNK_SIZE: u64 = 256 << 20;

/// Builds [`Checksum`] services; they share the negotiated algorithm per endpoint.
#[derive(Clone)]
pub struct ChecksumLayer {
    preferences: Arc<Vec<Algorithm>>,
    chunk_size: u64,
    required: bool,
    resend: u32,
    negotiated: Arc<Mutex<HashMap<String, Option<Algorithm>>>>,
}

impl fmt::Debug for ChecksumLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChecksumLayer")
            .field("preferences", &self.preferences)
            .field("chunk_size", &self.chunk_size)
            .field("required", &self.required)
            .field("resend", &self.resend)
            .finish()
    }
}

impl ChecksumLayer {
    /// The first of `preferences` that the server supports.
    pub fn negotiate(preferences: impl IntoIterator<Item = Algorithm>) -> Self {
        ChecksumLayer {
            preferences: Arc::new(preferences.into_iter().collect()),
            chunk_size: DEFAULT_CHUNK_SIZE,
            required: true,
            resend: 3,
            negotiated: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// SHA-256 only.
    pub fn sha256() -> Self {
        Self::negotiate([Algorithm::Sha256])
    }

    /// SHA-1 only (which every server with the extension supports).
    pub fn sha1() -> Self {
        Self::negotiate([Algorithm::Sha1])
    }

    /// Any algorithm, strongest first.
    pub fn any() -> Self {
        Self::negotiate(Algorithm::ALL)
    }

    /// Split appends into chunks of at most `size` bytes (default 4 MiB, at most
    /// [`MAX_CHUNK_SIZE`]).
    pub fn chunk_size(mut self, size: u64) -> Self {
        self.chunk_size = size.clamp(1, MAX_CHUNK_SIZE);
        self
    }

    /// When false, a server without a common algorithm gets plain appends (with a
    /// warning) instead of an error.
    pub fn required(mut self, required: bool) -> Self {
        self.required = required;
        self
    }

    /// Re-send a chunk at most `n` times after a checksum mismatch (default 3).
    pub fn resend(mut self, n: u32) -> Self {
        self.resend = n;
        self
    }
}

impl<S> Layer<S> for ChecksumLayer {
    type Service = Checksum<S>;
    fn layer(&self, inner: S) -> Checksum<S> {
        Layered::new(self.clone(), inner)
    }
}

/// The checksum service; see the [crate docs](crate).
pub type Checksum<S> = Layered<ChecksumLayer, S>;

impl Middleware for ChecksumLayer {
    fn call(&self, mut next: Next, req: Request) -> ResponseFuture {
        let op = req.extensions().get::<Operation>().copied();
        match op {
            Some(Operation::Append) if !req.body().is_empty() => {
                Box::pin(append(next, self.clone(), req))
            }
            Some(Operation::Create) if !req.body().is_empty() => {
                Box::pin(create(next, self.clone(), req))
            }
            // A server that cannot check the bytes is refused before an upload is
            // made on it, not at its first append (which would leave it behind).
            Some(Operation::Create) if self.required => {
                let layer = self.clone();
                Box::pin(async move {
                    negotiated(&mut next, &layer, &req).await?;
                    next.call(req).await
                })
            }
            _ => Box::pin(async move { next.call(req).await }),
        }
    }
}

/// Hash a body, block by block.
pub async fn digest(algorithm: Algorithm, body: Body) -> Result<Vec<u8>> {
    let mut h = algorithm.hasher();
    let mut body = body;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            h.update(&data);
        }
    }
    Ok(h.finish())
}

/// The algorithm to use with the endpoint of `req`, asking the server once.
async fn negotiated(
    inner: &mut Next,
    layer: &ChecksumLayer,
    req: &Request,
) -> Result<Option<Algorithm>> {
    let url = match req.extensions().get::<Endpoint>() {
        Some(Endpoint(ep)) => ep.clone(),
        None => req
            .uri()
            .to_string()
            .parse()
            .map_err(|_| Error::invalid("append request URI is not a URL"))?,
    };
    if tusflow_core::Protocol::of(req.extensions()).is_ietf() {
        // The IETF draft: RFC 9530 digests, no negotiation (a server that does not
        // check them ignores the header).
        let choice = layer
            .preferences
            .iter()
            .copied()
            .find(|a| a.digest_name().is_some());
        if choice.is_none() {
            let why = "the IETF draft's Content-Digest (RFC 9530) has sha256 and sha512 as standard algorithms, none of those asked";
            if layer.required {
                return Err(Error::invalid(why));
            }
            tracing::warn!("{why}: uploading without digests");
        }
        return Ok(choice);
    }
    let key = url.as_str().to_owned();
    if let Some(found) = layer
        .negotiated
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&key)
    {
        return Ok(*found);
    }
    // The client sends its cached capabilities along; ask the server only without them.
    let caps = match req.extensions().get::<KnownCapabilities>() {
        Some(KnownCapabilities(caps)) => Capabilities::clone(caps),
        None => discover(inner, &url, req).await?,
    };
    let shown = protocol::redact_url(&url);
    let choice = if caps.supports("checksum") {
        layer
            .preferences
            .iter()
            .copied()
            .find(|a| caps.checksum_algorithms.iter().any(|s| s == a.as_str()))
    } else {
        None
    };
    let choice = match choice {
        Some(a) => {
            tracing::debug!(algorithm = a.as_str(), "checksum algorithm negotiated");
            Some(a)
        }
        None => {
            let why = if caps.supports("checksum") {
                format!(
                    "supports none of the checksum algorithms {} (it offers: {})",
                    layer
                        .preferences
                        .iter()
                        .map(|a| a.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    caps.checksum_algorithms.join(", ")
                )
            } else {
                "does not support the tus checksum extension".to_owned()
            };
            if layer.required {
                return Err(Error::invalid(format!("the server at {shown} {why}")));
            }
            tracing::warn!("the server at {shown} {why}: uploading without checksums");
            None
        }
    };
    layer
        .negotiated
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(key, choice);
    Ok(choice)
}

/// `OPTIONS` on the endpoint, with the same credentials as the append (the auth layer
/// may be inside this one).
async fn discover(inner: &mut Next, url: &Url, req: &Request) -> Result<Capabilities> {
    let mut options = http::Request::options(url.as_str())
        .extension(Operation::Discover)
        .extension(Endpoint(url.clone()))
        .body(Body::empty())
        .expect("valid request");
    for (n, v) in req.headers() {
        if n.as_str().starts_with("upload-")
            || n == http::header::CONTENT_TYPE
            || n == http::header::CONTENT_LENGTH
        {
            continue;
        }
        options.headers_mut().insert(n.clone(), v.clone());
    }
    Capabilities::from_headers(inner.call(options).await?.headers())
}

/// A creation carrying bytes (creation-with-upload). Servers do not check
/// `Upload-Checksum` on a `POST`, so with checksums in use the upload is created
/// without its bytes; the server's answer has no `Upload-Offset`, so the driver asks
/// for the offset (0) and the bytes follow in checksummed appends.
async fn create(mut inner: Next, layer: ChecksumLayer, req: Request) -> Result<Response> {
    if negotiated(&mut inner, &layer, &req).await?.is_none() {
        return inner.call(req).await;
    }
    let (mut parts, _) = req.into_parts();
    parts.headers.remove(http::header::CONTENT_TYPE);
    parts.headers.remove(http::header::CONTENT_LENGTH);
    tracing::debug!("creating without the first bytes, so that every byte is checksummed");
    inner.call(Request::from_parts(parts, Body::empty())).await
}

/// A piece of an append, read and hashed ahead on the blocking pool while the previous
/// piece is sent; aborted when dropped unused.
struct Prepared(tokio::task::JoinHandle<Result<(Body, HeaderValue)>>);

impl Drop for Prepared {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Prepared {
    fn start(algorithm: Algorithm, piece: Body, ietf: bool) -> Self {
        Prepared(tokio::spawn(async move {
            let (piece, digest) = piece
                .buffered(move |data| {
                    let mut h = algorithm.hasher();
                    h.update(data);
                    h.finish()
                })
                .await?;
            let sum = match (ietf, algorithm.digest_name()) {
                // RFC 9530: a Dictionary of Byte Sequences.
                (true, Some(name)) => format!("{name}=:{}:", protocol::base64_encode(&digest)),
                _ => format!(
                    "{} {}",
                    algorithm.as_str(),
                    protocol::base64_encode(&digest)
                ),
            };
            Ok((piece, HeaderValue::try_from(sum).expect("base64 is ASCII")))
        }))
    }

    async fn get(mut self) -> Result<(Body, HeaderValue)> {
        (&mut self.0)
            .await
            .map_err(|e| Error::internal(format!("hashing a chunk failed: {e}")))?
    }
}

async fn append(mut inner: Next, layer: ChecksumLayer, req: Request) -> Result<Response> {
    let Some(algorithm) = negotiated(&mut inner, &layer, &req).await? else {
        return inner.call(req).await;
    };
    // The first chunk is read and hashed before anything is sent: hold no capacity of
    // the stack below meanwhile.
    inner.release();
    let start = protocol::upload_offset(req.headers())
        .map_err(|_| Error::invalid("an append request without a valid Upload-Offset"))?;
    let ietf = tusflow_core::Protocol::of(req.extensions()).is_ietf();
    // The draft's min-append-size: no piece but the last is smaller, and a short tail
    // joins the piece before it.
    let min = if ietf {
        req.extensions()
            .get::<ietf::Limits>()
            .and_then(|l| l.min_append_size)
            .unwrap_or(0)
    } else {
        0
    };
    let (parts, body) = req.into_parts();
    let len = body.len();
    let size = layer.chunk_size.max(min);
    let piece_at = |pos: u64| {
        let mut end = (pos + size).min(len);
        if len - end < min {
            end = len;
        }
        (end, Prepared::start(algorithm, body.slice(pos, end), ietf))
    };
    // Each piece is read once, hashed, and sent from memory; the next piece is read
    // and hashed while this one is on the wire.
    let mut pos = 0;
    let (mut end, mut next) = piece_at(0);
    loop {
        let (piece, sum) = next.get().await?;
        let ahead = (end < len).then(|| piece_at(end));
        let mut mismatches = 0;
        let resp = loop {
            let mut req =
                Request::from_parts(tusflow_core::middleware::clone_parts(&parts), piece.clone());
            let h = req.headers_mut();
            h.insert(header::UPLOAD_OFFSET, HeaderValue::from(start + pos));
            if ietf {
                h.insert(ietf::header::CONTENT_DIGEST, sum.clone());
                // Only the last piece may complete the upload.
                if end < len {
                    h.insert(
                        ietf::header::UPLOAD_COMPLETE,
                        HeaderValue::from_static("?0"),
                    );
                }
            } else {
                h.insert(header::UPLOAD_CHECKSUM, sum.clone());
            }
            if pos > 0 {
                // Upload-Length (deferred uploads) goes with the first chunk only.
                h.remove(header::UPLOAD_LENGTH);
            }
            match inner.call(req).await {
                Err(e) if e.is_checksum_mismatch() && mismatches < layer.resend => {
                    mismatches += 1;
                    tracing::warn!(
                        offset = start + pos,
                        len = end - pos,
                        "checksum mismatch: re-sending the chunk"
                    );
                }
                other => break other?,
            }
        };
        let acked = if ietf {
            // (Interop 8 answers need not carry the offset: a success took it all.)
            ietf::integer(resp.headers(), &header::UPLOAD_OFFSET)?.unwrap_or(start + end)
        } else {
            protocol::upload_offset(resp.headers())?
        };
        let Some((next_end, prepared)) = ahead else {
            return Ok(resp);
        };
        if acked != start + end {
            // The server disagrees: the driver checks the offset.
            return Ok(resp);
        }
        pos = end;
        end = next_end;
        next = prepared;
    }
}

#[cfg(test)]
mod tests;
