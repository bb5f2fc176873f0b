//! `tusflow batch --ledger URL --name NAME`: one batch shared by workers on many
//! machines. A worker that brings paths enqueues the files the batch does not have yet
//! (by their path relative to the argument they were found under); every worker then
//! claims files with a lease until none is left that is pending or held by anyone.

use std::path::PathBuf;
use std::sync::Arc;

use tusflow::batch::FileReport;
use tusflow::fleet::Worker;
use tusflow::ledger::{Ledger, NewEntry};

use crate::args::CommonArgs;
use crate::batch::{Jobs, run_jobs};
use crate::walk::Walk;
use crate::{FAILED, Failure, OK};

/// Rows per enqueue call: a million files go in a thousand calls, never all in memory.
const ENQUEUE_ROWS: usize = 1000;

/// A worker ready to run.
pub(crate) struct Shared {
    pub(crate) worker: Worker,
    /// Bytes of the files not complete yet, for the progress bar.
    pub(crate) bytes_left: u64,
    /// The paths that could not be listed when enqueueing: failed entries.
    pub(crate) unlisted: Vec<FileReport>,
}

/// What enqueueing found.
struct Queued {
    found: u64,
    added: u64,
    unlisted: Vec<FileReport>,
}

/// Walk `paths`, adding to the batch the files it does not have, a thousand at a time.
fn enqueue(ledger: &dyn Ledger, paths: &[String], exclude: &[String]) -> tusflow::Result<Queued> {
    let mut q = Queued {
        found: 0,
        added: 0,
        unlisted: Vec::new(),
    };
    let mut chunk = Vec::with_capacity(ENQUEUE_ROWS);
    // Two files under one key (`cam1/001.mp4` and `cam2/001.mp4` given as `cam1 cam2`)
    // would be one file of the batch: 16 bytes a file to find them.
    let mut keys = crate::walk::Seen::default();
    for j in Walk::new(paths, exclude)? {
        match j {
            Ok(job) => match std::fs::metadata(&job.path) {
                Ok(m) => {
                    if !keys.insert(&job.relpath) {
                        return Err(tusflow::Error::invalid(format!(
                            "{} has the key {:?}, as another file given does: give the directory above them, so their keys keep the directories that tell them apart",
                            job.path.display(),
                            job.relpath
                        )));
                    }
                    q.found += 1;
                    chunk.push(NewEntry::new(job.relpath, m.len()));
                    if chunk.len() == ENQUEUE_ROWS {
                        q.added += ledger.enqueue(&chunk)?;
                        chunk.clear();
                    }
                }
                Err(e) => q.unlisted.push(FileReport::failed(
                    job.path.display().to_string(),
                    format!("cannot read it: {e}"),
                )),
            },
            Err(u) => q.unlisted.push(FileReport::failed(u.path, u.reason)),
        }
    }
    q.added += ledger.enqueue(&chunk)?;
    Ok(q)
}

