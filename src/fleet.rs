//! A batch shared by many workers on many machines: each worker claims files from a
//! [`Ledger`] with a lease, keeps the lease with heartbeats while it uploads, and
//! completes, fails or gives back each file. The upload URL of a file goes into its
//! ledger entry as soon as the server gives it, so a worker that takes over a file (its
//! owner died, or was paused past its lease) continues that upload from the server's
//! offset, and never makes a second one.
//!
//! Memory is bounded by the concurrency: a worker holds at most `concurrency` claims
//! and reads nothing else of the batch.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::batch::{FileReport, Handles, Job, OnStart, Options, Summary};
use crate::core::ledger::{Claim, Ledger};
use crate::endpoint::blocking;
use crate::{Client, Error};

mod entry;

use entry::{ByKey, Entry, EntryState};

/// Where a key of the batch is on this machine (`None`: not here).
pub type Locate = Arc<dyn Fn(&str) -> Option<PathBuf> + Send + Sync>;

/// A worker of a shared batch.
#[derive(Clone)]
#[non_exhaustive]
pub struct Worker {
    /// The batch.
    pub ledger: Arc<dyn Ledger>,
    /// This worker's name in the ledger, unique in the fleet (host, process, random).
    pub owner: String,
    /// How long a claim stays this worker's without a heartbeat; heartbeats go every
    /// third of it.
    pub lease: Duration,
    /// Where each key's file is on this machine.
    pub locate: Locate,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("owner", &self.owner)
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// A worker of `ledger` named `owner`, with leases of `lease`, finding each key
    /// with `locate`.
    pub fn new(
        ledger: Arc<dyn Ledger>,
        owner: impl Into<String>,
        lease: Duration,
        locate: Locate,
    ) -> Self {
        Worker {
            ledger,
            owner: owner.into(),
            lease: lease.max(Duration::from_secs(1)),
            locate,
        }
    }
}

/// A worker name that no other process on any machine has: the host, the process id,
/// and a random part.
pub fn owner_name() -> String {
    let host = crate::core::ledger::hostname();
    let random = std::collections::hash_map::RandomState::new();
    let r = std::hash::BuildHasher::hash_one(&random, Instant::now());
    format!("{host}:{}:{:08x}", std::process::id(), r as u32)
}

/// The first wait after a ledger call failed, and the longest.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(30));

/// Says once that the ledger cannot be used, and once that it is back.
#[derive(Default)]
struct Outage {
    since: Option<Instant>,
    wait: Duration,
}

impl Outage {
    /// A failed call: how long to wait before the next.
    fn failed(&mut self, e: &Error) -> Duration {
        if self.since.is_none() {
            tracing::warn!("{e}: uploads in flight go on; trying again, backing off");
            self.since = Some(Instant::now());
            self.wait = BACKOFF.0;
        } else {
            self.wait = (self.wait * 2).min(BACKOFF.1);
        }
        self.wait
    }

    fn ok(&mut self) {
        if let Some(since) = self.since.take() {
            tracing::warn!(
                "the ledger answers again (after {:.0} s)",
                since.elapsed().as_secs_f64()
            );
        }
    }
}

/// The keys this worker holds, and which of them it lost.
#[derive(Default)]
struct Held {
    /// Key to job number (for its abort handle).
    keys: HashMap<String, u64>,
    lost: HashSet<String>,
}

type Shared = Arc<Mutex<Held>>;

fn lock(h: &Shared) -> std::sync::MutexGuard<'_, Held> {
    h.lock().unwrap_or_else(|p| p.into_inner())
}

