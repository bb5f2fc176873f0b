//! The `rate-limit` plugin and its config section.

use serde::{Deserialize, Serialize};
use tusflow_core::config::size;
use tusflow_core::{BoxLayer, Plugin, PluginConfig, Result};

use crate::RateLimitLayer;

/// `[middleware.rate-limit]`; see `config.example.toml`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RateLimitConfig {
    /// Body bytes per second for all uploads together (`"50 MB"`); 0: no cap.
    #[serde(with = "size")]
    pub bytes_per_second: u64,
    /// How far ahead of the rate a sender may get (`"1 MiB"`).
    #[serde(with = "size")]
    pub burst: u64,
    /// Requests per second; 0: no cap.
    pub requests_per_second: f64,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            bytes_per_second: 0,
            burst: 1 << 20,
            requests_per_second: 0.0,
        }
    }
}

impl RateLimitConfig {
    /// The layer these settings describe.
    pub fn layer(&self) -> RateLimitLayer {
        RateLimitLayer::bytes_per_second(self.bytes_per_second)
            .burst(self.burst)
            .requests_per_second(self.requests_per_second)
    }
}

/// The `rate-limit` plugin.
#[derive(Clone, Copy, Debug, Default)]
pub struct RateLimitPlugin;

impl Plugin for RateLimitPlugin {
    fn name(&self) -> &str {
        "rate-limit"
    }

    fn layer(&self, config: &PluginConfig) -> Result<BoxLayer> {
        let c: RateLimitConfig = config.extract()?;
        Ok(BoxLayer::new("rate-limit", c.layer()))
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
        let c: RateLimitConfig = PluginConfig::new(f, "middleware.rate-limit")
            .extract()
            .unwrap();
        assert_eq!(c.bytes_per_second, 50_000_000);
        assert_eq!(c.burst, 1 << 20);
        let f = Figment::from(Toml::string(
            "[middleware.rate-limit]\nbytes_per_second = \"fast\"\n",
        ));
        let e = PluginConfig::new(f, "middleware.rate-limit")
            .extract::<RateLimitConfig>()
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("middleware.rate-limit.bytes_per_second"),
            "{e}"
        );
    }
}
