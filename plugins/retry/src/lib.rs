//! tus-aware retry middleware for tusflow.
//!
//! [`RetryLayer`] retries what may succeed on a second try: network errors, timeouts,
//! 5xx, 423 (locked), 408 and 429, and for appends 409 (offset mismatch) and checksum
//! mismatches (460, or 417). It never retries other 4xx.
//!
//! Before re-sending an append it asks the server for its offset with `HEAD` and sends
//! only the bytes from there (the body is a window that just moves its start), so a
//! connection cut after N bytes costs the bytes in flight, not the upload. A `HEAD` that
//! fails is retried like anything else and is never taken for "upload gone".
//!
//! Delays grow exponentially with full jitter (or follow an explicit list, like
//! tus-js-client's `retryDelays`) and honour `Retry-After`. A creation that carried
//! bytes (creation-with-upload) is tried again without them (the server's answer then
//! has no `Upload-Offset`, and the driver asks for the offset), so the bytes go in
//! appends that can be resumed. The count of tries resets
//! whenever the server's offset moves forward, and a total bound ends any loop.
//!
//! # Order
//!
//! Put it outside auth, rate limiting and checksums (`log -> retry -> auth -> rate-limit
//! -> checksum`), so every try is signed, paced and checksummed anew.
//!
//! ```
//! use std::time::Duration;
//! use tusflow_retry::RetryLayer;
//! let retry = RetryLayer::new().max_attempts(5).initial_delay(Duration::from_millis(100));
//! let js_style = RetryLayer::with_delays([0, 1000, 3000, 5000].map(Duration::from_millis));
//! # let _ = (retry, js_style);
//! ```

mod config;
mod policy;

use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use tower::Layer;
use tusflow_core::attempts::{MaxTries, RetryCounter};
use tusflow_core::ietf;
use tusflow_core::middleware::clone_parts;
use tusflow_core::middleware::{Layered, Middleware, Next};
use tusflow_core::protocol::{self, header};
use tusflow_core::service::ResponseFuture;
use tusflow_core::{Body, Error, Operation, Request, Response, Result, UploadLength};

pub use config::{RetryConfig, RetryPlugin};
pub use policy::Backoff;

/// Builds [`Retry`] services. Holds only its settings.
#[derive(Clone, Debug)]
pub struct RetryLayer {
    policy: Arc<Backoff>,
}

impl Default for RetryLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl RetryLayer {
    /// Exponential backoff with full jitter: 8 tries without progress, 200 ms to 30 s.
    pub fn new() -> Self {
        RetryLayer {
            policy: Arc::new(Backoff::default()),
        }
    }

    /// Retry after exactly these delays, then give up (tus-js-client's `retryDelays`).
    pub fn with_delays(delays: impl IntoIterator<Item = Duration>) -> Self {
        let mut b = Backoff::default();
        b.delays = Some(delays.into_iter().collect());
        b.max_attempts = b.delays.as_ref().map_or(1, |d| d.len() as u32 + 1);
        RetryLayer {
            policy: Arc::new(b),
        }
    }

    /// From a [`Backoff`] policy.
    pub fn from_policy(policy: Backoff) -> Self {
        RetryLayer {
            policy: Arc::new(policy),
        }
    }

    fn edit(mut self, f: impl FnOnce(&mut Backoff)) -> Self {
        f(Arc::make_mut(&mut self.policy));
        self
    }

    /// Tries in a row without progress, the first included (tuspy's `retries` + 1).
    pub fn max_attempts(self, n: u32) -> Self {
        self.edit(|b| b.max_attempts = n.max(1))
    }

    /// Tries in all, progress or not.
    pub fn max_total_attempts(self, n: u32) -> Self {
        self.edit(|b| b.max_total_attempts = n.max(1))
    }

    /// The first backoff delay (the ceiling of the first jittered wait).
    pub fn initial_delay(self, d: Duration) -> Self {
        self.edit(|b| b.initial_delay = d)
    }

    /// The longest backoff delay.
    pub fn max_delay(self, d: Duration) -> Self {
        self.edit(|b| b.max_delay = d)
    }

    /// The longest `Retry-After` honoured (default 60 s); a longer one is capped, and
    /// the log says so.
    pub fn max_retry_after(self, d: Duration) -> Self {
        self.edit(|b| b.max_retry_after = d)
    }

    /// The policy.
    pub fn policy(&self) -> &Backoff {
        &self.policy
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = Retry<S>;
    fn layer(&self, inner: S) -> Retry<S> {
        Layered::new(self.clone(), inner)
    }
}

/// The retry service; see the [crate docs](crate). Its `poll_ready` is the inner
/// service's: the first try goes to the service made ready, and every later try (and
/// each `HEAD` to re-sync) waits for the same service to be ready again, so a retry
/// holds no capacity while it waits out a backoff delay.
pub type Retry<S> = Layered<RetryLayer, S>;

impl Middleware for RetryLayer {
    fn call(&self, next: Next, req: Request) -> ResponseFuture {
        Box::pin(run(next, Arc::clone(&self.policy), req))
    }
}

/// What is needed to build the request again.
struct Template {
    parts: http::request::Parts,
    body: Body,
}

impl Template {
    fn new(req: Request) -> (Self, Request) {
        let (parts, body) = req.into_parts();
        let t = Template {
            parts: clone_parts(&parts),
            body: body.clone(),
        };
        (t, Request::from_parts(parts, body))
    }

