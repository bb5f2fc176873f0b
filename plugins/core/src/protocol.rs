//! The tus 1.0 protocol from the client's side: header names, the `Upload-Metadata`
//! codec, typed parsing of the headers a server sends, and [`Capabilities`].
//!
//! Pure functions, no I/O. Malformed or missing headers become [`Error`]s that name the
//! header; nothing here panics on server input.

use std::fmt;
use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::{DecodePaddingMode, general_purpose};
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::{Error, Result};

/// The protocol version tusflow speaks.
pub const TUS_VERSION: &str = "1.0.0";
/// The `Content-Type` of append bodies.
pub const OFFSET_OCTET_STREAM: &str = "application/offset+octet-stream";

/// Header names of the tus protocol, lowercase as `http` wants them.
pub mod header {
    use http::HeaderName;

    /// `Tus-Resumable`: the version of a request or answer.
    pub const TUS_RESUMABLE: HeaderName = HeaderName::from_static("tus-resumable");
    /// `Tus-Version`: the versions a server speaks, preferred first.
    pub const TUS_VERSION: HeaderName = HeaderName::from_static("tus-version");
    /// `Tus-Extension`: the extensions a server supports.
    pub const TUS_EXTENSION: HeaderName = HeaderName::from_static("tus-extension");
    /// `Tus-Max-Size`: the largest upload a server accepts, in bytes.
    pub const TUS_MAX_SIZE: HeaderName = HeaderName::from_static("tus-max-size");
    /// `Tus-Checksum-Algorithm`: the checksum algorithms a server supports.
    pub const TUS_CHECKSUM_ALGORITHM: HeaderName =
        HeaderName::from_static("tus-checksum-algorithm");
    /// `Upload-Offset`: where the bytes of an upload end (so far).
    pub const UPLOAD_OFFSET: HeaderName = HeaderName::from_static("upload-offset");
    /// `Upload-Length`: the size of the whole upload.
    pub const UPLOAD_LENGTH: HeaderName = HeaderName::from_static("upload-length");
    /// `Upload-Defer-Length`: `1` while the length is not known yet.
    pub const UPLOAD_DEFER_LENGTH: HeaderName = HeaderName::from_static("upload-defer-length");
    /// `Upload-Metadata`: key and base64 value pairs.
    pub const UPLOAD_METADATA: HeaderName = HeaderName::from_static("upload-metadata");
    /// `Upload-Expires`: when an unfinished upload will be gone.
    pub const UPLOAD_EXPIRES: HeaderName = HeaderName::from_static("upload-expires");
    /// `Upload-Concat`: partial and final uploads.
    pub const UPLOAD_CONCAT: HeaderName = HeaderName::from_static("upload-concat");
    /// `Upload-Checksum`: the checksum of an append body.
    pub const UPLOAD_CHECKSUM: HeaderName = HeaderName::from_static("upload-checksum");
    /// `X-HTTP-Method-Override`: the real method of a request sent as `POST`.
    pub const X_HTTP_METHOD_OVERRIDE: HeaderName =
        HeaderName::from_static("x-http-method-override");
}

const BASE64_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// `Upload-Metadata`: ordered key and value pairs.
///
/// Keys are non-empty, unique, visible ASCII without spaces or commas; values are any
/// bytes (sent base64-encoded; an empty value is sent as the key alone).
///
/// ```
/// use tusflow_core::protocol::Metadata;
/// let mut m = Metadata::new();
/// m.insert("filename", "report.pdf").unwrap();
/// m.insert("is_confidential", "").unwrap();
/// assert_eq!(m.encode(), "filename cmVwb3J0LnBkZg==,is_confidential");
/// assert_eq!(Metadata::parse(&m.encode()).unwrap(), m);
/// assert!(m.insert("bad key", "x").unwrap_err().to_string().contains("bad key"));
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    pairs: Vec<(String, Vec<u8>)>,
}

impl Metadata {
    /// No pairs.
    pub fn new() -> Self {
        Self::default()
    }

