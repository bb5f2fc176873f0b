//! [`Body`]: what every request of the stack carries, cheap to clone, never larger in
//! memory than a block or two.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::task::JoinHandle;

use crate::{Error, Result};

/// The largest block a window body reads at once: 1 MiB.
pub const MAX_BLOCK_SIZE: usize = 1 << 20;

/// A source that can be read at any position, again and again (a file).
///
/// A window [`Body`] over it reads blocks with positioned reads on the blocking thread
/// pool, so a retry can re-send any range and nothing is held but the blocks in flight.
pub trait RandomAccess: Send + Sync + 'static {
    /// Read into `buf` from `offset`; return how many bytes were read (0 at the end).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;

    /// The path of the source, for error messages.
    fn path(&self) -> Option<&Path> {
        None
    }
}

/// An open file, named by its path.
#[derive(Debug)]
pub struct FileSource {
    file: std::fs::File,
    path: PathBuf,
}

impl FileSource {
    /// Open `path` for reading; the error names the path.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = std::fs::File::open(path).map_err(|e| Error::io(Some(path), e))?;
        let meta = file.metadata().map_err(|e| Error::io(Some(path), e))?;
        if meta.is_dir() {
            return Err(Error::io(
                Some(path),
                io::Error::new(io::ErrorKind::InvalidInput, "is a directory"),
            ));
        }
        Ok(FileSource {
            file,
            path: path.to_path_buf(),
        })
    }

    /// The file's current size.
    pub fn size(&self) -> Result<u64> {
        self.metadata().map(|m| m.len())
    }

    /// The file's current metadata (size, modification time).
    pub fn metadata(&self) -> Result<std::fs::Metadata> {
        self.file
            .metadata()
            .map_err(|e| Error::io(Some(&self.path), e))
    }

    /// The file's path.
    pub fn file_path(&self) -> &Path {
        &self.path
    }
}

impl RandomAccess for FileSource {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        #[cfg(unix)]
        {
            std::os::unix::fs::FileExt::read_at(&self.file, buf, offset)
        }
        #[cfg(windows)]
        {
            std::os::windows::fs::FileExt::seek_read(&self.file, buf, offset)
        }
    }

    fn path(&self) -> Option<&Path> {
        Some(&self.path)
    }
}

impl RandomAccess for Bytes {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.len());
        let n = buf.len().min(self.len() - start);
        buf[..n].copy_from_slice(&self[start..start + n]);
        Ok(n)
    }
}

/// Told how many bytes of a body have been handed to the transport so far.
pub type Observer = Arc<dyn Fn(u64) + Send + Sync>;

/// A boxed `http_body::Body` of [`Bytes`] frames.
pub type BoxBody = Pin<Box<dyn http_body::Body<Data = Bytes, Error = Error> + Send + Sync>>;

/// A transform of the byte stream of a [`Body`], applied each time the body is sent
/// (so a retry streams through it again). Middleware that needs to pace or inspect the
/// bytes on the wire (rate limiting, for one) adds one with [`Body::wrap`].
pub trait BodyWrap: Send + Sync + 'static {
    /// Wrap `inner`, the stream of the body's bytes.
    fn wrap(&self, inner: BoxBody) -> BoxBody;
}

/// The body of a request in the stack: empty, in-memory [`Bytes`], or a window
/// `[start, end)` of a [`RandomAccess`] source streamed in blocks.
///
/// Cloning is cheap and gives a body that starts from its beginning again, which is
/// what a retry needs. A window holds at most two blocks (the one being sent and the
/// one read ahead), so memory never grows with the size of the source.
///
/// ```
/// use tusflow_core::Body;
/// use http_body::Body as _;
/// let body = Body::from_static(b"hello");
/// assert_eq!(body.size_hint().exact(), Some(5));
/// ```
pub struct Body {
    spec: Spec,
    observer: Option<Observer>,
    wraps: Vec<Arc<dyn BodyWrap>>,
    state: State,
    /// The wrapped stream, built on the first poll when there are wraps.
    wrapped: Option<BoxBody>,
}

#[derive(Clone)]
enum Spec {
    Empty,
    Bytes(Bytes),
    Window(Window),
}

