//! The embedded default URL store of tusflow, on [redb](https://docs.rs/redb).
//!
//! One file holds a table `uploads_v1`: key `fingerprint \0 url`, value the
//! [`UploadRecord`] as JSON. Every new record and every removal is committed (fsync)
//! before the call returns, so a process killed at any moment leaves the file as of
//! the last committed change; changes made at the same moment by several uploads
//! share one transaction. An [`UrlStore::update`] (an offset that moved, an upload
//! complete) is queued in memory, read back by this process at once, and committed
//! with the next change or when the store is dropped: a crash may lose it, and the
//! server's offset is the truth.
//!
//! Several processes (two `tusflow upload` at once) share the file: redb locks it while
//! it is open, so a process holds it only while it works: it is closed after 100 ms
//! without an operation, and let go for a moment after each second of holding. A
//! process that finds it locked waits (30 s at most by default) and then fails with an
//! error naming the file. (Opening costs about a millisecond, so a batch of small
//! files would spend most of its time opening the store if it opened it per
//! operation.)
//!
//! ```
//! use tusflow_core::store::{UploadRecord, UrlStore, newest_first};
//! let dir = tempfile::tempdir().unwrap();
//! let store = tusflow_store_redb::RedbStore::open(dir.path().join("uploads.redb")).unwrap();
//! store.add(&UploadRecord::new("fp", "http://127.0.0.1:1080/files/abc")).unwrap();
//! assert_eq!(store.find("fp").unwrap().len(), 1);
//! ```

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tusflow_core::store::{UploadRecord, UrlStore, newest_first};
use tusflow_core::{Error, Result};

/// The table, versioned by name.
const UPLOADS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("uploads_v1");
/// An index: `endpoint \0 source \0 fingerprint \0 url` -> (), kept with `UPLOADS`.
const BY_SOURCE: TableDefinition<'_, &str, ()> = TableDefinition::new("uploads_by_source_v1");

fn source_key(endpoint: Option<&str>, source: &str) -> String {
    format!("{}\0{source}\0", endpoint.unwrap_or(""))
}

fn index_key(r: &UploadRecord) -> Option<String> {
    r.source.as_deref().map(|s| {
        format!(
            "{}{}\0{}",
            source_key(r.endpoint.as_deref(), s),
            r.fingerprint,
            r.url
        )
    })
}

/// Closed after this long without an operation.
const IDLE: Duration = Duration::from_millis(100);
/// Let go after holding the file this long, so that other processes get their turn.
const HOLD: Duration = Duration::from_secs(1);
/// How long it is let go then: longer than the 20 ms between a waiter's tries.
const YIELD: Duration = Duration::from_millis(50);

/// redb's page cache for the store (redb's default is 1 GiB): records are small and
/// read once per upload, so a batch of any size stays within a few MiB.
const CACHE_SIZE: usize = 4 << 20;

/// A URL store in a redb file.
pub struct RedbStore {
    path: PathBuf,
    wait: Duration,
    /// The database while this process holds it; one operation at a time.
    held: Arc<Mutex<Option<Held>>>,
    /// Changes waiting for a commit: concurrent changes share one (group commit).
    queue: Mutex<Queue>,
    committed: Condvar,
    /// Updates not committed yet, by key (committed with the next change, or on drop).
    lazy: Mutex<HashMap<String, UploadRecord>>,
}

/// The id of a queued update in a commit: nobody waits for its result.
const QUEUED: u64 = u64::MAX;

/// A change to the store.
enum Change {
    Add(UploadRecord),
    Remove { fingerprint: String, url: String },
}

#[derive(Default)]
struct Queue {
    next: u64,
    pending: Vec<(u64, Change)>,
    /// Results of committed changes, until their callers take them.
    done: HashMap<u64, Result<bool>>,
    /// True while a caller commits for everybody.
    committing: bool,
}

struct Held {
    db: Database,
    opened: Instant,
    last: Instant,
}

impl fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedbStore({})", self.path.display())
    }
}

