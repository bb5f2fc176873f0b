//! A blocking facade, in the manner of `reqwest::blocking`: for scripts, and for
//! tuspy users who do not want `async`.
//!
//! A [`Client`] owns a small runtime of its own, on a thread of its own (as
//! `reqwest::blocking` does), and every call waits for its result. Build and call it
//! outside any async runtime (inside one, use [`crate::Client`]); dropping it anywhere
//! is fine.
//!
//! ```no_run
//! # fn main() -> Result<(), tusflow::Error> {
//! let client = tusflow::blocking::Client::new("http://127.0.0.1:1080/files/")?;
//! let mut up = client.uploader("video.mp4").chunk_size(8 << 20).metadata("owner", "ops")?;
//! let half = up.upload_until(1 << 20)?;       // tuspy's upload(stop_at=...)
//! println!("{} bytes so far at {}", half.offset, half.url);
//! let done = up.upload()?;
//! assert!(done.complete);
//! # Ok(()) }
//! ```

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use reqwest::Url;

use crate::core::store::UrlStore;
use crate::upload::{AbortHandle, Progress, Source, Uploaded};
use crate::{Capabilities, ClientBuilder, Error, Metadata, Result, UploadStatus};

/// A blocking tus client. Cheap to clone; clones share the runtime and the
/// connection pool.
#[derive(Clone)]
pub struct Client {
    inner: crate::Client,
    rt: Arc<Worker>,
}

/// A current-thread runtime driven by a thread of its own; the caller's thread runs
/// each future with [`tokio::runtime::Handle::block_on`] while the worker drives the
/// I/O and timers (and the tasks an upload spawns). The runtime is dropped on its own
/// thread, so the facade may be dropped inside an async context.
struct Worker {
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Worker {
    fn start() -> Result<Self> {
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("tusflow-blocking".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                let _ = tx.send(Ok(rt.handle().clone()));
                rt.block_on(async {
                    let _ = stopped.await;
                });
            })
            .map_err(|e| Error::invalid(format!("cannot start a runtime thread: {e}")))?;
        let handle = rx
            .recv()
            .map_err(|_| Error::internal("the runtime thread ended at its start"))?
            .map_err(|e| Error::invalid(format!("cannot start a runtime: {e}")))?;
        Ok(Worker {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Run `f` to its end on the caller's thread; an error, not a panic, inside an
    /// async context (where blocking would stall that runtime).
    fn block_on<T>(&self, f: impl Future<Output = Result<T>>) -> Result<T> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(inside_runtime());
        }
        self.handle.block_on(f)
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Wait for the thread where waiting is allowed; inside an async context it
        // ends on its own.
        if let Some(t) = self.thread.take()
            && tokio::runtime::Handle::try_current().is_err()
        {
            let _ = t.join();
        }
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("blocking::Client")
            .field(&self.inner)
            .finish()
    }
}

fn inside_runtime() -> Error {
    Error::invalid("tusflow::blocking cannot be used inside an async runtime: use tusflow::Client")
}

/// Fails when called from within an async runtime, where blocking would stall it.
fn runtime() -> Result<Worker> {
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(inside_runtime());
    }
    Worker::start()
}

impl Client {
    /// A client for `endpoint` with the defaults.
    pub fn new(endpoint: impl Into<String>) -> Result<Self> {
        Self::from_builder(crate::Client::builder().endpoint(endpoint))
    }

    /// A client from an async [`ClientBuilder`]: every option and layer applies.
    pub fn from_builder(builder: ClientBuilder) -> Result<Self> {
        let rt = runtime()?;
        let inner = rt.block_on(async { builder.build() })?;
        Ok(Client {
            inner,
            rt: Arc::new(rt),
        })
    }

    fn wait<T>(&self, f: impl Future<Output = Result<T>>) -> Result<T> {
        self.rt.block_on(f)
    }

    /// The async client inside. Its connections belong to this client's runtime: use
    /// a clone of it only while this client lives.
    pub fn as_async(&self) -> &crate::Client {
        &self.inner
    }

    /// An uploader for `source` (a path, `Bytes`, or a [`Source`]).
    pub fn uploader(&self, source: impl Into<Source>) -> Uploader {
        Uploader {
            inner: self.inner.uploader(source),
            rt: Arc::clone(&self.rt),
        }
    }

