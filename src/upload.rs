//! The upload driver: [`Uploader`] decides the next tus operation and owns the source.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use reqwest::Url;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::watch;

use crate::Client;
use crate::client::Resume;
use crate::core::body::{FileSource, Observer, RandomAccess};
use crate::core::protocol::{self, Metadata};
use crate::core::store::{SourceInfo, UploadRecord, UrlStore};
use crate::core::{Body, Error, Result};

/// How much of a stream source is buffered per `PATCH` when no chunk size is set.
pub const DEFAULT_STREAM_CHUNK: u64 = 8 << 20;

/// What to upload.
pub struct Source {
    kind: SourceKind,
}

enum SourceKind {
    Path(PathBuf),
    Bytes(Bytes),
    Reader {
        reader: Box<dyn AsyncRead + Send + Unpin>,
        len: u64,
        /// How many bytes have been read from it so far.
        pos: u64,
    },
}

impl Source {
    /// A file; it is read in blocks with positioned reads, never whole.
    pub fn path(path: impl Into<PathBuf>) -> Self {
        Source {
            kind: SourceKind::Path(path.into()),
        }
    }

    /// Bytes in memory.
    pub fn bytes(bytes: impl Into<Bytes>) -> Self {
        Source {
            kind: SourceKind::Bytes(bytes.into()),
        }
    }

    /// A stream of `len` bytes that can be read only once (a pipe, a socket). It is
    /// buffered one chunk at a time (the chunk size, or [`DEFAULT_STREAM_CHUNK`]), so a
    /// failed chunk can be sent again.
    pub fn reader(reader: impl AsyncRead + Send + Unpin + 'static, len: u64) -> Self {
        Source {
            kind: SourceKind::Reader {
                reader: Box::new(reader),
                len,
                pos: 0,
            },
        }
    }
}

impl Source {
    /// The path, for people and for stored records.
    fn name(&self) -> Option<String> {
        match &self.kind {
            SourceKind::Path(p) => Some(p.display().to_string()),
            _ => None,
        }
    }
}

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            SourceKind::Path(p) => write!(f, "Source::Path({})", p.display()),
            SourceKind::Bytes(b) => write!(f, "Source::Bytes({} bytes)", b.len()),
            SourceKind::Reader { len, .. } => write!(f, "Source::Reader({len} bytes)"),
        }
    }
}

impl From<PathBuf> for Source {
    fn from(p: PathBuf) -> Self {
        Source::path(p)
    }
}
impl From<&PathBuf> for Source {
    fn from(p: &PathBuf) -> Self {
        Source::path(p.clone())
    }
}
impl From<&Path> for Source {
    fn from(p: &Path) -> Self {
        Source::path(p)
    }
}
impl From<&str> for Source {
    /// A path.
    fn from(p: &str) -> Self {
        Source::path(p)
    }
}
impl From<String> for Source {
    /// A path.
    fn from(p: String) -> Self {
        Source::path(p)
    }
}
impl From<Bytes> for Source {
    fn from(b: Bytes) -> Self {
        Source::bytes(b)
    }
}
impl From<Vec<u8>> for Source {
    fn from(b: Vec<u8>) -> Self {
        Source::bytes(b)
    }
}

/// Where an upload stands. `sent` runs ahead of `acknowledged` while a `PATCH` is in
/// flight.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Progress {
    /// Bytes of the source handed to the transport (the position reached).
    pub sent: u64,
    /// Bytes the server has confirmed (its `Upload-Offset`).
    pub acknowledged: u64,
    /// The size of the source.
    pub total: u64,
}

/// The result of [`Uploader::upload`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Uploaded {
    /// The upload URL.
    pub url: Url,
    /// The server's offset at the end.
    pub offset: u64,
    /// The size of the source.
    pub length: u64,
    /// True when the server has every byte.
    pub complete: bool,
    /// True when an existing upload was continued rather than a new one created.
    pub resumed: bool,
}

/// One upload, in the manner of tuspy's `Uploader`: created by
/// [`Client::uploader`], configured, then driven by [`Uploader::upload`] (to the end) or
/// [`Uploader::upload_until`] (to a byte, after which `upload` continues).
///
/// By default the rest of the source goes in ONE streaming `PATCH` on a kept-alive
/// connection, as the protocol recommends; [`Uploader::chunk_size`] sends several.
///
/// ```no_run
/// # async fn run() -> Result<(), tusflow::Error> {
/// let client = tusflow::Client::new("http://127.0.0.1:1080/files/")?;
/// let mut up = client.uploader("big.iso").metadata("owner", "ops")?;
/// let mut progress = up.progress();
/// tokio::spawn(async move {
///     while progress.changed().await.is_ok() {
///         let p = *progress.borrow();
///         eprintln!("{} / {}", p.acknowledged, p.total);
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
    url: Option<Url>,
    progress: Arc<watch::Sender<Progress>>,
    resume: Resume,
    /// The source's fingerprint, once opened (None: not stored).
    fingerprint: Option<String>,
}

