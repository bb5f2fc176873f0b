//! A claimed file's ledger entry, as the URL store of its upload.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::core::ledger::Ledger;
use crate::core::store::{Fingerprinter, SourceInfo, UploadRecord, UrlStore};
use crate::{Error, Result};

/// The ledger entry of one claimed file, as a URL store for its upload: the URL goes
/// into the entry the moment the server gives it, and progress with it.
pub(super) struct Entry {
    pub(super) ledger: Arc<dyn Ledger>,
    pub(super) owner: String,
    pub(super) key: String,
    pub(super) size: u64,
    pub(super) state: Mutex<EntryState>,
}

#[derive(Default)]
pub(super) struct EntryState {
    pub(super) url: Option<String>,
    pub(super) offset: u64,
    /// A record was written: the URL is this file's from now on.
    pub(super) started: bool,
    /// The ledger said another worker holds the file.
    pub(super) lost: bool,
    /// The URL the ledger holds for the file (a record that did not reach it is
    /// written again before the file is settled).
    pub(super) saved: Option<String>,
    /// When this worker last wrote the file's record.
    pub(super) written: Option<Instant>,
    /// The ledger could not take the upload's URL: no byte went (a worker that takes
    /// the file over could not know the upload).
    pub(super) unrecorded: bool,
}

/// How often an upload's progress goes to the ledger (the server's offset is the
/// truth; the ledger's is for `ledger status`).
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

impl Entry {
    pub(super) fn state(&self) -> std::sync::MutexGuard<'_, EntryState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lost_error(&self) -> Error {
        Error::store(format!(
            "{}: another worker holds the file now (this worker's lease ran out)",
            self.key
        ))
    }

    /// Write the URL again if the ledger does not have it (a write that failed).
    pub(super) fn flush(&self) -> Result<()> {
        let (url, offset) = {
            let s = self.state();
            match &s.url {
                Some(u) if s.saved.as_ref() != Some(u) => (u.clone(), s.offset),
                _ => return Ok(()),
            }
        };
        if !self.ledger.record(&self.owner, &self.key, &url, offset)? {
            self.state().lost = true;
            return Err(self.lost_error());
        }
        self.state().saved = Some(url);
        Ok(())
    }
}

impl UrlStore for Entry {
    fn find(&self, fingerprint: &str) -> Result<Vec<UploadRecord>> {
        let s = self.state();
        Ok(s.url
            .iter()
            .map(|u| {
                let mut r = UploadRecord::new(fingerprint, u.clone());
                r.length = Some(self.size);
                r.offset = Some(s.offset);
                r
            })
            .collect())
    }

    fn add(&self, record: &UploadRecord) -> Result<()> {
        {
            let mut s = self.state();
            s.started = true;
            s.url = Some(record.url.clone());
            s.offset = s.offset.max(record.offset.unwrap_or(0));
        }
        let offset = record.offset.unwrap_or(0);
        match self
            .ledger
            .record(&self.owner, &self.key, &record.url, offset)
        {
            Ok(true) => {
                let mut s = self.state();
                s.saved = Some(record.url.clone());
                s.written = Some(Instant::now());
                Ok(())
            }
            Ok(false) => {
                self.state().lost = true;
                Err(self.lost_error())
            }
            // A new URL must be in the ledger before any byte goes: else a worker that
            // takes the file over makes a second upload. Progress may wait: written
            // again at the next chance.
            Err(e) => {
                let mut st = self.state();
                if st.saved.as_deref() != Some(record.url.as_str()) {
                    st.unrecorded = true;
                    return Err(e);
                }
                tracing::debug!(key = %self.key, error = %e, "the upload's progress did not reach the ledger");
                Ok(())
            }
        }
    }

    /// Progress: written when the last write is [`PROGRESS_EVERY`] old (the upload's
    /// end needs none: completing the file sets its offset).
    fn update(&self, record: &UploadRecord) -> Result<()> {
        {
            let mut s = self.state();
            let fresh = s.saved.as_deref() == Some(record.url.as_str())
                && s.written.is_some_and(|t| t.elapsed() < PROGRESS_EVERY);
            s.offset = s.offset.max(record.offset.unwrap_or(0));
            if fresh
                || record.offset == Some(self.size)
                || s.saved.as_deref() != Some(record.url.as_str())
            {
                // (A URL the ledger does not have yet goes by `add`, from `flush`.)
                return Ok(());
            }
        }
        let offset = record.offset.unwrap_or(0);
        match self
            .ledger
            .note_progress(&self.owner, &self.key, &record.url, offset)
        {
            Ok(true) => {
                self.state().written = Some(Instant::now());
                Ok(())
            }
            Ok(false) => {
                self.state().lost = true;
                Err(self.lost_error())
            }
            Err(e) => {
                tracing::debug!(key = %self.key, error = %e, "the upload's progress did not reach the ledger");
                Ok(())
            }
        }
    }

    fn remove(&self, _fingerprint: &str, url: &str) -> Result<bool> {
        let mut s = self.state();
        // Once this worker wrote a record, the URL is the file's: an upload that ends
        // drops its record, but a ledger entry keeps it.
        if s.started || s.url.as_deref() != Some(url) {
            return Ok(false);
        }
        // A stored URL the server no longer has: the next upload creates one.
        s.url = None;
        s.offset = 0;
        drop(s);
        self.ledger.drop_url(&self.owner, &self.key)
    }

    fn list(&self) -> Result<Vec<UploadRecord>> {
        Ok(Vec::new())
    }

    fn find_by_source(&self, _: Option<&str>, _: &str) -> Result<Vec<UploadRecord>> {
        Ok(Vec::new())
    }

    fn location(&self) -> String {
        "the batch's ledger".into()
    }
}

/// A ledger entry is found by its key, not by reading the file.
pub(super) struct ByKey(pub(super) String);

impl Fingerprinter for ByKey {
    fn fingerprint(&self, _: &SourceInfo) -> Result<Option<String>> {
        Ok(Some(self.0.clone()))
    }
}