    /// Check that `key` may be a metadata key; the error names the key.
    pub fn validate_key(key: &str) -> Result<()> {
        let problem = if key.is_empty() {
            Some("is empty")
        } else if key.contains(' ') {
            Some("contains a space")
        } else if key.contains(',') {
            Some("contains a comma")
        } else if !key.bytes().all(|b| b.is_ascii_graphic()) {
            Some("is not visible ASCII")
        } else {
            None
        };
        match problem {
            Some(p) => Err(Error::invalid(format!("metadata key {key:?} {p}"))),
            None => Ok(()),
        }
    }

    /// Set `key` to `value`, replacing an earlier value of the same key.
    pub fn insert(&mut self, key: &str, value: impl AsRef<[u8]>) -> Result<&mut Self> {
        Self::validate_key(key)?;
        let value = value.as_ref().to_vec();
        match self.pairs.iter_mut().find(|(k, _)| k == key) {
            Some(pair) => pair.1 = value,
            None => self.pairs.push((key.to_owned(), value)),
        }
        Ok(self)
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_slice())
    }

    /// The value of `key` as UTF-8 text, if set and valid UTF-8.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// True when `key` is set.
    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Remove `key`, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<Vec<u8>> {
        let i = self.pairs.iter().position(|(k, _)| k == key)?;
        Some(self.pairs.remove(i).1)
    }

    /// The pairs, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.pairs.iter().map(|(k, v)| (k.as_str(), v.as_slice()))
    }

    /// The number of pairs.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// True when there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// The header value: `key base64(value)` pairs joined by commas.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        for (k, v) in &self.pairs {
            if !out.is_empty() {
                out.push(',');
            }
            out.push_str(k);
            if !v.is_empty() {
                out.push(' ');
                STANDARD.encode_string(v, &mut out);
            }
        }
        out
    }

    /// The header value as a [`HeaderValue`] (never fails: keys are validated and base64
    /// is ASCII).
    pub fn to_header_value(&self) -> HeaderValue {
        HeaderValue::try_from(self.encode()).expect("metadata is visible ASCII")
    }

    /// Parse an `Upload-Metadata` value. Base64 padding may be present or not.
    pub fn parse(value: &str) -> Result<Self> {
        let mut m = Metadata::new();
        for pair in value.split(',') {
            let pair = pair.trim();
            if pair.is_empty() {
                continue;
            }
            let (key, encoded) = match pair.split_once(' ') {
                Some((k, v)) => (k, v.trim()),
                None => (pair, ""),
            };
            Self::validate_key(key)
                .map_err(|e| Error::protocol("Upload-Metadata", e.to_string()))?;
            if m.contains_key(key) {
                return Err(Error::protocol(
                    "Upload-Metadata",
                    format!("metadata key {key:?} appears twice"),
                ));
            }
            let value = BASE64_LENIENT.decode(encoded).map_err(|_| {
                Error::protocol(
                    "Upload-Metadata",
                    format!("the value of key {key:?} is not base64"),
                )
            })?;
            m.pairs.push((key.to_owned(), value));
        }
        Ok(m)
    }
}

impl fmt::Debug for Metadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(
                self.pairs
                    .iter()
                    .map(|(k, v)| (k, String::from_utf8_lossy(v))),
            )
            .finish()
    }
}

/// A single-valued header as text, if present; an error naming it if it is not
/// visible ASCII, or if it is given twice with different values (which one the server
/// meant cannot be known: taking the first would be a guess).
pub fn header_str<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Result<Option<&'a str>> {
    let mut found: Option<&str> = None;
    for v in headers.get_all(name) {
        let v = v
            .to_str()
            .map(str::trim)
            .map_err(|_| Error::protocol(canonical(name), "not visible ASCII"))?;
        match found {
            // (A Location's values are not shown: a signed URL's query is a secret.)
            Some(first) if first != v && *name == http::header::LOCATION => {
                return Err(Error::protocol(
                    canonical(name),
                    "given twice with different values",
                ));
            }
            Some(first) if first != v => {
                return Err(Error::protocol(
                    canonical(name),
                    format!(
                        "given twice with different values ({:?} and {:?})",
                        shorten(first),
                        shorten(v)
                    ),
                ));
            }
            _ => found = Some(v),
        }
    }
    Ok(found)
}

