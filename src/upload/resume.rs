//! Resuming: the records of the URL store, found, checked against the server,
//! written as an upload goes and removed (or kept) when it ends.

use super::*;

/// A stored upload of the source that can be continued.
pub(super) enum Stored {
    Single(Url, crate::UploadStatus),
    Parallel(StoredParallel),
}

pub(super) struct StoredParallel {
    /// The record's key.
    pub(super) key: String,
    /// Each partial upload and the server's offset of it.
    pub(super) parts: Vec<(Url, u64)>,
    /// The final upload, when created early (concatenation-unfinished).
    pub(super) final_url: Option<Url>,
}

impl Uploader {
    /// A stored upload of this source that can be continued. Records that cannot be
    /// continued (expired, gone, another length or file name) are removed; a failure
    /// to ask the server (5xx, network, 423) is an error and keeps the record, never a
    /// reason to start over.
    pub(super) async fn resume_stored(&mut self) -> Result<Option<Stored>> {
        let (Some(store), Some(fp), Some(total)) = (
            self.resume.store.clone(),
            self.fingerprint.clone(),
            self.len(),
        ) else {
            return Ok(None);
        };
        // Found when the source was opened (one trip off the runtime for both).
        let records = match self.found.take() {
            Some(r) => r,
            None => {
                let (source, endpoint) = self.lookup_keys();
                let (store, fp) = (Arc::clone(&store), fp.clone());
                blocking(move || {
                    lookup(store.as_ref(), &fp, source.as_deref(), endpoint.as_deref())
                })
                .await?
            }
        };
        let now = crate::core::store::unix_now();
        let ours = self.client.protocol();
        for rec in records {
            // A record of another protocol (or interop version) is left for it.
            if let Some(theirs) = &rec.endpoint
                && crate::core::Protocol::untag_key(theirs).1 != ours
            {
                continue;
            }
            let stale = |why: &str| tracing::info!(url = %shown_url(&rec.url), why, "dropping a stored upload");
            if rec.is_expired(now) {
                stale("expired");
                self.forget(&store, &fp, &rec.url).await?;
                continue;
            }
            let found = if rec.partial_urls.is_empty() {
                self.check_single(&rec, total)
                    .await?
                    .map(|(u, st)| Stored::Single(u, st))
            } else {
                self.check_parallel(&rec, total)
                    .await?
                    .map(Stored::Parallel)
            };
            match found {
                Ok(found) => {
                    if matches!(found, Stored::Single(..)) {
                        self.written = Some(rec);
                    }
                    return Ok(Some(found));
                }
                Err(why) => {
                    stale(why);
                    self.forget(&store, &fp, &rec.url).await?;
                }
            }
        }
        Ok(None)
    }

