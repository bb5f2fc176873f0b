//! Auth middleware for tusflow: static credential headers, bearer tokens, basic auth,
//! and a [`TokenProvider`] for tokens that expire (one refresh and replay on 401).
//!
//! Credentials go only to the endpoint's origin (scheme, host and port of the request's
//! [`Endpoint`] extension) and to origins explicitly allowed; a `Location` or a redirect
//! to another host gets none. Values are marked sensitive, so `Debug` and logs show
//! them redacted, and they never appear in error messages.
//!
//! # Order
//!
//! Inside retry (`log -> retry -> auth -> ...`), so every try, and the `HEAD` a retry
//! sends to re-sync, carries fresh credentials.
//!
//! ```
//! use tusflow_auth::AuthLayer;
//! let bearer = AuthLayer::bearer("s3cr3t");
//! let basic = AuthLayer::basic("me", "pw").allow_origin("https://cdn.example.com").unwrap();
//! assert!(!format!("{bearer:?}").contains("s3cr3t"));
//! # let _ = basic;
//! ```

mod config;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use base64::Engine as _;
use http::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use reqwest::Url;
use tower::Layer;
use tusflow_core::middleware::{Layered, Middleware, Next};
use tusflow_core::service::ResponseFuture;
use tusflow_core::{Endpoint, Error, Request, Result};

pub use config::{AuthConfig, AuthPlugin, BasicConfig};

/// A boxed future of a token.
pub type TokenFuture<'a> = Pin<Box<dyn Future<Output = Result<Secret>> + Send + 'a>>;

/// Supplies bearer tokens that expire.
pub trait TokenProvider: Send + Sync + 'static {
    /// The current token.
    fn token(&self) -> TokenFuture<'_>;

    /// A new token, after the server answered 401 to the current one. Called at most
    /// once per request. By default, [`TokenProvider::token`] again.
    fn refresh(&self) -> TokenFuture<'_> {
        self.token()
    }
}

/// A credential: shown as `<redacted>` by `Debug` and `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wrap a credential.
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// The credential itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Clone)]
enum Credentials {
    Headers(HeaderMap),
    Provider(Arc<dyn TokenProvider>),
}

/// Builds [`Auth`] services.
#[derive(Clone)]
pub struct AuthLayer {
    credentials: Credentials,
    allowed: Arc<Vec<String>>,
}

impl fmt::Debug for AuthLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.credentials {
            Credentials::Headers(h) => format!("headers {:?}", h.keys().collect::<Vec<_>>()),
            Credentials::Provider(_) => "token provider".to_owned(),
        };
        f.debug_struct("AuthLayer")
            .field("credentials", &kind)
            .field("allowed_origins", &self.allowed)
            .finish()
    }
}

fn sensitive(v: &str) -> Result<HeaderValue> {
    let mut v = HeaderValue::from_str(v)
        .map_err(|_| Error::config("a credential is not a valid header value"))?;
    v.set_sensitive(true);
    Ok(v)
}

fn bearer_value(token: &str) -> Result<HeaderValue> {
    sensitive(&format!("Bearer {token}"))
}

impl AuthLayer {
    fn from_headers(h: HeaderMap) -> Self {
        AuthLayer {
            credentials: Credentials::Headers(h),
            allowed: Arc::new(Vec::new()),
        }
    }

    /// `Authorization: Bearer <token>`. Panics if the token is not a valid header value;
    /// see [`AuthLayer::try_bearer`].
    pub fn bearer(token: &str) -> Self {
        Self::try_bearer(token).expect("a bearer token must be a valid header value")
    }

    /// `Authorization: Bearer <token>`, or an error if it is not a valid header value.
    pub fn try_bearer(token: &str) -> Result<Self> {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, bearer_value(token)?);
        Ok(Self::from_headers(h))
    }

    /// `Authorization: Basic base64(user:password)`.
    pub fn basic(user: &str, password: &str) -> Self {
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let mut h = HeaderMap::new();
        h.insert(
            AUTHORIZATION,
            sensitive(&format!("Basic {encoded}")).expect("base64 is ASCII"),
        );
        Self::from_headers(h)
    }

    /// Any credential headers (an API key header, a cookie, ...).
    pub fn headers(headers: HeaderMap) -> Self {
        let mut h = HeaderMap::new();
        for (name, mut value) in headers.iter().map(|(n, v)| (n.clone(), v.clone())) {
            value.set_sensitive(true);
            h.append(name, value);
        }
        Self::from_headers(h)
    }

    /// Bearer tokens from `provider`, refreshed once and replayed on 401.
    pub fn provider(provider: impl TokenProvider) -> Self {
        AuthLayer {
            credentials: Credentials::Provider(Arc::new(provider)),
            allowed: Arc::new(Vec::new()),
        }
    }

    /// Also send credentials to this origin (e.g. a CDN that upload URLs point to).
    pub fn allow_origin(mut self, url: &str) -> Result<Self> {
        let u = Url::parse(url)
            .map_err(|e| Error::config(format!("invalid allowed origin {url:?}: {e}")))?;
        Arc::make_mut(&mut self.allowed).push(u.origin().ascii_serialization());
        Ok(self)
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;
    fn layer(&self, inner: S) -> Auth<S> {
        Layered::new(self.clone(), inner)
    }
}

/// The auth service; see the [crate docs](crate).
pub type Auth<S> = Layered<AuthLayer, S>;

/// True when credentials may go with `req`: its origin is the endpoint's or allowed.
fn in_scope(req: &Request, allowed: &[String]) -> bool {
    let Ok(url) = Url::parse(&req.uri().to_string()) else {
        return false;
    };
    let origin = url.origin().ascii_serialization();
    if allowed.contains(&origin) {
        return true;
    }
    match req.extensions().get::<Endpoint>() {
        Some(Endpoint(ep)) => ep.origin().ascii_serialization() == origin,
        // No endpoint to scope by: only explicitly allowed origins.
        None => false,
    }
}

impl Middleware for AuthLayer {
    fn call(&self, mut next: Next, mut req: Request) -> ResponseFuture {
        if !in_scope(&req, &self.allowed) {
            tracing::debug!(uri = %req.uri().path(), "request outside the endpoint's origin: no credentials");
            return Box::pin(async move { next.call(req).await });
        }
        match &self.credentials {
            Credentials::Headers(h) => {
                // Every value of a name (`append` may have given several) replaces
                // what the request had under it.
                for name in h.keys() {
                    req.headers_mut().remove(name);
                }
                for (name, value) in h {
                    req.headers_mut().append(name.clone(), value.clone());
                }
                Box::pin(async move { next.call(req).await })
            }
            Credentials::Provider(p) => {
                let p = Arc::clone(p);
                Box::pin(async move {
                    // A token may take a while (or a request of its own through the
                    // same stack): hold no capacity of the stack below meanwhile.
                    next.release();
                    let token = p.token().await?;
                    let replay = tusflow_core::middleware::clone_request(&req);
                    req.headers_mut()
                        .insert(AUTHORIZATION, bearer_value(token.expose())?);
                    match next.call(req).await {
                        Err(e) if e.status() == Some(http::StatusCode::UNAUTHORIZED) => {
                            tracing::info!("401: refreshing the token and replaying once");
                            let token = p.refresh().await?;
                            let mut req = replay;
                            req.headers_mut()
                                .insert(AUTHORIZATION, bearer_value(token.expose())?);
                            next.call(req).await
                        }
                        other => other,
                    }
                })
            }
        }
    }
}

#[cfg(test)]
mod tests;
