//! Appends: one upload driven to its end (or to `stop_at`) in `PATCH`es, a 413
//! shrinking the chunk size, an offset the server moved re-synced with `HEAD`.

use super::*;

/// One append, checked: `Some` with the server's answer, or `None` after a 413 shrank
/// the client's chunk limit (ask the offset, then go on with smaller bodies).
pub(super) async fn append_checked(
    client: &Client,
    url: &Url,
    offset: u64,
    body: Body,
    length: Option<u64>,
) -> Result<Option<crate::Appended>> {
    let end = offset + body.len();
    match client.append(url, offset, body, length).await {
        Ok(a) if a.offset == end => Ok(Some(a)),
        Ok(a) => Err(Error::offset_mismatch(end, a.offset).with_url(protocol::redact_url(url))),
        Err(e) if e.status() == Some(http::StatusCode::PAYLOAD_TOO_LARGE) => {
            match client.learned().shrink_chunk_limit(end - offset) {
                Some(_) => Ok(None),
                None => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// After a rejected append of `[from, to)`: where the server is now.
pub(super) async fn resync(client: &Client, url: &Url, from: u64, to: u64) -> Result<u64> {
    let offset = client.status(url).await?.offset;
    if offset < from || offset > to {
        return Err(Error::protocol(
            "Upload-Offset",
            format!("the server's offset moved to {offset} after a rejected append of bytes {from}..{to}"),
        )
        .with_url(protocol::redact_url(url)));
    }
    Ok(offset)
}

/// The largest body to send: the chunk size and the endpoint's 413 limit.
pub(super) fn step(client: &Client, chunk_size: Option<u64>) -> Option<u64> {
    match (chunk_size, client.chunk_limit()) {
        (Some(c), Some(l)) => Some(c.min(l)),
        (c, l) => c.or(l),
    }
}

impl Uploader {
    pub(super) async fn drive(
        &mut self,
        stop_at: Option<u64>,
        span: tracing::Span,
    ) -> Result<Uploaded> {
        self.open().await?;
        let (url, mut offset, resumed, mut length_sent) = match self.url.clone() {
            Some(url) => {
                let st = self.client.status(&url).await?;
                let shown = protocol::redact_url(&url);
                if let (Some(len), Some(total)) = (st.length, self.len())
                    && len != total
                {
                    return Err(Error::invalid(format!(
                        "the upload at {shown} is {len} bytes long but the source is {total} bytes"
                    )));
                }
                if let Some(total) = self.len()
                    && st.offset > total
                {
                    return Err(Error::protocol(
                        "Upload-Offset",
                        format!(
                            "the server has {} bytes of a {total}-byte source",
                            st.offset
                        ),
                    )
                    .with_url(shown));
                }
                tracing::debug!(offset = st.offset, "resuming upload");
                self.record_url.get_or_insert_with(|| url.to_string());
                self.stored = true;
                (url, st.offset, true, st.length.is_some())
            }
            None => match self.resume_stored().await? {
                Some(Stored::Single(url, st)) => {
                    span.record("url", protocol::redact_url(&url));
                    self.url = Some(url.clone());
                    self.record_url = Some(url.to_string());
                    self.stored = true;
                    (url, st.offset, true, st.length.is_some())
                }
                Some(Stored::Parallel(_)) if stop_at.is_some() => {
                    return Err(Error::invalid(
                        "this source has a stored parallel upload, which cannot stop at a byte: upload it to the end, or forget it first",
                    ));
                }
                Some(Stored::Parallel(stored)) => {
                    return self.drive_parallel(Some(stored), &span).await;
                }
                None => {
                    if self.parallel > 1 && stop_at.is_none() && self.parallel_possible().await? {
                        return self.drive_parallel(None, &span).await;
                    }
                    let (url, offset, length_sent) = self.create(stop_at).await?;
                    span.record("url", protocol::redact_url(&url));
                    (url, offset, false, length_sent)
                }
            },
        };
        let meter = Meter::new(&self.progress, 0);
        self.progress.send_modify(|p| {
            *p = Progress {
                sent: 0,
                acknowledged: 0,
                total: self.len(),
            }
        });
        meter.acknowledged(offset);
        // A stream is buffered a chunk at a time, so it always goes in chunks.
        let chunk_size = match self.opened {
            Some(Opened::Stream(_)) => Some(
                self.chunk_size
                    .unwrap_or(DEFAULT_STREAM_CHUNK)
                    .min(MAX_STREAM_CHUNK),
            ),
            _ => self.chunk_size,
        };
        loop {
            let goal = match (stop_at, self.len()) {
                (Some(s), Some(l)) => Some(s.min(l)),
                (s, l) => s.or(l),
            };
            if goal.is_some_and(|g| offset >= g) {
                break;
            }
            let end = match (step(&self.client, chunk_size), goal) {
                (Some(c), Some(g)) => offset.saturating_add(c).min(g),
                (Some(c), None) => offset.saturating_add(c),
                (None, Some(g)) => g,
                (None, None) => unreachable!("a source of unknown length is a chunked stream"),
            };
            self.check_unchanged()?;
            let body = self.body(offset, end).await?;
            let end = offset + body.len();
            if body.is_empty() {
                // A stream that ended exactly at the server's offset.
                break;
            }
            // A deferred length goes with the first append after the end was read.
            let length = if length_sent { None } else { self.len() };
            let appended = append_checked(
                &self.client,
                &url,
                offset,
                body.observe(meter.observer(offset)),
                length,
            )
            .await?;
            let Some(appended) = appended else {
                offset = resync(&self.client, &url, offset, end).await?;
                meter.acknowledged(offset);
                continue;
            };
            offset = appended.offset;
            length_sent |= length.is_some();
            meter.acknowledged(offset);
            tracing::debug!(offset, "append accepted");
            if Some(offset) != self.len() {
                self.remember(&url, offset, appended.expires, false).await?;
            }
        }
        let total = self.len();
        if let Some(total) = total
            && offset == total
            && !length_sent
        {
            // The end of a deferred-length stream was read only after its last byte was
            // sent: tell the server the length with an empty append.
            append_checked(&self.client, &url, offset, Body::empty(), Some(total)).await?;
        }
        self.progress.send_modify(|p| p.total = total);
        // The last bytes went while the file may have changed: check before saying so.
        self.check_unchanged()?;
        let complete = total == Some(offset);
        if complete {
            self.finished().await?;
        }
        Ok(Uploaded {
            url,
            offset,
            length: total,
            complete,
            resumed,
            parts: 1,
        })
    }
}
