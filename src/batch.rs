//! The batch engine: many files over one client and connection pool, a bounded number
//! at a time, each resumable; the `tusflow` CLI's `upload` and `batch` run it.
//!
//! Jobs come from an iterator that is read on a blocking thread as the batch goes (a
//! directory walk, a file list), and at most `concurrency` uploads are in flight: memory
//! stays flat however many files a batch has. Each file's [`FileReport`] goes to the
//! caller as the file ends; only the totals ([`Summary`]) stay.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::{Client, Error, Metadata, Result};

/// A file to upload, and its path relative to what named it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Job {
    /// The file.
    pub path: PathBuf,
    /// Its path relative to the directory or glob base that named it.
    pub relpath: String,
}

/// How a batch runs.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct Options {
    /// Files at once (at least 1).
    pub concurrency: usize,
    /// Bytes per PATCH.
    pub chunk_size: Option<u64>,
    /// Partial uploads per file (concatenation); 0 or 1: one upload.
    pub parallel: usize,
    /// Stop each upload once the server has this many bytes.
    pub stop_at: Option<u64>,
    /// Metadata of every file.
    pub metadata: Metadata,
    /// Metadata templates: `{filename}`, `{relpath}`, `{size}`.
    pub templates: BTreeMap<String, String>,
    /// Skip files the store records as complete.
    pub skip_complete: bool,
    /// Forget stored uploads first: every file is uploaded anew.
    pub force: bool,
    /// Continue this upload URL (one file only).
    pub url: Option<reqwest::Url>,
}

/// What became of one file.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct FileReport {
    /// The file.
    pub path: String,
    /// The upload URL, when one exists.
    pub url: Option<String>,
    /// The file's size, when known.
    pub size: Option<u64>,
    /// The server's offset at the end.
    pub offset: Option<u64>,
    /// `complete`, `partial` (stopped early), `skipped` (already complete), `failed`,
    /// `unfinished` (stopped in flight when the batch was stopped; resumable).
    pub status: &'static str,
    /// True when a stored or given upload was continued.
    pub resumed: bool,
    /// Tries: 1, plus every retry of the retry middleware.
    pub attempts: u32,
    /// True when the server has every byte.
    pub complete: bool,
    /// Seconds it took.
    pub seconds: f64,
    /// What went wrong.
    pub error: Option<String>,
    /// True when it failed because the endpoint cannot be reached
    /// ([`Error::is_unreachable`]): the batch says that once, in
    /// [`Summary::unreachable`].
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub unreachable: bool,
    /// IETF mode: the target resource's answer to the request that completed the
    /// upload.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer: Option<AnswerReport>,
}

/// The target resource's answer to a completed IETF upload, as a report shows it.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct AnswerReport {
    /// Its status code.
    pub status: u16,
    /// The start of its body (at most 512 bytes, as text).
    pub body: String,
}

impl AnswerReport {
    /// The report of `a`.
    pub fn of(a: &crate::client::Answer) -> Self {
        let cut = &a.body[..a.body.len().min(512)];
        AnswerReport {
            status: a.status.as_u16(),
            body: String::from_utf8_lossy(cut).into_owned(),
        }
    }
}

impl FileReport {
    /// A file that never got as far as an upload, with `status` and `error`.
    fn bare(path: String, status: &'static str, error: Option<String>) -> Self {
        FileReport {
            path,
            url: None,
            size: None,
            offset: None,
            status,
            resumed: false,
            attempts: 0,
            complete: false,
            seconds: 0.0,
            error,
            unreachable: false,
            answer: None,
        }
    }

    /// A file whose upload was stopped in flight (the batch was stopped): resumable.
    pub fn unfinished(path: impl Into<String>) -> Self {
        Self::bare(path.into(), "unfinished", None)
    }

    /// A file that failed before its upload could start (it could not be listed or
    /// read), with the reason.
    pub fn failed(path: impl Into<String>, error: impl std::fmt::Display) -> Self {
        Self::bare(path.into(), "failed", Some(error.to_string()))
    }
}

/// Expand `{filename}`, `{relpath}` and `{size}` in metadata templates.
pub fn render_template(template: &str, job: &Job, size: u64) -> String {
    let filename = job
        .path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    template
        .replace("{filename}", &filename)
        .replace("{relpath}", &job.relpath)
        .replace("{size}", &size.to_string())
}

