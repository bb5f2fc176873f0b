//! How long to wait between tries.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// Exponential backoff with full jitter, or an explicit list of delays; and the bounds
/// on tries.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Backoff {
    /// Tries in a row without progress, the first included.
    pub max_attempts: u32,
    /// Tries in all.
    pub max_total_attempts: u32,
    /// The ceiling of the first jittered wait.
    pub initial_delay: Duration,
    /// The longest wait.
    pub max_delay: Duration,
    /// The longest `Retry-After` honoured.
    pub max_retry_after: Duration,
    /// Explicit delays instead of backoff; the last one repeats if `max_attempts`
    /// allows more tries than the list has delays ([`crate::RetryLayer::with_delays`] and
    /// the config's `delays` allow one try per delay, then give up).
    pub delays: Option<Vec<Duration>>,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            max_attempts: 8,
            max_total_attempts: 100,
            initial_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(60),
            delays: None,
        }
    }
}

impl Backoff {
    /// The wait before try number `streak + 1` of a run without progress, given the
    /// server's `Retry-After`.
    pub fn delay(&self, streak: u32, retry_after: Option<Duration>) -> Duration {
        let base = match &self.delays {
            Some(list) if !list.is_empty() => {
                list[(streak.saturating_sub(1) as usize).min(list.len() - 1)]
            }
            Some(_) => Duration::ZERO,
            None => {
                let exp = 2u32.saturating_pow(streak.saturating_sub(1).min(30));
                let ceiling = self.initial_delay.saturating_mul(exp).min(self.max_delay);
                ceiling.mul_f64(random_unit())
            }
        };
        match retry_after {
            Some(after) => base.max(after.min(self.max_retry_after)),
            None => base,
        }
    }
}

/// A random number in [0, 1) from the standard library's hash seed.
fn random_unit() -> f64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    );
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_within_jitter_and_caps() {
        let b = Backoff::default();
        for streak in 1..12 {
            let ceiling = (b.initial_delay * 2u32.pow(streak - 1)).min(b.max_delay);
            let d = b.delay(streak, None);
            assert!(d <= ceiling, "{streak}: {d:?} > {ceiling:?}");
        }
    }

    #[test]
    fn explicit_delays_and_retry_after() {
        let b = Backoff {
            delays: Some(vec![
                Duration::ZERO,
                Duration::from_secs(1),
                Duration::from_secs(3),
            ]),
            ..Backoff::default()
        };
        assert_eq!(b.delay(1, None), Duration::ZERO);
        assert_eq!(b.delay(3, None), Duration::from_secs(3));
        assert_eq!(b.delay(9, None), Duration::from_secs(3));
        assert_eq!(
            b.delay(1, Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
        assert_eq!(
            b.delay(1, Some(Duration::from_secs(7200))),
            b.max_retry_after
        );
    }
}