/// Keep the leases of the files in flight: every third of the lease. A key the ledger
/// no longer gives this worker, or every key when the ledger could not be reached for
/// a whole lease, is lost: its upload is aborted (resumable by the new owner).
async fn heartbeats(worker: Worker, held: Shared, handles: Handles) {
    let every = (worker.lease / 3).max(Duration::from_millis(100));
    let mut last_ok = Instant::now();
    let mut outage = Outage::default();
    loop {
        tokio::time::sleep(every).await;
        let asked_jobs: HashMap<String, u64> = lock(&held).keys.clone();
        let keys: Vec<String> = asked_jobs.keys().cloned().collect();
        if keys.is_empty() {
            last_ok = Instant::now();
            continue;
        }
        let (ledger, owner, lease) = (
            Arc::clone(&worker.ledger),
            worker.owner.clone(),
            worker.lease,
        );
        let asked = keys.clone();
        let lost: Vec<String> =
            match blocking(move || ledger.heartbeat(&owner, &asked, lease)).await {
                Ok(kept) => {
                    outage.ok();
                    last_ok = Instant::now();
                    let kept: HashSet<String> = kept.into_iter().collect();
                    keys.into_iter().filter(|k| !kept.contains(k)).collect()
                }
                Err(e) => {
                    outage.failed(&e);
                    if last_ok.elapsed() < worker.lease {
                        continue;
                    }
                    keys
                }
            };
        if lost.is_empty() {
            continue;
        }
        let mut h = lock(&held);
        let handles = handles.lock().unwrap_or_else(|p| p.into_inner());
        for k in lost {
            // (Only the job that was asked about: one that ended since, or a new job
            // of the same key, is not this answer's.)
            if h.keys.get(&k) != asked_jobs.get(&k) {
                continue;
            }
            tracing::info!(key = %k, "this worker's lease on the file ran out: another worker continues it");
            if let Some(n) = h.keys.get(&k)
                && let Some(a) = handles.get(*n)
            {
                a.abort();
            }
            h.lost.insert(k);
        }
    }
}

/// How a claimed file ended, for the ledger.
enum End {
    Complete,
    Failed(String),
    /// Given back: stopped (Ctrl-C, `--stop-at`, an unreachable endpoint).
    Release,
    /// Another worker holds it: leave it.
    Lost,
}

/// What the ledger said when told how a file ended.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Told {
    /// It has it.
    Held,
    /// Another worker holds the file.
    Lost,
    /// It could not be reached for a whole lease.
    Unknown,
}