    fn request(&self) -> Request {
        Request::from_parts(clone_parts(&self.parts), self.body.clone())
    }

    /// The request without its body (and its content headers).
    fn without_body(&self) -> Request {
        let mut parts = clone_parts(&self.parts);
        parts.headers.remove(http::header::CONTENT_TYPE);
        parts.headers.remove(http::header::CONTENT_LENGTH);
        Request::from_parts(parts, Body::empty())
    }

    /// The append again, from `offset` (the window start moves; nothing is re-read).
    fn append_from(&self, start: u64, offset: u64) -> Request {
        let mut parts = clone_parts(&self.parts);
        parts
            .headers
            .insert(header::UPLOAD_OFFSET, HeaderValue::from(offset));
        Request::from_parts(parts, self.body.advance(offset - start))
    }

    /// A `HEAD` for the offset of the same upload, with the same headers (auth, ...)
    /// but none of the append's own.
    fn offset_request(&self) -> Request {
        let mut parts = clone_parts(&self.parts);
        parts.method = http::Method::HEAD;
        parts.extensions.insert(Operation::Offset);
        for h in [
            header::UPLOAD_OFFSET,
            header::UPLOAD_LENGTH,
            header::UPLOAD_CHECKSUM,
            ietf::header::UPLOAD_COMPLETE,
            ietf::header::CONTENT_DIGEST,
            ietf::header::REPR_DIGEST,
            http::header::CONTENT_TYPE,
            http::header::CONTENT_LENGTH,
        ] {
            parts.headers.remove(h);
        }
        Request::from_parts(parts, Body::empty())
    }
}

/// True when `err` may succeed if `op` is tried again.
fn retryable(op: Option<Operation>, err: &Error) -> bool {
    if !err.is_retryable() {
        return false;
    }
    // An offset or checksum mismatch means something only for an append.
    let append_only = err.is_offset_mismatch() || err.is_checksum_mismatch();
    !append_only || op == Some(Operation::Append)
}

/// True when the server refused the request outright, so nothing of it was applied: a
/// 4xx status (but 408, which a timeout layer on the client's side answers while the
/// request may be on its way).
fn refused(err: &Error) -> bool {
    err.status()
        .is_some_and(|s| s.is_client_error() && s != http::StatusCode::REQUEST_TIMEOUT)
}

/// Counts tries: in a row without progress, and in all.
struct Attempts<'a> {
    policy: &'a Backoff,
    streak: u32,
    total: u32,
    /// The upload's counter, when the driver counts retries.
    counter: Option<RetryCounter>,
    /// The request's own cap on tries ([`MaxTries`]), if lower than the policy's.
    cap: u32,
}

impl Attempts<'_> {
    /// After a failed try: wait and return true when another try is allowed.
    async fn again(&mut self, op: Option<Operation>, err: &Error) -> bool {
        if !retryable(op, err)
            || self.streak >= self.policy.max_attempts
            || self.total >= self.policy.max_total_attempts.min(self.cap)
        {
            return false;
        }
        let delay = self.policy.delay(self.streak, err.retry_after());
        if let Some(asked) = err.retry_after()
            && asked > self.policy.max_retry_after
        {
            tracing::info!(
                asked_s = asked.as_secs(),
                waiting_s = delay.as_secs(),
                "the server asked to wait {} s before trying again; waiting at most {} s (max_retry_after)",
                asked.as_secs(),
                self.policy.max_retry_after.as_secs()
            );
        }
        tracing::info!(
            operation = op.map(Operation::as_str),
            attempt = self.total,
            delay_ms = delay.as_millis() as u64,
            error = %err,
            "retrying"
        );
        tokio::time::sleep(delay).await;
        if let Some(c) = &self.counter {
            c.add();
        }
        self.streak += 1;
        self.total += 1;
        true
    }
}

