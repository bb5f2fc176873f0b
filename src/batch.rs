//! The batch engine: many files over one client and connection pool, a bounded number
//! at a time, each resumable; `tusflow upload` and `tusflow batch` both run it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use tokio::sync::Semaphore;

use crate::{Client, Error, Metadata, Result};

/// A file to upload, and its path relative to what named it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Job {
    /// The file.
    pub path: PathBuf,
    /// Its path relative to the directory or glob base that named it.
    pub relpath: String,
}

fn has_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// The directory part of a glob before its first wildcard.
fn glob_base(pattern: &str) -> PathBuf {
    let mut base = PathBuf::new();
    for part in Path::new(pattern).components() {
        if has_glob(&part.as_os_str().to_string_lossy()) {
            break;
        }
        base.push(part);
    }
    base
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(Some(dir), e))?;
    for e in entries {
        let e = e.map_err(|e| Error::io(Some(dir), e))?;
        let p = e.path();
        if p.is_dir() {
            walk(&p, out)?;
        } else if p.is_file() {
            out.push(p);
        }
    }
    Ok(())
}

fn rel(path: &Path, base: &Path) -> String {
    path.strip_prefix(base)
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned()
}

/// Expand files, directories (recursively) and globs, leave out what matches an
/// `exclude` glob (a relative glob against the path relative to what named the file,
/// an absolute one against the full path), sort and de-duplicate. A
/// name that matches nothing is an error naming it.
pub fn expand(patterns: &[String], exclude: &[String]) -> Result<Vec<Job>> {
    let excludes = exclude
        .iter()
        .map(|e| {
            glob::Pattern::new(e)
                .map_err(|err| Error::config(format!("invalid exclude glob {e:?}: {err}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut jobs = BTreeMap::new();
    for p in patterns {
        let mut found = Vec::new();
        if has_glob(p) {
            let base = glob_base(p);
            let paths =
                glob::glob(p).map_err(|e| Error::config(format!("invalid glob {p:?}: {e}")))?;
            for entry in paths {
                let path = entry
                    .map_err(|e| Error::io(Some(e.path()), std::io::Error::other(e.to_string())))?;
                if path.is_dir() {
                    let mut inner = Vec::new();
                    walk(&path, &mut inner)?;
                    found.extend(inner.into_iter().map(|f| (rel(&f, &base), f)));
                } else if path.is_file() {
                    found.push((rel(&path, &base), path));
                }
            }
        } else {
            let path = PathBuf::from(p);
            if path.is_dir() {
                let mut inner = Vec::new();
                walk(&path, &mut inner)?;
                found.extend(inner.into_iter().map(|f| (rel(&f, &path), f)));
            } else if path.is_file() {
                let name = path
                    .file_name()
                    .map_or_else(|| p.clone(), |n| n.to_string_lossy().into_owned());
                found.push((name, path));
            } else {
                return Err(Error::io(
                    Some(&path),
                    std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or directory"),
                ));
            }
        }
        if found.is_empty() && has_glob(p) {
            tracing::warn!(pattern = %p, "matches no file");
        }
        for (relpath, path) in found {
            let excluded = excludes.iter().any(|x| {
                if x.as_str().starts_with('/') {
                    x.matches_path(&path)
                } else {
                    x.matches(&relpath)
                }
            });
            if excluded {
                continue;
            }
            jobs.entry(path.clone()).or_insert(Job { path, relpath });
        }
    }
    Ok(jobs.into_values().collect())
}

/// How a batch runs.
#[derive(Clone, Debug, Default)]
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
pub struct FileReport {
    /// The file.
    pub path: String,
    /// The upload URL, when one exists.
    pub url: Option<String>,
    /// The file's size, when known.
    pub size: Option<u64>,
    /// The server's offset at the end.
    pub offset: Option<u64>,
    /// `complete`, `partial` (stopped early), `skipped` (already complete), `failed`.
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

async fn one(client: &Client, job: &Job, opts: &Options, on_start: Option<&OnStart>) -> FileReport {
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
    };
    let result: Result<()> = async {
        let mut meta = opts.metadata.clone();
        for (k, t) in &opts.templates {
            meta.insert(k, render_template(t, job, size.unwrap_or(0)))?;
        }
        let mut up = client.uploader(job.path.as_path()).with_metadata(meta);
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
        let (done, retries) = crate::core::attempts::count(async {
            match opts.stop_at {
                Some(s) => up.upload_until(s).await,
                None => up.upload().await,
            }
        })
        .await;
        report.attempts = 1 + retries;
        report.url = up.upload_url().map(|u| u.as_str().to_owned());
        let done = done?;
        report.offset = Some(done.offset);
        report.size = done.length;
        report.resumed = done.resumed;
        report.complete = done.complete;
        report.status = if done.complete { "complete" } else { "partial" };
        Ok(())
    }
    .await;
    if let Err(e) = result {
        report.error = Some(e.to_string());
    }
    report.seconds = started.elapsed().as_secs_f64();
    report
}

/// Upload `jobs`, `opts.concurrency` at a time; `on_done` hears of each file as it
/// ends. Returns the reports in the order of `jobs` (files not started when `stop`
/// resolved are left out).
pub async fn run(
    client: &Client,
    jobs: Vec<Job>,
    opts: &Options,
    on_start: Option<OnStart>,
    on_done: impl Fn(&FileReport) + Send + Sync + 'static,
    stop: impl std::future::Future<Output = ()>,
) -> (Vec<FileReport>, bool) {
    let permits = Arc::new(Semaphore::new(opts.concurrency.max(1)));
    let on_done = Arc::new(on_done);
    let opts = Arc::new(opts.clone());
    let mut set = tokio::task::JoinSet::new();
    for (i, job) in jobs.into_iter().enumerate() {
        let (client, permits, on_done, opts) = (
            client.clone(),
            Arc::clone(&permits),
            Arc::clone(&on_done),
            Arc::clone(&opts),
        );
        let on_start = on_start.clone();
        set.spawn(async move {
            let _permit = permits.acquire_owned().await.expect("never closed");
            let r = one(&client, &job, &opts, on_start.as_ref()).await;
            on_done(&r);
            (i, r)
        });
    }
    let mut out = Vec::new();
    tokio::pin!(stop);
    let interrupted = loop {
        tokio::select! {
            next = set.join_next() => match next {
                Some(Ok(r)) => out.push(r),
                Some(Err(e)) => tracing::error!(error = %e, "an upload task failed"),
                None => break false,
            },
            _ = &mut stop => {
                set.abort_all();
                while set.join_next().await.is_some() {}
                break true;
            }
        }
    };
    out.sort_by_key(|(i, _)| *i);
    (out.into_iter().map(|(_, r)| r).collect(), interrupted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expand_dirs_globs_and_excludes() {
        let d = tempfile::tempdir().unwrap();
        for f in ["a/1.txt", "a/b/2.txt", "a/b/3.log", "a/tmp/4.txt", "c.txt"] {
            let p = d.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, f).unwrap();
        }
        let root = d.path().to_string_lossy().into_owned();
        let jobs = expand(
            &[format!("{root}/a"), format!("{root}/c.txt")],
            &["tmp/**".into()],
        )
        .unwrap();
        let rels: Vec<&str> = jobs.iter().map(|j| j.relpath.as_str()).collect();
        assert_eq!(rels, ["1.txt", "b/2.txt", "b/3.log", "c.txt"]);
        let jobs = expand(&[format!("{root}/a/**/*.txt")], &["**/tmp/**".into()]).unwrap();
        let rels: Vec<&str> = jobs.iter().map(|j| j.relpath.as_str()).collect();
        assert_eq!(rels, ["1.txt", "b/2.txt"]);
        let e = expand(&[format!("{root}/nope")], &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope"), "{e}");
        let job = &jobs[1];
        assert_eq!(
            render_template("{relpath} ({size}) {filename}", job, 7),
            "b/2.txt (7) 2.txt"
        );
    }
}
