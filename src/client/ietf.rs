//! The operations of the IETF draft "Resumable Uploads for HTTP" behind the client's
//! `create`, `status` and `append`: the driver above speaks both protocols the same.
//!
//! Creation is "careful": an empty `POST` with `Upload-Complete: ?0` to the target
//! resource gets the upload resource's URL (and its limits) before any byte goes, so
//! a cut anywhere later is resumable. (An optimistic creation, the whole body in the
//! `POST`, is resumable only when the client sees the `104 (Upload Resumption
//! Supported)` before the final answer; reqwest drops request extensions when it hands
//! a request to hyper, so `hyper::ext::on_informational` cannot be reached through
//! it.)

use std::time::SystemTime;

use bytes::Bytes;
use http::HeaderValue;
use http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use reqwest::Url;

use super::{Appended, Client, Created, UploadStatus};
use crate::core::ietf::{self, Limits, header as ih};
use crate::core::protocol::{self, Metadata, header};
use crate::core::{Body, Error, Operation, Result};

/// The target resource's own answer to the request that completed an upload (the
/// draft: "whatever the initial request would have produced"), its body cut to the
/// core service's excerpt limit. `Debug` shows no credential header's value.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Answer {
    /// Its status.
    pub status: http::StatusCode,
    /// Its headers.
    pub headers: http::HeaderMap,
    /// Its body (at most [`crate::core::service::MAX_RESPONSE_BODY`] bytes).
    pub body: Bytes,
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(n, v)| {
                let shown =
                    if crate::client::is_sensitive_header(n) || n == http::header::SET_COOKIE {
                        "<redacted>"
                    } else {
                        v.to_str().unwrap_or("<binary>")
                    };
                (n.as_str(), shown)
            })
            .collect();
        f.debug_struct("Answer")
            .field("status", &self.status)
            .field("headers", &headers)
            .field("body", &format_args!("{} bytes", self.body.len()))
            .finish()
    }
}

impl Client {
    /// The limits the server announced (`Upload-Limit`, IETF mode), the latest
    /// answer's.
    pub fn limits(&self) -> Limits {
        *self
            .learned()
            .limits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Learn the limits of an answer that has `Upload-Limit`; return when the upload
    /// resource ends, from their `max-age`.
    fn learn_limits(&self, headers: &http::HeaderMap) -> Option<SystemTime> {
        let interop = self.protocol().interop()?;
        if !headers.contains_key(ih::UPLOAD_LIMIT) {
            return None;
        }
        let l = Limits::from_headers(headers, interop);
        *self
            .learned()
            .limits
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = l;
        l.max_age.map(|age| SystemTime::now() + age)
    }

    /// `OPTIONS` on the target resource, once per client: its `Upload-Limit`, so that a
    /// file over `max-size` (or under `min-size`) is refused before anything is created.
    /// A server that does not answer it is no error: the creation's answer has the
    /// limits too.
    pub(crate) async fn ietf_discover(&self) -> Result<()> {
        let Some(endpoint) = self.endpoint() else {
            return Ok(());
        };
        if let Some(e) = self.learned().mismatch.get() {
            return Err(e.clone());
        }
        // (Once for all the uploads of the client, even when they start together.)
        self.learned()
            .ietf_asked
            .get_or_try_init(|| async {
                let req = self.request(Operation::Discover, endpoint, Body::empty())?;
                match self.call(req).await {
                    Ok(resp) => {
                        if let Some(e) = self.other_protocol(resp.headers()) {
                            return Err(e);
                        }
                        let _ = self.learn_limits(resp.headers());
                    }
                    Err(e) if e.status().is_some() => {
                        tracing::debug!(error = %e, "no limits from OPTIONS");
                    }
                    Err(e) => return Err(e),
                }
                Ok(())
            })
            .await?;
        Ok(())
    }

    /// IETF mode: the limits the target resource announces (`OPTIONS`, asked once),
    /// or the latest answer's.
    pub async fn upload_limits(&self) -> Result<Limits> {
        self.ietf_discover().await?;
        Ok(self.limits())
    }

    /// When the `OPTIONS` answer of the endpoint shows it speaks another protocol (or
    /// interop version) than this client: the error, remembered for every upload.
    pub(crate) fn other_protocol(&self, h: &http::HeaderMap) -> Option<Error> {
        if let Some(e) = self.learned().mismatch.get() {
            return Some(e.clone());
        }
        let shown = self
            .endpoint()
            .map(protocol::redact_url)
            .unwrap_or_default();
        let theirs = ietf::integer(h, &ih::UPLOAD_DRAFT_INTEROP_VERSION)
            .ok()
            .flatten();
        let partial = h
            .get_all("accept-patch")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.to_ascii_lowercase().contains(ietf::PARTIAL_UPLOAD));
        let tus = h.contains_key(header::TUS_VERSION);
        let why = match self.protocol().interop() {
            None if !tus && (theirs.is_some() || partial) => format!(
                "the server at {shown} offers the IETF draft's resumable uploads{}, not tus 1.0: choose the protocol ietf",
                theirs
                    .map(|n| format!(" (interop version {n})"))
                    .unwrap_or_default()
            ),
            Some(_) if tus && theirs.is_none() && !partial => format!(
                "the server at {shown} speaks tus 1.0 (its OPTIONS answer has Tus-Version), not the IETF draft: choose the protocol tus"
            ),
            Some(ours) if theirs.is_some_and(|n| n != u64::from(ours.get())) => format!(
                "the server at {shown} speaks interop version {} of the IETF draft, not {}: choose that interop version",
                theirs.unwrap_or(0),
                ours.get()
            ),
            _ => return None,
        };
        let e = Error::invalid(why);
        Some(self.learned().mismatch.get_or_init(|| e).clone())
    }

