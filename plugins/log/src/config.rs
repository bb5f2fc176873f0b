//! The `log` plugin and its config section.

use serde::{Deserialize, Serialize};
use tusflow_core::{BoxLayer, Error, Plugin, PluginConfig, Result};

use crate::LogLayer;

/// `[middleware.log]`; see `config.example.toml`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct LogConfig {
    /// The level of the per-request events.
    pub level: String,
    /// Send and log an `X-Request-ID`.
    pub request_id: bool,
    /// Log request headers (credentials redacted).
    pub headers: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "debug".into(),
            request_id: false,
            headers: false,
        }
    }
}

impl LogConfig {
    /// The layer these settings describe.
    pub fn layer(&self) -> Result<LogLayer> {
        let level = self.level.parse::<tracing::Level>().map_err(|_| {
            Error::config(format!(
                "middleware.log.level: {:?} is not one of error, warn, info, debug, trace",
                self.level
            ))
        })?;
        Ok(LogLayer::new()
            .level(level)
            .request_id(self.request_id)
            .headers(self.headers))
    }
}

/// The `log` plugin.
#[derive(Clone, Copy, Debug, Default)]
pub struct LogPlugin;

impl Plugin for LogPlugin {
    fn name(&self) -> &str {
        "log"
    }

    fn layer(&self, config: &PluginConfig) -> Result<BoxLayer> {
        let c: LogConfig = config.extract()?;
        Ok(BoxLayer::new("log", c.layer()?))
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
        let c: LogConfig = PluginConfig::new(f, "middleware.log").extract().unwrap();
        assert!(c.request_id);
        c.layer().unwrap();
        let bad = LogConfig {
            level: "loud".into(),
            ..LogConfig::default()
        };
        assert!(bad.layer().unwrap_err().to_string().contains("\"loud\""));
    }
}
