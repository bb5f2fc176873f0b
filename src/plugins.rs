//! The built-in plugins, and stacks built from names and config.
//!
//! ```
//! use figment::{Figment, providers::Serialized};
//! let config = Figment::from(Serialized::defaults(serde_json::json!({
//!     "middleware": { "retry": { "max_attempts": 5 } }
//! })));
//! let layers = tusflow::plugins::builtin()
//!     .build(&["log".into(), "retry".into()], &config)
//!     .unwrap();
//! let client = tusflow::Client::builder()
//!     .endpoint("http://127.0.0.1:1080/files/")
//!     .layers(layers)
//!     .build()
//!     .unwrap();
//! # let _ = client;
//! ```

pub use crate::core::plugin::{BoxLayer, Plugin, PluginConfig, Registry, apply};

/// The order the built-ins are meant to go in, outermost first.
pub const RECOMMENDED_ORDER: [&str; 5] = ["log", "retry", "auth", "rate-limit", "checksum"];

/// A registry of the built-in plugins compiled in (one Cargo feature each): `log`,
/// `retry`, `auth`, `rate-limit`, `checksum`. Third-party plugins register into it the
/// same way.
pub fn builtin() -> Registry {
    #[allow(unused_mut)]
    let mut r = Registry::new();
    #[cfg(feature = "log")]
    r.register(tusflow_log::LogPlugin);
    #[cfg(feature = "retry")]
    r.register(tusflow_retry::RetryPlugin);
    #[cfg(feature = "auth")]
    r.register(tusflow_auth::AuthPlugin);
    #[cfg(feature = "rate-limit")]
    r.register(tusflow_rate_limit::RateLimitPlugin);
    #[cfg(feature = "checksum")]
    r.register(tusflow_checksum::ChecksumPlugin);
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use figment::Figment;

    #[test]
    fn an_unknown_plugin_lists_the_known_names() {
        let e = builtin()
            .build(&["retry".into(), "retyr".into()], &Figment::new())
            .unwrap_err();
        let msg = e.to_string();
        assert!(e.is_invalid());
        assert!(
            msg.contains("unknown plugin \"retyr\"")
                && msg.contains("known plugins are: auth, checksum, log, rate-limit, retry"),
            "{msg}"
        );
    }
}
