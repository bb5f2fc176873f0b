//! The upload driver: [`Uploader`] decides the next tus operation and owns the source.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use reqwest::Url;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::watch;

use crate::Client;
use crate::client::{MAX_CREATION_BODY, MIN_CHUNK_SIZE, Resume};
use crate::core::body::{FileSource, Observer, RandomAccess};
use crate::core::protocol::{self, Metadata};
use crate::core::store::{SourceInfo, UploadRecord, UrlStore};
use crate::core::{Body, Capabilities, Error, Result};

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
        /// Taken when the upload opens it.
        reader: Option<Box<dyn AsyncRead + Send + Unpin>>,
        /// The declared length; `None`: read to the end (creation-defer-length).
        len: Option<u64>,
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
                reader: Some(Box::new(reader)),
                len: Some(len),
            },
        }
    }

    /// A stream of unknown length (standard input, a pipe), read to its end. Buffered
    /// one chunk at a time like [`Source::reader`]. A stream that ends within its first
    /// chunk is uploaded with its length; a longer one needs a server with
    /// `creation-defer-length`: the length is sent once the end is read.
    pub fn stream(reader: impl AsyncRead + Send + Unpin + 'static) -> Self {
        Source {
            kind: SourceKind::Reader {
                reader: Some(Box::new(reader)),
                len: None,
            },
        }
    }

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
            SourceKind::Reader { len: Some(n), .. } => write!(f, "Source::Reader({n} bytes)"),
            SourceKind::Reader { len: None, .. } => f.write_str("Source::Stream"),
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
    /// The size of the source; `None` for a stream whose end is not read yet.
    pub total: Option<u64>,
}

/// The result of [`Uploader::upload`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Uploaded {
    /// The upload URL (for a parallel upload, the final upload's).
    pub url: Url,
    /// The server's offset at the end.
    pub offset: u64,
    /// The size of the source; `None` for a stream stopped before its end.
    pub length: Option<u64>,
    /// True when the server has every byte.
    pub complete: bool,
    /// True when an existing upload was continued rather than a new one created.
    pub resumed: bool,
    /// How many partial uploads carried it (1: a single upload).
    pub parts: usize,
}

/// Aborts an upload in flight, from another task or thread (tus-js-client's
/// `abort(shouldTerminate)`). Got from [`Uploader::abort_handle`].
///
/// The upload's future then ends with an error for which [`Error::is_cancelled`] is
/// true. An aborted uploader stays aborted; a new uploader of the same source continues
/// the upload from the store (unless it was terminated).
#[derive(Clone, Debug)]
pub struct AbortHandle {
    state: Arc<watch::Sender<Option<bool>>>,
}

impl AbortHandle {
    /// Stop the upload; the server keeps what it has, to be continued later.
    pub fn abort(&self) {
        self.state.send_modify(|s| *s = Some(s.unwrap_or(false)));
    }

    /// Stop the upload and terminate it on the server (`DELETE`; its partial uploads
    /// too); its stored record goes.
    pub fn terminate(&self) {
        self.state.send_replace(Some(true));
    }

    /// True once [`AbortHandle::abort`] or [`AbortHandle::terminate`] was called.
    pub fn is_aborted(&self) -> bool {
        self.state.borrow().is_some()
    }
}

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
}

/// A source that can be read at any offset.
#[derive(Clone)]
enum Random {
    File(Arc<FileSource>),
    Memory(Bytes),
}

impl Random {
    fn body(&self, start: u64, end: u64) -> Body {
        match self {
            Random::File(f) => Body::window(Arc::clone(f) as Arc<dyn RandomAccess>, start, end),
            Random::Memory(b) => Body::from(b.slice(start as usize..end as usize)),
        }
    }
}

enum Opened {
    Random(Random, u64),
    Stream(StreamBuf),
}

impl Opened {
    /// The length, when known.
    fn len(&self) -> Option<u64> {
        match self {
            Opened::Random(_, n) => Some(*n),
            Opened::Stream(s) => s.len,
        }
    }
}

/// A read-once source, buffered from the oldest byte the server may still want (the
/// start of the chunk in flight) to the furthest byte read: one chunk, plus one byte
/// read ahead to learn whether the stream ends there.
struct StreamBuf {
    reader: Box<dyn AsyncRead + Send + Unpin>,
    declared: Option<u64>,
    /// Bytes read from the reader so far.
    pos: u64,
    /// The bytes `[pos - buf.len(), pos)`.
    buf: Bytes,
    /// The length, once known: declared, or the end was read.
    len: Option<u64>,
    /// The server's `Tus-Max-Size`: reading past it fails early.
    max: Option<u64>,
}

impl StreamBuf {
    fn new(reader: Box<dyn AsyncRead + Send + Unpin>, declared: Option<u64>) -> Self {
        StreamBuf {
            reader,
            declared,
            pos: 0,
            buf: Bytes::new(),
            len: declared,
            max: None,
        }
    }

