//! The fleet engine over a ledger that fails when told to: the real tus server stores the
//! bytes.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use support::{TusServer, make_file};
use tusflow::ledger::{Claim, Ledger, MemoryLedger, NewEntry, Totals};
use tusflow::{Client, Error, Result, batch, fleet};

/// A [`MemoryLedger`] whose first `failing` records fail, as a database
/// that restarts at that moment does.
struct Flaky {
    inner: MemoryLedger,
    failing: AtomicUsize,
}

impl Ledger for Flaky {
    fn enqueue(&self, entries: &[NewEntry]) -> Result<u64> {
        self.inner.enqueue(entries)
    }
    fn claim(&self, owner: &str, n: usize, lease: Duration, skip: &[String]) -> Result<Vec<Claim>> {
        self.inner.claim(owner, n, lease, skip)
    }
    fn heartbeat(&self, owner: &str, keys: &[String], lease: Duration) -> Result<Vec<String>> {
        self.inner.heartbeat(owner, keys, lease)
    }
    fn record(&self, owner: &str, key: &str, url: &str, offset: u64) -> Result<bool> {
        let left = self.failing.load(Ordering::SeqCst);
        if left > 0 {
            self.failing.store(left - 1, Ordering::SeqCst);
            return Err(Error::store(
                "the ledger database: connection reset by peer",
            ));
        }
        self.inner.record(owner, key, url, offset)
    }
    fn drop_url(&self, owner: &str, key: &str) -> Result<bool> {
        self.inner.drop_url(owner, key)
    }
    fn complete(&self, owner: &str, key: &str) -> Result<bool> {
        self.inner.complete(owner, key)
    }
    fn fail(&self, owner: &str, key: &str, reason: &str) -> Result<bool> {
        self.inner.fail(owner, key, reason)
    }
    fn release(&self, owner: &str, key: &str) -> Result<bool> {
        self.inner.release(owner, key)
    }
    fn totals(&self) -> Result<Totals> {
        self.inner.totals()
    }
    fn unfinished(&self, skip: &[String]) -> Result<bool> {
        self.inner.unfinished(skip)
    }
    fn retry_failed(&self) -> Result<u64> {
        self.inner.retry_failed()
    }
    fn forget(&self) -> Result<u64> {
        self.inner.forget()
    }
}

#[tokio::test]
async fn a_url_the_ledger_could_not_take_is_given_back_and_uploaded_not_failed() {
    let server = TusServer::start();
    let dir = tempfile::tempdir().unwrap();
    for i in 0..4u64 {
        make_file(dir.path(), &format!("f{i}.bin"), 100_000 + i, i);
    }
    let ledger = Arc::new(Flaky {
        inner: MemoryLedger::new(),
        failing: AtomicUsize::new(1),
    });
    let entries: Vec<NewEntry> = (0..4)
        .map(|i| NewEntry::new(format!("f{i}.bin"), 100_000 + i as u64))
        .collect();
    assert_eq!(ledger.enqueue(&entries).unwrap(), 4);
    let base = dir.path().to_owned();
    let worker = fleet::Worker::new(
        ledger.clone(),
        fleet::owner_name(),
        Duration::from_secs(10),
        Arc::new(move |k: &str| Some(base.join(k))),
    );
    let client = Client::new(server.endpoint.clone()).unwrap();
    let mut opts = batch::Options::default();
    opts.concurrency = 2;
    let mut reports = Vec::new();
    let (summary, interrupted) = fleet::run(
        &client,
        &worker,
        &opts,
        None,
        |r| reports.push(r.clone()),
        std::future::pending(),
    )
    .await;
    assert!(!interrupted);
    assert_eq!((summary.failed, summary.complete), (0, 4), "{reports:?}");
    assert_eq!(summary.unfinished, 1, "the one given back: {reports:?}");
    let t = ledger.totals().unwrap();
    assert_eq!((t.complete, t.failed, t.pending), (4, 0, 0));
    // The URL reached the ledger as the file was given back (no byte went before it
    // did), and the next claim continued that upload: no second upload of the file.
    assert_eq!(summary.resumed, 1, "{reports:?}");
    assert_eq!(server.complete_count(), 4);
    let mut sizes = server.stored_sizes();
    sizes.sort();
    assert_eq!(sizes, vec![100_000, 100_001, 100_002, 100_003]);
}