    /// Check `length` against the limits known now; `what` names the source.
    pub(crate) fn check_size(&self, what: &str, length: Option<u64>) -> Result<()> {
        let l = self.limits();
        match length {
            Some(n) if l.max_size.is_some_and(|m| n > m) => Err(Error::invalid(format!(
                "{what} is {n} bytes, more than the server's Upload-Limit max-size of {} bytes",
                l.max_size.unwrap_or(0)
            ))),
            Some(n) if l.min_size.is_some_and(|m| n < m) => Err(Error::invalid(format!(
                "{what} is {n} bytes, less than the server's Upload-Limit min-size of {} bytes",
                l.min_size.unwrap_or(0)
            ))),
            _ => Ok(()),
        }
    }

    /// A careful creation: `POST` with `Upload-Complete: ?0` and no content; the
    /// length when known; the file name and type as `Content-Disposition` and
    /// `Content-Type`.
    pub(super) async fn ietf_create(
        &self,
        length: Option<u64>,
        metadata: &Metadata,
    ) -> Result<Created> {
        let endpoint = self.endpoint_or_err()?;
        let mut req = self.request(Operation::Create, endpoint, Body::empty())?;
        let h = req.headers_mut();
        h.insert(ih::UPLOAD_COMPLETE, HeaderValue::from_static("?0"));
        if let Some(n) = length {
            h.insert(header::UPLOAD_LENGTH, HeaderValue::from(n));
        }
        if let Some(t) = metadata
            .get_str("filetype")
            .and_then(|t| HeaderValue::from_str(t).ok())
        {
            h.insert(CONTENT_TYPE, t);
        }
        if let Some(name) = metadata.get_str("filename") {
            h.insert(CONTENT_DISPOSITION, content_disposition(name));
        }
        let resp = self.call(req).await?;
        let annotate = |e: Error| e.with_operation(Operation::Create);
        if !resp.headers().contains_key(http::header::LOCATION) {
            // A target resource that took the request as a conventional upload.
            return Err(annotate(Error::protocol(
                "Location",
                format!(
                    "the target resource answered {} without an upload resource: it does not offer resumable uploads of interop version {} of the draft",
                    resp.status().as_u16(),
                    self.protocol().interop().map_or(0, |i| i.get())
                ),
            )));
        }
        let url = protocol::resolve_location(endpoint, resp.headers()).map_err(annotate)?;
        let expires = self.learn_limits(resp.headers());
        // An empty creation has nothing on the server (a server that says otherwise
        // is believed, and the driver checks it against what was sent).
        let offset = ietf::integer(resp.headers(), &header::UPLOAD_OFFSET)
            .map_err(annotate)?
            .unwrap_or(0);
        tracing::debug!(url = %protocol::redact_url(&url), length, "upload resource created");
        Ok(Created {
            url,
            expires,
            offset: Some(offset),
        })
    }

