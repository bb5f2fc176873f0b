//! One opaque error type for every tusflow failure, with predicates.

use std::error::Error as StdError;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;

use crate::Operation;

/// A boxed error from any layer of a stack.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// A `Result` with tusflow's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The error of every tusflow operation.
///
/// Like `reqwest::Error`, it is opaque: ask it with predicates ([`Error::status`],
/// [`Error::is_retryable`], [`Error::is_gone`], ...). Messages are short, lowercase, and
/// never contain secrets: URLs are shown without their query string or user info, and
/// header values are never printed. It is cheap to clone.
#[derive(Clone)]
pub struct Error {
    inner: Arc<Inner>,
}

struct Inner {
    kind: Kind,
    operation: Option<Operation>,
    url: Option<String>,
    source: Option<Arc<dyn StdError + Send + Sync>>,
}

#[derive(Debug)]
enum Kind {
    /// The server answered with a status that is not a success.
    Status {
        status: StatusCode,
        body: String,
        tus_version: Option<String>,
        retry_after: Option<Duration>,
        /// A problem type of the resumable upload draft, from a problem JSON answer.
        problem: Option<crate::ietf::Problem>,
        /// The draft's `Upload-Complete: ?1` on the answer: every byte arrived, and the
        /// target resource failed to process them (resuming cannot help).
        completed: bool,
    },
    /// A header from the server is missing or malformed, or the server broke the protocol.
    Protocol {
        header: &'static str,
        detail: String,
    },
    /// A 2xx append answer whose offset is not where the appended bytes ended.
    OffsetMismatch { expected: u64, got: u64 },
    /// Connecting, sending or receiving failed.
    Transport,
    /// Nothing moved for too long, or connecting took too long.
    Timeout { what: &'static str },
    /// Reading the local source failed.
    Io { path: Option<PathBuf> },
    /// Invalid input or configuration from the caller.
    Invalid { what: String },
    /// The URL store could not be used now: its file is held by another process, or
    /// cannot be written (a full disk).
    Store { what: String },
    /// An error from a middleware layer that is not a tusflow error; `retryable` for
    /// an overloaded service.
    Middleware { retryable: bool },
    /// The caller aborted the upload.
    Cancelled { terminated: bool },
    /// The endpoint never answered: nothing listens, or what listens says nothing.
    /// The source is the last failure.
    Unreachable { endpoint: String, seconds: u64 },
    /// A bug: a task panicked, an invariant broke.
    Internal { what: String },
}

/// How many bytes of a server's error answer an [`Error`] keeps.
pub const BODY_EXCERPT_LEN: usize = 512;

impl Error {
    fn new(kind: Kind) -> Self {
        Error {
            inner: Arc::new(Inner {
                kind,
                operation: None,
                url: None,
                source: None,
            }),
        }
    }

    fn with_source(kind: Kind, source: impl StdError + Send + Sync + 'static) -> Self {
        let mut e = Error::new(kind);
        Arc::get_mut(&mut e.inner).expect("fresh").source = Some(Arc::new(source));
        e
    }

    // Constructors, for plugin authors: one per kind, then the annotations.

    /// A non-success status from the server, keeping an excerpt of its answer.
    ///
    /// `body` is cut to [`BODY_EXCERPT_LEN`] bytes and control characters are dropped.
    pub fn from_status(status: StatusCode, body: &[u8], tus_version: Option<String>) -> Self {
        Error::new(Kind::Status {
            status,
            body: excerpt(body),
            tus_version,
            retry_after: None,
            problem: None,
            completed: false,
        })
    }

    /// Mark a status error as the answer of a completed upload (the IETF draft's
    /// `Upload-Complete: ?1`): not retryable.
    pub fn with_upload_complete(mut self) -> Self {
        if let Kind::Status { completed, .. } = &mut self.inner_mut().kind {
            *completed = true;
        }
        self
    }

    /// True when the server answered an error to a completed upload (the IETF draft's
    /// `Upload-Complete: ?1`): the bytes are all there, the target resource failed.
    pub fn is_upload_complete(&self) -> bool {
        matches!(
            self.inner.kind,
            Kind::Status {
                completed: true,
                ..
            }
        )
    }

    /// Attach the draft's problem type the answer named, for a status error.
    pub fn with_problem(mut self, p: crate::ietf::Problem) -> Self {
        if let Kind::Status { problem, .. } = &mut self.inner_mut().kind {
            *problem = Some(p);
        }
        self
    }

    /// Attach how long the server asked to wait (`Retry-After`), for a status error.
    pub fn with_retry_after(mut self, after: Duration) -> Self {
        if let Kind::Status { retry_after, .. } = &mut self.inner_mut().kind {
            *retry_after = Some(after);
        }
        self
    }

