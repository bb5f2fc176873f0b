//! Resuming across restarts: [`UrlStore`] keeps the upload URL of each source under its
//! fingerprint (tuspy's `url_storage`, tus-js-client's `urlStorage`), and a
//! [`Fingerprinter`] says which source is which.
//!
//! Both traits are object-safe and blocking (a store writes to disk, a fingerprint
//! reads the file); the upload driver calls them off the async runtime.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::{FileSource, Result};

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What a store keeps about one upload.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct UploadRecord {
    /// The source's fingerprint.
    pub fingerprint: String,
    /// The upload URL.
    pub url: String,
    /// The endpoint it was created at.
    pub endpoint: Option<String>,
    /// The source, for people (a path).
    pub source: Option<String>,
    /// The upload's length.
    pub length: Option<u64>,
    /// The last offset the server confirmed.
    pub offset: Option<u64>,
    /// The `Upload-Metadata` sent on creation (header form).
    pub metadata: String,
    /// When it was created (Unix seconds).
    pub created: u64,
    /// When it last moved (Unix seconds).
    pub updated: u64,
    /// When the server said it expires (Unix seconds), if it did.
    pub expires: Option<u64>,
    /// The URLs of partial uploads, for parallel uploads.
    pub partial_urls: Vec<String>,
}

impl UploadRecord {
    /// A record made now.
    pub fn new(fingerprint: impl Into<String>, url: impl Into<String>) -> Self {
        let now = unix_now();
        UploadRecord {
            fingerprint: fingerprint.into(),
            url: url.into(),
            created: now,
            updated: now,
            ..Default::default()
        }
    }

    /// True when the server's expiry has passed.
    pub fn is_expired(&self, now: u64) -> bool {
        self.expires.is_some_and(|e| e <= now)
    }
}

/// Where upload URLs are kept between runs, in tus vocabulary.
pub trait UrlStore: Send + Sync + 'static {
    /// The records of `fingerprint`, most recently updated first.
    fn find(&self, fingerprint: &str) -> Result<Vec<UploadRecord>>;

    /// Add a record, or replace the one with the same fingerprint and URL.
    fn add(&self, record: &UploadRecord) -> Result<()>;

    /// Update a record the store has (a new offset, an upload complete). Unlike
    /// [`UrlStore::add`], this may be kept lazily: a crash may lose it, since the
    /// server's offset is the truth and the record as first added still names the
    /// upload. The default adds it.
    fn update(&self, record: &UploadRecord) -> Result<()> {
        self.add(record)
    }

    /// True when [`UrlStore::update`] only queues the change and returns at once (it
    /// neither blocks nor does I/O): the upload driver then calls it on the async
    /// runtime, without a trip to a blocking thread per upload. Default: false.
    fn queues_updates(&self) -> bool {
        false
    }

    /// Remove the record of `fingerprint` and `url`; true when there was one.
    fn remove(&self, fingerprint: &str, url: &str) -> Result<bool>;

    /// Every record, most recently updated first.
    fn list(&self) -> Result<Vec<UploadRecord>>;

    /// The records of uploads of `source` to `endpoint` (under any fingerprint), most
    /// recently updated first. Stores with many records should index this; the
    /// default scans [`UrlStore::list`].
    fn find_by_source(&self, endpoint: Option<&str>, source: &str) -> Result<Vec<UploadRecord>> {
        Ok(self
            .list()?
            .into_iter()
            .filter(|r| r.source.as_deref() == Some(source) && r.endpoint.as_deref() == endpoint)
            .collect())
    }

    /// Remove every record of `url`; how many there were.
    fn remove_url(&self, url: &str) -> Result<usize> {
        let mut n = 0;
        for r in self.list()?.into_iter().filter(|r| r.url == url) {
            n += usize::from(self.remove(&r.fingerprint, &r.url)?);
        }
        Ok(n)
    }

    /// Where the store is, for messages (a path).
    fn location(&self) -> String {
        "store".to_owned()
    }
}