    /// Bytes `[start, end)`, or fewer when the stream ends before `end`. Bytes before
    /// `start` are dropped: the server has them.
    async fn range(&mut self, start: u64, end: u64) -> Result<Bytes> {
        let buf_start = self.pos - self.buf.len() as u64;
        if start < buf_start {
            return Err(Error::invalid(format!(
                "the server wants bytes from {start} but the stream is already past {buf_start}: a stream cannot rewind"
            )));
        }
        if start >= self.pos {
            let skip = start - self.pos;
            let skipped =
                tokio::io::copy(&mut (&mut self.reader).take(skip), &mut tokio::io::sink())
                    .await
                    .map_err(|e| Error::io(None, e))?;
            self.pos += skipped;
            self.buf = Bytes::new();
            if skipped < skip {
                return Err(self.ended_early());
            }
        } else {
            self.buf = self.buf.slice((start - buf_start) as usize..);
        }
        // Read to `end`, and one byte further while the length is unknown.
        let upto = match self.len {
            Some(l) => end.min(l),
            None => end + 1,
        };
        if self.pos < upto {
            let mut grown = BytesMut::with_capacity(self.buf.len() + (upto - self.pos) as usize);
            grown.extend_from_slice(&self.buf);
            while self.pos < upto {
                let n = (&mut self.reader)
                    .take(upto - self.pos)
                    .read_buf(&mut grown)
                    .await
                    .map_err(|e| Error::io(None, e))?;
                if n == 0 {
                    if self.declared.is_some() {
                        self.buf = grown.freeze();
                        return Err(self.ended_early());
                    }
                    self.len = Some(self.pos);
                    tracing::debug!(length = self.pos, "the stream ended");
                    break;
                }
                self.pos += n as u64;
                if let Some(max) = self.max
                    && self.pos > max
                {
                    return Err(Error::invalid(format!(
                        "the stream is longer than the server's Tus-Max-Size of {max} bytes"
                    )));
                }
            }
            self.buf = grown.freeze();
        }
        let end = self.len.map_or(end, |l| end.min(l)).max(start);
        Ok(self.buf.slice(..(end - start) as usize))
    }

    fn ended_early(&self) -> Error {
        Error::io(
            None,
            std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "the stream ended at byte {}, before its declared length {}",
                    self.pos,
                    self.declared.unwrap_or_default()
                ),
            ),
        )
    }
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

/// A stored upload of the source that can be continued.
enum Stored {
    Single(Url, crate::UploadStatus),
    Parallel(StoredParallel),
}

struct StoredParallel {
    /// The record's key.
    key: String,
    /// Each partial upload and the server's offset of it.
    parts: Vec<(Url, u64)>,
    /// The final upload, when created early (concatenation-unfinished).
    final_url: Option<Url>,
}

/// Progress of one part (or of a single upload), added into the upload's [`Progress`].
struct Meter {
    progress: Arc<watch::Sender<Progress>>,
    sent: AtomicU64,
    acked: AtomicU64,
}

impl Meter {
    fn new(progress: &Arc<watch::Sender<Progress>>, offset: u64) -> Arc<Self> {
        Arc::new(Meter {
            progress: Arc::clone(progress),
            sent: AtomicU64::new(offset),
            acked: AtomicU64::new(offset),
        })
    }

    /// An observer of a body that starts at `base`.
    fn observer(self: &Arc<Self>, base: u64) -> Observer {
        let me = Arc::clone(self);
        Arc::new(move |n| {
            let at = base + n;
            let was = me.sent.fetch_max(at, Ordering::Relaxed);
            if at > was {
                me.progress.send_modify(|p| p.sent += at - was);
            }
        })
    }

    fn acknowledged(&self, offset: u64) {
        let was = self.acked.swap(offset, Ordering::Relaxed);
        self.sent.fetch_max(offset, Ordering::Relaxed);
        self.progress.send_modify(|p| {
            p.acknowledged = (p.acknowledged + offset).saturating_sub(was);
            p.sent = p.sent.max(p.acknowledged);
        });
    }
}

/// Split `total` bytes into `n` ranges of nearly equal size.
fn split(total: u64, n: usize) -> Vec<(u64, u64)> {
    let n = n as u64;
    (0..n)
        .map(|i| (total * i / n, total * (i + 1) / n))
        .collect()
}

