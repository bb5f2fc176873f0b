//! "Resumable Uploads for HTTP", the IETF draft that follows tus 1.0
//! (draft-ietf-httpbis-resumable-upload), from the client's side: the interop versions,
//! the header fields as Structured Fields (RFC 9651), the `Upload-Limit` dictionary and
//! the problem types (RFC 9457). Pure functions, no I/O.
//!
//! The client says which protocol a request speaks with the [`Protocol`] request
//! extension, so middleware can tell (the checksum layer sends RFC 9530 digests
//! instead of `Upload-Checksum`, the retry layer reads the draft's `HEAD` answer).

use std::time::Duration;

use http::{HeaderMap, HeaderName};

use crate::{Error, Result};

/// The draft's header names, lowercase as `http` wants them (`Upload-Offset` and
/// `Upload-Length` are tus's names too: [`crate::protocol::header`]).
pub mod header {
    use http::HeaderName;

    /// `Upload-Complete`: a Boolean, true on the request that ends the upload.
    pub const UPLOAD_COMPLETE: HeaderName = HeaderName::from_static("upload-complete");
    /// `Upload-Limit`: a Dictionary of the server's limits.
    pub const UPLOAD_LIMIT: HeaderName = HeaderName::from_static("upload-limit");
    /// `Upload-Draft-Interop-Version`: the interop version, on every request.
    pub const UPLOAD_DRAFT_INTEROP_VERSION: HeaderName =
        HeaderName::from_static("upload-draft-interop-version");
    /// `Content-Digest` (RFC 9530): the digest of one request's content.
    pub const CONTENT_DIGEST: HeaderName = HeaderName::from_static("content-digest");
    /// `Repr-Digest` (RFC 9530): the digest of the whole representation.
    pub const REPR_DIGEST: HeaderName = HeaderName::from_static("repr-digest");
}

/// A response extension: this answer to an append is the `HEAD` a re-sync asked (the
/// append's own answer was lost), not the target resource's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resynced;

/// The media type of an append's content.
pub const PARTIAL_UPLOAD: &str = "application/partial-upload";

/// Where the draft's problem types live.
const PROBLEM_BASE: &str = "https://iana.org/assignments/http-problem-types#";

/// An interop version of the draft this client speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Interop(u8);

impl Interop {
    /// Interop 6: drafts -04 and -05, what tusd 2.x, Apple's URLSession and
    /// tus-js-client's `ietf-draft-05` speak (the limit `expires`).
    pub const V6: Interop = Interop(6);
    /// Interop 8: the editor's copy since -09 (the limit `max-age`, limits a client
    /// must obey).
    pub const V8: Interop = Interop(8);
    /// The latest this client knows.
    pub const LATEST: Interop = Interop::V8;

    /// The interop version `n`, if this client speaks it.
    pub fn new(n: u64) -> Result<Self> {
        match n {
            6 => Ok(Interop::V6),
            8 => Ok(Interop::V8),
            _ => Err(Error::invalid(format!(
                "interop version {n} of the resumable upload draft is not one this client speaks (6 or 8)"
            ))),
        }
    }

    /// Its number.
    pub fn get(self) -> u8 {
        self.0
    }
}

impl Default for Interop {
    fn default() -> Self {
        Interop::LATEST
    }
}

/// Which protocol an upload speaks: tus 1.0 (the default) or the IETF draft. Sent
/// with every request as an extension.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// tus 1.0.0.
    #[default]
    Tus,
    /// "Resumable Uploads for HTTP", at an interop version.
    Ietf(Interop),
}

impl Protocol {
    /// The protocol a request says it speaks (its extension; tus without one).
    pub fn of(extensions: &http::Extensions) -> Protocol {
        extensions.get::<Protocol>().copied().unwrap_or_default()
    }

    /// `key` (an endpoint's key in the URL store) marked with this protocol: as it is
    /// for tus, ` (ietf interop N)` after it for the draft.
    pub fn tag_key(self, key: String) -> String {
        match self.interop() {
            Some(i) => format!("{key} (ietf interop {})", i.get()),
            None => key,
        }
    }

    /// The endpoint's key and protocol of a key [`Protocol::tag_key`] made (an interop
    /// version this client no longer speaks reads as tus).
    pub fn untag_key(key: &str) -> (&str, Protocol) {
        key.rsplit_once(" (ietf interop ")
            .and_then(|(k, n)| {
                let n = n.strip_suffix(')')?.parse().ok()?;
                Some((k, Protocol::Ietf(Interop::new(n).ok()?)))
            })
            .unwrap_or((key, Protocol::Tus))
    }

