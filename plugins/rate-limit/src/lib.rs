//! Rate-limit middleware for tusflow: a cap on body bytes per second shared by every
//! upload of a client (a token bucket with a burst), and an optional cap on requests
//! per second.
//!
//! The bucket lives in the layer, so all services it builds (all clones of a client's
//! stack, all concurrent uploads) share it. Bytes are metered as the transport takes
//! them, in pieces of at most 64 KiB, so pacing is smooth and a slow but moving upload
//! never trips the stall timeout.
//!
//! # Order
//!
//! Inside retry (`log -> retry -> auth -> rate-limit -> checksum`), so re-sent bytes are
//! paced too.
//!
//! ```
//! use tusflow_rate_limit::RateLimitLayer;
//! let cap = RateLimitLayer::bytes_per_second(16_000_000).burst(1 << 20);
//! # let _ = cap;
//! ```

mod config;

use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::Frame;
use tokio::time::{Instant, Sleep};
use tower::Layer;
use tusflow_core::body::{BodyWrap, BoxBody};
use tusflow_core::middleware::{Layered, Middleware, Next};
use tusflow_core::service::ResponseFuture;
use tusflow_core::{Error, Request, Result};

pub use config::{RateLimitConfig, RateLimitPlugin};

/// The largest piece metered at once.
const PIECE: usize = 64 * 1024;

/// A token bucket: `rate` tokens per second, at most `capacity` saved up. Taking more
/// than there is goes into debt, paid back by waiting.
#[derive(Debug)]
pub struct Bucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    /// A full bucket.
    pub fn new(rate: f64, capacity: f64) -> Self {
        Bucket {
            rate,
            capacity,
            tokens: capacity,
            last: Instant::now(),
        }
    }

    /// Take `n` tokens; return how long to wait before using them.
    pub fn take(&mut self, n: f64) -> Duration {
        let now = Instant::now();
        let dt = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.capacity) - n;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            // A rate so small that the wait does not fit a Duration waits "forever".
            Duration::try_from_secs_f64(-self.tokens / self.rate).unwrap_or(Duration::MAX)
        }
    }
}

/// Builds [`RateLimit`] services; every service it builds shares its buckets.
#[derive(Clone)]
pub struct RateLimitLayer {
    bytes: Option<Arc<Mutex<Bucket>>>,
    requests: Option<Arc<Mutex<Bucket>>>,
    rate: u64,
}

impl fmt::Debug for RateLimitLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("bytes_per_second", &self.rate)
            .field("requests", &self.requests.is_some())
            .finish()
    }
}

impl RateLimitLayer {
    /// At most `rate` body bytes per second (0: no cap), with a burst of
    /// `max(rate / 10, 64 KiB)` until [`RateLimitLayer::burst`] says otherwise.
    pub fn bytes_per_second(rate: u64) -> Self {
        let burst = (rate / 10).max(PIECE as u64);
        RateLimitLayer {
            bytes: (rate > 0).then(|| Arc::new(Mutex::new(Bucket::new(rate as f64, burst as f64)))),
            requests: None,
            rate,
        }
    }

    /// No byte cap (use with [`RateLimitLayer::requests_per_second`]).
    pub fn unlimited() -> Self {
        Self::bytes_per_second(0)
    }

    /// How many bytes may go at once before the rate applies (at least 64 KiB).
    pub fn burst(mut self, bytes: u64) -> Self {
        if self.rate > 0 {
            let b = bytes.max(PIECE as u64) as f64;
            self.bytes = Some(Arc::new(Mutex::new(Bucket::new(self.rate as f64, b))));
        }
        self
    }

