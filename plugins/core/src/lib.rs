//! The small, slow-moving API of [tusflow](https://docs.rs/tusflow) that every plugin
//! depends on.
//!
//! - [`protocol`]: tus header names, the `Upload-Metadata` codec, typed header parsing
//!   and [`Capabilities`]; pure functions, no I/O.
//! - [`Body`]: the body of every request in a stack; cheap to clone, never larger in
//!   memory than a block or two.
//! - [`Operation`]: the tus meaning of a request, carried as a request extension.
//! - [`Error`]: one opaque error type with predicates.
//! - [`TusService`]: the innermost tower service, over one pooled `reqwest::Client`.
//! - [`store`]: [`UrlStore`] and [`Fingerprinter`], to resume across restarts.
//! - [`middleware`]: the [`Middleware`](middleware::Middleware) trait every built-in
//!   layer is written as, and the tower contract it keeps (readiness, errors as
//!   responses).
//! - [`plugin`]: the [`Plugin`] trait, [`Registry`], and the type-erased [`Stack`] and
//!   [`BoxLayer`] that middleware is built as; the request extensions the client sends
//!   to plugins ([`Endpoint`], [`KnownCapabilities`], [`attempts::RetryCounter`]).
//!
//! A stack speaks `http::Request<Body>` in and `http::Response<Bytes>` out, with
//! [`Error`] as its error, so tower and tower-http layers compose with it unchanged.

pub mod attempts;
pub mod body;
pub mod config;
pub mod error;
pub mod middleware;
pub mod operation;
pub mod plugin;
pub mod protocol;
pub mod service;
pub mod store;

pub use body::{Body, FileSource, RandomAccess};
pub use error::{BoxError, Error, Result};
pub use operation::Operation;
pub use plugin::{BoxLayer, Endpoint, KnownCapabilities, Plugin, PluginConfig, Registry, Stack};
pub use protocol::{Capabilities, Metadata};
/// The URL type of requests and records (`reqwest::Url`, that is `url::Url`).
pub use reqwest::Url;
pub use service::{TusService, TusServiceBuilder};
pub use store::{Fingerprinter, MemoryStore, SourceInfo, UploadRecord, UrlStore};

/// The request type of every tusflow stack.
pub type Request = http::Request<Body>;

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

/// A copy of a request, to send again (a [`Body`] is cheap to clone and starts over).
pub fn clone_request(req: &Request) -> Request {
    let (mut parts, ()) = http::Request::new(()).into_parts();
    parts.method = req.method().clone();
    parts.uri = req.uri().clone();
    parts.version = req.version();
    parts.headers = req.headers().clone();
    parts.extensions = req.extensions().clone();
    Request::from_parts(parts, req.body().clone())
}
/// The response type of every tusflow stack: the body is read (and bounded) by
/// [`TusService`].
pub type Response = http::Response<bytes::Bytes>;