    /// The draft's interop version, in IETF mode.
    pub fn interop(self) -> Option<Interop> {
        match self {
            Protocol::Tus => None,
            Protocol::Ietf(i) => Some(i),
        }
    }

    /// True in IETF mode.
    pub fn is_ietf(self) -> bool {
        matches!(self, Protocol::Ietf(_))
    }

    /// `tus` or `ietf`.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tus => "tus",
            Protocol::Ietf(_) => "ietf",
        }
    }

    /// The protocol named `name` (`tus` or `ietf`) at `interop` (IETF only; the latest
    /// when `None`).
    pub fn from_name(name: &str, interop: Option<u64>) -> Result<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
            "tus" if interop.is_some() => Err(Error::invalid(
                "an interop version is for the IETF draft: set the protocol to \"ietf\" with it",
            )),
            "tus" => Ok(Protocol::Tus),
            "ietf" => Ok(Protocol::Ietf(match interop {
                Some(n) => Interop::new(n)?,
                None => Interop::LATEST,
            })),
            other => Err(Error::invalid(format!(
                "unknown protocol {other:?}: \"tus\" (tus 1.0) or \"ietf\" (the IETF draft)"
            ))),
        }
    }
}

/// A header that is absent, or a non-negative Structured Field Integer (parameters are
/// allowed and ignored, as RFC 9651 says).
pub fn integer(headers: &HeaderMap, name: &HeaderName) -> Result<Option<u64>> {
    let Some(v) = headers.get(name) else {
        return Ok(None);
    };
    let bad = || {
        Error::protocol(
            header_label(name),
            "not a non-negative Structured Field Integer",
        )
    };
    let item: sfv::Item = sfv::Parser::new(v.as_bytes()).parse().map_err(|_| bad())?;
    let n = item.bare_item.as_integer().ok_or_else(bad)?;
    u64::try_from(i64::from(n)).map(Some).map_err(|_| bad())
}

/// A header that is absent, or a Structured Field Boolean.
pub fn boolean(headers: &HeaderMap, name: &HeaderName) -> Result<Option<bool>> {
    let Some(v) = headers.get(name) else {
        return Ok(None);
    };
    let item: sfv::Item = sfv::Parser::new(v.as_bytes())
        .parse()
        .map_err(|_| Error::protocol(header_label(name), "not a Structured Field Boolean"))?;
    item.bare_item
        .as_boolean()
        .map(Some)
        .ok_or_else(|| Error::protocol(header_label(name), "not a Structured Field Boolean"))
}

/// `Upload-Offset` and friends, spelled as in the draft for error messages.
fn header_label(name: &HeaderName) -> &'static str {
    match name.as_str() {
        "upload-offset" => "Upload-Offset",
        "upload-length" => "Upload-Length",
        "upload-complete" => "Upload-Complete",
        "upload-limit" => "Upload-Limit",
        "upload-draft-interop-version" => "Upload-Draft-Interop-Version",
        _ => "a header of the draft",
    }
}

/// The server's limits, from `Upload-Limit`: each `None` when not given.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// `max-size`: the largest upload, in bytes.
    pub max_size: Option<u64>,
    /// `min-size`: the smallest upload, in bytes.
    pub min_size: Option<u64>,
    /// `max-append-size`: the most content in one creation or append.
    pub max_append_size: Option<u64>,
    /// `min-append-size`: the least content in one creation or append (but the last).
    pub min_append_size: Option<u64>,
    /// `max-age` (interop 8) or `expires` (interop 6): how long the upload resource
    /// lives from the answer on.
    pub max_age: Option<Duration>,
}

impl Limits {
    /// The limits in `headers` (none when the header is absent). As the draft says, an
    /// unknown key is ignored, and a known key of the wrong type makes the whole header
    /// ignored (logged). `interop` picks the name of the lifetime (`expires` in 6).
    pub fn from_headers(headers: &HeaderMap, interop: Interop) -> Limits {
        let Some(v) = headers.get(header::UPLOAD_LIMIT) else {
            return Limits::default();
        };
        let dict: sfv::Dictionary = match sfv::Parser::new(v.as_bytes()).parse() {
            Ok(d) => d,
            Err(e) => {
                tracing::debug!(error = %e, "ignoring an Upload-Limit that is not a Dictionary");
                return Limits::default();
            }
        };
        let age_key = if interop == Interop::V6 {
            "expires"
        } else {
            "max-age"
        };
        let mut l = Limits::default();
        for (key, entry) in &dict {
            let slot = match key.as_str() {
                "max-size" => &mut l.max_size,
                "min-size" => &mut l.min_size,
                "max-append-size" => &mut l.max_append_size,
                "min-append-size" => &mut l.min_append_size,
                k if k == age_key => {
                    match non_negative(entry) {
                        Some(s) => l.max_age = Some(Duration::from_secs(s)),
                        None => return ignored(key.as_str()),
                    }
                    continue;
                }
                _ => continue,
            };
            match non_negative(entry) {
                Some(n) => *slot = Some(n),
                None => return ignored(key.as_str()),
            }
        }
        l
    }

