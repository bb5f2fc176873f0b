//! [`ClientBuilder`]: the endpoint, headers, transport options, layers and store of a
//! [`Client`].

use super::*;

/// Builds a [`Client`]. Infallible until [`ClientBuilder::build`], which reports the
/// first problem (a bad endpoint, header or certificate).
pub struct ClientBuilder {
    endpoint: Option<String>,
    headers: HeaderMap,
    service: TusServiceBuilder,
    transport: Option<Stack>,
    layers: Vec<crate::core::BoxLayer>,
    resume: Resume,
    creation_with_upload: bool,
    complete_in_creation: bool,
    protocol: crate::core::Protocol,
    trusted: Vec<reqwest::Url>,
    unreachable_hold: std::time::Duration,
    error: Option<Error>,
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field(
                "endpoint",
                &self
                    .endpoint
                    .as_ref()
                    .map(|e| e.split('?').next().unwrap_or("")),
            )
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("service", &self.service)
            .field("layers", &self.layers.len())
            .finish_non_exhaustive()
    }
}

impl ClientBuilder {
    pub(super) fn new() -> Self {
        ClientBuilder {
            endpoint: None,
            headers: HeaderMap::new(),
            service: TusService::builder(),
            transport: None,
            layers: Vec::new(),
            resume: Resume::default(),
            creation_with_upload: true,
            complete_in_creation: false,
            protocol: crate::core::Protocol::Tus,
            trusted: Vec::new(),
            unreachable_hold: crate::endpoint::UNREACHABLE_HOLD,
            error: None,
        }
    }

    fn fail(&mut self, e: Error) {
        self.error.get_or_insert(e);
    }

    /// The creation endpoint, e.g. `http://127.0.0.1:1080/files/`.
    pub fn endpoint(mut self, url: impl Into<String>) -> Self {
        self.endpoint = Some(url.into());
        self
    }

    /// A header sent with every request (tuspy's `headers`). Credentials are marked
    /// sensitive (see [`is_sensitive_header`]).
    pub fn header<K, V>(mut self, name: K, value: V) -> Self
    where
        K: TryInto<HeaderName>,
        V: TryInto<HeaderValue>,
    {
        match (name.try_into(), value.try_into()) {
            (Ok(n), _) if is_reserved_header(&n) => self.fail(reserved_error(&n)),
            (Ok(n), Ok(v)) => {
                let v = mark(&n, v);
                self.headers.insert(n, v);
            }
            (Err(_), _) => self.fail(Error::invalid("invalid header name")),
            (Ok(n), Err(_)) => self.fail(Error::invalid(format!("invalid value for header {n}"))),
        }
        self
    }

    /// Headers sent with every request, added to those set before.
    pub fn headers(mut self, headers: HeaderMap) -> Self {
        for (n, v) in headers {
            if let Some(n) = n {
                if is_reserved_header(&n) {
                    self.fail(reserved_error(&n));
                    continue;
                }
                let v = mark(&n, v);
                self.headers.insert(n, v);
            }
        }
        self
    }

    /// How long connecting may take (default 10 s).
    pub fn connect_timeout(mut self, t: Duration) -> Self {
        self.service = self.service.connect_timeout(t);
        self
    }

    /// How long a request may go without moving a byte (default 30 s).
    pub fn stall_timeout(mut self, t: Duration) -> Self {
        self.service = self.service.stall_timeout(t);
        self
    }

