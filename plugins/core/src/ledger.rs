//! A batch shared by workers: the [`Ledger`] holds one entry per file of a named batch,
//! which workers claim with a lease, keep with heartbeats, and complete or fail. tus
//! makes a take-over safe: the server's offset (`HEAD`) is the truth, so a worker that
//! claims a file another one began continues the same upload URL and sends the rest.
//!
//! The trait is object-safe and blocking, as [`crate::store::UrlStore`] is: callers run
//! it off the async runtime.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::{Error, Result};

/// A file to add to a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct NewEntry {
    /// The file's key in the batch: its path relative to the argument it was found
    /// under, so machines that mount a share at different places agree.
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its fingerprint, when known.
    pub fingerprint: Option<String>,
}

impl NewEntry {
    /// An entry of `size` bytes under `key`.
    pub fn new(key: impl Into<String>, size: u64) -> Self {
        NewEntry {
            key: key.into(),
            size,
            fingerprint: None,
        }
    }
}

/// A file a worker holds: its key, size, and the upload it continues, if one began.
/// (Not `non_exhaustive`: every ledger builds them.)
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    /// The file's key.
    pub key: String,
    /// Its size.
    pub size: u64,
    /// The upload URL, once a worker created one: continue it, never a second upload.
    pub url: Option<String>,
    /// The last offset a worker recorded (the server's `HEAD` is the truth).
    pub offset: u64,
    /// Claims of this file so far, this one included.
    pub attempts: u32,
}

/// The totals of a batch. (Not `non_exhaustive`: every ledger builds them.)
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Files in the batch.
    pub total: u64,
    /// Waiting to be claimed (failed files are not).
    pub pending: u64,
    /// Claimed, with a lease that has not expired.
    pub active: u64,
    /// Uploaded to the end.
    pub complete: u64,
    /// Failed, with a reason (`retry_failed` makes them pending again).
    pub failed: u64,
    /// Bytes of every file.
    pub bytes_total: u64,
    /// Bytes of the complete files.
    pub bytes_done: u64,
}

/// One named batch, shared by workers.
pub trait Ledger: Send + Sync + 'static {
    /// Add `entries` that are not in the batch yet (by key); how many were new.
    fn enqueue(&self, entries: &[NewEntry]) -> Result<u64>;

    /// Claim up to `n` files for `owner` for `lease`: pending ones, and active ones
    /// whose lease expired (a worker died), but not those in `skip` (files this
    /// worker cannot do: not on its machine). Never a file another worker holds.
    fn claim(&self, owner: &str, n: usize, lease: Duration, skip: &[String]) -> Result<Vec<Claim>>;

    /// Extend `owner`'s leases on `keys` by `lease`; the keys it still holds (a key
    /// missing from the answer was taken over: stop uploading it).
    fn heartbeat(&self, owner: &str, keys: &[String], lease: Duration) -> Result<Vec<String>>;

    /// Note the upload URL and the offset the server acknowledged; false when `owner`
    /// no longer holds `key`.
    fn record(&self, owner: &str, key: &str, url: &str, offset: u64) -> Result<bool>;

    /// Note the offset the server acknowledged when it costs no wait: a ledger busy
    /// with another call (a slow database) may skip it, since the server's offset is
    /// the truth. False when `owner` no longer holds `key`. The default records it.
    fn note_progress(&self, owner: &str, key: &str, url: &str, offset: u64) -> Result<bool> {
        self.record(owner, key, url, offset)
    }

    /// Forget the upload URL of `key` (the server no longer has it, so the next upload
    /// creates one); false when `owner` no longer holds `key`.
    fn drop_url(&self, owner: &str, key: &str) -> Result<bool>;

    /// `key` is uploaded to the end; false when `owner` no longer holds it (then the
    /// new owner completes it).
    fn complete(&self, owner: &str, key: &str) -> Result<bool>;

    /// `key` failed with `reason`; false when `owner` no longer holds it.
    fn fail(&self, owner: &str, key: &str, reason: &str) -> Result<bool>;

    /// Give `key` back unfinished (a worker stopping): claimable at once.
    fn release(&self, owner: &str, key: &str) -> Result<bool>;

    /// The batch's totals.
    fn totals(&self) -> Result<Totals>;

    /// True while any file but those in `skip` is pending or held by a worker: the
    /// batch is not done for this worker. (A cheap question, asked by every idle worker
    /// while others finish.)
    fn unfinished(&self, skip: &[String]) -> Result<bool>;

    /// Up to `limit` failed files and why, most recent first.
    fn failures(&self, limit: usize) -> Result<Vec<(String, String)>> {
        let _ = limit;
        Ok(Vec::new())
    }

    /// Make every failed file pending again; how many.
    fn retry_failed(&self) -> Result<u64>;

    /// Drop the batch; how many files it had.
    fn forget(&self) -> Result<u64>;
}