    /// A missing or malformed header, or another break of the protocol by the server.
    pub fn protocol(header: &'static str, detail: impl Into<String>) -> Self {
        Error::new(Kind::Protocol {
            header,
            detail: detail.into(),
        })
    }

    /// A success answer to an append whose `Upload-Offset` is not where the bytes sent
    /// ended.
    pub fn offset_mismatch(expected: u64, got: u64) -> Self {
        Error::new(Kind::OffsetMismatch { expected, got })
    }

    /// A transport failure (connect, send, receive).
    pub fn transport(source: impl StdError + Send + Sync + 'static) -> Self {
        Error::with_source(Kind::Transport, source)
    }

    /// A timeout; `what` says which one ("stall", "connect", ...).
    pub fn timeout(what: &'static str) -> Self {
        Error::new(Kind::Timeout { what })
    }

    /// Connecting failed (refused, no route, a name that does not resolve); `detail`
    /// is the system's word for it ("Connection refused (os error 111)").
    pub fn connect(detail: impl Into<String>) -> Self {
        Error::with_source(Kind::Transport, ConnectFailed(detail.into()))
    }

    /// The endpoint (shown as `endpoint`) never answered in `tried`; `last` is the
    /// last failure. Not retryable: it says to stop trying.
    pub fn unreachable(endpoint: impl Into<String>, tried: Duration, last: Error) -> Self {
        Error::with_source(
            Kind::Unreachable {
                endpoint: endpoint.into(),
                seconds: tried.as_secs_f64().round() as u64,
            },
            last,
        )
    }

    /// Reading the local source failed; `path` names the file when there is one.
    pub fn io(path: Option<&Path>, source: std::io::Error) -> Self {
        Error::with_source(
            Kind::Io {
                path: path.map(Path::to_path_buf),
            },
            source,
        )
    }

    /// A configuration error: names the file (or env var) and key when known. It counts
    /// as invalid input ([`Error::is_invalid`]).
    pub fn config(what: impl Into<String>) -> Self {
        Error::new(Kind::Invalid { what: what.into() })
    }

    /// The URL store could not be used now (held by another process, a full disk);
    /// `what` names its file and the cause.
    pub fn store(what: impl Into<String>) -> Self {
        Error::new(Kind::Store { what: what.into() })
    }

    /// Invalid input or configuration from the caller, e.g. a bad metadata key.
    pub fn invalid(what: impl Into<String>) -> Self {
        Error::new(Kind::Invalid { what: what.into() })
    }