/// Told when a file starts: the job, its size, and a receiver of its progress.
pub type OnStart =
    Arc<dyn Fn(&Job, u64, tokio::sync::watch::Receiver<crate::Progress>) + Send + Sync>;

/// The abort handles of the uploads in flight, by job number: a stop aborts them so
/// each reports where it stopped (its URL, the bytes acknowledged).
pub(crate) type Handles = Arc<std::sync::Mutex<Inflight>>;

/// The uploads in flight, and whether the batch is stopping.
#[derive(Default)]
pub(crate) struct Inflight {
    stopping: bool,
    uploads: HashMap<u64, crate::AbortHandle>,
}

impl Inflight {
    /// Register upload `n`; aborted at once when the batch is stopping (a task that
    /// was still opening its file when the stop came).
    pub(crate) fn insert(&mut self, n: u64, h: crate::AbortHandle) {
        if self.stopping {
            h.abort();
        }
        self.uploads.insert(n, h);
    }

    pub(crate) fn remove(&mut self, n: u64) {
        self.uploads.remove(&n);
    }

    pub(crate) fn get(&self, n: u64) -> Option<&crate::AbortHandle> {
        self.uploads.get(&n)
    }

    /// Abort every upload in flight, and those registered from now on.
    pub(crate) fn stop(&mut self) {
        self.stopping = true;
        for h in self.uploads.values() {
            h.abort();
        }
    }
}

/// Where an upload of a batch keeps its URL instead of the client's store: a shared
/// batch's ledger entry, with a fingerprinter that costs nothing.
pub(crate) type Via = (
    Arc<dyn crate::core::store::UrlStore>,
    Arc<dyn crate::core::store::Fingerprinter>,
);

pub(crate) async fn one(
    client: &Client,
    job: &Job,
    opts: &Options,
    on_start: Option<&OnStart>,
    handles: (&Handles, u64),
    via: Option<Via>,
) -> FileReport {
    let started = Instant::now();
    let size = std::fs::metadata(&job.path).ok().map(|m| m.len());
    let mut report = FileReport {
        path: job.path.display().to_string(),
        url: None,
        size,
        offset: None,
        status: "failed",
        resumed: false,
        attempts: 1,
        complete: false,
        seconds: 0.0,
        error: None,
        unreachable: false,
        answer: None,
    };
    let result: Result<()> = async {
        let mut meta = opts.metadata.clone();
        for (k, t) in &opts.templates {
            meta.insert(k, render_template(t, job, size.unwrap_or(0)))?;
        }
        let mut up = client.uploader(job.path.as_path()).with_metadata(meta);
        if let Some((store, fingerprinter)) = via {
            // (Its record kept at the end: an upload that ends must not drop the URL
            // of a ledger entry, as it drops a store's record.)
            up = up.store(store).fingerprinter(fingerprinter).keep_record();
        }
        if let Some(c) = opts.chunk_size {
            up = up.chunk_size(c);
        }
        up = up.parallel(opts.parallel);
        if let Some(u) = &opts.url {
            up = up.url(u.clone());
        }
        if opts.force && opts.url.is_none() {
            up.forget_previous_uploads().await?;
        } else if opts.skip_complete && opts.url.is_none() {
            let previous = up.previous_uploads().await?;
            if let Some(done) = previous
                .iter()
                .find(|r| r.length.is_some() && r.offset == r.length)
            {
                report.url = Some(done.url.clone());
                report.offset = done.offset;
                report.status = "skipped";
                report.complete = true;
                return Ok(());
            }
        }
        if let Some(f) = on_start {
            f(job, size.unwrap_or(0), up.progress());
        }
        let (registry, n) = handles;
        registry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(n, up.abort_handle());
        let (done, retries) = crate::core::attempts::count(async {
            match opts.stop_at {
                Some(s) => up.upload_until(s).await,
                None => up.upload().await,
            }
        })
        .await;
        report.attempts = 1 + retries;
        report.url = up.upload_url().map(|u| u.as_str().to_owned());
        registry.lock().unwrap_or_else(|p| p.into_inner()).remove(n);
        if done.as_ref().is_err_and(Error::is_cancelled) {
            // Stopped by the batch: resumable, at what the server acknowledged.
            report.status = "unfinished";
            report.offset = Some(up.progress().borrow().acknowledged);
            return Ok(());
        }
        let done = done?;
        report.offset = Some(done.offset);
        report.size = done.length;
        report.resumed = done.resumed;
        report.complete = done.complete;
        report.answer = done.answer.as_deref().map(AnswerReport::of);
        report.status = if done.complete { "complete" } else { "partial" };
        Ok(())
    }
    .await;
    if let Err(e) = result {
        report.error = Some(e.to_string());
        // (A server of another protocol is as unusable for every file: said once.)
        report.unreachable = e.is_unreachable() || client.learned().mismatch.get().is_some();
    }
    report.seconds = started.elapsed().as_secs_f64();
    report
}