pub(crate) async fn batch(
    loaded: &crate::config::Loaded,
    common: &CommonArgs,
    paths: Vec<String>,
    exclude: Vec<String>,
    stop_at: Option<u64>,
) -> Result<u8, Failure> {
    if loaded.config.parallel > 1 {
        return Err(Failure::Usage(
            "--parallel is for one machine: a shared batch sends each file as one upload (the URLs of partial uploads are not in the ledger)".into(),
        ));
    }
    if loaded.config.ledger.lease < std::time::Duration::from_secs(1) {
        return Err(Failure::Usage(format!(
            "invalid lease {:?} (--lease or ledger.lease): a lease is at least 1s (heartbeats go every third of it)",
            loaded.config.ledger.lease
        )));
    }
    let target = crate::ledger::shared_target(&loaded.config.ledger)?;
    let name = target.1.clone();
    let pg = crate::ledger::connect(target).await?;
    let database = pg.database().to_owned();
    let ledger: Arc<dyn Ledger> = Arc::new(pg);
    let (l, p, x) = (Arc::clone(&ledger), paths.clone(), exclude);
    let bring = !paths.is_empty();
    let (queued, totals) = tokio::task::spawn_blocking(move || {
        let q = if bring {
            Some(enqueue(l.as_ref(), &p, &x)?)
        } else {
            None
        };
        Ok::<_, tusflow::Error>((q, l.totals()?))
    })
    .await
    .map_err(|e| Failure::Usage(format!("the ledger task failed: {e}")))??;
    let quiet = common.quiet || common.json;
    if totals.total == 0 {
        // Nothing to work on: a name mistyped, or no worker brought paths yet.
        eprintln!(
            "tusflow: the batch {name:?} in {database} has no files: is the name right? (a worker that brings paths adds them)"
        );
        return Err(Failure::Failed);
    }
    match &queued {
        Some(q) if !quiet => println!(
            "batch {name}: {} new files queued ({} found here; {} in the batch)",
            q.added, q.found, totals.total
        ),
        None if !quiet => println!(
            "batch {name}: {} files, {} left to do",
            totals.total,
            totals.pending + totals.active
        ),
        _ => {}
    }
    let worker = Worker::new(
        ledger,
        tusflow::fleet::owner_name(),
        loaded.config.ledger.lease,
        crate::walk::locator(&paths),
    );
    let shared = Shared {
        worker,
        bytes_left: totals.bytes_total.saturating_sub(totals.bytes_done),
        unlisted: queued.map(|q| q.unlisted).unwrap_or_default(),
    };
    // The worker's uploads keep their URLs in the ledger: no store on this machine.
    // And no upload completes in its creation: its URL must be in the ledger first.
    let mut local = loaded.clone();
    local.config.store.kind = crate::config::StoreKind::None;
    local.config.complete_in_creation = false;
    run_jobs(
        &local,
        common,
        Jobs::Shared(Box::new(shared)),
        stop_at,
        None,
        false,
        false,
    )
    .await
}

/// The batch's totals after this worker's run, and its exit code.
pub(crate) async fn finish(
    worker: &Worker,
    summary: &tusflow::batch::Summary,
    interrupted: bool,
    quiet: bool,
) -> Result<u8, Failure> {
    let ledger = Arc::clone(&worker.ledger);
    // (At most a few seconds: a stopped run does not wait on a database that hangs.)
    let totals = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio::task::spawn_blocking(move || ledger.totals()),
    )
    .await;
    match totals {
        Ok(Ok(Ok(t))) if !quiet => println!(
            "the batch: {} of {} files complete, {} failed, {} pending, {} active",
            t.complete, t.total, t.failed, t.pending, t.active
        ),
        Ok(Ok(Ok(_))) => {}
        Ok(Ok(Err(e))) => eprintln!("tusflow: {e}"),
        Ok(Err(_)) | Err(_) => {
            eprintln!("tusflow: the ledger did not say the batch's totals in 5 s")
        }
    }
    if interrupted {
        eprintln!(
            "tusflow: interrupted: {} files stopped in flight; any worker continues them from the server's offset (run the same command again)",
            summary.unfinished
        );
        return Ok(FAILED);
    }
    Ok(if summary.failed > 0 { FAILED } else { OK })
}

/// Where a key is on this machine: under the directory (or glob base) it was found
/// under, or the file named by an argument; with no paths, under the current
/// directory. A key that climbs out (`..`, an absolute path) is nowhere.
pub(crate) fn locate_in(paths: &[String], key: &str) -> Option<PathBuf> {
    let k = std::path::Path::new(key);
    if key.is_empty()
        || k.components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return None;
    }
    let is_file = |p: &PathBuf| std::fs::metadata(p).is_ok_and(|m| m.is_file());
    if paths.is_empty() {
        return Some(PathBuf::from(key)).filter(is_file);
    }
    paths.iter().find_map(|arg| {
        let a = PathBuf::from(arg);
        let candidate = if arg.contains(['*', '?', '[']) {
            crate::walk::glob_base(arg).join(k)
        } else if a.is_dir() {
            a.join(k)
        } else if a.file_name().is_some_and(|n| n == k.as_os_str()) {
            a
        } else {
            return None;
        };
        Some(candidate).filter(is_file)
    })
}
