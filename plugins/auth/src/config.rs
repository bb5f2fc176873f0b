//! The `auth` plugin and its config section.

use std::collections::BTreeMap;
use std::fmt;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use tusflow_core::{BoxLayer, Error, Plugin, PluginConfig, Result};

use crate::AuthLayer;

/// `basic = { username, password }`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicConfig {
    /// The user name.
    pub username: String,
    /// The password.
    pub password: String,
}

impl fmt::Debug for BasicConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BasicConfig")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// `[middleware.auth]`; see `config.example.toml`. Give one of `bearer`, `basic`,
/// `headers`.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct AuthConfig {
    /// A bearer token.
    pub bearer: Option<String>,
    /// Basic auth.
    pub basic: Option<BasicConfig>,
    /// Credential headers.
    pub headers: BTreeMap<String, String>,
    /// Origins besides the endpoint's that get credentials.
    pub allowed_origins: Vec<String>,
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthConfig")
            .field("bearer", &self.bearer.as_ref().map(|_| "<redacted>"))
            .field("basic", &self.basic)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("allowed_origins", &self.allowed_origins)
            .finish()
    }
}

impl AuthConfig {
    /// The layer these settings describe.
    pub fn layer(&self) -> Result<AuthLayer> {
        let given = [
            self.bearer.is_some(),
            self.basic.is_some(),
            !self.headers.is_empty(),
        ];
        let mut layer = match given {
            [true, false, false] => {
                AuthLayer::try_bearer(self.bearer.as_deref().unwrap_or_default())?
            }
            [false, true, false] => {
                let b = self.basic.as_ref().expect("given");
                AuthLayer::basic(&b.username, &b.password)
            }
            [false, false, true] => {
                let mut h = HeaderMap::new();
                for (k, v) in &self.headers {
                    let name = HeaderName::try_from(k.as_str()).map_err(|_| {
                        Error::config(format!(
                            "middleware.auth.headers: invalid header name {k:?}"
                        ))
                    })?;
                    let value = HeaderValue::try_from(v.as_str()).map_err(|_| {
                        Error::config(format!(
                            "middleware.auth.headers: invalid value for header {k:?}"
                        ))
                    })?;
                    h.insert(name, value);
                }
                AuthLayer::headers(h)
            }
            [false, false, false] => {
                return Err(Error::config(
                    "middleware.auth: give one of bearer, basic or headers",
                ));
            }
            _ => {
                return Err(Error::config(
                    "middleware.auth: give only one of bearer, basic or headers",
                ));
            }
        };
        for o in &self.allowed_origins {
            layer = layer.allow_origin(o)?;
        }
        Ok(layer)
    }
}

/// The `auth` plugin.
#[derive(Clone, Copy, Debug, Default)]
pub struct AuthPlugin;

impl Plugin for AuthPlugin {
    fn name(&self) -> &str {
        "auth"
    }

    fn layer(&self, config: &PluginConfig) -> Result<BoxLayer> {
        let c: AuthConfig = config.extract()?;
        Ok(BoxLayer::new("auth", c.layer()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use figment::Figment;
    use figment::providers::{Format, Toml};

    #[test]
    fn example_config_parses_and_errors_are_clear() {
        let f = Figment::from(Toml::string(include_str!("../config.example.toml")));
        let c: AuthConfig = PluginConfig::new(f, "middleware.auth").extract().unwrap();
        assert_eq!(c.bearer.as_deref(), Some("replace-me"));
        assert!(!format!("{c:?}").contains("replace-me"));
        c.layer().unwrap();

        let f = Figment::from(Toml::string(
            "[middleware.auth]\nbearer = \"a\"\nbasic = { username = \"u\", password = \"p\" }\n",
        ));
        let c: AuthConfig = PluginConfig::new(f, "middleware.auth").extract().unwrap();
        assert!(c.layer().unwrap_err().to_string().contains("only one"));
        assert!(AuthConfig::default().layer().is_err());
        let f = Figment::from(Toml::string("[middleware.auth]\ntoken = \"a\"\n"));
        let e = PluginConfig::new(f, "middleware.auth")
            .extract::<AuthConfig>()
            .unwrap_err();
        assert!(e.to_string().contains("token"), "{e}");
        assert!(!e.to_string().contains("\"a\""), "{e}");
    }
}