enum Opened {
    File(Arc<FileSource>, u64),
    Memory(Bytes),
    Stream(u64),
}

impl Opened {
    fn len(&self) -> u64 {
        match self {
            Opened::File(_, n) | Opened::Stream(n) => *n,
            Opened::Memory(b) => b.len() as u64,
        }
    }
}

impl fmt::Debug for Uploader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Uploader")
            .field("source", &self.source)
            .field("metadata", &self.metadata)
            .field("chunk_size", &self.chunk_size)
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
            url: None,
            progress: Arc::new(watch::channel(Progress::default()).0),
            resume: client.resume().clone(),
            fingerprint: None,
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
        for r in self.previous_uploads().await? {
            if let Some(store) = self.resume.store.clone() {
                self.forget(&store, &r.fingerprint, &r.url).await?;
            }
        }
        Ok(())
    }

    /// The stored uploads of this source, most recent first.
    pub async fn previous_uploads(&mut self) -> Result<Vec<UploadRecord>> {
        self.open().await?;
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
    /// 0 means the default.
    pub fn chunk_size(mut self, size: u64) -> Self {
        self.chunk_size = (size > 0).then_some(size);
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

    /// The metadata that will be (or was) sent on creation.
    pub fn metadata_ref(&self) -> &Metadata {
        &self.metadata
    }

    /// A receiver of progress. It holds only the latest value, so a receiver that is
    /// never read never slows the upload.
    pub fn progress(&self) -> watch::Receiver<Progress> {
        self.progress.subscribe()
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

    /// Open the source once: its length and, for a path, its default metadata.
    async fn open(&mut self) -> Result<u64> {
        if let Some(o) = &self.opened {
            return Ok(o.len());
        }
        let opened = match &self.source.kind {
            SourceKind::Path(path) => {
                let p = path.clone();
                let file = tokio::task::spawn_blocking(move || FileSource::open(p))
                    .await
                    .map_err(|e| Error::io(Some(path), std::io::Error::other(e)))??;
                let len = file.size()?;
                if !self.metadata.contains_key("filename")
                    && let Some(name) = path.file_name()
                {
                    self.metadata
                        .insert("filename", name.to_string_lossy().as_bytes())?;
                }
                if !self.metadata.contains_key("filetype") {
                    let mime = mime_guess::from_path(path)
                        .first_raw()
                        .unwrap_or("application/octet-stream");
                    self.metadata.insert("filetype", mime)?;
                }
                Opened::File(Arc::new(file), len)
            }
            SourceKind::Bytes(b) => Opened::Memory(b.clone()),
            SourceKind::Reader { len, .. } => Opened::Stream(*len),
        };
        let len = opened.len();
        if let (Some(_), Some(fp)) = (&self.resume.store, &self.resume.fingerprinter) {
            let endpoint = self.client.endpoint().map(|u| u.as_str().to_owned());
            let info = match (&opened, &self.source.kind) {
                (Opened::File(f, _), SourceKind::Path(path)) => {
                    Some(SourceInfo::file(path.clone(), Arc::clone(f), len, endpoint))
                }
                (Opened::Memory(b), _) => Some(SourceInfo::bytes(b.clone(), endpoint)),
                _ => None,
            };
            if let Some(info) = info {
                let fp = Arc::clone(fp);
                self.fingerprint = blocking(move || fp.fingerprint(&info)).await?;
            }
        }
        self.opened = Some(opened);
        Ok(len)
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
        let result = self
            .drive(stop_at, span.clone())
            .instrument(span.clone())
            .await;
        match &result {
            Ok(done) => span.in_scope(|| {
                tracing::info!(
                    offset = done.offset,
                    complete = done.complete,
                    resumed = done.resumed,
                    "upload done"
                )
            }),
            Err(e) => span.in_scope(|| tracing::warn!(error = %e, "upload failed")),
        }
        result
    }

    async fn drive(&mut self, stop_at: Option<u64>, span: tracing::Span) -> Result<Uploaded> {
        let total = self.open().await?;
        let (url, mut offset, resumed, mut send_length) = match self.url.clone() {
            Some(url) => {
                let st = self.client.status(&url).await?;
                let shown = protocol::redact_url(&url);
                if let Some(len) = st.length
                    && len != total
                {
                    return Err(Error::invalid(format!(
                        "the upload at {shown} is {len} bytes long but the source is {total} bytes"
                    )));
                }
                if st.offset > total {
                    return Err(Error::protocol(
                        "Upload-Offset",
                        format!(
                            "the server has {} bytes of a {total}-byte source",
                            st.offset
                        ),
                    )
                    .with_url(shown));
                }
                tracing::debug!(offset = st.offset, total, "resuming upload");
                (url, st.offset, true, st.length.is_none())
            }
            None => match self.resume_stored(total).await? {
                Some((url, st)) => {
                    span.record("url", protocol::redact_url(&url));
                    self.url = Some(url.clone());
                    (url, st.offset, true, st.length.is_none())
                }
                None => {
                    let created = self.client.create(Some(total), &self.metadata).await?;
                    let url = created.url;
                    span.record("url", protocol::redact_url(&url));
                    self.url = Some(url.clone());
                    self.remember(&url, total, 0, created.expires, true).await?;
                    (url, 0, false, false)
                }
            },
        };
        self.progress.send_modify(|p| {
            *p = Progress {
                sent: offset,
                acknowledged: offset,
                total,
            }
        });
        let target = stop_at.map_or(total, |s| s.min(total));
        // A stream is buffered a chunk at a time, so it always goes in chunks.
        let chunk_size = match self.opened {
            Some(Opened::Stream(_)) => Some(self.chunk_size.unwrap_or(DEFAULT_STREAM_CHUNK)),
            _ => self.chunk_size,
        };
        while offset < target {
            let end = match chunk_size {
                Some(c) => offset.saturating_add(c).min(target),
                None => target,
            };
            let body = self.body(offset, end).await?;
            let base = offset;
            let progress = Arc::clone(&self.progress);
            let observer: Observer = Arc::new(move |n| {
                progress.send_modify(|p| p.sent = p.sent.max(base + n));
            });
            let length = send_length.then_some(total);
            let appended = self
                .client
                .append(&url, offset, body.observe(observer), length)
                .await?;
            let new = appended.offset;
            if new != end {
                return Err(Error::offset_mismatch(end, new).with_url(protocol::redact_url(&url)));
            }
            offset = new;
            send_length = false;
            self.progress.send_modify(|p| p.acknowledged = offset);
            tracing::debug!(offset, total, "append accepted");
            if offset < total {
                self.remember(&url, total, offset, appended.expires, false)
                    .await?;
            }
        }
        if offset == total {
            self.finished(&url, total).await?;
        }
        Ok(Uploaded {
            url,
            offset,
            length: total,
            complete: offset == total,
            resumed,
        })
    }

    /// A stored upload of this source that can be continued: its URL and status.
    /// Records that cannot be continued (expired, gone, another length or file name)
    /// are removed; a failure to ask the server (5xx, network, 423) is an error and
    /// keeps the record, never a reason to start over.
    async fn resume_stored(&mut self, total: u64) -> Result<Option<(Url, crate::UploadStatus)>> {
        let (Some(store), Some(fp)) = (self.resume.store.clone(), self.fingerprint.clone()) else {
            return Ok(None);
        };
        let source = self.source.name();
        let endpoint = self.client.endpoint().map(|e| e.as_str().to_owned());
        let records = {
            let (store, fp) = (Arc::clone(&store), fp.clone());
            blocking(move || {
                // The same path to the same endpoint under another fingerprint: the
                // file changed since, and that upload can never be continued.
                if let Some(source) = &source {
                    for r in store.find_by_source(endpoint.as_deref(), source)? {
                        if r.fingerprint != fp {
                            tracing::info!(url = %r.url, "dropping the stored upload of an earlier version of the file");
                            store.remove(&r.fingerprint, &r.url)?;
                        }
                    }
                }
                store.find(&fp)
            })
            .await?
        };
        let now = crate::core::store::unix_now();
        for rec in records {
            let stale = |why: &str| tracing::info!(url = %rec.url, why, "dropping a stored upload");
            let url = match crate::client::parse_http_url("stored upload URL", &rec.url) {
                Ok(u) => u,
                Err(_) => {
                    stale("not a URL");
                    self.forget(&store, &fp, &rec.url).await?;
                    continue;
                }
            };
            if rec.is_expired(now) {
                stale("expired");
                self.forget(&store, &fp, &rec.url).await?;
                continue;
            }
            let st = match self.client.status(&url).await {
                Ok(st) => st,
                Err(e) if e.is_gone() => {
                    stale("gone from the server");
                    self.forget(&store, &fp, &rec.url).await?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let ours = self.metadata.get("filename");
            let theirs = st.metadata.as_ref().and_then(|m| m.get("filename"));
            let mismatch = if st.length.is_some_and(|l| l != total) {
                Some("another length")
            } else if st.offset > total {
                Some("an offset beyond the source")
            } else if ours.is_some() && theirs.is_some() && ours != theirs {
                Some("another file name")
            } else {
                None
            };
            if let Some(why) = mismatch {
                stale(why);
                self.forget(&store, &fp, &rec.url).await?;
                continue;
            }
            tracing::info!(url = %protocol::redact_url(&url), offset = st.offset, total, "resuming a stored upload");
            return Ok(Some((url, st)));
        }
        Ok(None)
    }

    async fn forget(&mut self, store: &Arc<dyn UrlStore>, fp: &str, url: &str) -> Result<()> {
        let (store, fp, url) = (Arc::clone(store), fp.to_owned(), url.to_owned());
        blocking(move || store.remove(&fp, &url).map(drop)).await
    }

    /// Store (or update) the record of this upload.
    async fn remember(
        &mut self,
        url: &Url,
        total: u64,
        offset: u64,
        expires: Option<std::time::SystemTime>,
        created: bool,
    ) -> Result<()> {
        let (Some(store), Some(fp)) = (self.resume.store.clone(), self.fingerprint.clone()) else {
            return Ok(());
        };
        let url_s = url.as_str().to_owned();
        let source = self.source.name();
        let endpoint = self.client.endpoint().map(|e| e.as_str().to_owned());
        let metadata = self.metadata.encode();
        let expires = expires
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs());
        blocking(move || {
            let mut rec = match store.find(&fp)?.into_iter().find(|r| r.url == url_s) {
                Some(r) if !created => r,
                _ => UploadRecord::new(fp.clone(), url_s.clone()),
            };
            rec.endpoint = endpoint;
            rec.source = source;
            rec.length = Some(total);
            rec.offset = Some(offset);
            rec.metadata = metadata;
            rec.updated = crate::core::store::unix_now();
            if expires.is_some() {
                rec.expires = expires;
            }
            store.add(&rec)
        })
        .await
    }

    /// The upload is complete: drop its record, unless records are kept.
    async fn finished(&mut self, url: &Url, total: u64) -> Result<()> {
        if self.resume.keep_on_success {
            return self.remember(url, total, total, None, false).await;
        }
        if let (Some(store), Some(fp)) = (self.resume.store.clone(), self.fingerprint.clone()) {
            self.forget(&store, &fp, url.as_str()).await?;
        }
        Ok(())
    }

    /// The body for `[start, end)` of the source.
    async fn body(&mut self, start: u64, end: u64) -> Result<Body> {
        match &self.opened {
            Some(Opened::File(f, _)) => {
                return Ok(Body::window(
                    Arc::clone(f) as Arc<dyn RandomAccess>,
                    start,
                    end,
                ));
            }
            Some(Opened::Memory(b)) => {
                return Ok(Body::from(b.slice(start as usize..end as usize)));
            }
            _ => {}
        }
        let SourceKind::Reader { reader, len, pos } = &mut self.source.kind else {
            unreachable!("only readers are opened as streams");
        };
        if *pos > start {
            return Err(Error::invalid(format!(
                "the server wants bytes from {start} but the stream is already at {pos}: a stream cannot rewind"
            )));
        }
        let short = |at: u64, len: u64| {
            Error::io(
                None,
                std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("the stream ended at byte {at}, before its declared length {len}"),
                ),
            )
        };
        // Skip what the server already has.
        let skip = start - *pos;
        let skipped = tokio::io::copy(&mut (&mut *reader).take(skip), &mut tokio::io::sink())
            .await
            .map_err(|e| Error::io(None, e))?;
        *pos += skipped;
        if skipped < skip {
            return Err(short(*pos, *len));
        }
        let want = (end - start) as usize;
        let mut buf = BytesMut::with_capacity(want);
        while buf.len() < want {
            let n = (&mut *reader)
                .take((want - buf.len()) as u64)
                .read_buf(&mut buf)
                .await
                .map_err(|e| Error::io(None, e))?;
            if n == 0 {
                return Err(short(*pos + buf.len() as u64, *len));
            }
        }
        *pos += want as u64;
        Ok(Body::from(buf.freeze()))
    }
}

/// Run blocking store or fingerprint work off the async runtime.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::invalid(format!("a store task failed: {e}")))?
}