/// This machine's name, as ledgers and shared stores mark what a machine wrote: the
/// kernel's hostname, else `$HOSTNAME`, else `localhost`.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}

/// The state of a [`MemoryLedger`] entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Pending,
    Active,
    Complete,
    Failed,
}

#[derive(Clone, Debug)]
struct Row {
    size: u64,
    url: Option<String>,
    offset: u64,
    state: State,
    owner: Option<String>,
    until: Option<Instant>,
    attempts: u32,
    error: Option<String>,
}

impl Row {
    fn claimable(&self, now: Instant) -> bool {
        self.state == State::Pending
            || (self.state == State::Active && self.until.is_some_and(|u| u < now))
    }

    /// (An expired lease that nobody took over yet is still the owner's.)
    fn held_by(&self, owner: &str) -> bool {
        self.state == State::Active && self.owner.as_deref() == Some(owner)
    }
}

/// A ledger in memory: the workers of one process share it (tests, and a reference
/// for other ledgers: every rule of the trait, in a few lines).
#[derive(Debug, Default)]
pub struct MemoryLedger {
    rows: Mutex<BTreeMap<String, Row>>,
}

impl MemoryLedger {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    fn rows(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Row>> {
        self.rows.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn held<T>(&self, owner: &str, key: &str, f: impl FnOnce(&mut Row) -> T) -> Result<bool> {
        let mut rows = self.rows();
        match rows.get_mut(key) {
            Some(r) if r.held_by(owner) => {
                f(r);
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

impl Ledger for MemoryLedger {
    fn enqueue(&self, entries: &[NewEntry]) -> Result<u64> {
        let mut rows = self.rows();
        let mut added = 0;
        for e in entries {
            match rows.get(&e.key) {
                Some(r) if r.size != e.size => return Err(conflict(&e.key, r.size, e.size)),
                Some(_) => {}
                None => {
                    added += 1;
                    rows.insert(
                        e.key.clone(),
                        Row {
                            size: e.size,
                            url: None,
                            offset: 0,
                            state: State::Pending,
                            owner: None,
                            until: None,
                            attempts: 0,
                            error: None,
                        },
                    );
                }
            }
        }
        Ok(added)
    }

    fn claim(&self, owner: &str, n: usize, lease: Duration, skip: &[String]) -> Result<Vec<Claim>> {
        let now = Instant::now();
        let mut rows = self.rows();
        let mut out = Vec::new();
        for (key, r) in rows.iter_mut() {
            if out.len() >= n {
                break;
            }
            if r.claimable(now) && !skip.contains(key) {
                r.state = State::Active;
                r.owner = Some(owner.to_owned());
                r.until = Some(now + lease);
                r.attempts += 1;
                out.push(Claim {
                    key: key.clone(),
                    size: r.size,
                    url: r.url.clone(),
                    offset: r.offset,
                    attempts: r.attempts,
                });
            }
        }
        Ok(out)
    }

    fn heartbeat(&self, owner: &str, keys: &[String], lease: Duration) -> Result<Vec<String>> {
        let now = Instant::now();
        let mut rows = self.rows();
        let mut kept = Vec::new();
        for k in keys {
            if let Some(r) = rows.get_mut(k)
                && r.held_by(owner)
            {
                r.until = Some(now + lease);
                kept.push(k.clone());
            }
        }
        Ok(kept)
    }

    fn record(&self, owner: &str, key: &str, url: &str, offset: u64) -> Result<bool> {
        self.held(owner, key, |r| {
            r.url = Some(url.to_owned());
            r.offset = r.offset.max(offset);
        })
    }

    fn drop_url(&self, owner: &str, key: &str) -> Result<bool> {
        self.held(owner, key, |r| {
            r.url = None;
            r.offset = 0;
        })
    }

    fn complete(&self, owner: &str, key: &str) -> Result<bool> {
        self.held(owner, key, |r| {
            r.state = State::Complete;
            r.offset = r.size;
            r.owner = None;
            r.until = None;
            r.error = None;
        })
    }

    fn fail(&self, owner: &str, key: &str, reason: &str) -> Result<bool> {
        self.held(owner, key, |r| {
            r.state = State::Failed;
            r.owner = None;
            r.until = None;
            r.error = Some(reason.to_owned());
        })
    }

    fn release(&self, owner: &str, key: &str) -> Result<bool> {
        self.held(owner, key, |r| {
            r.state = State::Pending;
            r.owner = None;
            r.until = None;
        })
    }

    fn totals(&self) -> Result<Totals> {
        let now = Instant::now();
        let mut t = Totals::default();
        for r in self.rows().values() {
            t.total += 1;
            t.bytes_total += r.size;
            if r.claimable(now) {
                t.pending += 1;
                continue;
            }
            match r.state {
                State::Active => t.active += 1,
                State::Complete => {
                    t.complete += 1;
                    t.bytes_done += r.size;
                }
                State::Failed => t.failed += 1,
                State::Pending => {}
            }
        }
        Ok(t)
    }

    fn unfinished(&self, skip: &[String]) -> Result<bool> {
        Ok(self
            .rows()
            .iter()
            .any(|(k, r)| matches!(r.state, State::Pending | State::Active) && !skip.contains(k)))
    }

    fn failures(&self, limit: usize) -> Result<Vec<(String, String)>> {
        Ok(self
            .rows()
            .iter()
            .filter(|(_, r)| r.state == State::Failed)
            .take(limit)
            .map(|(k, r)| (k.clone(), r.error.clone().unwrap_or_default()))
            .collect())
    }

    fn retry_failed(&self) -> Result<u64> {
        let mut n = 0;
        for r in self.rows().values_mut() {
            if r.state == State::Failed {
                r.state = State::Pending;
                n += 1;
            }
        }
        Ok(n)
    }

    fn forget(&self) -> Result<u64> {
        let mut rows = self.rows();
        let n = rows.len() as u64;
        rows.clear();
        Ok(n)
    }
}

/// The error of a file enqueued under a key the batch holds with another size: another
/// file, most likely another set of paths under the same batch name.
pub fn conflict(key: &str, theirs: u64, ours: u64) -> Error {
    Error::invalid(format!(
        "the batch already has {key:?} with {theirs} bytes, but here it is {ours} bytes: another file under the same key (another set of paths under this batch name? give the batch another --name)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_memory_ledger_keeps_the_rules() {
        let l = MemoryLedger::new();
        let lease = Duration::from_secs(30);
        assert_eq!(
            l.enqueue(&[NewEntry::new("a", 1), NewEntry::new("b", 2)])
                .unwrap(),
            2
        );
        assert_eq!(l.enqueue(&[NewEntry::new("a", 1)]).unwrap(), 0);
        assert!(
            l.enqueue(&[NewEntry::new("a", 5)])
                .unwrap_err()
                .is_invalid()
        );
        let c = l.claim("w1", 1, lease, &[]).unwrap();
        assert_eq!(c[0].key, "a");
        assert!(l.record("w1", "a", "http://x/1", 1).unwrap());
        assert!(!l.record("w2", "a", "http://x/2", 1).unwrap());
        // A lease that ran out: another worker takes the file, with its URL.
        let c = l.claim("w2", 5, Duration::ZERO, &[]).unwrap();
        assert_eq!(c.len(), 1, "b only: a is w1's");
        std::thread::sleep(Duration::from_millis(5));
        let c = l.claim("w3", 5, lease, &[]).unwrap();
        assert_eq!(c.iter().map(|c| c.key.as_str()).collect::<Vec<_>>(), ["b"]);
        assert!(!l.complete("w2", "b").unwrap(), "w3 took b over");
        assert!(l.complete("w3", "b").unwrap());
        assert_eq!(l.heartbeat("w1", &["a".into()], lease).unwrap(), ["a"]);
        assert!(l.fail("w1", "a", "boom").unwrap());
        let t = l.totals().unwrap();
        assert_eq!((t.total, t.complete, t.failed, t.bytes_done), (2, 1, 1, 2));
        assert_eq!(
            l.failures(5).unwrap(),
            [("a".to_owned(), "boom".to_owned())]
        );
        assert_eq!(l.retry_failed().unwrap(), 1);
        let c = l.claim("w4", 5, lease, &[]).unwrap();
        assert_eq!(
            (c[0].url.as_deref(), c[0].attempts),
            (Some("http://x/1"), 2)
        );
        assert_eq!(l.forget().unwrap(), 2);
    }
}