    /// The most content one request may carry: `max-append-size`, and never below
    /// `min-append-size` (a server whose minimum is above its maximum cannot be
    /// obeyed; the maximum wins, as the server checks it first).
    pub fn append_window(&self, chunk: Option<u64>) -> Option<u64> {
        let floor = |c: u64| self.min_append_size.map_or(c, |m| c.max(m));
        let c = chunk.map(floor);
        match (c, self.max_append_size) {
            (Some(c), Some(m)) => Some(c.min(m)),
            (c, m) => c.or(m),
        }
    }
}

fn non_negative(entry: &sfv::ListEntry) -> Option<u64> {
    match entry {
        sfv::ListEntry::Item(i) => i
            .bare_item
            .as_integer()
            .and_then(|n| u64::try_from(i64::from(n)).ok()),
        sfv::ListEntry::InnerList(_) => None,
    }
}

fn ignored(key: &str) -> Limits {
    tracing::debug!(
        key,
        "ignoring an Upload-Limit whose member is not a non-negative Integer"
    );
    Limits::default()
}

/// A problem the draft defines, from an `application/problem+json` answer.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// `mismatching-upload-offset`: the append's offset is not the resource's; the
    /// members `expected-offset` (the resource's) and `provided-offset` (the request's).
    MismatchingOffset {
        /// The upload resource's offset.
        expected: Option<u64>,
        /// The offset the request gave.
        provided: Option<u64>,
    },
    /// `completed-upload`: the upload is complete and takes no more.
    CompletedUpload,
    /// `inconsistent-upload-length`: the request's lengths disagree with each other or
    /// with an earlier request's.
    InconsistentLength,
}

impl Problem {
    /// True for the problems that trying again cannot mend: a completed upload, and
    /// inconsistent lengths.
    pub fn is_final(&self) -> bool {
        matches!(self, Problem::CompletedUpload | Problem::InconsistentLength)
    }