/// The canonical spelling of a tus header name, for messages.
fn canonical(name: &HeaderName) -> &'static str {
    use header::*;
    match *name {
        ref n if n == TUS_RESUMABLE => "Tus-Resumable",
        ref n if n == TUS_VERSION => "Tus-Version",
        ref n if n == TUS_EXTENSION => "Tus-Extension",
        ref n if n == TUS_MAX_SIZE => "Tus-Max-Size",
        ref n if n == TUS_CHECKSUM_ALGORITHM => "Tus-Checksum-Algorithm",
        ref n if n == UPLOAD_OFFSET => "Upload-Offset",
        ref n if n == UPLOAD_LENGTH => "Upload-Length",
        ref n if n == UPLOAD_DEFER_LENGTH => "Upload-Defer-Length",
        ref n if n == UPLOAD_METADATA => "Upload-Metadata",
        ref n if n == UPLOAD_EXPIRES => "Upload-Expires",
        ref n if n == UPLOAD_CONCAT => "Upload-Concat",
        ref n if n == UPLOAD_CHECKSUM => "Upload-Checksum",
        ref n if n == http::header::LOCATION => "Location",
        _ => "header",
    }
}

/// Parse a non-negative integer the way tus writes them: ASCII digits only, no sign,
/// at most `i64::MAX` (what every server can represent).
pub fn parse_u64(header: &'static str, value: &str) -> Result<u64> {
    let value = value.trim();
    if value.is_empty() {
        return Err(Error::protocol(header, "empty"));
    }
    if !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::protocol(
            header,
            format!("{:?} is not a non-negative integer", shorten(value)),
        ));
    }
    match value.parse::<u64>() {
        Ok(n) if n <= i64::MAX as u64 => Ok(n),
        _ => Err(Error::protocol(
            header,
            format!("{:?} is too large", shorten(value)),
        )),
    }
}

fn shorten(s: &str) -> String {
    if s.len() <= 40 {
        s.to_owned()
    } else {
        let mut end = 40;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &s[..end])
    }
}

fn optional_u64(headers: &HeaderMap, name: &HeaderName) -> Result<Option<u64>> {
    header_str(headers, name)?
        .map(|v| parse_u64(canonical(name), v))
        .transpose()
}

/// `Upload-Offset`, which must be present.
pub fn upload_offset(headers: &HeaderMap) -> Result<u64> {
    optional_u64(headers, &header::UPLOAD_OFFSET)?
        .ok_or_else(|| Error::protocol("Upload-Offset", "missing"))
}

/// `Upload-Length`, if present (absent while deferred).
pub fn upload_length(headers: &HeaderMap) -> Result<Option<u64>> {
    optional_u64(headers, &header::UPLOAD_LENGTH)
}

/// True when `Upload-Defer-Length: 1` is present.
pub fn is_length_deferred(headers: &HeaderMap) -> Result<bool> {
    match header_str(headers, &header::UPLOAD_DEFER_LENGTH)? {
        None => Ok(false),
        Some("1") => Ok(true),
        Some(other) => Err(Error::protocol(
            "Upload-Defer-Length",
            format!("{:?} is not 1", shorten(other)),
        )),
    }
}

/// `Upload-Expires` (an HTTP date), if present.
pub fn upload_expires(headers: &HeaderMap) -> Result<Option<SystemTime>> {
    header_str(headers, &header::UPLOAD_EXPIRES)?
        .map(|v| {
            httpdate::parse_http_date(v).map_err(|_| {
                Error::protocol(
                    "Upload-Expires",
                    format!("{:?} is not an HTTP date", shorten(v)),
                )
            })
        })
        .transpose()
}

/// `Upload-Metadata`, if present.
pub fn upload_metadata(headers: &HeaderMap) -> Result<Option<Metadata>> {
    header_str(headers, &header::UPLOAD_METADATA)?
        .map(Metadata::parse)
        .transpose()
}