#[derive(Clone)]
struct Window {
    source: Arc<dyn RandomAccess>,
    start: u64,
    end: u64,
    block: usize,
}

struct State {
    /// Bytes of this body handed out so far.
    sent: u64,
    /// A block being read on the blocking pool.
    pending: Option<JoinHandle<io::Result<Vec<u8>>>>,
    done: bool,
}

impl State {
    fn new() -> Self {
        State {
            sent: 0,
            pending: None,
            done: false,
        }
    }
}

impl Body {
    fn from_spec(spec: Spec) -> Self {
        Body {
            spec,
            observer: None,
            wraps: Vec::new(),
            state: State::new(),
            wrapped: None,
        }
    }

    /// A body with this spec and this body's observer and wraps, from its start.
    fn derive(&self, spec: Spec, observer: Option<Observer>) -> Self {
        Body {
            spec,
            observer,
            wraps: self.wraps.clone(),
            state: State::new(),
            wrapped: None,
        }
    }

    /// Stream the bytes through `wrap` each time this body is sent. Wraps added later
    /// are outermost.
    pub fn wrap(mut self, wrap: Arc<dyn BodyWrap>) -> Self {
        self.wraps.push(wrap);
        self
    }

    /// An empty body.
    pub fn empty() -> Self {
        Self::from_spec(Spec::Empty)
    }

    /// A body of static bytes.
    pub fn from_static(bytes: &'static [u8]) -> Self {
        Self::from(Bytes::from_static(bytes))
    }

    /// The bytes `[start, end)` of `source`, read in blocks of [`MAX_BLOCK_SIZE`].
    pub fn window(source: Arc<dyn RandomAccess>, start: u64, end: u64) -> Self {
        Self::from_spec(Spec::Window(Window {
            source,
            start,
            end: end.max(start),
            block: MAX_BLOCK_SIZE,
        }))
    }

    /// Use blocks of `size` bytes (clamped to 4 KiB ..= [`MAX_BLOCK_SIZE`]) for a window.
    pub fn block_size(mut self, size: usize) -> Self {
        if let Spec::Window(w) = &mut self.spec {
            w.block = size.clamp(4096, MAX_BLOCK_SIZE);
        }
        self
    }

    /// Call `observer` with the number of bytes of this body handed to the transport so
    /// far, each time it grows. It must be quick and must not block.
    pub fn observe(mut self, observer: Observer) -> Self {
        self.observer = Some(observer);
        self
    }

    /// The length of the body in bytes.
    pub fn len(&self) -> u64 {
        match &self.spec {
            Spec::Empty => 0,
            Spec::Bytes(b) => b.len() as u64,
            Spec::Window(w) => w.end - w.start,
        }
    }

    /// True when the body has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes, when the body is in memory (empty or [`Bytes`]); `None` for a window.
    pub fn as_bytes(&self) -> Option<Bytes> {
        match &self.spec {
            Spec::Empty => Some(Bytes::new()),
            Spec::Bytes(b) => Some(b.clone()),
            Spec::Window(_) => None,
        }
    }

    /// For a window: `(start, end)` in its source.
    pub fn window_range(&self) -> Option<(u64, u64)> {
        match &self.spec {
            Spec::Window(w) => Some((w.start, w.end)),
            _ => None,
        }
    }

    /// The same body, but starting `n` bytes later (clamped to its end). A retry after a
    /// partial append moves the start like this instead of re-reading from the start.
    pub fn advance(&self, n: u64) -> Self {
        self.slice(n, self.len())
    }

    /// The bytes `[from, to)` of this body (relative to its start, clamped to its
    /// length), as a body of its own. Its observer reports positions relative to this
    /// body, so progress stays right when middleware splits a body into chunks.
    pub fn slice(&self, from: u64, to: u64) -> Self {
        let len = self.len();
        let (from, to) = (from.min(len), to.min(len).max(from.min(len)));
        let spec = match &self.spec {
            Spec::Empty => Spec::Empty,
            Spec::Bytes(b) => Spec::Bytes(b.slice(from as usize..to as usize)),
            Spec::Window(w) => Spec::Window(Window {
                start: w.start + from,
                end: w.start + to,
                ..w.clone()
            }),
        };
        let observer = self.observer.clone().map(|o| -> Observer {
            if from == 0 {
                o
            } else {
                Arc::new(move |n| o(from + n))
            }
        });
        self.derive(spec, observer)
    }

