//! Paths that are not plain files: a FIFO (or a process substitution, `<(cmd)`), a
//! socket, or a file that says it is empty but is not (`/proc`, `/sys`), read as a
//! stream of unknown length; a device or a directory is refused before anything is
//! created.

use std::io::Read;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::*;

/// What a path given as a source is.
pub(super) enum Kind {
    /// A regular file with bytes, or a truly empty one: opened.
    File(Arc<FileSource>),
    /// Read it to its end: its length is not known in advance.
    Stream,
}

/// How a path is uploaded, decided before opening it (opening a FIFO waits for a
/// writer), and a plain file opened: a device or a directory is an error naming it.
pub(super) async fn classify(path: &Path) -> Result<Kind> {
    let p = path.to_owned();
    blocking(move || classify_now(&p)).await
}

/// [`classify`], then `then` on the plain file it opened, in one blocking step.
pub(super) async fn classify_then<T: Send + 'static>(
    path: &Path,
    then: impl FnOnce(&Arc<FileSource>) -> Result<T> + Send + 'static,
) -> Result<(Kind, Option<T>)> {
    let p = path.to_owned();
    blocking(move || {
        let kind = classify_now(&p)?;
        let extra = match &kind {
            Kind::File(f) => Some(then(f)?),
            Kind::Stream => None,
        };
        Ok((kind, extra))
    })
    .await
}

fn classify_now(p: &Path) -> Result<Kind> {
    let p = p.to_owned();
    (move || {
        let meta = std::fs::metadata(&p).map_err(|e| Error::io(Some(&p), e))?;
        let ft = meta.file_type();
        if ft.is_file() {
            if meta.len() > 0 {
                return Ok(Kind::File(Arc::new(FileSource::open(&p)?)));
            }
            // Empty by its size: `/proc` and `/sys` files say so and still have bytes.
            let mut f = std::fs::File::open(&p).map_err(|e| Error::io(Some(&p), e))?;
            let mut one = [0u8; 1];
            let n = f.read(&mut one).map_err(|e| Error::io(Some(&p), e))?;
            return if n == 0 {
                Ok(Kind::File(Arc::new(FileSource::open(&p)?)))
            } else {
                Ok(Kind::Stream)
            };
        }
        if ft.is_dir() {
            return Err(Error::invalid(format!(
                "{} is a directory: `tusflow batch` uploads the files in it",
                p.display()
            )));
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::FileTypeExt;
            if ft.is_char_device() || ft.is_block_device() {
                return Err(Error::invalid(format!(
                    "{} is a device, not a file: to upload what it reads, give it as standard input (`tusflow upload - < {}`)",
                    p.display(),
                    p.display()
                )));
            }
        }
        // A FIFO or a socket: a stream.
        Ok(Kind::Stream)
    })()
}

/// A `std::fs::File` read on the blocking pool, as an `AsyncRead`: for the paths that
/// are streams (the library needs no tokio `fs`).
pub(super) struct BlockingReader {
    path: PathBuf,
    file: Option<std::fs::File>,
    pending: Option<tokio::task::JoinHandle<(std::fs::File, std::io::Result<Vec<u8>>)>>,
    /// Bytes read but not handed out yet.
    rest: Bytes,
}

/// How much one blocking read asks for.
const READ_SIZE: usize = 256 << 10;

impl BlockingReader {
    /// Open `path` (on the blocking pool: a FIFO's open waits for its writer).
    pub(super) async fn open(path: &Path) -> Result<Self> {
        let p = path.to_owned();
        let opening = blocking(move || std::fs::File::open(&p).map_err(|e| Error::io(Some(&p), e)));
        tokio::pin!(opening);
        // A FIFO's open waits for a writer: say so, rather than wait in silence.
        let file = tokio::select! {
            f = &mut opening => f?,
            _ = tokio::time::sleep(std::time::Duration::from_secs(2)) => {
                tracing::warn!("{}: waiting for something to write to it", path.display());
                opening.await?
            }
        };
        Ok(BlockingReader {
            path: path.to_owned(),
            file: Some(file),
            pending: None,
            rest: Bytes::new(),
        })
    }
}

impl AsyncRead for BlockingReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.rest.is_empty() {
                let n = this.rest.len().min(buf.remaining());
                buf.put_slice(&this.rest.split_to(n));
                return Poll::Ready(Ok(()));
            }
            if let Some(h) = &mut this.pending {
                let (file, got) = match Pin::new(h).poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(done)) => done,
                    Poll::Ready(Err(e)) => {
                        this.pending = None;
                        return Poll::Ready(Err(std::io::Error::other(e)));
                    }
                };
                this.pending = None;
                this.file = Some(file);
                let data = got?;
                if data.is_empty() {
                    return Poll::Ready(Ok(())); // the end
                }
                this.rest = Bytes::from(data);
                continue;
            }
            let Some(mut file) = this.file.take() else {
                let what = format!("{}: read after a failed read", this.path.display());
                return Poll::Ready(Err(std::io::Error::other(what)));
            };
            this.pending = Some(tokio::task::spawn_blocking(move || {
                let mut data = vec![0u8; READ_SIZE];
                let got = file.read(&mut data).map(|n| {
                    data.truncate(n);
                    data
                });
                (file, got)
            }));
        }
    }
}