    /// Trust the CA certificates of this PEM bundle too.
    pub fn add_root_certificate_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.service = self.service.add_root_certificate_pem(pem);
        self
    }

    /// Present a client certificate: one PEM with the chain and the private key.
    pub fn identity_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.service = self.service.identity_pem(pem);
        self
    }

    /// Accept any server certificate. Dangerous: for test servers only.
    pub fn danger_accept_invalid_certs(mut self, accept: bool) -> Self {
        if accept {
            tracing::warn!("TLS certificate verification is OFF");
        }
        self.service = self.service.danger_accept_invalid_certs(accept);
        self
    }

    /// Send `PATCH` and `DELETE` as `POST` with `X-HTTP-Method-Override`.
    pub fn method_override(mut self, on: bool) -> Self {
        self.service = self.service.method_override(on);
        self
    }

    /// Replace the innermost service (normally a [`TusService`] built from this
    /// builder's options) with another: a `TusService` of your own, or a test double.
    pub fn transport<S>(mut self, service: S) -> Self
    where
        S: Service<crate::Request, Response = crate::Response, Error = Error>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.transport = Some(BoxCloneSyncService::new(service));
        self
    }

    /// Wrap the stack in a tower layer. Layers added first are outermost, as with
    /// `tower::ServiceBuilder`: `.layer(a).layer(b)` sends requests through `a`, then
    /// `b`, then the [`TusService`].
    ///
    /// Any layer over `http::Request<Body>` works, including tower-http's; an error
    /// type other than [`Error`] is wrapped into one, and a non-2xx response from the
    /// layer becomes an [`Error`] (so tower-http's timeout answer, a 408, is a
    /// retryable error for the layers around it).
    pub fn layer<L>(mut self, layer: L) -> Self
    where
        L: Layer<Stack> + Send + Sync + 'static,
        L::Service:
            Service<crate::Request, Response = crate::Response> + Clone + Send + Sync + 'static,
        <L::Service as Service<crate::Request>>::Error: Into<BoxError>,
        <L::Service as Service<crate::Request>>::Future: Send + 'static,
    {
        self.layers.push(crate::core::BoxLayer::new("layer", layer));
        self
    }

    /// Wrap the stack in these layers, outermost first (what
    /// [`Registry::build`](crate::plugins::Registry::build) returns).
    pub fn layers(mut self, layers: impl IntoIterator<Item = crate::core::BoxLayer>) -> Self {
        self.layers.extend(layers);
        self
    }

    /// Remember uploads in `store` under the fingerprint of their source, so that an
    /// upload of the same source (in this run or a later one) continues the stored
    /// upload instead of starting over (tuspy's `store_url` + `url_storage`). Without a
    /// fingerprinter set, files get xxh3 fingerprints in fast mode when the
    /// `fingerprint-xxh3` feature is on.
    pub fn store(mut self, store: Arc<dyn UrlStore>) -> Self {
        self.resume.store = Some(store);
        self
    }

    /// How sources are recognised (tuspy's `fingerprinter`).
    pub fn fingerprinter(mut self, f: Arc<dyn Fingerprinter>) -> Self {
        self.resume.fingerprinter = Some(f);
        self
    }

    /// The protocol: tus 1.0 (the default), or the IETF draft "Resumable Uploads for
    /// HTTP" at an interop version (`Protocol::Ietf(Interop::V8)`): the endpoint is
    /// then the target resource that upload resources are created from.
    pub fn protocol(mut self, protocol: crate::core::Protocol) -> Self {
        self.protocol = protocol;
        self
    }

    /// Send the first bytes of an upload in its creation `POST` when the server
    /// advertises `creation-with-upload` (default: on). That saves a round trip per
    /// upload, which is most of the cost of small files.
    pub fn creation_with_upload(mut self, on: bool) -> Self {
        self.creation_with_upload = on;
        self
    }

    /// Let a creation complete an upload (default: off): a small file goes in one
    /// request, its creation `POST` carrying every byte, and an empty file is created
    /// with its length.
    ///
    /// Off, a file that would fit in its creation goes in one `PATCH` to the URL the
    /// creation answered (and an empty file is created with a deferred length, when
    /// the server allows), so only a request to a known URL completes an upload. That is what keeps an
    /// upload from being stored twice: when a creation's answer is lost (a cut
    /// connection, a server that dies before answering, a process killed before it
    /// records the URL), tus gives the client no way to learn the URL, so it creates
    /// another. The one it never heard of is then unfinished, and expires, instead of
    /// being a second complete copy that the server's "upload finished" hooks would
    /// process. On, batches of 64 KiB files go about 1.2x faster (1.33x with a
    /// store) on @tus/server.
    pub fn complete_in_creation(mut self, on: bool) -> Self {
        self.complete_in_creation = on;
        self
    }

    /// How long an endpoint that never answered stays unreachable: requests in this
    /// time fail at once with the error that found it so (default
    /// [`UNREACHABLE_HOLD`](crate::client::UNREACHABLE_HOLD), 30 s; a batch stops
    /// starting files then). Zero: every request tries on its own (a service that
    /// starts before its tus server may want that). Either way, requests before the
    /// endpoint first answers get at most
    /// [`FIRST_CONTACT_TRIES`](crate::client::FIRST_CONTACT_TRIES) tries.
    pub fn unreachable_hold(mut self, hold: std::time::Duration) -> Self {
        self.unreachable_hold = hold;
        self
    }

    /// Also send credential headers ([`is_sensitive_header`]: `Authorization`, cookies,
    /// API keys) to `origin` (e.g. `https://uploads.example.com`). By default they go
    /// only to the endpoint's origin: a server's `Location` (or a partial upload's URL)
    /// on another origin gets the other headers but not these.
    pub fn trust_origin(mut self, origin: &str) -> Self {
        match parse_http_url("trusted origin", origin) {
            Ok(u) => self.trusted.push(u),
            Err(e) => self.fail(e),
        }
        self
    }

    /// Keep a completed upload's record in the store (default: removed on success, as
    /// tus-js-client's `removeFingerprintOnSuccess`).
    pub fn keep_records_on_success(mut self, keep: bool) -> Self {
        self.resume.keep_on_success = keep;
        self
    }

    /// Build the client.
    pub fn build(self) -> Result<Client> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let mut endpoint = self
            .endpoint
            .map(|e| parse_http_url("endpoint", &e))
            .transpose()?;
        let mut headers = self.headers;
        // User info in the endpoint is Basic credentials, as curl reads it (an
        // Authorization header given wins); it never stays in the URL, which is shown
        // in logs and kept in the store.
        if let Some((user, password)) = endpoint.as_mut().and_then(take_userinfo) {
            if headers.contains_key(http::header::AUTHORIZATION) {
                tracing::debug!(
                    "the endpoint's user info is not used: an Authorization header is set"
                );
            } else {
                let encoded =
                    crate::core::protocol::base64_encode(format!("{user}:{password}").as_bytes());
                let mut v = HeaderValue::try_from(format!("Basic {encoded}")).map_err(|_| {
                    Error::invalid("the endpoint's user info is not a valid credential")
                })?;
                v.set_sensitive(true);
                headers.insert(http::header::AUTHORIZATION, v);
            }
        }
        let stack = match self.transport {
            Some(t) => t,
            None => BoxCloneSyncService::new(self.service.build()?),
        };
        let stack = crate::core::plugin::apply(&self.layers, stack);
        let mut resume = self.resume;
        if resume.store.is_some() && resume.fingerprinter.is_none() {
            resume.fingerprinter = default_fingerprinter();
        }
        Ok(Client {
            inner: Arc::new(Inner {
                endpoint,
                headers: RwLock::new(Arc::new(headers)),
                stack,
                resume,
                learned: Learned::with_hold(self.unreachable_hold),
                creation_with_upload: self.creation_with_upload,
                complete_in_creation: self.complete_in_creation,
                protocol: self.protocol,
                trusted: self.trusted,
            }),
        })
    }
}
