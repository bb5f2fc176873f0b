//! What a client shares with its uploads: what it learned about the endpoint (its
//! capabilities, the largest body it takes after a 413) and where uploads are
//! remembered. Both the client and the upload driver use these; neither owns the
//! other's state.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::core::store::{Fingerprinter, UrlStore};
use crate::{Capabilities, Error, Result};

/// The smallest body a 413 answer halves the chunk size to; a 413 for a body this
/// small is an error.
pub const MIN_CHUNK_SIZE: u64 = 64 << 10;

/// Tries of a request while the endpoint has not answered this client yet: an
/// endpoint that is down is found out in these, not in a full retry budget per upload
/// (against a server that accepts and never answers, 4 stall timeouts: 2 minutes by
/// default).
pub const FIRST_CONTACT_TRIES: u32 = 4;

/// How long an endpoint found unreachable stays so: requests in this time fail at
/// once with the same error; the first after it tries again.
pub const UNREACHABLE_HOLD: Duration = Duration::from_secs(30);

/// What a client learned about its endpoint, shared by its clones and uploads.
#[derive(Debug)]
pub(crate) struct Learned {
    /// The endpoint's answer to `OPTIONS`, asked once.
    pub(crate) capabilities: tokio::sync::OnceCell<std::result::Result<Arc<Capabilities>, Error>>,
    /// The largest body the endpoint took after a 413 (`u64::MAX`: no limit met).
    chunk_limit: AtomicU64,
    /// True once the endpoint answered anything (a status, even an error).
    answered: AtomicBool,
    /// When the endpoint was found unreachable, and the error that says so.
    down: Mutex<Option<(Instant, Error)>>,
    /// How long that lasts (zero: not at all).
    hold: Duration,
    /// IETF mode: the limits of the latest answer with `Upload-Limit`.
    pub(crate) limits: Mutex<crate::core::ietf::Limits>,
    /// The endpoint speaks another protocol than the client (its `OPTIONS` answer says
    /// so): every upload fails with this, and a batch says it once.
    pub(crate) mismatch: std::sync::OnceLock<Error>,
    /// IETF mode: set once `OPTIONS` was asked for limits.
    pub(crate) ietf_asked: tokio::sync::OnceCell<()>,
}

impl Default for Learned {
    fn default() -> Self {
        Learned {
            capabilities: tokio::sync::OnceCell::new(),
            chunk_limit: AtomicU64::new(u64::MAX),
            answered: AtomicBool::new(false),
            down: Mutex::new(None),
            hold: UNREACHABLE_HOLD,
            limits: Mutex::default(),
            mismatch: std::sync::OnceLock::new(),
            ietf_asked: tokio::sync::OnceCell::new(),
        }
    }
}

impl Learned {
    /// With an unreachable endpoint held so for `hold`.
    pub(crate) fn with_hold(hold: Duration) -> Self {
        Learned {
            hold,
            ..Learned::default()
        }
    }

    /// True once the endpoint answered this client.
    pub(crate) fn has_answered(&self) -> bool {
        self.answered.load(Ordering::Relaxed)
    }

    /// The endpoint answered (the first time clears a mark of it being down; later
    /// answers, one per request, touch only the flag).
    pub(crate) fn answered(&self) {
        if !self.answered.swap(true, Ordering::Relaxed) {
            *self.down.lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
    }

    /// The endpoint never answered: say so to every request for a while.
    pub(crate) fn found_down(&self, err: &Error) {
        if !self.has_answered() && !self.hold.is_zero() {
            tracing::debug!(error = %err, "the endpoint is unreachable");
            *self.down.lock().unwrap_or_else(|p| p.into_inner()) =
                Some((Instant::now(), err.clone()));
        }
    }

    /// The error that found the endpoint unreachable, within [`UNREACHABLE_HOLD`].
    pub(crate) fn down(&self) -> Option<Error> {
        // An endpoint that answered is never held down: no lock on every request.
        if self.has_answered() {
            return None;
        }
        let mut guard = self.down.lock().unwrap_or_else(|p| p.into_inner());
        match &*guard {
            Some((at, e)) if at.elapsed() < self.hold => Some(e.clone()),
            Some(_) => {
                *guard = None;
                None
            }
            None => None,
        }
    }
}

impl Learned {
    /// The largest body to send after a 413; `None` until one.
    pub(crate) fn chunk_limit(&self) -> Option<u64> {
        match self.chunk_limit.load(Ordering::Relaxed) {
            u64::MAX => None,
            n => Some(n),
        }
    }

    /// After a 413 for a body of `failed` bytes: halve the limit (not below
    /// [`MIN_CHUNK_SIZE`]) and return it, or `None` when it cannot shrink further.
    pub(crate) fn shrink_chunk_limit(&self, failed: u64) -> Option<u64> {
        if failed <= MIN_CHUNK_SIZE {
            return None;
        }
        let new = (failed / 2).max(MIN_CHUNK_SIZE);
        let was = self.chunk_limit.fetch_min(new, Ordering::Relaxed);
        let now = was.min(new);
        if was > new {
            tracing::warn!(
                rejected = failed,
                chunk_size = now,
                "the server answered 413 Payload Too Large: sending at most {now} bytes per request to this endpoint"
            );
        }
        Some(now)
    }
}

/// Where uploads are remembered between runs, and how sources are recognised: set on
/// the client, inherited (and overridable) by each upload.
#[derive(Clone, Default)]
pub(crate) struct Resume {
    pub(crate) store: Option<Arc<dyn UrlStore>>,
    pub(crate) fingerprinter: Option<Arc<dyn Fingerprinter>>,
    pub(crate) keep_on_success: bool,
}

/// Run blocking store or fingerprint work off the async runtime.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::internal(format!("a store task failed: {e}")))?
}
