//! The `retry` plugin and its config section.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tusflow_core::config::{duration, durations};
use tusflow_core::{BoxLayer, Error, Plugin, PluginConfig, Result};

use crate::{Backoff, RetryLayer};

/// `[middleware.retry]`; see `config.example.toml`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RetryConfig {
    /// Tries in a row without progress, the first included.
    pub max_attempts: u32,
    /// Tries in all.
    pub max_total_attempts: u32,
    /// The ceiling of the first jittered wait.
    #[serde(with = "duration")]
    pub initial_delay: Duration,
    /// The longest wait.
    #[serde(with = "duration")]
    pub max_delay: Duration,
    /// The longest `Retry-After` honoured.
    #[serde(with = "duration")]
    pub max_retry_after: Duration,
    /// Explicit delays instead of backoff (tus-js-client's `retryDelays`): one try,
    /// then one more after each delay, then give up; `max_attempts` does not apply.
    #[serde(with = "durations", skip_serializing_if = "Option::is_none")]
    pub delays: Option<Vec<Duration>>,
}

impl Default for RetryConfig {
    fn default() -> Self {
        let b = Backoff::default();
        RetryConfig {
            max_attempts: b.max_attempts,
            max_total_attempts: b.max_total_attempts,
            initial_delay: b.initial_delay,
            max_delay: b.max_delay,
            max_retry_after: b.max_retry_after,
            delays: None,
        }
    }
}

impl RetryConfig {
    /// The layer these settings describe.
    pub fn layer(&self) -> Result<RetryLayer> {
        if self.max_attempts == 0 || self.max_total_attempts == 0 {
            return Err(Error::config(
                "middleware.retry: max_attempts and max_total_attempts must be at least 1",
            ));
        }
        // A list of delays means what `RetryLayer::with_delays` means: a try after each.
        let max_attempts = match &self.delays {
            Some(d) => u32::try_from(d.len()).unwrap_or(u32::MAX).saturating_add(1),
            None => self.max_attempts,
        };
        Ok(RetryLayer::from_policy(Backoff {
            max_attempts,
            max_total_attempts: self.max_total_attempts.max(max_attempts),
            initial_delay: self.initial_delay,
            max_delay: self.max_delay,
            max_retry_after: self.max_retry_after,
            delays: self.delays.clone(),
        }))
    }
}

/// The `retry` plugin.
#[derive(Clone, Copy, Debug, Default)]
pub struct RetryPlugin;

impl Plugin for RetryPlugin {
    fn name(&self) -> &str {
        "retry"
    }

    fn layer(&self, config: &PluginConfig) -> Result<BoxLayer> {
        let c: RetryConfig = config.extract()?;
        Ok(BoxLayer::new("retry", c.layer()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use figment::Figment;
    use figment::providers::{Format, Toml};

    #[test]
    fn example_config_parses() {
        let f = Figment::from(Toml::string(include_str!("../config.example.toml")));
        let c: RetryConfig = PluginConfig::new(f, "middleware.retry").extract().unwrap();
        assert_eq!(c, RetryConfig::default());
        let f = Figment::from(Toml::string(
            "[middleware.retry]\ndelays = [0, \"1s\", 3]\nmax_attempts = 4\n",
        ));
        let c: RetryConfig = PluginConfig::new(f, "middleware.retry").extract().unwrap();
        assert_eq!(c.delays.as_ref().unwrap()[1], Duration::from_secs(1));
        // A list means one try after each delay, as `RetryLayer::with_delays` does.
        let list = [0, 1000, 3000].map(Duration::from_millis);
        assert_eq!(
            c.layer().unwrap().policy().max_attempts,
            RetryLayer::with_delays(list).policy().max_attempts
        );
        let f = Figment::from(Toml::string(
            "[middleware.retry]\ndelays = [0, \"1s\"]\nmax_attempts = 9\n",
        ));
        let c: RetryConfig = PluginConfig::new(f, "middleware.retry").extract().unwrap();
        assert_eq!(c.layer().unwrap().policy().max_attempts, 3);
        let f = Figment::from(Toml::string("[middleware.retry]\nmax_atempts = 4\n"));
        let e = PluginConfig::new(f, "middleware.retry")
            .extract::<RetryConfig>()
            .unwrap_err();
        assert!(e.to_string().contains("max_atempts"), "{e}");
    }
}
