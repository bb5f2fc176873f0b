//! The `checksum` plugin and its config section.

use serde::{Deserialize, Serialize};
use tusflow_core::config::size;
use tusflow_core::{BoxLayer, Error, Plugin, PluginConfig, Result};

use crate::{Algorithm, ChecksumLayer, DEFAULT_CHUNK_SIZE};

/// `[middleware.checksum]`; see `config.example.toml`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ChecksumConfig {
    /// Algorithms in order of preference.
    pub algorithms: Vec<String>,
    /// The largest chunk, each with its own digest.
    #[serde(with = "size")]
    pub chunk_size: u64,
    /// Fail when the server has no common algorithm (else upload without checksums).
    pub required: bool,
    /// Re-sends of a chunk after a checksum mismatch.
    pub resend: u32,
}

impl Default for ChecksumConfig {
    fn default() -> Self {
        ChecksumConfig {
            algorithms: Algorithm::ALL
                .iter()
                .map(|a| a.as_str().to_owned())
                .collect(),
            chunk_size: DEFAULT_CHUNK_SIZE,
            required: true,
            resend: 3,
        }
    }
}

impl ChecksumConfig {
    /// The layer these settings describe.
    pub fn layer(&self) -> Result<ChecksumLayer> {
        let algos = self
            .algorithms
            .iter()
            .map(|a| a.parse::<Algorithm>())
            .collect::<Result<Vec<_>>>()
            .map_err(|e| Error::config(format!("middleware.checksum.algorithms: {e}")))?;
        if algos.is_empty() {
            return Err(Error::config(
                "middleware.checksum.algorithms: name at least one",
            ));
        }
        if self.chunk_size == 0 || self.chunk_size > crate::MAX_CHUNK_SIZE {
            return Err(Error::config(format!(
                "middleware.checksum.chunk_size: must be more than 0 and at most {} MiB \
                 (each chunk is held in memory)",
                crate::MAX_CHUNK_SIZE >> 20
            )));
        }
        Ok(ChecksumLayer::negotiate(algos)
            .chunk_size(self.chunk_size)
            .required(self.required)
            .resend(self.resend))
    }
}

/// The `checksum` plugin.
#[derive(Clone, Copy, Debug, Default)]
pub struct ChecksumPlugin;

impl Plugin for ChecksumPlugin {
    fn name(&self) -> &str {
        "checksum"
    }

    fn layer(&self, config: &PluginConfig) -> Result<BoxLayer> {
        let c: ChecksumConfig = config.extract()?;
        Ok(BoxLayer::new("checksum", c.layer()?))
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
        let c: ChecksumConfig = PluginConfig::new(f, "middleware.checksum")
            .extract()
            .unwrap();
        assert_eq!(c.algorithms, ["sha256", "sha1"]);
        assert_eq!(c.chunk_size, crate::DEFAULT_CHUNK_SIZE);
        c.layer().unwrap();
        let bad = ChecksumConfig {
            algorithms: vec!["sha3".into()],
            ..ChecksumConfig::default()
        };
        let e = bad.layer().unwrap_err().to_string();
        assert!(
            e.contains("middleware.checksum.algorithms") && e.contains("\"sha3\""),
            "{e}"
        );
    }
}