    /// At most `n` requests per second (0: no cap), with a burst of one second's worth.
    pub fn requests_per_second(mut self, n: f64) -> Self {
        self.requests = (n > 0.0).then(|| Arc::new(Mutex::new(Bucket::new(n, n.max(1.0)))));
        self
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;
    fn layer(&self, inner: S) -> RateLimit<S> {
        Layered::new(self.clone(), inner)
    }
}

/// The rate-limit service; see the [crate docs](crate).
pub type RateLimit<S> = Layered<RateLimitLayer, S>;

/// Paces a body through a shared bucket.
struct Throttle(Arc<Mutex<Bucket>>);

impl BodyWrap for Throttle {
    fn wrap(&self, inner: BoxBody) -> BoxBody {
        Box::pin(Throttled {
            inner,
            bucket: Arc::clone(&self.0),
            rest: Bytes::new(),
            ready: None,
            sleep: None,
        })
    }
}

struct Throttled {
    inner: BoxBody,
    bucket: Arc<Mutex<Bucket>>,
    /// Bytes of the inner frame not handed out yet.
    rest: Bytes,
    /// A piece that may go once the sleep is over.
    ready: Option<Bytes>,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl http_body::Body for Throttled {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>>>> {
        let this = &mut *self;
        loop {
            if let Some(sleep) = &mut this.sleep {
                ready!(sleep.as_mut().poll(cx));
                this.sleep = None;
                let piece = this.ready.take().expect("a piece waits for the sleep");
                return Poll::Ready(Some(Ok(Frame::data(piece))));
            }
            if !this.rest.is_empty() {
                let piece = this.rest.split_to(this.rest.len().min(PIECE));
                let wait = this
                    .bucket
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take(piece.len() as f64);
                if wait.is_zero() {
                    return Poll::Ready(Some(Ok(Frame::data(piece))));
                }
                this.ready = Some(piece);
                this.sleep = Some(Box::pin(tokio::time::sleep(wait)));
                continue;
            }
            match ready!(this.inner.as_mut().poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => this.rest = data,
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                other => return Poll::Ready(other),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty() && self.ready.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        let mut h = self.inner.size_hint();
        let extra = (self.rest.len() + self.ready.as_ref().map_or(0, Bytes::len)) as u64;
        h.set_lower(h.lower() + extra);
        if let Some(u) = h.upper() {
            h.set_upper(u + extra);
        }
        h
    }
}

impl Middleware for RateLimitLayer {
    fn call(&self, mut next: Next, req: Request) -> ResponseFuture {
        let req = match &self.bytes {
            Some(bucket) if !req.body().is_empty() => {
                let (parts, body) = req.into_parts();
                Request::from_parts(parts, body.wrap(Arc::new(Throttle(Arc::clone(bucket)))))
            }
            _ => req,
        };
        let wait = self
            .requests
            .as_ref()
            .map(|b| b.lock().unwrap_or_else(|p| p.into_inner()).take(1.0));
        Box::pin(async move {
            if let Some(w) = wait.filter(|w| !w.is_zero()) {
                // Hold no capacity of the stack below while waiting for the rate.
                next.release();
                tokio::time::sleep(w).await;
            }
            next.call(req).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    use tusflow_core::{Body, Operation, Stack};

    #[test]
    fn a_tiny_rate_waits_long_and_does_not_panic() {
        let mut b = Bucket::new(1e-300, 1.0);
        assert_eq!(b.take(1e10), Duration::MAX);
        let mut b = Bucket::new(f64::MIN_POSITIVE, 0.0);
        assert!(b.take(1.0) > Duration::from_secs(1 << 40));
    }

    fn sink() -> Stack {
        Stack::new(tower::service_fn(|req: Request| async move {
            let n = req.into_body().collect().await?.to_bytes().len();
            Ok(http::Response::builder()
                .header("x-len", n)
                .body(Bytes::new())
                .unwrap())
        }))
    }

    fn append(len: usize) -> Request {
        http::Request::patch("http://h/files/1")
            .extension(Operation::Append)
            .body(Body::from(vec![1u8; len]))
            .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_are_paced_at_the_rate_after_the_burst() {
        let layer = RateLimitLayer::bytes_per_second(1_000_000).burst(100_000);
        let start = Instant::now();
        let resp = layer
            .layer(sink())
            .oneshot(append(1_100_000))
            .await
            .unwrap();
        assert_eq!(resp.headers()["x-len"], "1100000");
        // 100 kB of burst, then 1 MB at 1 MB/s: one second of (paused, virtual) time.
        let t = start.elapsed();
        assert!(
            t >= Duration::from_millis(990) && t <= Duration::from_millis(1100),
            "{t:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_bucket_is_shared_by_every_clone() {
        let layer = RateLimitLayer::bytes_per_second(1_000_000).burst(65_536);
        let a = layer.layer(sink());
        let b = a.clone();
        let start = Instant::now();
        let (x, y) = tokio::join!(a.oneshot(append(500_000)), b.oneshot(append(500_000)));
        x.unwrap();
        y.unwrap();
        let t = start.elapsed();
        assert!(
            t >= Duration::from_millis(900),
            "two uploads shared 1 MB/s: {t:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn requests_per_second() {
        let layer = RateLimitLayer::unlimited().requests_per_second(2.0);
        let svc = layer.layer(sink());
        let start = Instant::now();
        for _ in 0..6 {
            svc.clone().oneshot(append(0)).await.unwrap();
        }
        // 2 at once (the burst), then 4 more at 2 per second.
        let t = start.elapsed();
        assert!(
            t >= Duration::from_millis(1900) && t <= Duration::from_millis(2100),
            "{t:?}"
        );
    }
}