    /// This body read into memory in one go (on the blocking pool), and `inspect` (a
    /// hasher, say) run over its bytes there; returned as an in-memory body with this
    /// body's observer and wraps, with what `inspect` returned. Memory: the body's
    /// length. Checksums use it to read a chunk once, to hash it and to send it.
    pub async fn buffered<T, F>(&self, inspect: F) -> Result<(Body, T)>
    where
        T: Send + 'static,
        F: FnOnce(&[u8]) -> T + Send + 'static,
    {
        let (bytes, out) = match &self.spec {
            Spec::Empty => (Bytes::new(), inspect(&[])),
            Spec::Bytes(b) => {
                let b = b.clone();
                tokio::task::spawn_blocking(move || {
                    let out = inspect(&b);
                    (b, out)
                })
                .await
                .map_err(|e| Error::io(None, io::Error::other(e)))?
            }
            Spec::Window(w) => {
                let w = w.clone();
                let path = w.source.path().map(Path::to_path_buf);
                tokio::task::spawn_blocking(move || -> io::Result<(Bytes, T)> {
                    let mut buf = vec![0u8; (w.end - w.start) as usize];
                    let mut filled = 0;
                    while filled < buf.len() {
                        let at = w.start + filled as u64;
                        match w.source.read_at(&mut buf[filled..], at) {
                            Ok(0) => {
                                return Err(io::Error::new(
                                    io::ErrorKind::UnexpectedEof,
                                    format!(
                                        "the source ended at byte {at}, before byte {}: was it truncated?",
                                        w.end
                                    ),
                                ));
                            }
                            Ok(k) => filled += k,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(e) => return Err(e),
                        }
                    }
                    let out = inspect(&buf);
                    Ok((Bytes::from(buf), out))
                })
                .await
                .map_err(|e| Error::io(path.as_deref(), io::Error::other(e)))?
                .map_err(|e| Error::io(path.as_deref(), e))?
            }
        };
        let spec = if bytes.is_empty() {
            Spec::Empty
        } else {
            Spec::Bytes(bytes)
        };
        Ok((self.derive(spec, self.observer.clone()), out))
    }

    fn notify(&self) {
        if let Some(o) = &self.observer {
            o(self.state.sent);
        }
    }

    fn start_read(&mut self, w: &Window) {
        let pos = w.start + self.state.sent;
        let n = (w.end - pos).min(w.block as u64) as usize;
        let source = Arc::clone(&w.source);
        self.state.pending = Some(tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; n];
            let mut filled = 0;
            while filled < n {
                match source.read_at(&mut buf[filled..], pos + filled as u64) {
                    Ok(0) => break,
                    Ok(k) => filled += k,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            buf.truncate(filled);
            Ok(buf)
        }));
    }
}

impl Clone for Body {
    /// A body with the same content that starts from its beginning.
    fn clone(&self) -> Self {
        self.derive(self.spec.clone(), self.observer.clone())
    }
}

impl Default for Body {
    fn default() -> Self {
        Body::empty()
    }
}

impl From<Bytes> for Body {
    fn from(b: Bytes) -> Self {
        if b.is_empty() {
            Body::empty()
        } else {
            Self::from_spec(Spec::Bytes(b))
        }
    }
}

impl From<Vec<u8>> for Body {
    fn from(v: Vec<u8>) -> Self {
        Body::from(Bytes::from(v))
    }
}

