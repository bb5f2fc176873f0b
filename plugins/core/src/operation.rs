//! The tus meaning of a request, carried as a typed request extension.

use std::fmt;

/// What a request does in tus terms.
///
/// The upload driver puts one in the extensions of every `http::Request` it sends, so
/// middleware can tell an append from a creation without sniffing methods (which
/// `X-HTTP-Method-Override` makes unreliable anyway).
///
/// ```
/// use tusflow_core::Operation;
/// let req = http::Request::builder().extension(Operation::Append).body(()).unwrap();
/// assert_eq!(req.extensions().get::<Operation>(), Some(&Operation::Append));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Operation {
    /// `OPTIONS` on the endpoint: learn the server's capabilities.
    Discover,
    /// `POST` on the endpoint: create an upload.
    Create,
    /// `HEAD` on an upload URL: learn its offset.
    Offset,
    /// `PATCH` on an upload URL: append bytes at an offset.
    Append,
    /// `DELETE` on an upload URL: terminate the upload.
    Terminate,
}

impl Operation {
    /// A short lowercase name, for logs and error messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Discover => "discover",
            Operation::Create => "create",
            Operation::Offset => "offset",
            Operation::Append => "append",
            Operation::Terminate => "terminate",
        }
    }

    /// What the client is doing, in words a user knows, for error messages
    /// ("asking the server for its capabilities").
    pub fn doing(self) -> &'static str {
        match self {
            Operation::Discover => "asking the server for its capabilities",
            Operation::Create => "creating the upload",
            Operation::Offset => "asking the server for the upload's offset",
            Operation::Append => "sending bytes",
            Operation::Terminate => "terminating the upload",
        }
    }

    /// The HTTP method the protocol uses for this operation.
    pub fn method(self) -> http::Method {
        match self {
            Operation::Discover => http::Method::OPTIONS,
            Operation::Create => http::Method::POST,
            Operation::Offset => http::Method::HEAD,
            Operation::Append => http::Method::PATCH,
            Operation::Terminate => http::Method::DELETE,
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
