//! Parallel uploads (concatenation): the file split into partial uploads sent at
//! once, each resumable, joined by a final upload.

use super::*;

/// Split `total` bytes into `n` ranges of nearly equal size.
pub(super) fn split(total: u64, n: usize) -> Vec<(u64, u64)> {
    let n = n as u64;
    (0..n)
        .map(|i| (total * i / n, total * (i + 1) / n))
        .collect()
}

/// Send `[offset, len)` of a partial upload whose byte 0 is `base` in the source.
#[allow(clippy::too_many_arguments)]
pub(super) async fn send_part(
    client: Client,
    url: Url,
    source: Random,
    base: u64,
    len: u64,
    mut offset: u64,
    chunk_size: Option<u64>,
    meter: Arc<Meter>,
) -> Result<()> {
    let mut stuck = 0;
    while offset < len {
        let end = step(&client, chunk_size).map_or(len, |c| (offset + c).min(len));
        let body = source
            .body(base + offset, base + end)
            .observe(meter.observer(offset));
        offset = append_once(&client, &url, offset, body, None, Some(len), &mut stuck)
            .await?
            .0
            .offset;
        meter.acknowledged(offset);
    }
    Ok(())
}

impl Uploader {
    /// Whether this upload can go in parts: a file or bytes, large enough, to a server
    /// with concatenation (else a warning, and one upload).
    pub(super) async fn parallel_possible(&mut self) -> Result<bool> {
        let (Some(Opened::Random(..)), Some(total)) = (&self.opened, self.len()) else {
            tracing::warn!("a stream cannot be split into parallel uploads: uploading in one part");
            return Ok(false);
        };
        if total < 2 * MIN_CHUNK_SIZE {
            return Ok(false);
        }
        if self.client.protocol().is_ietf() {
            tracing::warn!(
                "the IETF draft has no parallel uploads of one file: uploading in one part instead of {}",
                self.parallel
            );
            return Ok(false);
        }
        let caps = self.capabilities().await?;
        if caps.as_ref().is_some_and(|c| c.supports("concatenation")) {
            return Ok(true);
        }
        tracing::warn!(
            "the server at {} does not support concatenation: uploading in one part instead of {}",
            self.client
                .endpoint()
                .map(protocol::redact_url)
                .unwrap_or_default(),
            self.parallel
        );
        Ok(false)
    }