/// One append, checked: `Some` with the server's answer, or `None` after a 413 shrank
/// the client's chunk limit (ask the offset, then go on with smaller bodies).
async fn append_checked(
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
            match client.shrink_chunk_limit(end - offset) {
                Some(_) => Ok(None),
                None => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// After a rejected append of `[from, to)`: where the server is now.
async fn resync(client: &Client, url: &Url, from: u64, to: u64) -> Result<u64> {
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
fn step(client: &Client, chunk_size: Option<u64>) -> Option<u64> {
    match (chunk_size, client.chunk_limit()) {
        (Some(c), Some(l)) => Some(c.min(l)),
        (c, l) => c.or(l),
    }
}

/// Send `[offset, len)` of a partial upload whose byte 0 is `base` in the source.
#[allow(clippy::too_many_arguments)]
async fn send_part(
    client: Client,
    url: Url,
    source: Random,
    base: u64,
    len: u64,
    mut offset: u64,
    chunk_size: Option<u64>,
    meter: Arc<Meter>,
) -> Result<()> {
    while offset < len {
        let end = step(&client, chunk_size).map_or(len, |c| (offset + c).min(len));
        let body = source
            .body(base + offset, base + end)
            .observe(meter.observer(offset));
        offset = match append_checked(&client, &url, offset, body, None).await? {
            Some(a) => a.offset,
            None => resync(&client, &url, offset, end).await?,
        };
        meter.acknowledged(offset);
    }
    Ok(())
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

    /// Open the source once: its length and, for a path, its default metadata.
    async fn open(&mut self) -> Result<Option<u64>> {
        if let Some(o) = &self.opened {
            return Ok(o.len());
        }
        let opened = match &mut self.source.kind {
            SourceKind::Path(path) => {
                let p = path.clone();
                let file = tokio::task::spawn_blocking(move || FileSource::open(p))
                    .await
                    .map_err(|e| Error::io(Some(path), std::io::Error::other(e)))??;
                let meta = file.metadata()?;
                let len = meta.len();
                self.stamp = Some((len, meta.modified().ok()));
                if !self.metadata.contains_key("filename")
                    && let Some(name) = path.file_name()
                {
                    self.metadata
                        .insert("filename", name.to_string_lossy().as_bytes())?;
                }
                if !self.metadata.contains_key("filetype") {
                    let mime = mime_guess::from_path(&*path)
                        .first_raw()
                        .unwrap_or("application/octet-stream");
                    self.metadata.insert("filetype", mime)?;
                }
                Opened::Random(Random::File(Arc::new(file)), len)
            }
            SourceKind::Bytes(b) => Opened::Random(Random::Memory(b.clone()), b.len() as u64),
            SourceKind::Reader { reader, len } => {
                let reader = reader
                    .take()
                    .ok_or_else(|| Error::invalid("the stream source was already used"))?;
                Opened::Stream(StreamBuf::new(reader, *len))
            }
        };
        let len = opened.len();
        if let (Some(_), Some(fp), Opened::Random(src, n)) =
            (&self.resume.store, &self.resume.fingerprinter, &opened)
        {
            let endpoint = self.client.endpoint().map(|u| u.as_str().to_owned());
            let info = match (src, &self.source.kind) {
                (Random::File(f), SourceKind::Path(path)) => {
                    SourceInfo::file(path.clone(), Arc::clone(f), *n, endpoint)
                }
                (Random::Memory(b), _) => SourceInfo::bytes(b.clone(), endpoint),
                (Random::File(_), _) => unreachable!("files come from paths"),
            };
            let fp = Arc::clone(fp);
            self.fingerprint = blocking(move || fp.fingerprint(&info)).await?;
        }
        self.opened = Some(opened);
        Ok(len)
    }

    fn len(&self) -> Option<u64> {
        self.opened.as_ref().and_then(Opened::len)
    }

    /// Fails when the file changed (size or modification time) since it was opened:
    /// its bytes on the server could then mix two versions, and such an upload must
    /// never be reported complete.
    fn check_unchanged(&self) -> Result<()> {
        let (Some(Opened::Random(Random::File(f), _)), Some((len, modified))) =
            (&self.opened, self.stamp)
        else {
            return Ok(());
        };
        let now = f.metadata()?;
        let what = if now.len() != len {
            format!("its size went from {len} to {} bytes", now.len())
        } else if now.modified().ok() != modified {
            "it was modified".to_owned()
        } else {
            return Ok(());
        };
        let upload = self
            .url
            .as_ref()
            .map(|u| {
                format!(
                    " (the upload at {} holds bytes of both versions)",
                    protocol::redact_url(u)
                )
            })
            .unwrap_or_default();
        Err(Error::io(
            Some(f.file_path()),
            std::io::Error::other(format!(
                "the file changed during the upload: {what}; upload it again{upload}"
            )),
        ))
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
            Err(e) => span.in_scope(|| tracing::warn!(error = %e, "upload failed")),
        }
        result
    }

    async fn drive(&mut self, stop_at: Option<u64>, span: tracing::Span) -> Result<Uploaded> {
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
            Some(Opened::Stream(_)) => Some(self.chunk_size.unwrap_or(DEFAULT_STREAM_CHUNK)),
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

    /// The endpoint's capabilities, or `None` when it does not tell them.
    async fn capabilities(&mut self) -> Result<Option<Capabilities>> {
        if self.client.endpoint().is_none() {
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

    /// Create the upload, with its first bytes when the server allows; return its
    /// URL, the server's offset, and whether its length is known to the server.
    async fn create(&mut self, stop_at: Option<u64>) -> Result<(Url, u64, bool)> {
        let caps = self.capabilities().await?;
        let supports = |ext: &str| caps.as_ref().is_some_and(|c| c.supports(ext));
        let chunk_size = match self.opened {
            Some(Opened::Stream(ref mut s)) => {
                s.max = caps.as_ref().and_then(|c| c.max_size);
                Some(self.chunk_size.unwrap_or(DEFAULT_STREAM_CHUNK))
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
                        && self.client.shrink_chunk_limit(sent).is_some() =>
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

    /// Whether this upload can go in parts: a file or bytes, large enough, to a server
    /// with concatenation (else a warning, and one upload).
    async fn parallel_possible(&mut self) -> Result<bool> {
        let (Some(Opened::Random(..)), Some(total)) = (&self.opened, self.len()) else {
            tracing::warn!("a stream cannot be split into parallel uploads: uploading in one part");
            return Ok(false);
        };
        if total < 2 * MIN_CHUNK_SIZE {
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
    async fn drive_parallel(
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
        })
    }

    /// A stored upload of this source that can be continued. Records that cannot be
    /// continued (expired, gone, another length or file name) are removed; a failure
    /// to ask the server (5xx, network, 423) is an error and keeps the record, never a
    /// reason to start over.
    async fn resume_stored(&mut self) -> Result<Option<Stored>> {
        let (Some(store), Some(fp), Some(total)) = (
            self.resume.store.clone(),
            self.fingerprint.clone(),
            self.len(),
        ) else {
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
                Ok(found) => return Ok(Some(found)),
                Err(why) => {
                    stale(why);
                    self.forget(&store, &fp, &rec.url).await?;
                }
            }
        }
        Ok(None)
    }

    /// A stored single upload: its URL and status, or why it cannot be continued.
    async fn check_single(
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

    /// A stored parallel upload: each part's URL and offset, or why it cannot be
    /// continued.
    async fn check_parallel(
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

    async fn forget(&mut self, store: &Arc<dyn UrlStore>, fp: &str, url: &str) -> Result<()> {
        let (store, fp, url) = (Arc::clone(store), fp.to_owned(), url.to_owned());
        blocking(move || store.remove(&fp, &url).map(drop)).await
    }

    /// A record of this upload as it is now, under `key`.
    fn record(&self, fp: &str, key: &str) -> UploadRecord {
        let mut rec = UploadRecord::new(fp, key);
        rec.endpoint = self.client.endpoint().map(|e| e.as_str().to_owned());
        rec.source = self.source.name();
        rec.length = self.len();
        rec.metadata = self.metadata.encode();
        rec
    }

    /// Store (or update) the record of this upload.
    async fn remember(
        &mut self,
        url: &Url,
        offset: u64,
        expires: Option<std::time::SystemTime>,
        created: bool,
    ) -> Result<()> {
        let (Some(store), Some(fp)) = (self.resume.store.clone(), self.fingerprint.clone()) else {
            return Ok(());
        };
        let fresh = self.record(&fp, url.as_str());
        let expires = unix_secs(expires);
        blocking(move || {
            let mut rec = fresh;
            if !created && let Some(old) = store.find(&fp)?.into_iter().find(|r| r.url == rec.url) {
                rec.created = old.created;
                rec.expires = old.expires;
                rec.partial_urls = old.partial_urls;
            }
            rec.offset = Some(offset);
            if expires.is_some() {
                rec.expires = expires;
            }
            store.add(&rec)
        })
        .await?;
        self.stored = true;
        Ok(())
    }

    /// Store the record of a parallel upload under `key`.
    async fn remember_parallel(
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

    /// The upload is complete: drop its record, unless records are kept.
    async fn finished(&mut self) -> Result<()> {
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

    /// The body for `[start, end)` of the source (shorter for a stream that ends
    /// first).
    async fn body(&mut self, start: u64, end: u64) -> Result<Body> {
        match &mut self.opened {
            Some(Opened::Random(src, _)) => Ok(src.body(start, end)),
            Some(Opened::Stream(s)) => Ok(Body::from(s.range(start, end).await?)),
            None => unreachable!("the source is opened first"),
        }
    }
}

fn unix_secs(t: Option<std::time::SystemTime>) -> Option<u64> {
    t.and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
}

/// Run blocking store or fingerprint work off the async runtime.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::internal(format!("a store task failed: {e}")))?
}
