//! Creation: the endpoint's capabilities, and the `POST` that creates an upload
//! (with its first bytes when that is safe and the server allows it).

use super::*;

impl Uploader {
    /// The endpoint's capabilities, or `None` when it does not tell them.
    pub(super) async fn capabilities(&mut self) -> Result<Option<Capabilities>> {
        if self.client.endpoint().is_none() {
            return Ok(None);
        }
        if self.client.protocol().is_ietf() {
            // The draft has no capabilities: its limits, from OPTIONS when the server
            // answers it, are checked before anything is created.
            self.client.ietf_discover().await?;
            self.check_limits()?;
            return Ok(None);
        }
        let caps = self.client.discovered().await?;
        if let (Some(c), Some(total)) = (&caps, self.len())
            && let Some(max) = c.max_size
            && total > max
        {
            let what = self
                .source
                .name()
                .unwrap_or_else(|| "the source".to_owned());
            return Err(Error::invalid(format!(
                "{what} is {total} bytes, more than the server's Tus-Max-Size of {max} bytes"
            )));
        }
        Ok(caps)
    }

    /// IETF mode: the source against the server's `max-size` and `min-size`.
    fn check_limits(&self) -> Result<()> {
        let what = self
            .source
            .name()
            .unwrap_or_else(|| "the source".to_owned());
        self.client.check_size(&what, self.len())
    }

    /// Create the upload, with its first bytes when the server allows; return its
    /// URL, the server's offset, and whether its length is known to the server.
    pub(super) async fn create(&mut self, stop_at: Option<u64>) -> Result<(Url, u64, bool)> {
        let caps = self.capabilities().await?;
        let supports = |ext: &str| caps.as_ref().is_some_and(|c| c.supports(ext));
        let chunk_size = match self.opened {
            Some(Opened::Stream(ref mut s)) => {
                s.max = caps.as_ref().and_then(|c| c.max_size).or(self
                    .client
                    .limits()
                    .max_size
                    .filter(|_| self.client.protocol().is_ietf()));
                Some(
                    self.chunk_size
                        .unwrap_or(DEFAULT_STREAM_CHUNK)
                        .min(MAX_STREAM_CHUNK),
                )
            }
            _ => self.chunk_size,
        };
        if self.len().is_none() {
            // Read the first chunk: a short stream has a length after all.
            let first = step(&self.client, chunk_size).unwrap_or(DEFAULT_STREAM_CHUNK);
            self.body(0, first).await?;
        }
        if self.len().is_none() && caps.is_some() && !supports("creation-defer-length") {
            return Err(Error::invalid(format!(
                "the server at {} does not support creation-defer-length, which a source of unknown length needs",
                self.client
                    .endpoint()
                    .map(protocol::redact_url)
                    .unwrap_or_default()
            )));
        }
        let with_upload =
            self.client.uses_creation_with_upload() && supports("creation-with-upload");
        // Unless a creation may complete the upload, an upload that would fit in its
        // creation goes in one PATCH after a bare creation (cheaper for servers than
        // the creation carrying all but the last byte, and a lost answer then leaves an
        // empty upload behind), and an empty one is created with a deferred length
        // when the server allows.
        let may_complete = self.client.completes_in_creation();
        let defer_empty =
            !may_complete && self.len() == Some(0) && supports("creation-defer-length");
        let meter = Meter::new(&self.progress, 0);
        loop {
            let limit = step(&self.client, chunk_size)
                .map_or(MAX_CREATION_BODY, |c| c.min(MAX_CREATION_BODY))
                .min(stop_at.unwrap_or(u64::MAX));
            let first_end = match self.len() {
                _ if !with_upload => 0,
                Some(total) if total <= limit && !may_complete => 0,
                Some(total) => total.min(limit),
                None => limit,
            };
            let body = self.body(0, first_end).await?;
            let sent = body.len();
            let length = if defer_empty { None } else { self.len() };
            let created = if sent > 0 {
                self.client
                    .create_with_upload(length, &self.metadata, body.observe(meter.observer(0)))
                    .await
            } else {
                self.client.create(length, &self.metadata).await
            };
            let created = match created {
                Err(e)
                    if e.status() == Some(http::StatusCode::PAYLOAD_TOO_LARGE)
                        && sent > 0
                        && self.client.learned().shrink_chunk_limit(sent).is_some() =>
                {
                    continue;
                }
                other => other?,
            };
            let url = created.url;
            let offset = match created.offset {
                Some(o) => o,
                None if sent > 0 => self.client.status(&url).await?.offset,
                None => 0,
            };
            if offset > sent {
                return Err(Error::protocol(
                    "Upload-Offset",
                    format!("the server has {offset} bytes of an upload created with {sent}"),
                )
                .with_url(protocol::redact_url(&url)));
            }
            if self.client.protocol().is_ietf()
                && let Err(e) = self.check_limits()
            {
                // The creation's answer had stricter limits: the draft says cancel.
                if let Err(t) = self.client.terminate(&url).await {
                    tracing::debug!(error = %t, "cancelling the upload over the limits failed");
                }
                return Err(e);
            }
            self.url = Some(url.clone());
            self.record_url = Some(url.to_string());
            // A creation that carried every byte is recorded (or not) as complete, by
            // `finished`, right after: no record to write and remove.
            if Some(offset) != self.len() || length.is_none() {
                self.remember(&url, offset, created.expires, true).await?;
            }
            return Ok((url, offset, length.is_some()));
        }
    }
}
