//! The upload driver: [`Uploader`] decides the next tus operation and owns the source.
//!
//! - `source`: what is uploaded, read at any offset or a chunk at a time;
//! - `creation`: the endpoint's capabilities and the creation `POST`;
//! - `append`: one upload in `PATCH`es, re-synced after a rejected append;
//! - `parallel`: partial uploads sent at once, then concatenated;
//! - `resume`: the URL store's records, checked, written and removed;
//! - `progress`: what the caller sees.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use reqwest::Url;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::watch;

use crate::Client;
use crate::core::body::{FileSource, Observer, RandomAccess};
use crate::core::protocol::{self, Metadata};
use crate::core::store::{SourceInfo, UploadRecord, UrlStore};
use crate::endpoint::{MIN_CHUNK_SIZE, Resume, blocking};

/// The most bytes sent in a creation `POST` (creation-with-upload): a lost `POST`
/// leaves no URL to resume, so it carries at most this much; `PATCH` sends the rest.
pub const MAX_CREATION_BODY: u64 = 8 << 20;
use crate::core::{Body, Capabilities, Error, Result};

mod append;
mod creation;
mod parallel;
mod progress;
mod resume;
mod source;
mod special;

use append::*;
use progress::Meter;
use resume::*;
use source::*;

pub use progress::{AbortHandle, Progress, Uploaded};
pub use source::{DEFAULT_STREAM_CHUNK, MAX_STREAM_CHUNK, Source};

/// One upload, in the manner of tuspy's `Uploader`: created by
/// [`Client::uploader`], configured, then driven by [`Uploader::upload`] (to the end) or
/// [`Uploader::upload_until`] (to a byte, after which `upload` continues).
///
/// By default the rest of the source goes in ONE streaming `PATCH` on a kept-alive
/// connection, as the protocol recommends; [`Uploader::chunk_size`] sends several.
/// What the server advertises is used: the first bytes ride in the creation `POST`
/// (creation-with-upload), a stream of unknown length defers its length, and
/// [`Uploader::parallel`] splits a file into partial uploads (concatenation). A 413
/// answer halves the chunk size for the endpoint and the upload goes on.
///
/// ```no_run
/// # async fn run() -> Result<(), tusflow::Error> {
/// let client = tusflow::Client::new("http://127.0.0.1:1080/files/")?;
/// let mut up = client.uploader("big.iso").metadata("owner", "ops")?;
/// let mut progress = up.progress();
/// tokio::spawn(async move {
///     while progress.changed().await.is_ok() {
///         let p = *progress.borrow();
///         eprintln!("{} / {:?}", p.acknowledged, p.total);
///     }
/// });
/// let half = up.upload_until(1 << 30).await?;
/// assert!(!half.complete);
/// let done = up.upload().await?;
/// assert!(done.complete);
/// # Ok(()) }
/// ```
pub struct Uploader {
    client: Client,
    source: Source,
    opened: Option<Opened>,
    metadata: Metadata,
    chunk_size: Option<u64>,
    parallel: usize,
    url: Option<Url>,
    /// The partial uploads of a parallel upload, once created.
    partials: Vec<Url>,
    /// The URL this upload's record is stored under.
    record_url: Option<String>,
    /// True once a record of this upload may be in the store.
    stored: bool,
    /// A file's size and modification time when it was opened: an upload stops if
    /// they change.
    stamp: Option<(u64, Option<std::time::SystemTime>)>,
    progress: Arc<watch::Sender<Progress>>,
    abort: Arc<watch::Sender<Option<bool>>>,
    resume: Resume,
    /// The source's fingerprint, once opened (None: not stored).
    fingerprint: Option<String>,
    /// The store's records of the source, looked up when it was opened, until used.
    found: Option<Vec<UploadRecord>>,
    /// The record of this upload as last written or resumed.
    written: Option<UploadRecord>,
}

impl fmt::Debug for Uploader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Uploader")
            .field("source", &self.source)
            .field("metadata", &self.metadata)
            .field("chunk_size", &self.chunk_size)
            .field("parallel", &self.parallel)
            .field("url", &self.url.as_ref().map(protocol::redact_url))
            .finish_non_exhaustive()
    }
}