/// A store in memory: for tests, and for resuming within one process.
#[derive(Default)]
pub struct MemoryStore {
    records: Mutex<BTreeMap<(String, String), UploadRecord>>,
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.records.lock().map_or(0, |r| r.len());
        write!(f, "MemoryStore({n} records)")
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

/// Records sorted the way [`UrlStore::find`] and [`UrlStore::list`] return them: most
/// recently updated first.
pub fn newest_first(mut v: Vec<UploadRecord>) -> Vec<UploadRecord> {
    v.sort_by(|a, b| b.updated.cmp(&a.updated).then(b.created.cmp(&a.created)));
    v
}

impl UrlStore for MemoryStore {
    fn find(&self, fingerprint: &str) -> Result<Vec<UploadRecord>> {
        let r = self.records.lock().unwrap_or_else(|p| p.into_inner());
        Ok(newest_first(
            r.values()
                .filter(|x| x.fingerprint == fingerprint)
                .cloned()
                .collect(),
        ))
    }

    fn add(&self, record: &UploadRecord) -> Result<()> {
        let mut r = self.records.lock().unwrap_or_else(|p| p.into_inner());
        r.insert(
            (record.fingerprint.clone(), record.url.clone()),
            record.clone(),
        );
        Ok(())
    }

    fn remove(&self, fingerprint: &str, url: &str) -> Result<bool> {
        let mut r = self.records.lock().unwrap_or_else(|p| p.into_inner());
        Ok(r.remove(&(fingerprint.to_owned(), url.to_owned()))
            .is_some())
    }

    fn list(&self) -> Result<Vec<UploadRecord>> {
        let r = self.records.lock().unwrap_or_else(|p| p.into_inner());
        Ok(newest_first(r.values().cloned().collect()))
    }

    fn location(&self) -> String {
        "memory".to_owned()
    }
}

/// What a [`Fingerprinter`] may look at.
#[derive(Clone)]
#[non_exhaustive]
pub struct SourceInfo {
    /// The path, for a file.
    pub path: Option<PathBuf>,
    /// The open file.
    pub file: Option<Arc<FileSource>>,
    /// The bytes, for a source in memory.
    pub bytes: Option<Bytes>,
    /// The length of the source.
    pub len: u64,
    /// The endpoint the upload goes to: the same file to two servers is two uploads.
    pub endpoint: Option<String>,
}

impl fmt::Debug for SourceInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceInfo")
            .field("path", &self.path)
            .field("len", &self.len)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl SourceInfo {
    /// A file source.
    pub fn file(path: PathBuf, file: Arc<FileSource>, len: u64, endpoint: Option<String>) -> Self {
        SourceInfo {
            path: Some(path),
            file: Some(file),
            bytes: None,
            len,
            endpoint,
        }
    }

    /// A source in memory.
    pub fn bytes(bytes: Bytes, endpoint: Option<String>) -> Self {
        SourceInfo {
            path: None,
            file: None,
            len: bytes.len() as u64,
            bytes: Some(bytes),
            endpoint,
        }
    }
}

/// Says which source is which, so an upload can be found again. `None`: this source
/// cannot be fingerprinted (a stream read once), and is not stored.
pub trait Fingerprinter: Send + Sync + 'static {
    /// The fingerprint of `source`.
    fn fingerprint(&self, source: &SourceInfo) -> Result<Option<String>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_store_finds_newest_first_and_removes() {
        let s = MemoryStore::new();
        let mut a = UploadRecord::new("fp", "http://h/files/a");
        a.updated = 10;
        let mut b = UploadRecord::new("fp", "http://h/files/b");
        b.updated = 20;
        s.add(&a).unwrap();
        s.add(&b).unwrap();
        s.add(&UploadRecord::new("other", "http://h/files/c"))
            .unwrap();
        let found = s.find("fp").unwrap();
        assert_eq!(
            found.iter().map(|r| r.url.as_str()).collect::<Vec<_>>(),
            ["http://h/files/b", "http://h/files/a"]
        );
        assert!(s.remove("fp", "http://h/files/b").unwrap());
        assert!(!s.remove("fp", "http://h/files/b").unwrap());
        assert_eq!(s.remove_url("http://h/files/c").unwrap(), 1);
        assert_eq!(s.list().unwrap().len(), 1);
        assert!(
            UploadRecord {
                expires: Some(5),
                ..a.clone()
            }
            .is_expired(6)
        );
        assert!(!a.is_expired(6));
    }
}