/// A comma-separated list header (every line of it), trimmed, empty items dropped.
pub fn comma_list(headers: &HeaderMap, name: &HeaderName) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for v in headers.get_all(name) {
        let s = v
            .to_str()
            .map_err(|_| Error::protocol(canonical(name), "not visible ASCII"))?;
        out.extend(
            s.split(',')
                .map(str::trim)
                .filter(|x| !x.is_empty())
                .map(str::to_owned),
        );
    }
    Ok(out)
}

/// What a server supports, from its answer to `OPTIONS`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// `Tus-Version`: the versions it speaks, preferred first.
    pub versions: Vec<String>,
    /// `Tus-Extension`: the extensions it supports (`creation`, `termination`, ...).
    pub extensions: Vec<String>,
    /// `Tus-Max-Size`: the largest upload it accepts, in bytes.
    pub max_size: Option<u64>,
    /// `Tus-Checksum-Algorithm`: the checksum algorithms it supports.
    pub checksum_algorithms: Vec<String>,
}

impl Capabilities {
    /// Read the capabilities from the headers of an `OPTIONS` answer.
    pub fn from_headers(headers: &HeaderMap) -> Result<Self> {
        Ok(Capabilities {
            versions: comma_list(headers, &header::TUS_VERSION)?,
            extensions: comma_list(headers, &header::TUS_EXTENSION)?,
            max_size: optional_u64(headers, &header::TUS_MAX_SIZE)?,
            checksum_algorithms: comma_list(headers, &header::TUS_CHECKSUM_ALGORITHM)?
                .into_iter()
                .map(|a| a.to_ascii_lowercase())
                .collect(),
        })
    }

    /// True when the server advertises `extension` (case-insensitive).
    pub fn supports(&self, extension: &str) -> bool {
        self.extensions
            .iter()
            .any(|e| e.eq_ignore_ascii_case(extension))
    }

    /// True when the server speaks tus 1.0.0 (or says nothing about versions).
    pub fn speaks_our_version(&self) -> bool {
        self.versions.is_empty() || self.versions.iter().any(|v| v == TUS_VERSION)
    }
}

/// True for headers whose values are credentials (`Authorization`, cookies, and any
/// name with token, secret, password, key, signature or auth in it): they are marked
/// sensitive, redacted from `Debug`, logs and `config show`.
pub fn is_credential_header(name: &HeaderName) -> bool {
    let n = name.as_str();
    matches!(
        n,
        "authorization" | "proxy-authorization" | "cookie" | "set-cookie"
    ) || ["token", "secret", "password", "key", "signature", "auth"]
        .iter()
        .any(|w| n.contains(w))
}

/// A URL as it may appear in logs and errors: no user info, no query, no fragment.
///
/// ```
/// let url = "https://user:pw@host/files/abc?token=secret".parse().unwrap();
/// assert_eq!(tusflow_core::protocol::redact_url(&url), "https://host/files/abc?...");
/// ```
pub fn redact_url(url: &reqwest::Url) -> String {
    let mut out = format!("{}://", url.scheme());
    if let Some(host) = url.host_str() {
        out.push_str(host);
    }
    if let Some(port) = url.port() {
        out.push_str(&format!(":{port}"));
    }
    out.push_str(url.path());
    if url.query().is_some() {
        out.push_str("?...");
    }
    out
}

/// An endpoint as a URL store keeps it: shown as [`redact_url`] shows it, with no
/// secret, yet one endpoint per query (`?tenant=a` and `?tenant=b` are two): the query
/// is kept only as a 64-bit FNV-1a hash.
pub fn endpoint_key(url: &reqwest::Url) -> String {
    let mut out = redact_url(url);
    if let Some(q) = url.query() {
        out.truncate(out.len() - "?...".len());
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in q.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        out.push_str(&format!("?query-fnv1a={h:016x}"));
    }
    out
}