/// The default store file: `tusflow/uploads.redb` in the platform's data directory
/// (`$XDG_DATA_HOME`, else `~/.local/share`; `~/Library/Application Support` on macOS;
/// `%APPDATA%` on Windows).
pub fn default_path() -> Option<PathBuf> {
    let base = if cfg!(windows) {
        std::env::var_os("APPDATA").map(PathBuf::from)
    } else if cfg!(target_os = "macos") {
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join("Library/Application Support"))
    } else {
        std::env::var_os("XDG_DATA_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
    };
    base.map(|b| b.join("tusflow").join("uploads.redb"))
}

fn key(fingerprint: &str, url: &str) -> String {
    format!("{fingerprint}\0{url}")
}

impl RedbStore {
    /// Open (or create) the store at `path`, creating its directory. Errors name the
    /// file: in use by another process for too long, corrupt, not a redb file, not
    /// writable.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_waiting(path, Duration::from_secs(30))
    }

    /// Like [`RedbStore::open`], waiting at most `wait` whenever another process has
    /// the file open.
    pub fn open_waiting(path: impl AsRef<Path>, wait: Duration) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                Error::invalid(format!(
                    "cannot create the store directory {}: {e}",
                    dir.display()
                ))
            })?;
        }
        create_atomically(&path)?;
        let store = RedbStore::unopened(path, wait);
        // Open it and create the tables up front: errors show now, and readers never
        // find a table missing.
        store.write(|_, _| Ok(()))?;
        Ok(store)
    }

    fn unopened(path: PathBuf, wait: Duration) -> Self {
        let store = RedbStore {
            path,
            wait,
            held: Arc::new(Mutex::new(None)),
            queue: Mutex::new(Queue::default()),
            committed: Condvar::new(),
            lazy: Mutex::new(HashMap::new()),
        };
        // Close the file once it is idle; the thread ends with the store.
        let weak: Weak<Mutex<Option<Held>>> = Arc::downgrade(&store.held);
        std::thread::Builder::new()
            .name("tusflow-redb-idle".into())
            .spawn(move || {
                while let Some(held) = {
                    std::thread::sleep(IDLE / 2);
                    weak.upgrade()
                } {
                    let mut h = held.lock().unwrap_or_else(|p| p.into_inner());
                    if h.as_ref().is_some_and(|h| h.last.elapsed() >= IDLE) {
                        *h = None;
                    }
                }
            })
            .ok();
        store
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Close the file now (it opens again at the next operation), letting other
    /// processes in without waiting for the idle timeout.
    pub fn release(&self) {
        *self.held.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    fn err(&self, e: impl Into<redb::Error>) -> Error {
        store_error(&self.path, e.into())
    }

    /// Run `f` with the database open, waiting while another process has it.
    fn with_db<T>(&self, f: impl FnOnce(&Database) -> Result<T>) -> Result<T> {
        let lock = || self.held.lock().unwrap_or_else(|p| p.into_inner());
        let mut guard = lock();
        if guard.as_ref().is_some_and(|h| h.opened.elapsed() >= HOLD) {
            *guard = None;
            drop(guard);
            std::thread::sleep(YIELD);
            guard = lock();
        }
        if guard.is_none() {
            let start = Instant::now();
            let db = loop {
                match Database::builder()
                    .set_cache_size(CACHE_SIZE)
                    .create(&self.path)
                {
                    Ok(db) => break db,
                    Err(redb::DatabaseError::DatabaseAlreadyOpen)
                        if start.elapsed() < self.wait =>
                    {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(e) => return Err(open_error(&self.path, e.into(), self.wait)),
                }
            };
            let now = Instant::now();
            *guard = Some(Held {
                db,
                opened: now,
                last: now,
            });
        }
        let held = guard.as_mut().expect("opened above");
        let result = f(&held.db);
        held.last = Instant::now();
        if result.is_err() {
            // After a failed write (a full disk) redb refuses everything until the file
            // is opened again: close it, so the next change tries afresh and reports
            // its own error, or succeeds once there is room.
            *guard = None;
        }
        result
    }

    fn write(
        &self,
        f: impl FnOnce(&mut redb::Table<'_, &str, &[u8]>, &mut redb::Table<'_, &str, ()>) -> Result<()>,
    ) -> Result<()> {
        self.with_db(|db| {
            let txn = db.begin_write().map_err(|e| self.err(e))?;
            {
                let mut table = txn.open_table(UPLOADS).map_err(|e| self.err(e))?;
                let mut index = txn.open_table(BY_SOURCE).map_err(|e| self.err(e))?;
                f(&mut table, &mut index)?;
            }
            txn.commit().map_err(|e| self.err(e))
        })
    }

    /// Apply `change` durably. Changes made at the same time by several threads go in
    /// one transaction, so they share one fsync: the first caller commits everything
    /// queued, the others wait for it.
    fn submit(&self, change: Change) -> Result<bool> {
        let lock = || self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let mut q = lock();
        let id = q.next;
        q.next += 1;
        q.pending.push((id, change));
        loop {
            if let Some(result) = q.done.remove(&id) {
                return result;
            }
            if q.committing {
                q = self.committed.wait(q).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            q.committing = true;
            let mut batch = std::mem::take(&mut q.pending);
            drop(q);
            // Queued updates go with it (before it: a removal in it wins).
            batch.splice(0..0, self.drain_queued());
            let results = self.commit(batch);
            q = lock();
            q.committing = false;
            q.done
                .extend(results.into_iter().filter(|(id, _)| *id != QUEUED));
            self.committed.notify_all();
        }
    }

    /// One transaction for `batch`; each change's result (all fail if it fails).
    fn commit(&self, batch: Vec<(u64, Change)>) -> Vec<(u64, Result<bool>)> {
        let mut found = Vec::with_capacity(batch.len());
        let outcome = self.write(|t, index| {
            for (id, change) in &batch {
                let (k, value) = match change {
                    Change::Add(r) => (
                        key(&r.fingerprint, &r.url),
                        Some(serde_json::to_vec(r).expect("a record serializes")),
                    ),
                    Change::Remove { fingerprint, url } => (key(fingerprint, url), None),
                };
                let old = match &value {
                    Some(v) => t.insert(k.as_str(), v.as_slice()),
                    None => t.remove(k.as_str()),
                }
                .map_err(|e| self.err(e))?;
                found.push((*id, old.is_some()));
                let old = old.and_then(|v| serde_json::from_slice::<UploadRecord>(v.value()).ok());
                let old_key = old.as_ref().and_then(index_key);
                let new_key = match change {
                    Change::Add(r) => index_key(r),
                    Change::Remove { .. } => None,
                };
                // (An update of the same source keeps its index entry as it is.)
                if old_key != new_key {
                    if let Some(ik) = old_key {
                        index.remove(ik.as_str()).map_err(|e| self.err(e))?;
                    }
                    if let Some(ik) = new_key {
                        index.insert(ik.as_str(), ()).map_err(|e| self.err(e))?;
                    }
                }
            }
            Ok(())
        });
        match outcome {
            Ok(()) => found.into_iter().map(|(id, f)| (id, Ok(f))).collect(),
            Err(e) => batch.iter().map(|(id, _)| (*id, Err(e.clone()))).collect(),
        }
    }

    /// The queued updates, taken for a commit.
    fn drain_queued(&self) -> Vec<(u64, Change)> {
        self.lazy()
            .drain()
            .map(|(_, r)| (QUEUED, Change::Add(r)))
            .collect()
    }

    fn lazy(&self) -> std::sync::MutexGuard<'_, HashMap<String, UploadRecord>> {
        self.lazy.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `out` with the queued updates that `keep` selects in place of what the file
    /// holds, newest first.
    fn overlay(
        &self,
        mut out: Vec<UploadRecord>,
        keep: impl Fn(&UploadRecord) -> bool,
    ) -> Vec<UploadRecord> {
        let lazy = self.lazy();
        if lazy.is_empty() {
            return out;
        }
        for r in lazy.values().filter(|r| keep(r)) {
            match out
                .iter_mut()
                .find(|o| o.fingerprint == r.fingerprint && o.url == r.url)
            {
                Some(o) => *o = r.clone(),
                None => out.push(r.clone()),
            }
        }
        newest_first(out)
    }

    fn decode(&self, key: &str, value: &[u8]) -> Result<UploadRecord> {
        serde_json::from_slice(value).map_err(|e| {
            Error::invalid(format!(
                "the store {} has an unreadable record {:?}: {e}",
                self.path.display(),
                key.split('\0').next().unwrap_or("")
            ))
        })
    }

    fn read_all(&self) -> Result<Vec<UploadRecord>> {
        self.with_db(|db| {
            let txn = db.begin_read().map_err(|e| self.err(e))?;
            let table = txn.open_table(UPLOADS).map_err(|e| self.err(e))?;
            let mut out = Vec::new();
            for item in table.iter().map_err(|e| self.err(e))? {
                let (k, v) = item.map_err(|e| self.err(e))?;
                out.push(self.decode(k.value(), v.value())?);
            }
            Ok(newest_first(out))
        })
    }
}

/// Create the store file, with its tables, if nothing is at `path`: built under a
/// temporary name (mode 0600: upload URLs grant write access on many servers) and
/// linked into place, so a process killed while creating it never leaves a
/// half-written file that every later open would reject. A regular file is opened as
/// it is; anything else (a directory, a device such as `/dev/null`, a FIFO, an empty
/// file) is an error naming the path, and is left alone.
fn create_atomically(path: &Path) -> Result<()> {
    let shown = path.display();
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() && m.len() > 0 => return Ok(()),
        Ok(m) if m.is_file() => {
            return Err(Error::invalid(format!(
                "the store {shown} is an empty file, not a tusflow store: remove it or give another --store"
            )));
        }
        Ok(m) => {
            let what = if m.is_dir() {
                "a directory"
            } else {
                "not a regular file"
            };
            return Err(Error::invalid(format!(
                "the store {shown} is {what}: give --store the path of a file"
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(Error::store(format!(
                "the store {shown} cannot be read: {e}"
            )));
        }
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".new-{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let built = (|| -> std::result::Result<(), redb::Error> {
        let db = Database::create(&tmp)?;
        let txn = db.begin_write()?;
        txn.open_table(UPLOADS)?;
        txn.open_table(BY_SOURCE)?;
        txn.commit()?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
        }
        Ok(())
    })();
    let placed = built.map_err(|e| store_error(path, e)).and_then(|()| {
        // A link fails if another process placed its file first: theirs is as good.
        match std::fs::hard_link(&tmp, path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(_) if !path.exists() => {
                std::fs::rename(&tmp, path).map_err(|e| store_error(path, redb::Error::Io(e)))
            }
            Err(_) => Ok(()),
        }
    });
    let _ = std::fs::remove_file(&tmp);
    placed
}

fn open_error(path: &Path, e: redb::Error, waited: Duration) -> Error {
    match e {
        redb::Error::DatabaseAlreadyOpen => Error::store(format!(
            "the store {} stayed in use by another process for {}s (use --store to pick another file, or --no-store)",
            path.display(),
            waited.as_secs_f64()
        )),
        other => store_error(path, other),
    }
}

fn store_error(path: &Path, e: redb::Error) -> Error {
    // redb reads a file that is not a redb database as an I/O error of kind InvalidData.
    let not_a_store = match &e {
        redb::Error::Corrupted(_) | redb::Error::UpgradeRequired(_) => true,
        redb::Error::Io(io) => io.kind() == std::io::ErrorKind::InvalidData,
        _ => false,
    };
    let shown = path.display();
    match &e {
        _ if not_a_store => Error::invalid(format!(
            "the store {shown} is corrupt or not a tusflow store: {e}"
        )),
        redb::Error::Io(_) => {
            Error::store(format!("the store {shown} cannot be read or written: {e}"))
        }
        _ => Error::store(format!("the store {shown} failed: {e}")),
    }
}

impl Drop for RedbStore {
    fn drop(&mut self) {
        let queued = self.drain_queued();
        if !queued.is_empty() {
            // (An update that cannot be written is lost as in a crash: the server's
            // offset is the truth.)
            let _ = self.commit(queued);
        }
    }
}

impl UrlStore for RedbStore {
    fn find(&self, fingerprint: &str) -> Result<Vec<UploadRecord>> {
        // Keys start with the fingerprint: a range scan, not a scan of every record.
        let prefix = format!("{fingerprint}\0");
        self.with_db(|db| {
            let txn = db.begin_read().map_err(|e| self.err(e))?;
            let table = txn.open_table(UPLOADS).map_err(|e| self.err(e))?;
            let mut out = Vec::new();
            for item in table.range(prefix.as_str()..).map_err(|e| self.err(e))? {
                let (k, v) = item.map_err(|e| self.err(e))?;
                if !k.value().starts_with(prefix.as_str()) {
                    break;
                }
                out.push(self.decode(k.value(), v.value())?);
            }
            Ok(newest_first(out))
        })
        .map(|out| self.overlay(out, |r| r.fingerprint == fingerprint))
    }

    fn add(&self, record: &UploadRecord) -> Result<()> {
        self.submit(Change::Add(record.clone())).map(drop)
    }

    /// Queued: read back at once, committed with the next change or on drop. A crash
    /// may lose it, never the record as first added.
    fn update(&self, record: &UploadRecord) -> Result<()> {
        self.lazy()
            .insert(key(&record.fingerprint, &record.url), record.clone());
        Ok(())
    }

    fn queues_updates(&self) -> bool {
        true
    }

    fn remove(&self, fingerprint: &str, url: &str) -> Result<bool> {
        // (A queued update of it must not bring it back.)
        let queued = self.lazy().remove(&key(fingerprint, url)).is_some();
        if queued {
            // It may exist only in the queue: removed either way.
            let _ = self.submit(Change::Remove {
                fingerprint: fingerprint.to_owned(),
                url: url.to_owned(),
            })?;
            return Ok(true);
        }
        self.submit(Change::Remove {
            fingerprint: fingerprint.to_owned(),
            url: url.to_owned(),
        })
    }

    fn find_by_source(&self, endpoint: Option<&str>, source: &str) -> Result<Vec<UploadRecord>> {
        let prefix = source_key(endpoint, source);
        self.with_db(|db| {
            let txn = db.begin_read().map_err(|e| self.err(e))?;
            let index = txn.open_table(BY_SOURCE).map_err(|e| self.err(e))?;
            let table = txn.open_table(UPLOADS).map_err(|e| self.err(e))?;
            let mut out = Vec::new();
            for item in index.range(prefix.as_str()..).map_err(|e| self.err(e))? {
                let (ik, _) = item.map_err(|e| self.err(e))?;
                let Some(rest) = ik.value().strip_prefix(prefix.as_str()).map(str::to_owned) else {
                    break;
                };
                if let Some(v) = table.get(rest.as_str()).map_err(|e| self.err(e))?
                    && let Ok(r) = serde_json::from_slice::<UploadRecord>(v.value())
                {
                    out.push(r);
                }
            }
            Ok(newest_first(out))
        })
        .map(|out| {
            self.overlay(out, |r| {
                r.source.as_deref() == Some(source) && r.endpoint.as_deref() == endpoint
            })
        })
    }

    fn list(&self) -> Result<Vec<UploadRecord>> {
        self.read_all().map(|out| self.overlay(out, |_| true))
    }

    fn location(&self) -> String {
        self.path.display().to_string()
    }
}

#[cfg(test)]
mod tests;