async fn run(mut inner: Next, policy: Arc<Backoff>, req: Request) -> Result<Response> {
    let op = req.extensions().get::<Operation>().copied();
    let cap = MaxTries::of(&req).unwrap_or(u32::MAX);
    let (template, first) = Template::new(req);
    let mut tries = Attempts {
        policy: &policy,
        streak: 1,
        total: 1,
        counter: template.parts.extensions.get::<RetryCounter>().cloned(),
        cap,
    };
    if op != Some(Operation::Append) {
        let mut req = first;
        loop {
            match inner.call(req).await {
                Ok(r) => return Ok(r),
                Err(e) if tries.again(op, &e).await => {
                    req = template.request();
                    // A creation that carried bytes (creation-with-upload) is tried
                    // again without them: an upload that can be resumed is worth
                    // more than one round trip, and a connection that cannot carry
                    // the first chunk would fail the creation on every try. The
                    // answer then has no Upload-Offset, which the driver reads as
                    // "none of the bytes were taken" by asking the offset.
                    if op == Some(Operation::Create) && !req.body().is_empty() {
                        req = template.without_body();
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    // An append: [start, end) of the upload.
    let start = protocol::upload_offset(&template.parts.headers)
        .map_err(|_| Error::invalid("an append request without a valid Upload-Offset"))?;
    let end = start + template.body.len();
    // An append that declares a deferred length has landed only once the server knows
    // the length too: for an empty one, the offset alone says nothing.
    let declares_length = template.parts.headers.contains_key(header::UPLOAD_LENGTH);
    // The upload's length as the client knows it: declared here, or told by the client.
    let expected = protocol::upload_length(&template.parts.headers)
        .ok()
        .flatten()
        .or_else(|| template.parts.extensions.get::<UploadLength>().map(|l| l.0));
    // The IETF draft: Structured Field headers, and an offset that may go back.
    let is_ietf = tusflow_core::Protocol::of(&template.parts.extensions).is_ietf();
    let offset_of = |h: &http::HeaderMap| -> tusflow_core::Result<u64> {
        if is_ietf {
            ietf::integer(h, &header::UPLOAD_OFFSET)?
                .ok_or_else(|| Error::protocol("Upload-Offset", "missing"))
        } else {
            protocol::upload_offset(h)
        }
    };
    let length_of = |h: &http::HeaderMap| -> tusflow_core::Result<Option<u64>> {
        if is_ietf {
            ietf::integer(h, &header::UPLOAD_LENGTH)
        } else {
            protocol::upload_length(h)
        }
    };
    let shown = || {
        tusflow_core::Url::parse(&template.parts.uri.to_string())
            .map(|u| protocol::redact_url(&u))
            .unwrap_or_default()
    };
    let mut from = start;
    let mut req = first;
    // True once a try may have reached the server and been applied: only then can a
    // server at the end mean "it landed, only the answer was lost".
    let mut may_have_landed = false;
    loop {
        let err = match inner.call(req).await {
            Ok(r) => return Ok(r),
            Err(e) => e,
        };
        may_have_landed |= !refused(&err);
        if !tries.again(op, &err).await {
            return Err(err);
        }
        // Where is the server now? Ask until it answers, within the same budget.
        let (offset, length_known, head) = loop {
            match inner.call(template.offset_request()).await {
                Ok(resp) => {
                    let theirs = length_of(resp.headers())?;
                    if let (Some(theirs), Some(ours)) = (theirs, expected)
                        && theirs != ours
                    {
                        return Err(Error::protocol(
                            "Upload-Length",
                            format!(
                                "the upload is {theirs} bytes long on the server but {ours} bytes here: it is not this upload (another at the same URL?)"
                            ),
                        )
                        .with_operation(Operation::Offset)
                        .with_url(shown()));
                    }
                    break (offset_of(resp.headers())?, theirs.is_some(), resp);
                }
                Err(e) if tries.again(Some(Operation::Offset), &e).await => {}
                Err(e) => return Err(e),
            }
        };
        let mut head = head;
        if is_ietf {
            head.extensions_mut().insert(ietf::Resynced);
        }
        if offset < start && is_ietf {
            // The driver holds the source: it sends again from there.
            tracing::debug!(offset, start, "the server's offset went back");
            return Ok(head);
        }
        // The draft's min-append-size: the rest of an append that does not end the
        // upload may be too small to send; the driver sends from there instead.
        let rest = end.saturating_sub(offset);
        let ends_upload = expected == Some(end);
        if is_ietf
            && offset < end
            && !ends_upload
            && template
                .parts
                .extensions
                .get::<ietf::Limits>()
                .and_then(|l| l.min_append_size)
                .is_some_and(|min| rest < min)
        {
            tracing::debug!(
                offset,
                rest,
                "the rest is under min-append-size: the driver goes on"
            );
            return Ok(head);
        }
        if offset < start {
            return Err(Error::protocol(
                "Upload-Offset",
                format!("the server's offset went back from {start} to {offset}"),
            ));
        }
        if offset == end && declares_length && !length_known {
            // The bytes are there but not the length: declare it with an empty append.
            tracing::debug!(offset, "re-sending the length");
            from = offset;
            req = template.append_from(start, offset);
            continue;
        }
        if offset >= end && !may_have_landed {
            return Err(Error::protocol(
                "Upload-Offset",
                format!(
                    "the server is at offset {offset}, past this append's end ({end}), though every try of it was refused: these bytes are not what it holds (another upload at the same URL?)"
                ),
            )
            .with_operation(Operation::Append)
            .with_url(shown()));
        }
        if offset >= end {
            // The append went through; only its answer was lost. The server's own
            // answer says so: the `HEAD`'s, with its `Upload-Offset`.
            tracing::debug!(offset, "append was complete after all");
            return Ok(head);
        }
        if offset > from {
            // Progress: a fresh run of tries.
            tries.streak = 1;
        }
        tracing::debug!(
            offset,
            sent_from = from,
            "re-sending from the server's offset"
        );
        from = offset;
        req = template.append_from(start, offset);
    }
}

#[cfg(test)]
mod tests;