/// The totals of a batch.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Summary {
    /// Files that ended (any status).
    pub files: u64,
    /// Uploaded to the end.
    pub complete: u64,
    /// Already complete in the store.
    pub skipped: u64,
    /// Stopped early (`stop_at`).
    pub partial: u64,
    /// Failed.
    pub failed: u64,
    /// Continued from a stored or given upload.
    pub resumed: u64,
    /// Bytes of the files uploaded to the end.
    pub bytes: u64,
    /// Files in flight when the batch was stopped (aborted, resumable).
    pub unfinished: u64,
    /// Files read but not started because the batch was stopped (the files a stop left
    /// unread are not counted: a stop does not wait for the rest of a walk).
    pub not_started: u64,
    /// Why the batch stopped starting files: the endpoint cannot be reached (the
    /// error, said once for the files that failed of it).
    pub unreachable: Option<String>,
    /// True when the batch stopped before reading the whole list of jobs (the files
    /// left unread are in no count).
    pub unread: bool,
    /// True when [`Summary::unreachable`] is a server of another protocol (or interop
    /// version), not one that cannot be reached.
    pub mismatch: bool,
}

impl Summary {
    /// The files the batch read: ended, stopped in flight, or not started.
    pub fn total(&self) -> u64 {
        self.files + self.unfinished + self.not_started
    }

    /// After `report`: true when the endpoint is now known to be unreachable (said
    /// once, in [`Summary::unreachable`]): an endpoint that never answered is down for
    /// every file, so the files in flight fail at their next request, and no more
    /// should start.
    pub(crate) fn note_unreachable(&mut self, client: &Client, report: &FileReport) -> bool {
        if self.unreachable.is_some() {
            return false;
        }
        let down = client
            .learned()
            .down()
            .or_else(|| client.learned().mismatch.get().cloned())
            .map(|e| e.to_string());
        self.mismatch = client.learned().mismatch.get().is_some();
        self.unreachable = if report.unreachable {
            report.error.clone().or(down)
        } else {
            down
        };
        self.unreachable.is_some()
    }

    /// Count one file's outcome.
    pub fn add(&mut self, r: &FileReport) {
        if r.status == "unfinished" {
            // Stopped in flight: neither ended nor failed.
            self.unfinished += 1;
            return;
        }
        self.files += 1;
        match r.status {
            "complete" => {
                self.complete += 1;
                self.bytes += r.size.unwrap_or(0);
            }
            "skipped" => self.skipped += 1,
            "partial" => self.partial += 1,
            _ => self.failed += 1,
        }
        if r.resumed {
            self.resumed += 1;
        }
    }
}

/// How many jobs the reading thread keeps ready per upload slot.
const READ_AHEAD: usize = 2;

/// The most uploads a batch runs at once.
pub const MAX_CONCURRENCY: usize = 4096;

