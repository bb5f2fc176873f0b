//! Counting retries per upload: the driver puts a [`RetryCounter`] in the extensions of
//! every request of an upload, and the retry middleware adds to it
//! ([`RetryCounter::add`]). Being a request extension, it travels with the request
//! through any layer, `tower::buffer::Buffer`'s worker task included.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::Request;

/// The retries of one upload, shared by its requests (a request extension).
#[derive(Clone, Debug, Default)]
pub struct RetryCounter(Arc<AtomicU32>);

impl RetryCounter {
    /// A counter at 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// Note one retry.
    pub fn add(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Note one retry of `req`, if its upload is counted.
    pub fn record(req: &Request) {
        if let Some(c) = req.extensions().get::<RetryCounter>() {
            c.add();
        }
    }

    /// The retries so far.
    pub fn get(&self) -> u32 {
        self.0.load(Ordering::Relaxed)
    }

    /// The counter of the upload driven in this task, if [`count`] runs it.
    pub fn current() -> Option<RetryCounter> {
        CURRENT.try_with(RetryCounter::clone).ok()
    }
}

/// At most this many tries of one request (a request extension), for retry middleware
/// to honour below its own bound. The client puts one on its requests while its
/// endpoint has not answered yet, so an endpoint that is down (a closed port, a server
/// that accepts and never answers) is found out in a few tries, not a full budget per
/// upload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaxTries(pub u32);

impl MaxTries {
    /// The cap on the tries of `req`, if it has one (at least 1).
    pub fn of(req: &Request) -> Option<u32> {
        req.extensions().get::<MaxTries>().map(|m| m.0.max(1))
    }
}

tokio::task_local! {
    static CURRENT: RetryCounter;
}

/// Run `fut` (an upload's driver) with a fresh [`RetryCounter`] that the client puts
/// in every request the driver makes, and return its output with the count.
pub async fn count<F: Future>(fut: F) -> (F::Output, u32) {
    let counter = RetryCounter::new();
    let out = CURRENT.scope(counter.clone(), fut).await;
    (out, counter.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counts_the_requests_that_carry_it() {
        let ((), n) = count(async {
            let c = RetryCounter::current().expect("in scope");
            let req = http::Request::builder()
                .extension(c)
                .body(crate::Body::empty())
                .unwrap();
            // Recorded in another task, as a Buffer's worker would.
            tokio::spawn(async move {
                RetryCounter::record(&req);
                RetryCounter::record(&req);
            })
            .await
            .unwrap();
        })
        .await;
        assert_eq!(n, 2);
        assert!(RetryCounter::current().is_none());
        RetryCounter::record(&http::Request::new(crate::Body::empty()));
    }
}