/// Resolve a `Location` from a creation answer against the URL of the request, and
/// check that the result is an `http` or `https` URL.
pub fn resolve_location(request_url: &reqwest::Url, headers: &HeaderMap) -> Result<reqwest::Url> {
    let location = header_str(headers, &http::header::LOCATION)?
        .filter(|l| !l.is_empty())
        .ok_or_else(|| Error::protocol("Location", "missing from the creation answer"))?;
    let url = request_url.join(location).map_err(|e| {
        Error::protocol(
            "Location",
            format!("{:?} is not a URL: {e}", shorten(location)),
        )
    })?;
    match url.scheme() {
        // Bytes (and any credentials) asked to leave TLS: a server behind a TLS proxy
        // that does not tell it so answers like this; it must send https or a relative
        // Location instead.
        "http" if request_url.scheme() == "https" => Err(Error::protocol(
            "Location",
            format!(
                "{} would move the upload from https to plain http",
                redact_url(&url)
            ),
        )),
        "http" | "https" => Ok(url),
        other => Err(Error::protocol(
            "Location",
            format!("scheme {other:?} is not http or https"),
        )),
    }
}

/// `Retry-After` as a wait from `now`: delta-seconds or an HTTP date (a date in the past
/// is no wait). `None` when absent or malformed.
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<std::time::Duration> {
    let v = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(std::time::Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or_default())
}