impl Uploader {
    pub(crate) fn new(client: Client, source: Source) -> Self {
        Uploader {
            source,
            opened: None,
            metadata: Metadata::new(),
            chunk_size: None,
            parallel: 1,
            url: None,
            partials: Vec::new(),
            record_url: None,
            stored: false,
            stamp: None,
            progress: Arc::new(watch::channel(Progress::default()).0),
            abort: Arc::new(watch::channel(None).0),
            resume: client.resume().clone(),
            fingerprint: None,
            found: None,
            written: None,
            client,
        }
    }

    /// Remember this upload in `store` (instead of the client's store).
    pub fn store(mut self, store: Arc<dyn UrlStore>) -> Self {
        self.resume.store = Some(store);
        if self.resume.fingerprinter.is_none() {
            self.resume.fingerprinter = self.client.resume().fingerprinter.clone();
        }
        self
    }

    /// Recognise this source with `f` (instead of the client's fingerprinter).
    pub fn fingerprinter(mut self, f: Arc<dyn crate::core::store::Fingerprinter>) -> Self {
        self.resume.fingerprinter = Some(f);
        self
    }

    /// Keep this upload's record when it completes (instead of the client's choice):
    /// a shared batch's ledger entry keeps its URL, whoever finishes the upload.
    pub(crate) fn keep_record(mut self) -> Self {
        self.resume.keep_on_success = true;
        self
    }

    /// Do not look up or remember this upload in a store.
    pub fn no_store(mut self) -> Self {
        self.resume.store = None;
        self
    }

    /// The source's fingerprint (after the upload started, or
    /// [`Client::find_previous_uploads`]).
    pub fn fingerprint(&self) -> Option<&str> {
        self.fingerprint.as_deref()
    }

    /// Forget every stored upload of this source, so the next upload starts anew.
    pub async fn forget_previous_uploads(&mut self) -> Result<()> {
        let previous = self.previous_uploads().await?;
        self.found = None;
        for r in previous {
            if let Some(store) = self.resume.store.clone() {
                self.forget(&store, &r.fingerprint, &r.url).await?;
            }
        }
        Ok(())
    }

    /// The stored uploads of this source, most recent first.
    pub async fn previous_uploads(&mut self) -> Result<Vec<UploadRecord>> {
        self.open().await?;
        if let Some(found) = &self.found {
            return Ok(found.clone());
        }
        match (&self.resume.store, &self.fingerprint) {
            (Some(store), Some(fp)) => {
                let (store, fp) = (Arc::clone(store), fp.clone());
                blocking(move || store.find(&fp)).await
            }
            _ => Ok(Vec::new()),
        }
    }

    /// Add a metadata pair. For a path, `filename` and `filetype` are added unless set.
    pub fn metadata(mut self, key: &str, value: impl AsRef<[u8]>) -> Result<Self> {
        self.metadata.insert(key, value)?;
        Ok(self)
    }

