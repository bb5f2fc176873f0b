//! Counting retries per upload: the retry middleware calls [`record_retry`], and whoever
//! drives an upload wraps it in [`count`] to learn how many retries it took. The count
//! lives in a tokio task-local, so middleware and driver need no parameter between them.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

tokio::task_local! {
    static RETRIES: Arc<AtomicU32>;
}

/// Note one retry, if someone is counting.
pub fn record_retry() {
    let _ = RETRIES.try_with(|c| c.fetch_add(1, Ordering::Relaxed));
}

/// Run `fut`, and return its output with the number of retries recorded while it ran.
pub async fn count<F: Future>(fut: F) -> (F::Output, u32) {
    let counter = Arc::new(AtomicU32::new(0));
    let out = RETRIES.scope(Arc::clone(&counter), fut).await;
    (out, counter.load(Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn counts_within_the_scope_only() {
        super::record_retry();
        let ((), n) = super::count(async {
            super::record_retry();
            super::record_retry();
        })
        .await;
        assert_eq!(n, 2);
    }
}