/// Encode bytes as standard base64 (for checksums and metadata values).
pub fn base64_encode(bytes: &[u8]) -> String {
    general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_endpoint_key_holds_no_query_yet_tells_queries_apart() {
        let a = reqwest::Url::parse("https://u:p@h/files/?token=s3cr3t&tenant=a").unwrap();
        let b = reqwest::Url::parse("https://h/files/?token=s3cr3t&tenant=b").unwrap();
        let (ka, kb) = (endpoint_key(&a), endpoint_key(&b));
        assert!(ka.starts_with("https://h/files/?query-fnv1a="), "{ka}");
        assert_ne!(ka, kb);
        assert!(!ka.contains("s3cr3t") && !ka.contains("tenant") && !ka.contains("u:p"));
        let plain = reqwest::Url::parse("https://h/files/").unwrap();
        assert_eq!(endpoint_key(&plain), "https://h/files/");
    }

    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn metadata_round_trip_and_empty_values() {
        let mut m = Metadata::new();
        m.insert("filename", "wörld.txt").unwrap();
        m.insert("empty", "").unwrap();
        m.insert("bin", [0u8, 255, 10]).unwrap();
        let enc = m.encode();
        assert_eq!(Metadata::parse(&enc).unwrap(), m);
        assert_eq!(m.get_str("filename"), Some("wörld.txt"));
        m.insert("filename", "b").unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(m.get_str("filename"), Some("b"));
    }

    #[test]
    fn metadata_parse_is_lenient_about_padding_and_spacing() {
        let m = Metadata::parse("a aGk, b aGk=,c , , d").unwrap();
        assert_eq!(m.get_str("a"), Some("hi"));
        assert_eq!(m.get_str("b"), Some("hi"));
        assert_eq!(m.get("c"), Some(&b""[..]));
        assert_eq!(m.get("d"), Some(&b""[..]));
    }

    #[test]
    fn metadata_errors_name_the_key() {
        for bad in ["", "a b", "a,b", "é"] {
            let e = Metadata::new().insert(bad, "v").unwrap_err();
            assert!(e.is_invalid());
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
        let e = Metadata::parse("k aGk=,k aGk=").unwrap_err();
        assert!(e.to_string().contains("\"k\" appears twice"), "{e}");
        let e = Metadata::parse("k !!!").unwrap_err();
        assert!(e.is_protocol() && e.to_string().contains("\"k\""), "{e}");
    }

    #[test]
    fn offsets_are_strict_non_negative_integers() {
        assert_eq!(
            upload_offset(&headers(&[("upload-offset", "42")])).unwrap(),
            42
        );
        for bad in ["-1", "+1", "1.5", "abc", "", "99999999999999999999", "1 2"] {
            let e = upload_offset(&headers(&[("upload-offset", bad)])).unwrap_err();
            assert!(e.is_protocol(), "{bad}");
            assert_eq!(e.header(), Some("Upload-Offset"));
        }
        let e = upload_offset(&HeaderMap::new()).unwrap_err();
        assert!(e.to_string().contains("Upload-Offset") && e.to_string().contains("missing"));
        assert_eq!(upload_length(&HeaderMap::new()).unwrap(), None);
    }

    #[test]
    fn capabilities_from_options() {
        let h = headers(&[
            ("tus-version", "1.0.0,0.2.2"),
            ("tus-extension", "creation, termination"),
            ("tus-extension", "expiration"),
            ("tus-max-size", "1073741824"),
            ("tus-checksum-algorithm", "SHA1,md5"),
        ]);
        let c = Capabilities::from_headers(&h).unwrap();
        assert_eq!(c.versions, ["1.0.0", "0.2.2"]);
        assert!(c.supports("creation") && c.supports("Expiration") && !c.supports("concatenation"));
        assert_eq!(c.max_size, Some(1 << 30));
        assert_eq!(c.checksum_algorithms, ["sha1", "md5"]);
        assert!(c.speaks_our_version());
        let bad = headers(&[("tus-max-size", "big")]);
        assert_eq!(
            Capabilities::from_headers(&bad).unwrap_err().header(),
            Some("Tus-Max-Size")
        );
    }

    #[test]
    fn expires_parses_http_dates() {
        let h = headers(&[("upload-expires", "Wed, 25 Jun 2014 16:00:00 GMT")]);
        let t = upload_expires(&h).unwrap().unwrap();
        assert_eq!(
            t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs(),
            1403712000
        );
        let h = headers(&[("upload-expires", "tomorrow")]);
        assert!(upload_expires(&h).unwrap_err().is_protocol());
    }

    #[test]
    fn location_resolves_relative_and_rejects_other_schemes() {
        let base: reqwest::Url = "http://127.0.0.1:8080/files/".parse().unwrap();
        let abs = resolve_location(&base, &headers(&[("location", "http://x/files/1")])).unwrap();
        assert_eq!(abs.as_str(), "http://x/files/1");
        let rel = resolve_location(&base, &headers(&[("location", "/files/abc")])).unwrap();
        assert_eq!(rel.as_str(), "http://127.0.0.1:8080/files/abc");
        let rel = resolve_location(&base, &headers(&[("location", "abc")])).unwrap();
        assert_eq!(rel.as_str(), "http://127.0.0.1:8080/files/abc");
        assert!(
            resolve_location(&base, &HeaderMap::new())
                .unwrap_err()
                .is_protocol()
        );
        let e =
            resolve_location(&base, &headers(&[("location", "file:///etc/passwd")])).unwrap_err();
        assert!(e.to_string().contains("file"), "{e}");

        // From https, never down to plain http.
        let tls: reqwest::Url = "https://127.0.0.1:8443/files/".parse().unwrap();
        let e = resolve_location(
            &tls,
            &headers(&[("location", "http://127.0.0.1:8443/files/1")]),
        )
        .unwrap_err();
        assert!(
            e.is_protocol() && e.to_string().contains("plain http"),
            "{e}"
        );
        let up = resolve_location(&tls, &headers(&[("location", "/files/1")])).unwrap();
        assert_eq!(up.as_str(), "https://127.0.0.1:8443/files/1");
    }

    #[test]
    fn retry_after_seconds_or_date() {
        let now = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1403712000);
        let h = headers(&[("retry-after", "7")]);
        assert_eq!(
            retry_after(&h, now),
            Some(std::time::Duration::from_secs(7))
        );
        let h = headers(&[("retry-after", "Wed, 25 Jun 2014 16:00:30 GMT")]);
        assert_eq!(
            retry_after(&h, now),
            Some(std::time::Duration::from_secs(30))
        );
        let h = headers(&[("retry-after", "soon")]);
        assert_eq!(retry_after(&h, now), None);
    }

    #[test]
    fn redaction_drops_query_and_userinfo() {
        let url: reqwest::Url = "https://u:p@h:8443/f/1?sig=abc#x".parse().unwrap();
        assert_eq!(redact_url(&url), "https://h:8443/f/1?...");
    }
}