/// Tell the ledger how `key` ended, trying again while it cannot be reached, for at
/// most a lease (then the lease runs out, and whoever takes the file over finds on
/// the server how far it got).
async fn settle(worker: &Worker, key: &str, end: &End, entry: Option<&Arc<Entry>>) -> Told {
    let deadline = Instant::now() + worker.lease;
    let mut outage = Outage::default();
    loop {
        let (ledger, owner, key2) = (
            Arc::clone(&worker.ledger),
            worker.owner.clone(),
            key.to_owned(),
        );
        let entry2 = entry.cloned();
        let what = match end {
            End::Complete => None,
            End::Failed(r) => Some(Some(r.clone())),
            End::Release => Some(None),
            End::Lost => return Told::Lost,
        };
        let r = blocking(move || {
            if let Some(e) = &entry2 {
                e.flush()?;
            }
            match what {
                None => ledger.complete(&owner, &key2),
                Some(Some(reason)) => ledger.fail(&owner, &key2, &reason),
                Some(None) => ledger.release(&owner, &key2),
            }
        })
        .await;
        match r {
            Ok(held) => {
                outage.ok();
                return if held { Told::Held } else { Told::Lost };
            }
            Err(_) if entry.is_some_and(|e| e.state().lost) => return Told::Lost,
            Err(e) => {
                let wait = outage.failed(&e);
                if Instant::now() + wait > deadline {
                    tracing::warn!(
                        key,
                        "the ledger could not be told how the file ended: its lease runs out, and the next worker finds it on the server"
                    );
                    return Told::Unknown;
                }
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// One claimed file: find it here, upload it through its ledger entry, settle it.
async fn claimed(
    client: Client,
    worker: Worker,
    claim: Claim,
    opts: Arc<Options>,
    on_start: Option<OnStart>,
    (held, handles, n): (Shared, Handles, u64),
) -> (String, FileReport, Next) {
    let key = claim.key.clone();
    // A file this machine does not have, or has with another size, is given back for
    // the workers that have it; this one claims it no more (it is in the wrong place,
    // or brought other files under the batch's name).
    let found = {
        let (locate, k) = (Arc::clone(&worker.locate), key.clone());
        tokio::task::spawn_blocking(move || {
            let path = locate(&k)?;
            let len = std::fs::metadata(&path).ok().map(|m| m.len());
            Some((path, len))
        })
        .await
        .ok()
        .flatten()
    };
    let Some((path, len)) = found else {
        let why = "not found on this machine (workers find each key under their path arguments, or the current directory without any): left pending for the workers that have it";
        let r = FileReport::failed(key.clone(), why);
        settle(&worker, &key, &End::Release, None).await;
        return (key, r, Next::Skip);
    };
    let job = Job {
        path: path.clone(),
        relpath: key.clone(),
    };
    if let Some(len) = len.filter(|&l| l != claim.size) {
        let why = format!(
            "{}; left pending for the workers that have it",
            crate::core::ledger::conflict(&key, claim.size, len)
        );
        let r = FileReport::failed(path.display().to_string(), why);
        settle(&worker, &key, &End::Release, None).await;
        return (key, r, Next::Skip);
    }
    let entry = Arc::new(Entry {
        ledger: Arc::clone(&worker.ledger),
        owner: worker.owner.clone(),
        key: key.clone(),
        size: claim.size,
        state: Mutex::new(EntryState {
            url: claim.url.clone(),
            offset: claim.offset,
            saved: claim.url.clone(),
            ..Default::default()
        }),
    });
    lock(&held).keys.insert(key.clone(), n);
    let via: crate::batch::Via = (entry.clone(), Arc::new(ByKey(key.clone())));
    let mut report = crate::batch::one(
        &client,
        &job,
        &opts,
        on_start.as_ref(),
        (&handles, n),
        Some(via),
    )
    .await;
    let lost = {
        let mut h = lock(&held);
        h.keys.remove(&key);
        h.lost.remove(&key) || entry.state().lost
    };
    // A file whose upload began elsewhere continues that upload.
    report.resumed |= claim.url.is_some() && report.url.as_deref() == claim.url.as_deref();
    let mut next = Next::Go;
    let end = if lost {
        End::Lost
    } else {
        match report.status {
            "complete" => End::Complete,
            "partial" => {
                next = Next::Skip;
                End::Release
            }
            "unfinished" => End::Release,
            _ if report.unreachable => End::Release,
            // Its URL could not be put in the ledger: not the file's fault.
            _ if entry.state().unrecorded => End::Release,
            _ => End::Failed(report.error.clone().unwrap_or_else(|| "failed".into())),
        }
    };
    let unrecorded = matches!(end, End::Release) && entry.state().unrecorded;
    let told = settle(&worker, &key, &end, Some(&entry)).await;
    if unrecorded {
        // Given back with no byte sent: pending again, for this worker or another,
        // once the ledger answers. Not a failure of the file.
        tracing::info!(key = %key, error = ?report.error, "the upload's URL did not reach the ledger: the file is given back and tried again");
        report.status = "unfinished";
        report.complete = false;
    }
    // The ledger is the judge: a file it no longer gives this worker is another's,
    // however its upload ended here (a paused worker's append is refused once the new
    // owner moved the offset).
    if told == Told::Lost {
        // Another worker continues it from the server's offset: not this one's to
        // count, neither done nor failed.
        report.status = "unfinished";
        report.complete = false;
        report.error = Some(
            "another worker took the file over (this worker's lease ran out): it continues the upload"
                .into(),
        );
    }
    (key, report, next)
}

/// What the worker does after a file.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Next {
    Go,
    /// Claim it no more: stopped at `--stop-at`, or not on this machine.
    Skip,
}

/// The most keys a worker skips before it stops claiming (a machine without the
/// batch's files stops soon, with its memory bounded).
const MAX_SKIPPED: usize = 10_000;

/// How often a worker with nothing to claim asks again, while other workers hold
/// files (one of them may die, and its files come free when its leases run out).
fn poll_every(lease: Duration) -> Duration {
    (lease / 4).clamp(Duration::from_millis(200), Duration::from_secs(1))
}

/// Work on the shared batch of `worker` until it has no file left that is pending or
/// held by anyone, `opts.concurrency` files at a time; `on_done` hears of each file
/// this worker ends. As [`crate::batch::run`]: returns this worker's totals, and
/// whether `stop` resolved first (then the files in flight are aborted and given
/// back, resumable). `opts.parallel` must be 1 (a partial upload's URLs are not in
/// the ledger) and `opts.url` unset.
pub async fn run(
    client: &Client,
    worker: &Worker,
    opts: &Options,
    on_start: Option<OnStart>,
    mut on_done: impl FnMut(&FileReport),
    stop: impl std::future::Future<Output = ()>,
) -> (Summary, bool) {
    let concurrency = opts.concurrency.clamp(1, crate::batch::MAX_CONCURRENCY);
    let mut opts = opts.clone();
    opts.parallel = 1;
    opts.url = None;
    opts.skip_complete = false;
    opts.force = false;
    let opts = Arc::new(opts);
    let held: Shared = Arc::default();
    let handles: Handles = Arc::default();
    let beat = tokio::spawn(heartbeats(
        worker.clone(),
        Arc::clone(&held),
        Arc::clone(&handles),
    ));
    let mut set = tokio::task::JoinSet::new();
    let mut names: HashMap<tokio::task::Id, String> = HashMap::new();
    let mut summary = Summary::default();
    // Files this worker claims no more: stopped at `--stop-at`, or not on its machine.
    let mut skip: Vec<String> = Vec::new();
    let mut more = true;
    let mut n = 0u64;
    let mut outage = Outage::default();
    let mut next_claim = tokio::time::Instant::now();
    tokio::pin!(stop);
    let interrupted = loop {
        if more && set.len() < concurrency && tokio::time::Instant::now() >= next_claim {
            let (ledger, owner, lease) = (
                Arc::clone(&worker.ledger),
                worker.owner.clone(),
                worker.lease,
            );
            let want = concurrency - set.len();
            let skipping = skip.clone();
            // (Not cut short by a stop: the files it claims are handed back below. The
            // database's statement timeout bounds it.)
            let claimed_now = blocking(move || {
                let c = ledger.claim(&owner, want, lease, &skipping)?;
                // With nothing to claim: is anything left at all?
                let left = c.is_empty() && ledger.unfinished(&skipping)?;
                Ok((c, left))
            })
            .await;
            match claimed_now {
                Ok((claims, left)) => {
                    outage.ok();
                    if claims.is_empty() {
                        if !left && set.is_empty() {
                            break false;
                        }
                        next_claim = tokio::time::Instant::now() + poll_every(worker.lease);
                    }
                    for c in claims {
                        let task = claimed(
                            client.clone(),
                            worker.clone(),
                            c.clone(),
                            Arc::clone(&opts),
                            on_start.clone(),
                            (Arc::clone(&held), Arc::clone(&handles), n),
                        );
                        n += 1;
                        let id = set.spawn(task).id();
                        names.insert(id, c.key);
                    }
                }
                Err(e) => {
                    next_claim = tokio::time::Instant::now() + outage.failed(&e);
                }
            }
        }
        if set.is_empty() && !more {
            break false;
        }
        let wake = next_claim;
        tokio::select! {
            next = set.join_next_with_id(), if !set.is_empty() => {
                let Some(next) = next else { continue };
                let (report, next) = ended(&mut names, next);
                if let Some((key, Next::Skip)) = next {
                    skip.push(key);
                    if skip.len() >= MAX_SKIPPED {
                        tracing::warn!("{MAX_SKIPPED} files of the batch are not for this worker: it claims no more");
                        more = false;
                    }
                }
                // A free slot: claim again now (unless the ledger is out).
                if outage.since.is_none() {
                    next_claim = tokio::time::Instant::now();
                }
                summary.add(&report);
                on_done(&report);
                if summary.note_unreachable(client, &report) {
                    more = false;
                }
            }
            _ = tokio::time::sleep_until(wake), if more && set.len() < concurrency => {}
            _ = &mut stop => break true,
        }
    };
    if interrupted {
        // (Those cut off keep their leases until they run out.)
        crate::batch::stop_all(&mut set, &handles, Duration::from_secs(3), |next| {
            let (report, _) = ended(&mut names, next);
            summary.add(&report);
            on_done(&report);
        })
        .await;
    }
    beat.abort();
    (summary, interrupted)
}

/// The report of a claimed file's task, and its key and what comes next (a task cut
/// off or panicked is reported as the local batch reports it).
fn ended(
    names: &mut HashMap<tokio::task::Id, String>,
    next: std::result::Result<
        (tokio::task::Id, (String, FileReport, Next)),
        tokio::task::JoinError,
    >,
) -> (FileReport, Option<(String, Next)>) {
    match next {
        Ok((id, (key, report, next))) => {
            names.remove(&id);
            (report, Some((key, next)))
        }
        Err(e) => (crate::batch::settled(names, Err(e)), None),
    }
}
