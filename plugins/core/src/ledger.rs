//! A batch shared by workers: the [`Ledger`] holds one entry per file of a named batch,
//! which workers claim with a lease, keep with heartbeats, and complete or fail. tus
//! makes a take-over safe: the server's offset (`HEAD`) is the truth, so a worker that
//! claims a file another one began continues the same upload URL and sends the rest.
//!
//! The trait is object-safe and blocking, as [`crate::store::UrlStore`] is: callers run
//! it off the async runtime.

use std::time::Duration;

use crate::Result;

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
    /// whose lease expired (a worker died). Never a file another worker holds.
    fn claim(&self, owner: &str, n: usize, lease: Duration) -> Result<Vec<Claim>>;

    /// Extend `owner`'s leases on `keys` by `lease`; the keys it still holds (a key
    /// missing from the answer was taken over: stop uploading it).
    fn heartbeat(&self, owner: &str, keys: &[String], lease: Duration) -> Result<Vec<String>>;

    /// Note the upload URL and the offset the server acknowledged; false when `owner`
    /// no longer holds `key`.
    fn record(&self, owner: &str, key: &str, url: &str, offset: u64) -> Result<bool>;

    /// `key` is uploaded to the end; false when `owner` no longer holds it (then the
    /// new owner completes it).
    fn complete(&self, owner: &str, key: &str) -> Result<bool>;

    /// `key` failed with `reason`; false when `owner` no longer holds it.
    fn fail(&self, owner: &str, key: &str, reason: &str) -> Result<bool>;

    /// Give `key` back unfinished (a worker stopping): claimable at once.
    fn release(&self, owner: &str, key: &str) -> Result<bool>;

    /// The batch's totals.
    fn totals(&self) -> Result<Totals>;

    /// Make every failed file pending again; how many.
    fn retry_failed(&self) -> Result<u64>;

    /// Drop the batch; how many files it had.
    fn forget(&self) -> Result<u64>;
}