impl From<&'static str> for Body {
    fn from(s: &'static str) -> Self {
        Body::from_static(s.as_bytes())
    }
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.spec {
            Spec::Empty => f.write_str("Body::Empty"),
            Spec::Bytes(b) => write!(f, "Body::Bytes({} bytes)", b.len()),
            Spec::Window(w) => write!(f, "Body::Window({}..{})", w.start, w.end),
        }
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = self.get_mut();
        if !this.wraps.is_empty() {
            if this.wrapped.is_none() {
                let mut raw = this.clone();
                raw.wraps.clear();
                let mut stream: BoxBody = Box::pin(raw);
                for w in &this.wraps {
                    stream = w.wrap(stream);
                }
                this.wrapped = Some(stream);
            }
            let stream = this.wrapped.as_mut().expect("built above");
            return stream.as_mut().poll_frame(cx);
        }
        this.poll_raw(cx)
    }

    fn is_end_stream(&self) -> bool {
        match &self.wrapped {
            Some(w) => w.is_end_stream(),
            None => self.state.done || self.len() == self.state.sent,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.wrapped {
            Some(w) => w.size_hint(),
            None => SizeHint::with_exact(self.len() - self.state.sent.min(self.len())),
        }
    }
}

impl Body {
    fn poll_raw(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = self;
        if this.state.done {
            return Poll::Ready(None);
        }
        match &this.spec {
            Spec::Empty => {
                this.state.done = true;
                Poll::Ready(None)
            }
            Spec::Bytes(b) => {
                // At most a block per frame, so that progress is seen as it happens.
                let at = this.state.sent as usize;
                if at >= b.len() {
                    this.state.done = true;
                    return Poll::Ready(None);
                }
                let n = (b.len() - at).min(MAX_BLOCK_SIZE);
                let frame = b.slice(at..at + n);
                this.state.sent += n as u64;
                this.state.done = this.state.sent == b.len() as u64;
                this.notify();
                Poll::Ready(Some(Ok(Frame::data(frame))))
            }
            Spec::Window(w) => {
                let w = w.clone();
                let len = w.end - w.start;
                if this.state.sent >= len {
                    this.state.done = true;
                    return Poll::Ready(None);
                }
                if this.state.pending.is_none() {
                    this.start_read(&w);
                }
                let handle = this.state.pending.as_mut().expect("a read is pending");
                let res = ready!(Pin::new(handle).poll(cx));
                this.state.pending = None;
                let path = w.source.path();
                let buf = match res {
                    Ok(Ok(buf)) => buf,
                    Ok(Err(e)) => {
                        this.state.done = true;
                        return Poll::Ready(Some(Err(Error::io(path, e))));
                    }
                    Err(join) => {
                        this.state.done = true;
                        return Poll::Ready(Some(Err(Error::io(path, io::Error::other(join)))));
                    }
                };
                if buf.is_empty() {
                    this.state.done = true;
                    let at = w.start + this.state.sent;
                    let e = io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "the source ended at byte {at}, before byte {}: was it truncated?",
                            w.end
                        ),
                    );
                    return Poll::Ready(Some(Err(Error::io(path, e))));
                }
                this.state.sent += buf.len() as u64;
                this.notify();
                if this.state.sent < len {
                    // Read the next block while this one is being sent.
                    this.start_read(&w);
                }
                Poll::Ready(Some(Ok(Frame::data(Bytes::from(buf)))))
            }
        }
    }
}

