//! Sources: a file, bytes, a reader of known length, or a stream; read at any offset
//! (random access) or one chunk buffered at a time (streams).

use super::special::{BlockingReader, Kind, classify};
use super::*;

/// How much of a stream source is buffered per `PATCH` when no chunk size is set.
pub const DEFAULT_STREAM_CHUNK: u64 = 8 << 20;

/// The largest chunk of a stream held in memory: a larger chunk size is capped here
/// for streams (files are read in blocks, whatever the chunk size).
pub const MAX_STREAM_CHUNK: u64 = 256 << 20;

/// What to upload.
pub struct Source {
    kind: SourceKind,
}

pub(super) enum SourceKind {
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
    pub(super) fn name(&self) -> Option<String> {
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

/// A source that can be read at any offset.
#[derive(Clone)]
pub(super) enum Random {
    File(Arc<FileSource>),
    Memory(Bytes),
}

impl Random {
    pub(super) fn body(&self, start: u64, end: u64) -> Body {
        match self {
            Random::File(f) => Body::window(Arc::clone(f) as Arc<dyn RandomAccess>, start, end),
            Random::Memory(b) => Body::from(b.slice(start as usize..end as usize)),
        }
    }
}

pub(super) enum Opened {
    Random(Random, u64),
    Stream(StreamBuf),
}

impl Opened {
    /// The length, when known.
    pub(super) fn len(&self) -> Option<u64> {
        match self {
            Opened::Random(_, n) => Some(*n),
            Opened::Stream(s) => s.len,
        }
    }
}

/// A read-once source, buffered from the oldest byte the server may still want (the
/// start of the chunk in flight) to the furthest byte read: one chunk, plus one byte
/// read ahead to learn whether the stream ends there.
pub(super) struct StreamBuf {
    pub(super) reader: Box<dyn AsyncRead + Send + Unpin>,
    pub(super) declared: Option<u64>,
    /// Bytes read from the reader so far.
    pub(super) pos: u64,
    /// The bytes `[pos - buf.len(), pos)`.
    pub(super) buf: Bytes,
    /// The length, once known: declared, or the end was read.
    pub(super) len: Option<u64>,
    /// The server's `Tus-Max-Size`: reading past it fails early.
    pub(super) max: Option<u64>,
}

impl StreamBuf {
    pub(super) fn new(reader: Box<dyn AsyncRead + Send + Unpin>, declared: Option<u64>) -> Self {
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
    pub(super) async fn range(&mut self, start: u64, end: u64) -> Result<Bytes> {
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
                        "the stream is longer than the server's largest upload (Tus-Max-Size, or Upload-Limit max-size) of {max} bytes"
                    )));
                }
            }
            self.buf = grown.freeze();
        }
        let end = self.len.map_or(end, |l| end.min(l)).max(start);
        Ok(self.buf.slice(..(end - start) as usize))
    }

    pub(super) fn ended_early(&self) -> Error {
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

impl Uploader {
    /// Open the source once: its length and, for a path, its default metadata.
    pub(super) async fn open(&mut self) -> Result<Option<u64>> {
        if let Some(o) = &self.opened {
            return Ok(o.len());
        }
        // A path is classified and, when it is a plain file, opened in one blocking step.
        let mut file = None;
        // With a store, the file's fingerprint and its stored records are found in the
        // same blocking step.
        let mut recognised = None;
        if let SourceKind::Path(path) = &self.source.kind {
            let path = path.clone();
            let kind = match (&self.resume.store, &self.resume.fingerprinter) {
                (Some(store), Some(f)) => {
                    let (store, f) = (Arc::clone(store), Arc::clone(f));
                    let endpoint = self.client.endpoint().map(|u| u.as_str().to_owned());
                    let (source, key) = self.lookup_keys();
                    let p = path.clone();
                    let (kind, found) = super::special::classify_then(&path, move |file| {
                        let len = file.metadata()?.len();
                        let info = SourceInfo::file(p, Arc::clone(file), len, endpoint);
                        recognise(store.as_ref(), f.as_ref(), &info, source, key)
                    })
                    .await?;
                    recognised = found;
                    kind
                }
                _ => classify(&path).await?,
            };
            if let Kind::File(f) = kind {
                file = Some(f);
            }
            self.name_file(&path)?;
        }
        let opened = match &mut self.source.kind {
            SourceKind::Path(path) => match file {
                None => {
                    // Not a plain file: its bytes are read to the end, its length sent then.
                    tracing::debug!(path = %path.display(), "not a regular file: read as a stream");
                    let reader = BlockingReader::open(path).await?;
                    Opened::Stream(StreamBuf::new(Box::new(reader), None))
                }
                Some(file) => {
                    let meta = file.metadata()?;
                    let len = meta.len();
                    self.stamp = Some((len, meta.modified().ok()));
                    Opened::Random(Random::File(file), len)
                }
            },
            SourceKind::Bytes(b) => Opened::Random(Random::Memory(b.clone()), b.len() as u64),
            SourceKind::Reader { reader, len } => {
                let reader = reader
                    .take()
                    .ok_or_else(|| Error::invalid("the stream source was already used"))?;
                Opened::Stream(StreamBuf::new(reader, *len))
            }
        };
        let len = opened.len();
        if let Some((fp, found)) = recognised {
            self.fingerprint = fp;
            self.found = found;
        } else if let (Some(_), Some(fp), Opened::Random(src, n)) =
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
            let (f, store) = (Arc::clone(fp), self.resume.store.clone());
            let (source, endpoint) = self.lookup_keys();
            // The stored records are looked up in the same trip off the runtime.
            let store = store.expect("checked above");
            let (fp, found) =
                blocking(move || recognise(store.as_ref(), f.as_ref(), &info, source, endpoint))
                    .await?;
            self.fingerprint = fp;
            self.found = found;
        }
        self.opened = Some(opened);
        Ok(len)
    }

    pub(super) fn len(&self) -> Option<u64> {
        self.opened.as_ref().and_then(Opened::len)
    }

    /// `filename` and `filetype` from the path, unless given.
    fn name_file(&mut self, path: &Path) -> Result<()> {
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
        Ok(())
    }

    /// Fails when the file changed (size or modification time) since it was opened:
    /// its bytes on the server could then mix two versions, and such an upload must
    /// never be reported complete.
    pub(super) fn check_unchanged(&self) -> Result<()> {
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

    /// The body for `[start, end)` of the source (shorter for a stream that ends
    /// first).
    pub(super) async fn body(&mut self, start: u64, end: u64) -> Result<Body> {
        match &mut self.opened {
            Some(Opened::Random(src, _)) => Ok(src.body(start, end)),
            Some(Opened::Stream(s)) => Ok(Body::from(s.range(start, end).await?)),
            None => unreachable!("the source is opened first"),
        }
    }
}

/// The fingerprint of `info`, and the records `store` has of it.
fn recognise(
    store: &dyn UrlStore,
    fingerprinter: &dyn crate::core::store::Fingerprinter,
    info: &SourceInfo,
    source: Option<String>,
    endpoint_key: Option<String>,
) -> Result<(Option<String>, Option<Vec<UploadRecord>>)> {
    let fp = fingerprinter.fingerprint(info)?;
    let found = match &fp {
        Some(fp) => Some(super::resume::lookup(
            store,
            fp,
            source.as_deref(),
            endpoint_key.as_deref(),
        )?),
        None => None,
    };
    Ok((fp, found))
}