    /// Offset retrieval: `HEAD` on the upload resource.
    pub(super) async fn ietf_status(&self, url: &Url) -> Result<UploadStatus> {
        let req = self.request(Operation::Offset, url, Body::empty())?;
        let resp = self.call(req).await?;
        let h = resp.headers();
        let annotate = |e: Error| {
            e.with_operation(Operation::Offset)
                .with_url(protocol::redact_url(url))
        };
        let offset = ietf::integer(h, &header::UPLOAD_OFFSET)
            .map_err(annotate)?
            .ok_or_else(|| annotate(Error::protocol("Upload-Offset", "missing")))?;
        let length = ietf::integer(h, &header::UPLOAD_LENGTH).map_err(annotate)?;
        let complete = ietf::boolean(h, &ih::UPLOAD_COMPLETE).map_err(annotate)?;
        if let Some(len) = length
            && offset > len
        {
            return Err(annotate(Error::protocol(
                "Upload-Offset",
                format!("offset {offset} is beyond Upload-Length {len}"),
            )));
        }
        let expires = self.learn_limits(h);
        Ok(UploadStatus {
            offset,
            length,
            expires,
            metadata: None,
            complete,
        })
    }

    /// An append: `PATCH` with `application/partial-upload` at `offset`;
    /// `Upload-Complete: ?1` when it ends the upload (`total` known and reached).
    pub(super) async fn ietf_append(
        &self,
        url: &Url,
        offset: u64,
        body: Body,
        length: Option<u64>,
        total: Option<u64>,
    ) -> Result<Appended> {
        let len = body.len();
        let end = offset + len;
        let last = total == Some(end);
        let mut req =
            self.append_request(url, (offset, body), (length, total), ietf::PARTIAL_UPLOAD)?;
        // For the layers that split or re-send appends (min-append-size).
        req.extensions_mut().insert(self.limits());
        req.headers_mut().insert(
            ih::UPLOAD_COMPLETE,
            HeaderValue::from_static(if last { "?1" } else { "?0" }),
        );
        let resp = self.call(req).await?;
        let annotate = |e: Error| {
            e.with_operation(Operation::Append)
                .with_url(protocol::redact_url(url))
        };
        let h = resp.headers();
        let expires = self.learn_limits(h);
        // Interop 8 requires Upload-Complete in the answer, not Upload-Offset: a
        // success without one took the whole content (the draft: a 2xx is a
        // successful PATCH of it).
        let acked = ietf::integer(h, &header::UPLOAD_OFFSET)
            .map_err(annotate)?
            .unwrap_or(end);
        // (An answer the retry layer got by `HEAD`, after a cut, says it too; but it is
        // not the target resource's answer, which was lost.)
        let done = ietf::boolean(h, &ih::UPLOAD_COMPLETE)
            .map_err(annotate)?
            .unwrap_or(last && acked == end);
        let resynced = resp.extensions().get::<ietf::Resynced>().is_some();
        let answer = (done && !resynced).then(|| {
            std::sync::Arc::new(Answer {
                status: resp.status(),
                headers: resp.headers().clone(),
                body: resp.body().clone(),
            })
        });
        Ok(Appended {
            offset: acked,
            expires,
            complete: done,
            answer,
        })
    }
}

/// `inline; filename="…"`, with `filename*` (RFC 6266, RFC 8187) when the name is not
/// plain ASCII or has a quote or backslash.
fn content_disposition(name: &str) -> HeaderValue {
    let quotable = |c: char| c.is_ascii() && !c.is_ascii_control() && c != '"' && c != '\\';
    let plain = name.chars().all(quotable);
    let fallback: String = name
        .chars()
        .map(|c| if quotable(c) { c } else { '_' })
        .collect();
    let value = if plain {
        format!("inline; filename=\"{name}\"")
    } else {
        let mut enc = String::new();
        for b in name.bytes() {
            if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
                enc.push(b as char);
            } else {
                enc.push_str(&format!("%{b:02X}"));
            }
        }
        format!("inline; filename=\"{fallback}\"; filename*=UTF-8''{enc}")
    };
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("inline"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_disposition_encodes_what_is_not_plain() {
        assert_eq!(
            content_disposition("file name.jpg"),
            "inline; filename=\"file name.jpg\""
        );
        assert_eq!(
            content_disposition("naïve \"q\".txt"),
            "inline; filename=\"na_ve _q_.txt\"; filename*=UTF-8''na%C3%AFve%20%22q%22.txt"
        );
    }
}
