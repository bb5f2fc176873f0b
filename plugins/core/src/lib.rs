//! The small, slow-moving API of [tusflow](https://docs.rs/tusflow) that every plugin
//! depends on.
//!
//! - [`protocol`]: tus header names, the `Upload-Metadata` codec, typed header parsing
//!   and [`Capabilities`]; pure functions, no I/O.
//! - [`ietf`]: the IETF draft "Resumable Uploads for HTTP": interop versions, its
//!   Structured Fields, `Upload-Limit` and problem types.
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
//!   to plugins ([`Endpoint`], [`KnownCapabilities`], [`UploadLength`],
//!   [`attempts::RetryCounter`], [`attempts::MaxTries`]).
//!
//! A stack speaks `http::Request<Body>` in and `http::Response<Bytes>` out, with
//! [`Error`] as its error, so tower and tower-http layers compose with it. One thing to
//! know: the core service answers a non-2xx status as an `Err` (with the status), and
//! so does every layer boundary, so a layer sees only successes as responses. Layers
//! that classify responses (tower-http's `FollowRedirect`, `Trace`'s status classifier,
//! a `tower::retry::Policy` that looks at `Ok` responses) see failures as errors, which
//! tusflow's own retry already handles. A tower user holding a tusflow layer over a
//! service with another error type gets tusflow's [`Error`] back (any error that
//! converts into a [`BoxError`] is taken).

pub mod attempts;
pub mod body;
pub mod config;
pub mod error;
pub mod ietf;
pub mod ledger;
pub mod middleware;
pub mod operation;
pub mod plugin;
pub mod protocol;
pub mod service;
pub mod store;

pub use body::{Body, FileSource, RandomAccess};
pub use error::{BoxError, Error, Result};
pub use ietf::Protocol;
pub use operation::Operation;
pub use plugin::{
    BoxLayer, Endpoint, KnownCapabilities, Plugin, PluginConfig, Registry, Stack, UploadLength,
};
pub use protocol::{Capabilities, Metadata};
/// The URL type of requests and records (`reqwest::Url`, that is `url::Url`).
pub use reqwest::Url;
pub use service::{TusService, TusServiceBuilder};
pub use store::{Fingerprinter, MemoryStore, SourceInfo, UploadRecord, UrlStore};

/// The request type of every tusflow stack.
pub type Request = http::Request<Body>;

/// The response type of every tusflow stack: the body is read (and bounded) by
/// [`TusService`].
pub type Response = http::Response<bytes::Bytes>;
