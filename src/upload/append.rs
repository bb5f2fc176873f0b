//! Appends: one upload driven to its end (or to `stop_at`) in `PATCH`es, a 413
//! shrinking the chunk size, an offset the server moved re-synced with `HEAD`.

use super::*;

/// Why an append needs the server's offset by `HEAD`.
enum Resync {
    /// A 413 shrank the client's chunk limit.
    Shrunk,
    /// The server acknowledged fewer bytes than were sent.
    Short,
}

/// How many re-syncs in a row may find that the server took none of an append.
const MAX_STUCK: u32 = 3;

/// One append of `body` at `offset`, and where the server is after it: its
/// acknowledgement, or, after a 413 (which shrinks the chunk limit) or an
/// acknowledgement of fewer bytes than were sent, its offset by `HEAD`. `total` is the
/// upload's length when known (a re-sync checks it); `stuck` counts the re-syncs in a
/// row that found the server took nothing, and ends the loop at [`MAX_STUCK`]. The
/// `bool` is true when the server now knows the upload's length (a declared one was
/// taken; a re-sync saw `Upload-Length`), so it is not declared again.
pub(super) async fn append_once(
    client: &Client,
    url: &Url,
    offset: u64,
    body: Body,
    length: Option<u64>,
    total: Option<u64>,
    stuck: &mut u32,
) -> Result<(crate::Appended, bool)> {
    let end = offset + body.len();
    let shown = || protocol::redact_url(url);
    let why = match client.append_to(url, offset, body, length, total).await {
        Ok(a) if a.offset == end => {
            *stuck = 0;
            return Ok((a, length.is_some()));
        }
        Ok(a) if a.offset > end => {
            return Err(Error::offset_mismatch(end, a.offset).with_url(shown()));
        }
        // The draft lets a server's offset go back ("backtracking of a reasonable
        // length"): continue from there.
        Ok(a) if a.offset < offset && client.protocol().is_ietf() => {
            tracing::debug!(
                acknowledged = a.offset,
                sent_from = offset,
                "the server's offset went back: sending from there"
            );
            *stuck += 1;
            if *stuck >= MAX_STUCK {
                return Err(Error::protocol(
                    "Upload-Offset",
                    format!(
                        "the server's offset went back to {} {MAX_STUCK} times in a row",
                        a.offset
                    ),
                )
                .with_url(shown()));
            }
            return Ok((a, length.is_some()));
        }
        Ok(a) if a.offset < offset => {
            return Err(Error::protocol(
                "Upload-Offset",
                format!(
                    "the server's offset went back from {offset} to {} in answer to an append",
                    a.offset
                ),
            )
            .with_operation(crate::core::Operation::Append)
            .with_url(shown()));
        }
        Ok(a) => {
            tracing::debug!(
                acknowledged = a.offset,
                sent_to = end,
                "the server took fewer bytes than were sent: asking it where it is"
            );
            Resync::Short
        }
        Err(e) if e.status() == Some(http::StatusCode::PAYLOAD_TOO_LARGE) => {
            match client.learned().shrink_chunk_limit(end - offset) {
                Some(_) => Resync::Shrunk,
                None => return Err(e),
            }
        }
        Err(e) => return Err(e),
    };
    let (now, length_known) = resync(client, url, offset, end, total).await?;
    if now > offset {
        *stuck = 0;
    } else if matches!(why, Resync::Short) {
        *stuck += 1;
        if *stuck >= MAX_STUCK {
            return Err(Error::protocol(
                "Upload-Offset",
                format!(
                    "the server took none of the {} bytes sent at offset {offset}, {MAX_STUCK} times in a row",
                    end - offset
                ),
            )
            .with_operation(crate::core::Operation::Append)
            .with_url(shown()));
        }
    }
    Ok((
        crate::Appended {
            offset: now,
            expires: None,
            complete: false,
            answer: None,
        },
        length_known,
    ))
}

/// After a rejected or short append of `[from, to)`: where the server is now, and
/// whether it knows the upload's length (checked against `total`).
pub(super) async fn resync(
    client: &Client,
    url: &Url,
    from: u64,
    to: u64,
    total: Option<u64>,
) -> Result<(u64, bool)> {
    let st = client.status(url).await?;
    if let (Some(theirs), Some(ours)) = (st.length, total)
        && theirs != ours
    {
        return Err(Error::protocol(
            "Upload-Length",
            format!(
                "the upload is {theirs} bytes long on the server but {ours} bytes here: it is not this upload (another at the same URL?)"
            ),
        )
        .with_operation(crate::core::Operation::Offset)
        .with_url(protocol::redact_url(url)));
    }
    let offset = st.offset;
    // (The draft allows an offset that went back.)
    if (offset < from && !client.protocol().is_ietf()) || offset > to {
        return Err(Error::protocol(
            "Upload-Offset",
            format!("the server's offset moved to {offset} after a rejected append of bytes {from}..{to}"),
        )
        .with_url(protocol::redact_url(url)));
    }
    Ok((offset, st.length.is_some()))
}