    /// The server's capabilities (`OPTIONS`, asked once).
    pub fn capabilities(&self) -> Result<Capabilities> {
        self.wait(self.inner.capabilities())
    }

    /// Create an upload of `length` bytes (`None`: deferred) and return its URL.
    pub fn create(&self, length: Option<u64>, metadata: &Metadata) -> Result<Url> {
        self.wait(self.inner.create(length, metadata))
            .map(|c| c.url)
    }

    /// What the server knows of the upload at `url` (`HEAD`).
    pub fn status(&self, url: &Url) -> Result<UploadStatus> {
        self.wait(self.inner.status(url))
    }

    /// Terminate the upload at `url` (`DELETE`); its stored record goes too.
    pub fn terminate(&self, url: &Url) -> Result<()> {
        self.wait(self.inner.terminate(url))
    }
}

/// A blocking [`crate::Uploader`].
pub struct Uploader {
    inner: crate::Uploader,
    rt: Arc<Worker>,
}

impl fmt::Debug for Uploader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("blocking::Uploader")
            .field(&self.inner)
            .finish()
    }
}

impl Uploader {
    fn map(mut self, f: impl FnOnce(crate::Uploader) -> crate::Uploader) -> Self {
        self.inner = f(self.inner);
        self
    }

    /// Add a metadata pair (see [`crate::Uploader::metadata`]).
    pub fn metadata(self, key: &str, value: impl AsRef<[u8]>) -> Result<Self> {
        let Uploader { inner, rt } = self;
        Ok(Uploader {
            inner: inner.metadata(key, value)?,
            rt,
        })
    }

    /// Replace all metadata.
    pub fn with_metadata(self, metadata: Metadata) -> Self {
        self.map(|u| u.with_metadata(metadata))
    }

    /// Bytes per `PATCH` (tuspy's `chunk_size`).
    pub fn chunk_size(self, size: u64) -> Self {
        self.map(|u| u.chunk_size(size))
    }

    /// Partial uploads sent at once (concatenation).
    pub fn parallel(self, n: usize) -> Self {
        self.map(|u| u.parallel(n))
    }

    /// Continue the upload at `url` (tuspy's `Uploader(url=...)`).
    pub fn url(self, url: Url) -> Self {
        self.map(|u| u.url(url))
    }

    /// Remember this upload in `store` (tuspy's `store_url` + `url_storage`).
    pub fn store(self, store: Arc<dyn UrlStore>) -> Self {
        self.map(|u| u.store(store))
    }

    /// Upload to the end.
    pub fn upload(&mut self) -> Result<Uploaded> {
        self.rt.block_on(self.inner.upload())
    }

    /// Upload until the server has `stop_at` bytes (tuspy's `stop_at`).
    pub fn upload_until(&mut self, stop_at: u64) -> Result<Uploaded> {
        self.rt.block_on(self.inner.upload_until(stop_at))
    }

    /// Terminate this upload on the server.
    pub fn terminate(&mut self) -> Result<()> {
        self.rt.block_on(self.inner.terminate())
    }

    /// The upload URL, once created or when given.
    pub fn upload_url(&self) -> Option<&Url> {
        self.inner.upload_url()
    }

    /// The latest progress; read it from another thread while `upload` runs.
    pub fn progress(&self) -> tokio::sync::watch::Receiver<Progress> {
        self.inner.progress()
    }

    /// A handle that aborts the upload from another thread.
    pub fn abort_handle(&self) -> AbortHandle {
        self.inner.abort_handle()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn dropped_inside_an_async_context_and_refused_there() {
        let client = super::Client::new("http://127.0.0.1:9/files/").unwrap();
        let up = client.uploader(bytes::Bytes::from_static(b"x"));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let e = super::Client::new("http://127.0.0.1:9/files/").unwrap_err();
            assert!(e.to_string().contains("inside an async runtime"), "{e}");
            let mut up = up;
            let e = up.upload().unwrap_err();
            assert!(e.to_string().contains("inside an async runtime"), "{e}");
            drop(up);
            drop(client);
        });
    }
}
