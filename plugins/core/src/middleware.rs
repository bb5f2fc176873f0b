//! Writing a middleware: implement [`Middleware`] (one async step from a request to a
//! response, sending through [`Next`]) and the layer is a tower layer that honours the
//! tower contract in any stack.
//!
//! # The contract
//!
//! - **Readiness**: the service that `poll_ready` made ready is the one `call` uses.
//!   [`Layered`] forwards `poll_ready` to its inner service, and `call` takes that ready
//!   service (leaving a fresh clone in its place, the pattern of tower's own
//!   middleware), so a layer over `tower::limit::ConcurrencyLimit` or
//!   `tower::buffer::Buffer` never waits for capacity that it holds itself.
//! - **Errors as responses**: [`Next`] turns a non-2xx response of the inner service
//!   (tower-http's `TimeoutLayer` answers 408) into an [`Error`] with
//!   [`error_for_status`], and any error type that converts into a [`BoxError`] into an
//!   [`Error`]; so a middleware sees one kind of failure, whatever is inside it.
//!
//! ```
//! use tusflow_core::middleware::{Layered, Middleware, Next};
//! use tusflow_core::{Request, service::ResponseFuture};
//!
//! /// Stamps every request with `x-tag: 1`.
//! #[derive(Clone, Debug)]
//! struct TagLayer;
//!
//! impl Middleware for TagLayer {
//!     fn call(&self, mut next: Next, mut req: Request) -> ResponseFuture {
//!         req.headers_mut().insert("x-tag", http::HeaderValue::from_static("1"));
//!         Box::pin(async move { next.call(req).await })
//!     }
//! }
//!
//! impl<S> tower::Layer<S> for TagLayer {
//!     type Service = Layered<TagLayer, S>;
//!     fn layer(&self, inner: S) -> Self::Service {
//!         Layered::new(self.clone(), inner)
//!     }
//! }
//! ```
//!
//! [`error_for_status`]: crate::service::error_for_status

use std::fmt;
use std::task::{Context, Poll};

use tower::util::BoxCloneService;
use tower::{Service, ServiceExt};

use crate::service::{ResponseFuture, error_for_status};
use crate::{BoxError, Error, Request, Response, Result};

/// One step of a stack: handle `req`, sending what it needs through `next`.
///
/// `next` is the inner service, already made ready by the `poll_ready` that preceded
/// this call; [`Next::call`] may be used any number of times (a retry, a replay after a
/// refreshed token, a discovery before an append), each waiting for readiness anew.
pub trait Middleware: Clone + Send + Sync + 'static {
    /// Handle one request.
    fn call(&self, next: Next, req: Request) -> ResponseFuture;
}

/// The inner service as a [`Middleware`] sees it: it speaks [`Request`] to
/// [`Response`] with [`Error`], non-2xx responses being errors.
///
/// It starts out holding the service that `poll_ready` made ready (and so whatever
/// capacity that reserved: a `ConcurrencyLimit` permit, a `Buffer` slot). A middleware
/// that waits before its first call (a rate limit, a token refresh, hashing) calls
/// [`Next::release`] first, so that it holds no capacity while it waits.
pub struct Next {
    svc: BoxCloneService<Request, Response, Error>,
}

impl fmt::Debug for Next {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Next").finish_non_exhaustive()
    }
}

impl Next {
    /// Wrap `svc` (ready or not; [`Next::call`] waits for readiness).
    pub(crate) fn new<S>(svc: S) -> Self
    where
        S: Service<Request, Response = Response> + Clone + Send + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
    {
        Next {
            svc: BoxCloneService::new(Boundary(svc)),
        }
    }

    /// Send `req` through the inner service once it is ready.
    pub async fn call(&mut self, req: Request) -> Result<Response> {
        self.svc.ready().await?.call(req).await
    }

    /// Give back the capacity the ready service holds (a fresh clone takes its
    /// place); the next [`Next::call`] waits for readiness anew.
    pub fn release(&mut self) {
        self.svc = self.svc.clone();
    }
}

/// A [`Middleware`] over an inner service: the `Service` of every tusflow layer.
#[derive(Clone)]
pub struct Layered<M, S> {
    middleware: M,
    inner: S,
}

impl<M: fmt::Debug, S> fmt::Debug for Layered<M, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Layered")
            .field("middleware", &self.middleware)
            .finish_non_exhaustive()
    }
}

impl<M, S> Layered<M, S> {
    /// `middleware` around `inner`.
    pub fn new(middleware: M, inner: S) -> Self {
        Layered { middleware, inner }
    }

    /// The middleware.
    pub fn middleware(&self) -> &M {
        &self.middleware
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<M, S> Service<Request> for Layered<M, S>
where
    M: Middleware,
    S: Service<Request, Response = Response> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Error;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.inner.poll_ready(cx).map_err(into_error)
    }