impl Drop for State {
    fn drop(&mut self) {
        if let Some(h) = self.pending.take() {
            h.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::sync::atomic::{AtomicU64, Ordering};

    fn pattern(n: usize) -> Bytes {
        (0..n)
            .map(|i| (i * 31 % 251) as u8)
            .collect::<Vec<_>>()
            .into()
    }

    #[tokio::test]
    async fn window_streams_exact_range_in_bounded_blocks() {
        let data = pattern(3 * MAX_BLOCK_SIZE + 17);
        let src: Arc<dyn RandomAccess> = Arc::new(data.clone());
        let seen = Arc::new(AtomicU64::new(0));
        let s2 = seen.clone();
        let mut body = Body::window(src, 5, data.len() as u64 - 3)
            .observe(Arc::new(move |n| s2.store(n, Ordering::SeqCst)));
        let mut out = Vec::new();
        while let Some(frame) = body.frame().await {
            let chunk = frame.unwrap().into_data().unwrap();
            assert!(chunk.len() <= MAX_BLOCK_SIZE);
            out.extend_from_slice(&chunk);
        }
        assert_eq!(&out[..], &data[5..data.len() - 3]);
        assert_eq!(seen.load(Ordering::SeqCst), out.len() as u64);
    }

    #[tokio::test]
    async fn buffered_reads_once_keeps_the_observer_and_names_a_short_file() {
        let data = pattern(2 * MAX_BLOCK_SIZE + 5);
        let src: Arc<dyn RandomAccess> = Arc::new(data.clone());
        let seen = Arc::new(AtomicU64::new(0));
        let s2 = seen.clone();
        let body = Body::window(src, 3, data.len() as u64)
            .observe(Arc::new(move |n| s2.store(n, Ordering::SeqCst)));
        let (mem, sum) = body
            .buffered(|b| b.iter().map(|x| *x as u64).sum::<u64>())
            .await
            .unwrap();
        assert_eq!(sum, data[3..].iter().map(|x| *x as u64).sum::<u64>());
        assert!(mem.window_range().is_none(), "in memory now");
        let all = mem.collect().await.unwrap().to_bytes();
        assert_eq!(all, data.slice(3..));
        assert_eq!(seen.load(Ordering::SeqCst), all.len() as u64);

        let dir = std::env::temp_dir().join(format!("tusflow-buffered-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("short.bin");
        std::fs::write(&path, b"0123456789").unwrap();
        let src: Arc<dyn RandomAccess> = Arc::new(FileSource::open(&path).unwrap());
        let err = Body::window(src, 0, 20).buffered(|_| ()).await.unwrap_err();
        std::fs::remove_dir_all(&dir).ok();
        assert!(
            err.is_io()
                && err.to_string().contains("short.bin")
                && err.to_string().contains("truncated"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn clone_restarts_and_advance_moves_start() {
        let data = pattern(10_000);
        let src: Arc<dyn RandomAccess> = Arc::new(data.clone());
        let body = Body::window(src, 0, 10_000).block_size(4096);
        let mut first = body.clone();
        let _ = first.frame().await.unwrap().unwrap();
        let all = body.clone().collect().await.unwrap().to_bytes();
        assert_eq!(all, data);
        let rest = body.advance(9_000).collect().await.unwrap().to_bytes();
        assert_eq!(rest, data.slice(9_000..));
        let mid = body
            .slice(100, 5_000)
            .slice(10, 20)
            .collect()
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(mid, data.slice(110..120));
        let b = Body::from(data.clone()).advance(9_999);
        assert_eq!(b.collect().await.unwrap().to_bytes(), data.slice(9_999..));
    }

    /// A wrap that upper-cases ASCII, to see that wraps apply on every send.
    struct Upper;
    impl BodyWrap for Upper {
        fn wrap(&self, inner: BoxBody) -> BoxBody {
            use http_body_util::BodyExt as _;
            Box::pin(inner.map_frame(|f| f.map_data(|d| Bytes::from(d.to_ascii_uppercase()))))
        }
    }

    #[tokio::test]
    async fn wraps_apply_to_every_clone_and_observer_follows_slices() {
        let seen = Arc::new(AtomicU64::new(0));
        let s2 = seen.clone();
        let body = Body::from_static(b"hello world")
            .observe(Arc::new(move |n| s2.store(n, Ordering::SeqCst)))
            .wrap(Arc::new(Upper));
        for _ in 0..2 {
            let out = body.clone().collect().await.unwrap().to_bytes();
            assert_eq!(&out[..], b"HELLO WORLD");
        }
        let part = body.slice(6, 11).collect().await.unwrap().to_bytes();
        assert_eq!(&part[..], b"WORLD");
        assert_eq!(seen.load(Ordering::SeqCst), 11);
    }

    #[tokio::test]
    async fn truncated_file_is_an_io_error_naming_it() {
        let dir = std::env::temp_dir().join(format!("tusflow-body-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("short.bin");
        std::fs::write(&path, b"12345").unwrap();
        let src: Arc<dyn RandomAccess> = Arc::new(FileSource::open(&path).unwrap());
        let err = Body::window(src, 0, 10).collect().await.unwrap_err();
        assert!(err.is_io());
        let msg = err.to_string();
        assert!(
            msg.contains("short.bin") && msg.contains("truncated"),
            "{msg}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn opening_a_missing_file_names_it() {
        let err = FileSource::open("/nonexistent/tusflow.bin").unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/tusflow.bin"),
            "{err}"
        );
    }
}