    /// A stored single upload: its URL and status, or why it cannot be continued.
    pub(super) async fn check_single(
        &mut self,
        rec: &UploadRecord,
        total: u64,
    ) -> Result<std::result::Result<(Url, crate::UploadStatus), &'static str>> {
        let Ok(url) = crate::client::parse_http_url("stored upload URL", &rec.url) else {
            return Ok(Err("not a URL"));
        };
        let st = match self.client.status(&url).await {
            Ok(st) => st,
            Err(e) if e.is_gone() => return Ok(Err("gone from the server")),
            Err(e) => return Err(e),
        };
        let ours = self.metadata.get("filename");
        let theirs = st.metadata.as_ref().and_then(|m| m.get("filename"));
        let why = if st.length.is_some_and(|l| l != total) {
            "another length"
        } else if st.complete == Some(true) && st.offset != total {
            "completed with other bytes"
        } else if st.offset > total {
            "an offset beyond the source"
        } else if ours.is_some() && theirs.is_some() && ours != theirs {
            "another file name"
        } else {
            tracing::info!(url = %protocol::redact_url(&url), offset = st.offset, total, "resuming a stored upload");
            return Ok(Ok((url, st)));
        };
        Ok(Err(why))
    }

    /// The source's name and the endpoint's key, as records hold them.
    pub(super) fn lookup_keys(&self) -> (Option<String>, Option<String>) {
        (self.source.name(), self.endpoint_key())
    }

    /// The endpoint's key in records: without secrets, and with the IETF draft's
    /// interop version (an upload of one protocol is never continued with another).
    fn endpoint_key(&self) -> Option<String> {
        let key = protocol::endpoint_key(self.client.endpoint()?);
        Some(self.client.protocol().tag_key(key))
    }

    pub(super) async fn forget(
        &mut self,
        store: &Arc<dyn UrlStore>,
        fp: &str,
        url: &str,
    ) -> Result<()> {
        let (store, fp, url) = (Arc::clone(store), fp.to_owned(), url.to_owned());
        blocking(move || store.remove(&fp, &url).map(drop)).await
    }

    /// A record of this upload as it is now, under `key`.
    pub(super) fn record(&self, fp: &str, key: &str) -> UploadRecord {
        let mut rec = UploadRecord::new(fp, key);
        // Without its query (a token there is a secret; it is kept as a hash) or user
        // info: the same endpoint gives the same key.
        rec.endpoint = self.endpoint_key();
        rec.source = self.source.name();
        rec.length = self.len();
        rec.metadata = self.metadata.encode();
        rec
    }

    /// Store (or update) the record of this upload.
    pub(super) async fn remember(
        &mut self,
        url: &Url,
        offset: u64,
        expires: Option<std::time::SystemTime>,
        created: bool,
    ) -> Result<()> {
        let (Some(store), Some(fp)) = (self.resume.store.clone(), self.fingerprint.clone()) else {
            return Ok(());
        };
        let mut rec = self.record(&fp, url.as_str());
        let expires = unix_secs(expires);
        // What the record as written before holds that this one keeps (its creation
        // time, expiry, partial uploads): known here when this uploader wrote or
        // resumed it, else read from the store.
        let base = self.written.take().filter(|r| !created && r.url == rec.url);
        let known = base.is_some() || created;
        if let Some(old) = base {
            rec.created = old.created;
            rec.expires = old.expires;
            rec.partial_urls = old.partial_urls;
        }
        rec.offset = Some(offset);
        if expires.is_some() {
            rec.expires = expires;
        }
        if known && !created && store.queues_updates() {
            store.update(&rec)?;
        } else {
            let written = rec.clone();
            let store = Arc::clone(&store);
            rec = blocking(move || {
                let mut rec = written;
                if !known
                    && let Some(old) = store
                        .find(&rec.fingerprint)?
                        .into_iter()
                        .find(|r| r.url == rec.url)
                {
                    rec.created = old.created;
                    rec.partial_urls = old.partial_urls;
                    if rec.expires.is_none() {
                        rec.expires = old.expires;
                    }
                }
                // The first record of an upload is what a crash must not lose; later
                // ones only move the offset, which the server knows.
                if created {
                    store.add(&rec)?;
                } else {
                    store.update(&rec)?;
                }
                Ok(rec)
            })
            .await?;
        }
        self.written = Some(rec);
        self.stored = true;
        Ok(())
    }

    /// The upload is complete: drop its record, unless records are kept.
    pub(super) async fn finished(&mut self) -> Result<()> {
        let (Some(store), Some(fp), Some(key)) = (
            self.resume.store.clone(),
            self.fingerprint.clone(),
            self.record_url.clone(),
        ) else {
            return Ok(());
        };
        let Some(url) = self.url.clone() else {
            return Ok(());
        };
        if self.resume.keep_on_success {
            let moved = key != url.as_str();
            if moved && self.stored {
                self.forget(&store, &fp, &key).await?;
            }
            let total = self.len();
            return self
                .remember(&url, total.unwrap_or_default(), None, moved || !self.stored)
                .await;
        }
        if !self.stored {
            return Ok(());
        }
        self.stored = false;
        self.forget(&store, &fp, &key).await
    }
}

/// The records of `fp` in `store`, after dropping those of an earlier version of the
/// same source (the same path to the same endpoint under another fingerprint: the
/// file changed since, and that upload can never be continued).
pub(super) fn lookup(
    store: &dyn UrlStore,
    fp: &str,
    source: Option<&str>,
    endpoint: Option<&str>,
) -> Result<Vec<UploadRecord>> {
    if let Some(source) = source {
        for r in store.find_by_source(endpoint, source)? {
            if r.fingerprint != fp {
                tracing::info!(url = %shown_url(&r.url), "dropping the stored upload of an earlier version of the file");
                store.remove(&r.fingerprint, &r.url)?;
            }
        }
    }
    store.find(fp)
}

pub(super) fn unix_secs(t: Option<std::time::SystemTime>) -> Option<u64> {
    t.and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
}

/// A stored URL for the log: without its query or user info.
fn shown_url(url: &str) -> String {
    Url::parse(url).map_or_else(|_| "(not a URL)".to_owned(), |u| protocol::redact_url(&u))
}
