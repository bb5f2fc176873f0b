//! Logging middleware for tusflow, with [tracing](https://docs.rs/tracing).
//!
//! Every request runs in a span `tus.request` with its operation, URL (without query or
//! user info), offset and length; one event at the configured level reports the status
//! (or the error) and the time it took. Optionally an `X-Request-ID` goes with every
//! request, and the request headers are logged with credentials redacted.
//!
//! # Order
//!
//! Outermost (`log -> retry -> ...`) to see one event per operation with its final
//! outcome; inside retry to see every try.
//!
//! ```
//! use tusflow_log::LogLayer;
//! let log = LogLayer::new().level(tracing::Level::INFO).request_id(true);
//! # let _ = log;
//! ```

mod config;

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use http::HeaderValue;
use http::header::HeaderName;
use tower::Layer;
use tracing::{Instrument, Level};
use tusflow_core::middleware::{Layered, Middleware, Next};
use tusflow_core::protocol;
use tusflow_core::service::ResponseFuture;
use tusflow_core::{Operation, Request};

pub use config::{LogConfig, LogPlugin};

/// The request id header.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Builds [`Log`] services.
#[derive(Clone, Debug)]
pub struct LogLayer {
    level: Level,
    request_id: bool,
    headers: bool,
}

impl Default for LogLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl LogLayer {
    /// Events at `DEBUG`, no request id, no headers.
    pub fn new() -> Self {
        LogLayer {
            level: Level::DEBUG,
            request_id: false,
            headers: false,
        }
    }

    /// The level of the per-request events (errors are logged at `WARN` or above).
    pub fn level(mut self, level: Level) -> Self {
        self.level = level;
        self
    }

    /// Send an `X-Request-ID` with every request that has none, and log it.
    pub fn request_id(mut self, on: bool) -> Self {
        self.request_id = on;
        self
    }

    /// Log the request headers, with credentials redacted.
    pub fn headers(mut self, on: bool) -> Self {
        self.headers = on;
        self
    }
}

impl<S> Layer<S> for LogLayer {
    type Service = Log<S>;
    fn layer(&self, inner: S) -> Log<S> {
        Layered::new(self.clone(), inner)
    }
}

/// The log service; see the [crate docs](crate).
pub type Log<S> = Layered<LogLayer, S>;

/// A fresh request id: 16 hex digits, unique per process and random across processes.
pub fn new_request_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    format!("{:016x}", h.finish())
}

/// True for headers whose values must never be logged: marked sensitive, or
/// credentials by name ([`protocol::is_credential_header`]).
pub fn is_secret_header(name: &HeaderName, value: &HeaderValue) -> bool {
    value.is_sensitive() || protocol::is_credential_header(name)
}

/// The headers as `name: value` lines, with secret values replaced by `<redacted>`.
pub fn redacted_headers(headers: &http::HeaderMap) -> String {
    headers
        .iter()
        .map(|(n, v)| {
            if is_secret_header(n, v) {
                format!("{n}: <redacted>")
            } else {
                format!("{n}: {}", v.to_str().unwrap_or("<binary>"))
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

macro_rules! event_at {
    ($level:expr, $($rest:tt)*) => {
        match $level {
            Level::ERROR => tracing::error!($($rest)*),
            Level::WARN => tracing::warn!($($rest)*),
            Level::INFO => tracing::info!($($rest)*),
            Level::DEBUG => tracing::debug!($($rest)*),
            _ => tracing::trace!($($rest)*),
        }
    };
}

impl Middleware for LogLayer {
    fn call(&self, mut next: Next, mut req: Request) -> ResponseFuture {
        let layer = self.clone();
        let op = req
            .extensions()
            .get::<Operation>()
            .map_or("request", |o| o.as_str());
        let url = reqwest::Url::parse(&req.uri().to_string())
            .map(|u| protocol::redact_url(&u))
            .unwrap_or_else(|_| req.uri().path().to_owned());
        let offset = protocol::upload_offset(req.headers()).ok();
        let len = req.body().len();
        let id = if layer.request_id {
            let id = match req
                .headers()
                .get(X_REQUEST_ID)
                .and_then(|v| v.to_str().ok())
            {
                Some(existing) => existing.to_owned(),
                None => {
                    let id = new_request_id();
                    req.headers_mut()
                        .insert(X_REQUEST_ID, HeaderValue::from_str(&id).expect("hex"));
                    id
                }
            };
            Some(id)
        } else {
            None
        };
        let span = tracing::info_span!("tus.request", op, url = %url, offset, len, request_id = id);
        if layer.headers {
            let headers = redacted_headers(req.headers());
            span.in_scope(|| event_at!(layer.level, headers = %headers, "request headers"));
        }
        Box::pin(
            async move {
                let started = tokio::time::Instant::now();
                let result = next.call(req).await;
                let elapsed_ms = started.elapsed().as_millis() as u64;
                match &result {
                    Ok(resp) => {
                        let new_offset = protocol::upload_offset(resp.headers()).ok();
                        let status = resp.status().as_u16();
                        event_at!(layer.level, status, new_offset, elapsed_ms, "answered");
                    }
                    Err(e) => {
                        let status = e.status().map(|s| s.as_u16());
                        // Retries, and 413s (the driver halves the chunk size), go on.
                        let recoverable = e.is_retryable()
                            || e.status() == Some(http::StatusCode::PAYLOAD_TOO_LARGE);
                        if recoverable {
                            tracing::warn!(status, elapsed_ms, error = %e, "failed");
                        } else {
                            tracing::error!(status, elapsed_ms, error = %e, "failed");
                        }
                    }
                }
                result
            }
            .instrument(span),
        )
    }
}

#[cfg(test)]
mod tests;