    /// A parallel upload: partial uploads sent at once, then the final upload.
    pub(super) async fn drive_parallel(
        &mut self,
        stored: Option<StoredParallel>,
        span: &tracing::Span,
    ) -> Result<Uploaded> {
        let Some(Opened::Random(source, total)) = &self.opened else {
            unreachable!("parallel uploads are of files and bytes");
        };
        let (source, total) = (source.clone(), *total);
        let resumed = stored.is_some();
        let (parts, mut final_url) = match stored {
            Some(s) => {
                self.record_url = Some(s.key);
                self.stored = true;
                (s.parts, s.final_url)
            }
            None => {
                let n = self.parallel.min((total / MIN_CHUNK_SIZE) as usize).max(1);
                let mut parts = Vec::with_capacity(n);
                let mut expires = None;
                for (start, end) in split(total, n) {
                    let created = self
                        .client
                        .create_partial(end - start, Body::empty())
                        .await?;
                    expires = expires.or(created.expires);
                    parts.push((created.url, 0));
                }
                let urls: Vec<Url> = parts.iter().map(|(u, _)| u.clone()).collect();
                let caps = self.capabilities().await?;
                let final_url = if caps.is_some_and(|c| c.supports("concatenation-unfinished")) {
                    Some(self.client.create_final(&urls, &self.metadata).await?.url)
                } else {
                    None
                };
                let key = final_url.as_ref().unwrap_or(&urls[0]).to_string();
                self.record_url = Some(key.clone());
                self.remember_parallel(&key, &urls, total, expires).await?;
                (parts, final_url)
            }
        };
        self.partials = parts.iter().map(|(u, _)| u.clone()).collect();
        if let Some(u) = &final_url {
            span.record("url", protocol::redact_url(u));
            self.url = Some(u.clone());
        }
        tracing::info!(parts = parts.len(), resumed, "parallel upload");
        self.progress.send_modify(|p| {
            *p = Progress {
                sent: 0,
                acknowledged: 0,
                total: Some(total),
            }
        });
        let ranges = split(total, parts.len());
        let (client, progress, chunk_size) = (
            self.client.clone(),
            Arc::clone(&self.progress),
            self.chunk_size,
        );
        let sends = parts
            .iter()
            .zip(&ranges)
            .map(|((url, offset), (start, end))| {
                let meter = Meter::new(&progress, 0);
                meter.acknowledged(*offset);
                send_part(
                    client.clone(),
                    url.clone(),
                    source.clone(),
                    *start,
                    end - start,
                    *offset,
                    chunk_size,
                    meter,
                )
            });
        futures_util::future::try_join_all(sends).await?;
        // No final upload from parts of a file that changed meanwhile.
        self.check_unchanged()?;
        let final_url = match final_url.take() {
            Some(u) => u,
            None => {
                let urls = self.partials.clone();
                let created = self.client.create_final(&urls, &self.metadata).await?;
                span.record("url", protocol::redact_url(&created.url));
                created.url
            }
        };
        self.url = Some(final_url.clone());
        let st = self.client.status(&final_url).await?;
        if st.offset != total || st.length.is_some_and(|l| l != total) {
            return Err(Error::protocol(
                "Upload-Offset",
                format!(
                    "the final upload has {} of {} bytes after its {} parts were complete",
                    st.offset,
                    total,
                    parts.len()
                ),
            )
            .with_url(protocol::redact_url(&final_url)));
        }
        self.finished().await?;
        Ok(Uploaded {
            url: final_url,
            offset: total,
            length: Some(total),
            complete: true,
            resumed,
            parts: parts.len(),
            answer: None,
        })
    }

    /// A stored parallel upload: each part's URL and offset, or why it cannot be
    /// continued.
    pub(super) async fn check_parallel(
        &mut self,
        rec: &UploadRecord,
        total: u64,
    ) -> Result<std::result::Result<StoredParallel, &'static str>> {
        if rec.length != Some(total) {
            return Ok(Err("another length"));
        }
        let ranges = split(total, rec.partial_urls.len());
        let mut parts = Vec::with_capacity(ranges.len());
        for (text, (start, end)) in rec.partial_urls.iter().zip(ranges) {
            let Ok(url) = crate::client::parse_http_url("stored partial upload URL", text) else {
                return Ok(Err("not a URL"));
            };
            let st = match self.client.status(&url).await {
                Ok(st) => st,
                Err(e) if e.is_gone() => {
                    return Ok(Err("a partial upload is gone from the server"));
                }
                Err(e) => return Err(e),
            };
            if st.length.is_some_and(|l| l != end - start) || st.offset > end - start {
                return Ok(Err("a partial upload of another length"));
            }
            parts.push((url, st.offset));
        }
        let final_url = if rec.partial_urls.contains(&rec.url) {
            None
        } else {
            match crate::client::parse_http_url("stored upload URL", &rec.url) {
                Ok(u) => Some(u),
                Err(_) => return Ok(Err("not a URL")),
            }
        };
        tracing::info!(parts = parts.len(), "resuming a stored parallel upload");
        Ok(Ok(StoredParallel {
            key: rec.url.clone(),
            parts,
            final_url,
        }))
    }

    /// Store the record of a parallel upload under `key`.
    pub(super) async fn remember_parallel(
        &mut self,
        key: &str,
        partials: &[Url],
        total: u64,
        expires: Option<std::time::SystemTime>,
    ) -> Result<()> {
        let (Some(store), Some(fp)) = (self.resume.store.clone(), self.fingerprint.clone()) else {
            return Ok(());
        };
        let mut rec = self.record(&fp, key);
        rec.length = Some(total);
        rec.offset = Some(0);
        rec.expires = unix_secs(expires);
        rec.partial_urls = partials.iter().map(|u| u.to_string()).collect();
        blocking(move || store.add(&rec)).await?;
        self.stored = true;
        Ok(())
    }
}