    /// An error from a middleware layer. tusflow errors inside it are unwrapped.
    ///
    /// The error's source chain is searched: a tusflow error anywhere in it (inside a
    /// `Buffer`'s `ServiceError`, say) comes back as itself; tower's `Elapsed` (its
    /// timeout layer) is a timeout and its `Overloaded` (load shedding) a retryable
    /// middleware error.
    pub fn middleware(err: BoxError) -> Self {
        let err = match err.downcast::<Error>() {
            Ok(e) => return *e,
            Err(other) => other,
        };
        let mut retryable = false;
        let mut cur: Option<&(dyn StdError + 'static)> = Some(err.as_ref());
        while let Some(e) = cur {
            if let Some(ours) = e.downcast_ref::<Error>() {
                return ours.clone();
            }
            if e.is::<tower::timeout::error::Elapsed>() {
                return Error::timeout("middleware");
            }
            retryable |= e.is::<tower::load_shed::error::Overloaded>();
            cur = e.source();
        }
        let mut e = Error::new(Kind::Middleware { retryable });
        Arc::get_mut(&mut e.inner).expect("fresh").source = Some(Arc::from(err));
        e
    }

    /// A bug in tusflow or a plugin (a task that panicked): neither the caller's input
    /// nor the server's answer. Not retryable.
    pub fn internal(what: impl Into<String>) -> Self {
        Error::new(Kind::Internal { what: what.into() })
    }

    /// The upload was aborted by its caller; `terminated` when it was also removed from
    /// the server.
    pub fn cancelled(terminated: bool) -> Self {
        Error::new(Kind::Cancelled { terminated })
    }

    /// Attach the operation this error happened in.
    pub fn with_operation(mut self, op: Operation) -> Self {
        self.inner_mut().operation = Some(op);
        self
    }

    /// Attach the URL the request went to. Pass an already-redacted form
    /// ([`crate::protocol::redact_url`]).
    pub fn with_url(mut self, url: impl Into<String>) -> Self {
        self.inner_mut().url = Some(url.into());
        self
    }

    fn inner_mut(&mut self) -> &mut Inner {
        if Arc::get_mut(&mut self.inner).is_none() {
            let i = &self.inner;
            let copy = Inner {
                kind: i.kind.clone_kind(),
                operation: i.operation,
                url: i.url.clone(),
                source: i.source.clone(),
            };
            self.inner = Arc::new(copy);
        }
        Arc::get_mut(&mut self.inner).expect("unique")
    }

    /// The status the server answered, for a status error (as `reqwest::Error::status`).
    pub fn status(&self) -> Option<StatusCode> {
        match &self.inner.kind {
            Kind::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// How long the server asked to wait before trying again (`Retry-After`).
    pub fn retry_after(&self) -> Option<Duration> {
        match &self.inner.kind {
            Kind::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The problem type of the resumable upload draft that the server's answer named
    /// (`application/problem+json`), for a status error.
    pub fn problem(&self) -> Option<&crate::ietf::Problem> {
        match &self.inner.kind {
            Kind::Status { problem, .. } => problem.as_ref(),
            _ => None,
        }
    }

    /// The operation that failed, when known.
    pub fn operation(&self) -> Option<Operation> {
        self.inner.operation
    }

    /// An excerpt of the server's answer, for a status error (tuspy's
    /// `response_content`).
    pub fn response_body(&self) -> Option<&str> {
        match &self.inner.kind {
            Kind::Status { body, .. } => Some(body),
            _ => None,
        }
    }

    /// The versions the server speaks, from `Tus-Version` on a 412 answer.
    pub fn tus_version(&self) -> Option<&str> {
        match &self.inner.kind {
            Kind::Status { tus_version, .. } => tus_version.as_deref(),
            _ => None,
        }
    }

    /// True when trying again may succeed: transport errors, timeouts, 5xx, 423
    /// (locked), 409 (after asking the offset again), 460 and 417 (checksum mismatch).
    /// A certificate the client refused is not retryable: it will be refused again.
    pub fn is_retryable(&self) -> bool {
        match &self.inner.kind {
            Kind::Transport => !self.is_certificate_error(),
            Kind::Timeout { .. } | Kind::OffsetMismatch { .. } => true,
            Kind::Middleware { retryable } => *retryable,
            Kind::Status {
                completed: true, ..
            } => false,
            // The draft's completed upload and inconsistent lengths.
            Kind::Status {
                problem: Some(p), ..
            } if p.is_final() => false,
            Kind::Status { status, .. } => {
                status.is_server_error()
                    || matches!(status.as_u16(), 409 | 423 | 460 | 417 | 408 | 429)
            }
            _ => false,
        }
    }

    /// True when the server's offset differs from the client's: a 409, or a success
    /// answer with an unexpected `Upload-Offset`. Ask the offset again, then resend.
    pub fn is_offset_mismatch(&self) -> bool {
        match &self.inner.kind {
            Kind::OffsetMismatch { .. } => true,
            Kind::Status {
                problem: Some(p), ..
            } if p.is_final() => false,
            Kind::Status { status, .. } => *status == StatusCode::CONFLICT,
            _ => false,
        }
    }

    /// True when the upload does not exist (any more): 404 or 410, or 403 on a `HEAD`.
    /// Start a new upload.
    pub fn is_gone(&self) -> bool {
        match &self.inner.kind {
            Kind::Status { status, .. } => {
                matches!(status.as_u16(), 404 | 410)
                    || (status.as_u16() == 403 && self.inner.operation == Some(Operation::Offset))
            }
            _ => false,
        }
    }

    /// True for a checksum mismatch (460, or 417 which some servers send instead).
    pub fn is_checksum_mismatch(&self) -> bool {
        matches!(self.status().map(|s| s.as_u16()), Some(460 | 417))
    }

    /// True when the upload is locked by another request (423).
    pub fn is_locked(&self) -> bool {
        self.status() == Some(StatusCode::LOCKED)
    }

    /// True when the server does not speak our tus version (412).
    pub fn is_version_unsupported(&self) -> bool {
        self.status() == Some(StatusCode::PRECONDITION_FAILED)
    }

    /// True for a timeout (stall or connect).
    pub fn is_timeout(&self) -> bool {
        matches!(self.inner.kind, Kind::Timeout { .. })
    }

    /// True for a transport failure (connect, send, receive).
    pub fn is_transport(&self) -> bool {
        matches!(self.inner.kind, Kind::Transport)
    }

    /// True when connecting failed (nothing listens, no route, no such host).
    pub fn is_connect(&self) -> bool {
        self.is_transport()
            && self
                .inner
                .source
                .as_ref()
                .is_some_and(|s| s.downcast_ref::<ConnectFailed>().is_some())
    }

    /// True when the endpoint never answered and the client stopped trying it
    /// ([`Error::unreachable`]): a batch stops starting files then.
    pub fn is_unreachable(&self) -> bool {
        matches!(self.inner.kind, Kind::Unreachable { .. })
    }

    /// True when the server broke the protocol (a missing or malformed header, ...).
    pub fn is_protocol(&self) -> bool {
        matches!(
            self.inner.kind,
            Kind::Protocol { .. } | Kind::OffsetMismatch { .. }
        )
    }

    /// True when reading the local source failed.
    pub fn is_io(&self) -> bool {
        matches!(self.inner.kind, Kind::Io { .. })
    }

    /// True for a bug (a task that panicked), not a problem of input or server.
    pub fn is_internal(&self) -> bool {
        matches!(self.inner.kind, Kind::Internal { .. })
    }

    /// True when the caller aborted the upload.
    pub fn is_cancelled(&self) -> bool {
        matches!(self.inner.kind, Kind::Cancelled { .. })
    }

    /// True for invalid input or configuration from the caller.
    pub fn is_invalid(&self) -> bool {
        matches!(self.inner.kind, Kind::Invalid { .. })
    }

    /// True when TLS refused the server's certificate (or the server refused the
    /// client's): an unknown issuer, a wrong name, an expired certificate.
    pub fn is_certificate_error(&self) -> bool {
        let mut source = self
            .inner
            .source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static));
        while let Some(mut e) = source {
            // An io::Error hides the error it wraps from `source()`, and may wrap
            // another io::Error.
            while let Some(inner) = e
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
            {
                e = inner;
            }
            if let Some(tls) = e.downcast_ref::<rustls::Error>() {
                return matches!(
                    tls,
                    rustls::Error::InvalidCertificate(_)
                        | rustls::Error::NoCertificatesPresented
                        | rustls::Error::AlertReceived(_)
                );
            }
            source = e.source();
        }
        false
    }

    /// True when the URL store could not be used ([`Error::store`]).
    pub fn is_store(&self) -> bool {
        matches!(self.inner.kind, Kind::Store { .. })
    }

    /// The header a protocol error is about.
    pub fn header(&self) -> Option<&'static str> {
        match &self.inner.kind {
            Kind::Protocol { header, .. } => Some(header),
            Kind::OffsetMismatch { .. } => Some("Upload-Offset"),
            _ => None,
        }
    }
}

impl Kind {
    fn clone_kind(&self) -> Kind {
        match self {
            Kind::Status {
                status,
                body,
                tus_version,
                retry_after,
                problem,
                completed,
            } => Kind::Status {
                status: *status,
                body: body.clone(),
                tus_version: tus_version.clone(),
                retry_after: *retry_after,
                problem: problem.clone(),
                completed: *completed,
            },
            Kind::Protocol { header, detail } => Kind::Protocol {
                header,
                detail: detail.clone(),
            },
            Kind::OffsetMismatch { expected, got } => Kind::OffsetMismatch {
                expected: *expected,
                got: *got,
            },
            Kind::Transport => Kind::Transport,
            Kind::Timeout { what } => Kind::Timeout { what },
            Kind::Io { path } => Kind::Io { path: path.clone() },
            Kind::Invalid { what } => Kind::Invalid { what: what.clone() },
            Kind::Store { what } => Kind::Store { what: what.clone() },
            Kind::Middleware { retryable } => Kind::Middleware {
                retryable: *retryable,
            },
            Kind::Cancelled { terminated } => Kind::Cancelled {
                terminated: *terminated,
            },
            Kind::Internal { what } => Kind::Internal { what: what.clone() },
            Kind::Unreachable { endpoint, seconds } => Kind::Unreachable {
                endpoint: endpoint.clone(),
                seconds: *seconds,
            },
        }
    }
}

/// Keep at most [`BODY_EXCERPT_LEN`] bytes of an answer, as text without control
/// characters, cut on a character boundary.
fn excerpt(body: &[u8]) -> String {
    let cut = &body[..body.len().min(BODY_EXCERPT_LEN)];
    let text = String::from_utf8_lossy(cut);
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let trimmed = out.trim_end().len();
    out.truncate(trimmed);
    if body.len() > BODY_EXCERPT_LEN {
        out.push_str("...");
    }
    out
}

/// An error and its sources, joined with ": ", without repeating a message that its
/// source already holds.
/// The source of a failed connect: the system's words.
#[derive(Debug)]
struct ConnectFailed(String);

impl fmt::Display for ConnectFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl StdError for ConnectFailed {}

fn chain(err: &(dyn StdError + 'static)) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let s = e.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = e.source();
    }
    out
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("tusflow::Error");
        d.field("kind", &self.inner.kind);
        if let Some(op) = self.inner.operation {
            d.field("operation", &op);
        }
        if let Some(url) = &self.inner.url {
            d.field("url", url);
        }
        if let Some(src) = &self.inner.source {
            d.field("source", src);
        }
        d.finish()
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.inner
            .source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

impl From<BoxError> for Error {
    fn from(err: BoxError) -> Self {
        Error::middleware(err)
    }
}

mod display;

#[cfg(test)]
mod tests;