    /// The draft's problem in `body`, when `content_type` says problem JSON and its
    /// `type` is one of the draft's.
    pub fn parse(content_type: Option<&str>, body: &[u8]) -> Option<Problem> {
        let ct = content_type?.split(';').next()?.trim();
        if !ct.eq_ignore_ascii_case("application/problem+json") {
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(body).ok()?;
        let kind = v.get("type")?.as_str()?.strip_prefix(PROBLEM_BASE)?;
        let member = |k: &str| v.get(k).and_then(serde_json::Value::as_u64);
        match kind {
            "mismatching-upload-offset" => Some(Problem::MismatchingOffset {
                expected: member("expected-offset"),
                provided: member("provided-offset"),
            }),
            "completed-upload" => Some(Problem::CompletedUpload),
            "inconsistent-upload-length" => Some(Problem::InconsistentLength),
            _ => None,
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::MismatchingOffset { expected, provided } => {
                f.write_str("the upload's offset does not match")?;
                match (expected, provided) {
                    (Some(e), Some(p)) => write!(f, " (the server has {e}, the request said {p})"),
                    (Some(e), None) => write!(f, " (the server has {e})"),
                    _ => Ok(()),
                }
            }
            Problem::CompletedUpload => f.write_str("the upload is complete and takes no more"),
            Problem::InconsistentLength => f.write_str("the upload's lengths are inconsistent"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.insert(HeaderName::from_static(n), v.parse().unwrap());
        }
        h
    }

    #[test]
    fn integers_and_booleans_are_structured_fields() {
        use crate::protocol::header::UPLOAD_OFFSET;
        let ok = headers(&[("upload-offset", " 42;x=1 "), ("upload-complete", "?1")]);
        assert_eq!(integer(&ok, &UPLOAD_OFFSET).unwrap(), Some(42));
        assert_eq!(boolean(&ok, &header::UPLOAD_COMPLETE).unwrap(), Some(true));
        assert_eq!(integer(&HeaderMap::new(), &UPLOAD_OFFSET).unwrap(), None);
        for bad in ["-1", "1.5", "\"7\"", "1,2", "1234567890123456", "?1"] {
            let h = headers(&[("upload-offset", bad)]);
            let e = integer(&h, &UPLOAD_OFFSET).unwrap_err();
            assert_eq!(e.header(), Some("Upload-Offset"), "{bad}");
        }
        for bad in ["1", "true", "?2"] {
            let h = headers(&[("upload-complete", bad)]);
            assert!(boolean(&h, &header::UPLOAD_COMPLETE).is_err(), "{bad}");
        }
    }

    #[test]
    fn limits_by_interop_version_and_bad_members() {
        let h = headers(&[(
            "upload-limit",
            "max-size=1000, min-size=1, max-append-size=100, min-append-size=10, max-age=60, expires=5, other=\"x\"",
        )]);
        let l8 = Limits::from_headers(&h, Interop::V8);
        assert_eq!(
            (
                l8.max_size,
                l8.min_size,
                l8.max_append_size,
                l8.min_append_size
            ),
            (Some(1000), Some(1), Some(100), Some(10))
        );
        assert_eq!(l8.max_age, Some(Duration::from_secs(60)));
        assert_eq!(
            Limits::from_headers(&h, Interop::V6).max_age,
            Some(Duration::from_secs(5))
        );
        // A known key of the wrong type: the whole header is ignored.
        let bad = headers(&[("upload-limit", "max-size=1000, max-append-size=\"big\"")]);
        assert_eq!(Limits::from_headers(&bad, Interop::V8), Limits::default());
        let neg = headers(&[("upload-limit", "max-size=-1")]);
        assert_eq!(Limits::from_headers(&neg, Interop::V8), Limits::default());
        assert_eq!(
            Limits::from_headers(&headers(&[("upload-limit", "a=(1 2")]), Interop::V8),
            Limits::default()
        );
    }

    #[test]
    fn the_append_window_obeys_both_limits() {
        let l = Limits {
            max_append_size: Some(100),
            min_append_size: Some(10),
            ..Limits::default()
        };
        assert_eq!(l.append_window(None), Some(100));
        assert_eq!(l.append_window(Some(5)), Some(10));
        assert_eq!(l.append_window(Some(50)), Some(50));
        assert_eq!(l.append_window(Some(500)), Some(100));
        assert_eq!(Limits::default().append_window(None), None);
    }

    #[test]
    fn problems_of_the_draft() {
        let body = br#"{"type":"https://iana.org/assignments/http-problem-types#mismatching-upload-offset","title":"x","expected-offset":12,"provided-offset":25}"#;
        let p = Problem::parse(Some("application/problem+json; charset=utf-8"), body);
        assert_eq!(
            p,
            Some(Problem::MismatchingOffset {
                expected: Some(12),
                provided: Some(25)
            })
        );
        assert_eq!(
            p.unwrap().to_string(),
            "the upload's offset does not match (the server has 12, the request said 25)"
        );
        let done =
            br#"{"type":"https://iana.org/assignments/http-problem-types#completed-upload"}"#;
        assert_eq!(
            Problem::parse(Some("application/problem+json"), done),
            Some(Problem::CompletedUpload)
        );
        assert_eq!(Problem::parse(Some("application/json"), done), None);
        assert_eq!(Problem::parse(None, done), None);
        assert_eq!(Problem::parse(Some("application/problem+json"), b"{"), None);
        let other = br#"{"type":"https://example.com/other"}"#;
        assert_eq!(
            Problem::parse(Some("application/problem+json"), other),
            None
        );
    }

    #[test]
    fn store_keys_carry_the_protocol() {
        let p = Protocol::Ietf(Interop::V6);
        let key = p.tag_key("http://h/u".into());
        assert_eq!(key, "http://h/u (ietf interop 6)");
        assert_eq!(Protocol::untag_key(&key), ("http://h/u", p));
        assert_eq!(
            Protocol::untag_key("http://h/u"),
            ("http://h/u", Protocol::Tus)
        );
        assert_eq!(Protocol::Tus.tag_key("k".into()), "k");
    }

    #[test]
    fn protocols_by_name() {
        assert_eq!(Protocol::from_name("tus", None).unwrap(), Protocol::Tus);
        assert_eq!(
            Protocol::from_name("IETF", None).unwrap(),
            Protocol::Ietf(Interop::V8)
        );
        assert_eq!(
            Protocol::from_name("ietf", Some(6)).unwrap(),
            Protocol::Ietf(Interop::V6)
        );
        let e = Protocol::from_name("ietf", Some(7))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("interop version 7") && e.contains("6 or 8"),
            "{e}"
        );
        assert!(Protocol::from_name("tus", Some(6)).is_err());
        let e = Protocol::from_name("http", None).unwrap_err().to_string();
        assert!(e.contains("\"http\""), "{e}");
    }
}