    fn call(&mut self, req: Request) -> ResponseFuture {
        // The ready service goes with this call; a clone, not yet ready, stays.
        let fresh = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, fresh);
        self.middleware.call(Next::new(ready), req)
    }
}

/// A tusflow error from any error that converts into a [`BoxError`] (a tusflow error
/// comes back as itself).
pub(crate) fn into_error(e: impl Into<BoxError>) -> Error {
    Error::from(e.into())
}

/// The boundary between a layer and the one outside it: errors become [`Error`]s and
/// non-2xx responses errors too ([`error_for_status`]), named with the request's
/// operation and URL.
#[derive(Clone, Debug)]
pub(crate) struct Boundary<S>(pub(crate) S);

impl<S> Service<Request> for Boundary<S>
where
    S: Service<Request, Response = Response>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Error;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.0.poll_ready(cx).map_err(into_error)
    }

    fn call(&mut self, req: Request) -> ResponseFuture {
        let op = req.extensions().get::<crate::Operation>().copied();
        let uri = req.uri().clone();
        let fut = self.0.call(req);
        Box::pin(async move {
            fut.await
                .map_err(into_error)
                .and_then(error_for_status)
                .map_err(|e| {
                    // An error made here, not by the core service: say what it was about.
                    if e.operation().is_some() {
                        return e;
                    }
                    let url = reqwest::Url::parse(&uri.to_string())
                        .map(|u| crate::protocol::redact_url(&u))
                        .unwrap_or_else(|_| uri.path().to_owned());
                    match op {
                        Some(op) => e.with_operation(op).with_url(url),
                        None => e.with_url(url),
                    }
                })
        })
    }
}

/// Wraps services in a [`Boundary`].
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct BoundaryLayer;

impl<S> tower::Layer<S> for BoundaryLayer {
    type Service = Boundary<S>;
    fn layer(&self, inner: S) -> Boundary<S> {
        Boundary(inner)
    }
}

/// A copy of the head of a request: method, URI, version, headers and extensions.
pub fn clone_parts(p: &http::request::Parts) -> http::request::Parts {
    let (mut parts, ()) = http::Request::new(()).into_parts();
    parts.method = p.method.clone();
    parts.uri = p.uri.clone();
    parts.version = p.version;
    parts.headers = p.headers.clone();
    parts.extensions = p.extensions.clone();
    parts
}

/// A copy of a request, to send again (a [`Body`](crate::Body) is cheap to clone and starts over).
pub fn clone_request(req: &Request) -> Request {
    let (mut parts, ()) = http::Request::new(()).into_parts();
    parts.method = req.method().clone();
    parts.uri = req.uri().clone();
    parts.version = req.version();
    parts.headers = req.headers().clone();
    parts.extensions = req.extensions().clone();
    Request::from_parts(parts, req.body().clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Body;
    use bytes::Bytes;
    use std::time::Duration;

    #[derive(Clone, Debug)]
    struct Twice;

    /// Sends every request twice through `next`, answering the second.
    impl Middleware for Twice {
        fn call(&self, mut next: Next, req: Request) -> ResponseFuture {
            Box::pin(async move {
                next.call(clone_request(&req)).await?;
                next.call(req).await
            })
        }
    }

    fn ok() -> impl Service<Request, Response = Response, Error = Error, Future: Send> + Clone + Send
    {
        tower::service_fn(|_req: Request| async {
            Ok::<_, Error>(http::Response::new(Bytes::new()))
        })
    }

    fn req() -> Request {
        http::Request::new(Body::empty())
    }

    #[tokio::test]
    async fn the_ready_service_is_the_one_called_over_a_concurrency_limit() {
        let inner = tower::limit::ConcurrencyLimit::new(ok(), 1);
        let mut svc = Layered::new(Twice, inner);
        let run = async {
            for _ in 0..3 {
                svc.ready().await.unwrap().call(req()).await.unwrap();
            }
        };
        tokio::time::timeout(Duration::from_secs(10), run)
            .await
            .expect("no hang");
    }

    #[tokio::test]
    async fn a_non_2xx_response_inside_is_an_error() {
        let inner = tower::service_fn(|_req: Request| async {
            let mut r = http::Response::new(Bytes::from_static(b"slow"));
            *r.status_mut() = http::StatusCode::REQUEST_TIMEOUT;
            Ok::<_, std::convert::Infallible>(r)
        });
        let e = Layered::new(Twice, inner).oneshot(req()).await.unwrap_err();
        assert_eq!(e.status(), Some(http::StatusCode::REQUEST_TIMEOUT));
        assert!(e.is_retryable());
    }
}