/// Upload `jobs`, `opts.concurrency` at a time, reading `jobs` on a blocking thread as
/// the batch goes; `on_done` hears of each file as it ends (a task that panicked is a
/// failed file with an internal error). Returns the totals, and whether `stop`
/// resolved first: then the uploads in flight are aborted (resumable), and the jobs
/// read but not started are counted in [`Summary::not_started`]; the rest of `jobs` is
/// not read.
pub async fn run<I>(
    client: &Client,
    jobs: I,
    opts: &Options,
    on_start: Option<OnStart>,
    mut on_done: impl FnMut(&FileReport),
    stop: impl std::future::Future<Output = ()>,
) -> (Summary, bool)
where
    I: IntoIterator<Item = Job>,
    I::IntoIter: Send + 'static,
{
    let concurrency = opts.concurrency.clamp(1, MAX_CONCURRENCY);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Job>(concurrency * READ_AHEAD);
    let iter = jobs.into_iter();
    // The reader ends when the channel closes (the batch ended or was stopped); it
    // reads no further then, so a stop never waits for the rest of a walk.
    let reader = tokio::task::spawn_blocking(move || {
        for job in iter {
            if tx.blocking_send(job).is_err() {
                return true;
            }
        }
        false
    });
    let opts = Arc::new(opts.clone());
    let mut set = tokio::task::JoinSet::new();
    let mut running: HashMap<tokio::task::Id, String> = HashMap::new();
    let handles: Handles = Arc::default();
    let mut jobs_started = 0u64;
    let mut spawn = |set: &mut tokio::task::JoinSet<FileReport>,
                     running: &mut HashMap<tokio::task::Id, String>,
                     job: Job| {
        let (client, opts, on_start) = (client.clone(), Arc::clone(&opts), on_start.clone());
        let (handles, n) = (Arc::clone(&handles), jobs_started);
        jobs_started += 1;
        let path = job.path.display().to_string();
        let handle = set.spawn(async move {
            one(&client, &job, &opts, on_start.as_ref(), (&handles, n), None).await
        });
        running.insert(handle.id(), path);
    };
    let mut summary = Summary::default();
    let mut more = true;
    tokio::pin!(stop);
    let interrupted = loop {
        // Fill the free slots with jobs already read.
        while more && set.len() < concurrency {
            match rx.try_recv() {
                Ok(job) => spawn(&mut set, &mut running, job),
                Err(tokio::sync::mpsc::error::TryRecvError::Empty) => break,
                Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => more = false,
            }
        }
        if set.is_empty() && !more {
            break false;
        }
        tokio::select! {
            next = set.join_next_with_id(), if !set.is_empty() => {
                let Some(next) = next else { continue };
                let report = settled(&mut running, next);
                summary.add(&report);
                on_done(&report);
                if summary.note_unreachable(client, &report) {
                    more = false;
                }
            }
            j = rx.recv(), if more && set.len() < concurrency => match j {
                Some(job) => spawn(&mut set, &mut running, job),
                None => more = false,
            },
            _ = &mut stop => break true,
        }
    };
    if interrupted {
        // Uploads that ended before the abort still count; the others stop, resumable:
        // aborted first, so each says where it stopped, and after a moment (a store
        // write, a file still being fingerprinted) cut off.
        stop_all(
            &mut set,
            &handles,
            std::time::Duration::from_secs(2),
            |next| {
                let report = settled(&mut running, next);
                summary.add(&report);
                on_done(&report);
            },
        )
        .await;
    }
    rx.close();
    let mut buffered = 0;
    while rx.try_recv().is_ok() {
        buffered += 1;
    }
    match reader.await {
        // Stopped with more to read: at least the one it held.
        Ok(true) => {
            summary.not_started += buffered + 1;
            summary.unread = true;
        }
        Ok(false) => summary.not_started += buffered,
        Err(e) => {
            let report = FileReport::failed(
                "(the list of files)",
                Error::internal(format!("reading the jobs failed: {e}")),
            );
            summary.add(&report);
            on_done(&report);
        }
    }
    (summary, interrupted)
}

/// Stop a batch's uploads: abort those in flight (and any that register later) so each
/// says where it stopped, give them `grace` to end, then cut off the rest; `each`
/// hears of every task as it ends.
pub(crate) async fn stop_all<T: 'static>(
    set: &mut tokio::task::JoinSet<T>,
    handles: &Handles,
    grace: std::time::Duration,
    mut each: impl FnMut(Result<(tokio::task::Id, T), tokio::task::JoinError>),
) {
    handles.lock().unwrap_or_else(|p| p.into_inner()).stop();
    let deadline = tokio::time::Instant::now() + grace;
    while let Ok(Some(next)) = tokio::time::timeout_at(deadline, set.join_next_with_id()).await {
        each(next);
    }
    set.abort_all();
    while let Some(next) = set.join_next_with_id().await {
        each(next);
    }
}

/// The report of a task that ended: its own; for one the stop cut off, unfinished; for
/// one that panicked, a failed file.
pub(crate) fn settled(
    running: &mut HashMap<tokio::task::Id, String>,
    next: Result<(tokio::task::Id, FileReport), tokio::task::JoinError>,
) -> FileReport {
    let e = match next {
        Ok((id, r)) => {
            running.remove(&id);
            return r;
        }
        Err(e) => e,
    };
    let path = running.remove(&e.id()).unwrap_or_default();
    if e.is_cancelled() {
        return FileReport::unfinished(path);
    }
    tracing::error!(path = %path, error = %e, "an upload task failed");
    FileReport::failed(
        path,
        Error::internal(format!("the upload task failed: {e}")),
    )
}