    /// Replace all metadata.
    pub fn with_metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = metadata;
        self
    }

    /// Send at most `size` bytes per `PATCH` (default: the whole rest in one). A size of
    /// 0 means the default. A stream holds one chunk in memory, so for streams the
    /// chunk is at most [`MAX_STREAM_CHUNK`].
    pub fn chunk_size(mut self, size: u64) -> Self {
        self.chunk_size = (size > 0).then_some(size);
        self
    }

    /// Split the source into `n` partial uploads sent at once over the connection
    /// pool, then joined by a final upload that carries the metadata (tus-js-client's
    /// `parallelUploads`; the concatenation extension). A server without
    /// concatenation gets one upload, with a warning. Files and bytes only, not
    /// streams; not with [`Uploader::url`] or [`Uploader::upload_until`].
    pub fn parallel(mut self, n: usize) -> Self {
        self.parallel = n.max(1);
        self
    }

    /// Continue the existing upload at `url` instead of creating one (tuspy's
    /// `Uploader(url=...)`).
    pub fn url(mut self, url: Url) -> Self {
        self.url = Some(url);
        self
    }

    /// The upload URL, once created or when given.
    pub fn upload_url(&self) -> Option<&Url> {
        self.url.as_ref()
    }

    /// The partial uploads of a parallel upload, once created.
    pub fn partial_urls(&self) -> &[Url] {
        &self.partials
    }

    /// The metadata that will be (or was) sent on creation.
    pub fn metadata_ref(&self) -> &Metadata {
        &self.metadata
    }

    /// A receiver of progress. It holds only the latest value, so a receiver that is
    /// never read never slows the upload.
    pub fn progress(&self) -> watch::Receiver<Progress> {
        self.progress.subscribe()
    }

    /// A handle that aborts this upload from elsewhere, with or without terminating
    /// it on the server.
    pub fn abort_handle(&self) -> AbortHandle {
        AbortHandle {
            state: Arc::clone(&self.abort),
        }
    }

    /// Upload to the end.
    pub async fn upload(&mut self) -> Result<Uploaded> {
        self.run(None).await
    }

    /// Upload until the server has at least `stop_at` bytes (tuspy's `stop_at`); a later
    /// [`Uploader::upload`] continues from there.
    pub async fn upload_until(&mut self, stop_at: u64) -> Result<Uploaded> {
        self.run(Some(stop_at)).await
    }

    /// Terminate this upload on the server: its URL and its partial uploads; its
    /// record goes. An upload the server no longer has counts as terminated.
    pub async fn terminate(&mut self) -> Result<()> {
        let mut urls: Vec<Url> = self.url.iter().cloned().collect();
        urls.extend(self.partials.iter().cloned());
        let mut first_error = None;
        for url in &urls {
            match self.client.terminate(url).await {
                Ok(()) => {}
                Err(e) if e.is_gone() => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if let (Some(store), Some(fp), Some(key)) = (
            self.resume.store.clone(),
            self.fingerprint.clone(),
            self.record_url.clone(),
        ) {
            self.forget(&store, &fp, &key).await?;
        }
        first_error.map_or(Ok(()), Err)
    }

    async fn run(&mut self, stop_at: Option<u64>) -> Result<Uploaded> {
        use tracing::Instrument as _;
        let span = tracing::info_span!(
            "tus.upload",
            source = ?self.source,
            url = tracing::field::Empty,
            stop_at
        );
        if let Some(u) = &self.url {
            span.record("url", protocol::redact_url(u));
        }
        let mut aborted = self.abort.subscribe();
        let result = tokio::select! {
            biased;
            _ = aborted.wait_for(Option::is_some) => Err(Error::cancelled(false)),
            r = self.drive(stop_at, span.clone()).instrument(span.clone()) => r,
        };
        if let Err(e) = &result
            && e.is_upload_complete()
            && let (Some(store), Some(fp), Some(key)) = (
                self.resume.store.clone(),
                self.fingerprint.clone(),
                self.record_url.clone(),
            )
        {
            // Every byte arrived and the target resource failed: no later run can
            // resume it, nor should it report it complete.
            if let Err(f) = self.forget(&store, &fp, &key).await {
                tracing::debug!(error = %f, "forgetting the failed upload's record failed");
            }
        }
        let terminate = *self.abort.borrow() == Some(true);
        let result = match result {
            Err(e) if e.is_cancelled() && terminate => {
                match self.terminate().instrument(span.clone()).await {
                    Ok(()) => Err(Error::cancelled(true)),
                    Err(t) => {
                        tracing::warn!(error = %t, "terminating the aborted upload failed");
                        Err(e)
                    }
                }
            }
            other => other,
        };
        match &result {
            Ok(done) => span.in_scope(|| {
                tracing::info!(
                    offset = done.offset,
                    complete = done.complete,
                    resumed = done.resumed,
                    parts = done.parts,
                    "upload done"
                )
            }),
            // The caller has the error; the log says it from -v up.
            Err(e) => span.in_scope(|| tracing::info!(error = %e, "upload failed")),
        }
        result
    }
}

impl Client {
    /// An uploader for `source` (a path, `Bytes`, or a [`Source`]).
    pub fn uploader(&self, source: impl Into<Source>) -> Uploader {
        Uploader::new(self.clone(), source.into())
    }

    /// The stored uploads of `source` that could be continued, most recent first
    /// (tus-js-client's `findPreviousUploads`). Empty without a store, or for a source
    /// without a fingerprint.
    pub async fn find_previous_uploads(
        &self,
        source: impl Into<Source>,
    ) -> Result<Vec<UploadRecord>> {
        let mut up = self.uploader(source);
        up.previous_uploads().await
    }
}
