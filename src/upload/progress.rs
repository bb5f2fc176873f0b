//! Progress: what a caller sees of an upload, and the meters that feed it.

use super::*;

/// Where an upload stands. `sent` runs ahead of `acknowledged` while a `PATCH` is in
/// flight.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Progress {
    /// Bytes of the source handed to the transport (the position reached).
    pub sent: u64,
    /// Bytes the server has confirmed (its `Upload-Offset`).
    pub acknowledged: u64,
    /// The size of the source; `None` for a stream whose end is not read yet.
    pub total: Option<u64>,
}

/// The result of [`Uploader::upload`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Uploaded {
    /// The upload URL (for a parallel upload, the final upload's).
    pub url: Url,
    /// The server's offset at the end.
    pub offset: u64,
    /// The size of the source; `None` for a stream stopped before its end.
    pub length: Option<u64>,
    /// True when the server has every byte.
    pub complete: bool,
    /// True when an existing upload was continued rather than a new one created.
    pub resumed: bool,
    /// How many partial uploads carried it (1: a single upload).
    pub parts: usize,
    /// IETF mode: the target resource's own answer to the request that completed the
    /// upload (status, headers, body), when this run completed it and got the answer.
    pub answer: Option<Arc<crate::client::Answer>>,
}

/// Aborts an upload in flight, from another task or thread (tus-js-client's
/// `abort(shouldTerminate)`). Got from [`Uploader::abort_handle`].
///
/// The upload's future then ends with an error for which [`Error::is_cancelled`] is
/// true. An aborted uploader stays aborted; a new uploader of the same source continues
/// the upload from the store (unless it was terminated).
#[derive(Clone, Debug)]
pub struct AbortHandle {
    pub(super) state: Arc<watch::Sender<Option<bool>>>,
}

impl AbortHandle {
    /// Stop the upload; the server keeps what it has, to be continued later.
    pub fn abort(&self) {
        self.state.send_modify(|s| *s = Some(s.unwrap_or(false)));
    }

    /// Stop the upload and terminate it on the server (`DELETE`; its partial uploads
    /// too); its stored record goes.
    pub fn terminate(&self) {
        self.state.send_replace(Some(true));
    }

    /// True once [`AbortHandle::abort`] or [`AbortHandle::terminate`] was called.
    pub fn is_aborted(&self) -> bool {
        self.state.borrow().is_some()
    }
}

/// Progress of one part (or of a single upload), added into the upload's [`Progress`].
pub(super) struct Meter {
    progress: Arc<watch::Sender<Progress>>,
    sent: AtomicU64,
    acked: AtomicU64,
}

impl Meter {
    pub(super) fn new(progress: &Arc<watch::Sender<Progress>>, offset: u64) -> Arc<Self> {
        Arc::new(Meter {
            progress: Arc::clone(progress),
            sent: AtomicU64::new(offset),
            acked: AtomicU64::new(offset),
        })
    }

    /// An observer of a body that starts at `base`.
    pub(super) fn observer(self: &Arc<Self>, base: u64) -> Observer {
        let me = Arc::clone(self);
        Arc::new(move |n| {
            let at = base + n;
            let was = me.sent.fetch_max(at, Ordering::Relaxed);
            if at > was {
                me.progress.send_modify(|p| p.sent += at - was);
            }
        })
    }

    pub(super) fn acknowledged(&self, offset: u64) {
        let was = self.acked.swap(offset, Ordering::Relaxed);
        self.sent.fetch_max(offset, Ordering::Relaxed);
        self.progress.send_modify(|p| {
            p.acknowledged = (p.acknowledged + offset).saturating_sub(was);
            p.sent = p.sent.max(p.acknowledged);
        });
    }
}