/// The largest body to send: the chunk size and the endpoint's 413 limit, and in IETF
/// mode the server's `max-append-size` and `min-append-size`.
pub(super) fn step(client: &Client, chunk_size: Option<u64>) -> Option<u64> {
    let c = match (chunk_size, client.chunk_limit()) {
        (Some(c), Some(l)) => Some(c.min(l)),
        (c, l) => c.or(l),
    };
    if client.protocol().is_ietf() {
        return client.limits().append_window(c);
    }
    c
}

impl Uploader {
    pub(super) async fn drive(
        &mut self,
        stop_at: Option<u64>,
        span: tracing::Span,
    ) -> Result<Uploaded> {
        self.open().await?;
        let ietf = self.client.protocol().is_ietf();
        // IETF mode: the server said the upload is complete; and the target
        // resource's answer to the append that completed it.
        let mut server_complete = false;
        let mut answer = None;
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
                if st.complete == Some(true) && Some(st.offset) != self.len() {
                    return Err(Error::protocol(
                        "Upload-Complete",
                        format!(
                            "the upload at {shown} was completed with {} bytes, not this source's",
                            st.offset
                        ),
                    ));
                }
                tracing::debug!(offset = st.offset, "resuming upload");
                self.record_url.get_or_insert_with(|| url.to_string());
                self.stored = true;
                server_complete = st.complete == Some(true);
                (url, st.offset, true, st.length.is_some())
            }
            None => match self.resume_stored().await? {
                Some(Stored::Single(url, st)) => {
                    server_complete = st.complete == Some(true);
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
        let mut stuck = 0;
        loop {
            let goal = match (stop_at, self.len()) {
                (Some(s), Some(l)) => Some(s.min(l)),
                (s, l) => s.or(l),
            };
            if goal.is_some_and(|g| offset >= g) {
                break;
            }
            let mut end = match (step(&self.client, chunk_size), goal) {
                (Some(c), Some(g)) => offset.saturating_add(c).min(g),
                (Some(c), None) => offset.saturating_add(c),
                (None, Some(g)) => g,
                (None, None) => unreachable!("a source of unknown length is a chunked stream"),
            };
            // The draft's min-append-size: an append that does not end the upload is
            // never smaller (one that stops at `stop_at` goes a little past it).
            if ietf
                && let Some(min) = self.client.limits().min_append_size
                && end - offset < min
                && self.len() != Some(end)
            {
                end = self.len().map_or(offset + min, |l| (offset + min).min(l));
            }
            self.check_unchanged()?;
            let body = self.body(offset, end).await?;
            if body.is_empty() {
                // A stream that ended exactly at the server's offset.
                break;
            }
            // A deferred length goes with the first append after the end was read.
            let length = if length_sent { None } else { self.len() };
            let (appended, length_known) = append_once(
                &self.client,
                &url,
                offset,
                body.observe(meter.observer(offset)),
                length,
                self.len(),
                &mut stuck,
            )
            .await?;
            length_sent |= length_known;
            offset = appended.offset;
            if appended.complete {
                server_complete = true;
                answer = appended.answer;
            }
            meter.acknowledged(offset);
            tracing::debug!(offset, "append accepted");
            if Some(offset) != self.len() {
                self.remember(&url, offset, appended.expires, false).await?;
            }
        }
        let total = self.len();
        if ietf
            && let Some(total) = total
            && offset == total
            && !server_complete
        {
            // Every byte is there but the upload is not complete (a stream whose end
            // was read after its last byte went, or a completing append whose answer
            // was lost before it completed): an empty append with `?1` completes it.
            let (appended, _) = append_once(
                &self.client,
                &url,
                offset,
                Body::empty(),
                (!length_sent).then_some(total),
                Some(total),
                &mut stuck,
            )
            .await?;
            answer = appended.answer;
        } else if let Some(total) = total
            && offset == total
            && !length_sent
        {
            // The end of a deferred-length stream was read only after its last byte was
            // sent: tell the server the length with an empty append.
            append_once(
                &self.client,
                &url,
                offset,
                Body::empty(),
                Some(total),
                Some(total),
                &mut stuck,
            )
            .await?;
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
            answer,
        })
    }
}
