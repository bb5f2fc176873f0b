//! The plugin API: a [`Plugin`] builds a layer from its config section; a [`Registry`]
//! maps names to plugins and builds a stack from a list of names.
//!
//! Built-in middleware (retry, auth, log, rate-limit, checksum) implement exactly this
//! trait, so a third-party plugin registers and configures the same way.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use figment::Figment;
use serde::de::DeserializeOwned;
use tower::util::{BoxCloneSyncService, BoxCloneSyncServiceLayer};
use tower::{Layer, Service};

use crate::middleware::BoundaryLayer;
use crate::{BoxError, Error, Request, Response, Result};

/// A type-erased stack: what every layer wraps and returns.
pub type Stack = BoxCloneSyncService<Request, Response, Error>;

/// A type-erased layer over a [`Stack`]; what a [`Plugin`] builds. It is tower's
/// [`BoxCloneSyncServiceLayer`] with a name, and with the layer boundary: the service
/// the layer builds may answer any error type that converts into a [`BoxError`], and a
/// non-2xx *response* from it (tower-http's `TimeoutLayer` answers 408) becomes an
/// [`Error`] too ([`error_for_status`]), so the layers around it see one kind of
/// failure and retry it like any other.
///
/// [`error_for_status`]: crate::service::error_for_status
#[derive(Clone)]
pub struct BoxLayer {
    name: Arc<str>,
    layer: BoxCloneSyncServiceLayer<Stack, Request, Response, Error>,
}

impl BoxLayer {
    /// Erase `layer` under `name` (shown by `Debug` and in the registry).
    pub fn new<L>(name: impl Into<Arc<str>>, layer: L) -> Self
    where
        L: Layer<Stack> + Send + Sync + 'static,
        L::Service: Service<Request, Response = Response> + Clone + Send + Sync + 'static,
        <L::Service as Service<Request>>::Error: Into<BoxError>,
        <L::Service as Service<Request>>::Future: Send + 'static,
    {
        BoxLayer {
            name: name.into(),
            layer: BoxCloneSyncServiceLayer::new(tower::layer::util::Stack::new(
                layer,
                BoundaryLayer,
            )),
        }
    }

    /// The name the layer was built under.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Layer<Stack> for BoxLayer {
    type Service = Stack;
    fn layer(&self, inner: Stack) -> Stack {
        self.layer.layer(inner)
    }
}

impl fmt::Debug for BoxLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BoxLayer({})", self.name)
    }
}

/// The endpoint a request belongs to, put in every request's extensions by the client.
/// Middleware uses it to scope credentials to the endpoint's origin and to ask the
/// endpoint for its capabilities.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint(pub reqwest::Url);

/// The endpoint's capabilities as the client learned them from `OPTIONS`, put in every
/// request's extensions once known, so middleware need not ask the server again.
#[derive(Clone, Debug)]
pub struct KnownCapabilities(pub Arc<crate::Capabilities>);

/// The length of the upload a request belongs to, as the client knows it (the
/// source's length), put in the extensions of appends. Middleware that asks the
/// server for the offset checks the server's `Upload-Length` against it: an upload of
/// another length at the URL is not this upload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UploadLength(pub u64);

/// A plugin's configuration section, with where it came from for error messages.
#[derive(Clone)]
pub struct PluginConfig {
    figment: Figment,
    key: String,
}

impl fmt::Debug for PluginConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Sections may hold credentials: show where, never what.
        write!(f, "PluginConfig({})", self.key)
    }
}

impl PluginConfig {
    /// The section at `key` (e.g. `middleware.retry`) of `figment`.
    pub fn new(figment: Figment, key: impl Into<String>) -> Self {
        PluginConfig {
            figment,
            key: key.into(),
        }
    }

    /// An empty section: every setting at its default.
    pub fn empty(key: impl Into<String>) -> Self {
        PluginConfig::new(Figment::new(), key)
    }

    /// The section from a [`figment::Provider`], e.g. `figment::providers::Serialized`.
    pub fn from_provider(key: impl Into<String>, provider: impl figment::Provider) -> Self {
        let key = key.into();
        PluginConfig::new(Figment::new().merge(provider), key)
    }

    /// The key of the section.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Deserialize the section (an absent section is an empty one). Use
    /// `#[serde(default, deny_unknown_fields)]` on `T`: an unknown key is an error that
    /// names it, the section and the file or env var it came from.
    pub fn extract<T: DeserializeOwned>(&self) -> Result<T> {
        let result = if self.figment.contains(&self.key) {
            self.figment.focus(&self.key).extract::<T>()
        } else {
            Figment::new()
                .merge(figment::providers::Serialized::defaults(BTreeMap::<
                    String,
                    String,
                >::new(
                )))
                .extract::<T>()
        };
        result.map_err(|e| config_error(&self.key, e))
    }
}

/// A figment error as a tusflow config error naming every failing key (in the form of
/// its source: `TUSFLOW_MIDDLEWARE__RETRY__MAX_ATTEMPTS` for an env var) and its source,
/// with a suggestion for an unknown key. `section` prefixes keys of a focused figment.
pub fn config_error(section: &str, e: figment::Error) -> Error {
    let msgs: Vec<String> = e
        .into_iter()
        .map(|e| {
            let mut path: Vec<String> = section
                .split('.')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            path.extend(e.path.iter().cloned());
            let key = match &e.metadata {
                // Env vars: the whole variable name, prefix and `__` separators included.
                Some(m) if !path.is_empty() && m.name.contains("environment variable") => {
                    let prefix = m.name.split('`').nth(1).unwrap_or("");
                    format!("{prefix}{}", path.join("__").to_ascii_uppercase())
                }
                // The key as a file writes it (figment's own adds its profile,
                // `default.`, which no file of ours has).
                _ => path.join("."),
            };
            let source = e
                .metadata
                .as_ref()
                .map(|m| match &m.source {
                    Some(src) => format!(" in {src}"),
                    None => format!(" in {}", m.name),
                })
                .unwrap_or_default();
            use figment::error::Kind as K;
            let hint = match &e.kind {
                K::UnknownField(field, expected) => suggest(field, expected)
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default(),
                _ => String::new(),
            };
            let at = if key.is_empty() {
                String::new()
            } else {
                format!(" for key `{key}`")
            };
            // figment quotes a list of names inside quotes; say it plainly.
            let what = match &e.kind {
                K::UnknownVariant(found, expected) => {
                    format!(
                        "unknown value `{found}`: expected one of {}",
                        expected.join(", ")
                    )
                }
                K::UnknownField(_, expected) => {
                    // The key is the whole path; the known ones only without a hint.
                    let known = if hint.is_empty() {
                        format!(" (known keys here: {})", expected.join(", "))
                    } else {
                        String::new()
                    };
                    return format!("unknown key `{key}`{hint}{known}{source}");
                }
                other => other.to_string(),
            };
            format!("{what}{hint}{at}{source}")
        })
        .collect();
    Error::config(msgs.join("; "))
}

/// The candidate closest to `word`, if any is close (edit distance at most 3 and less
/// than half the word).
pub fn suggest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (strsim::levenshtein(word, c), *c))
        .filter(|(d, c)| *d <= 3 && *d * 2 < word.len().max(c.len()))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// A middleware plugin: a name, and a layer built from a config section.
///
/// ```
/// use tusflow_core::plugin::{BoxLayer, Plugin, PluginConfig};
///
/// /// Adds a fixed header to every request.
/// struct Tag;
///
/// #[derive(serde::Deserialize, Default)]
/// #[serde(default, deny_unknown_fields)]
/// struct TagConfig { value: String }
///
/// impl Plugin for Tag {
///     fn name(&self) -> &str { "tag" }
///     fn layer(&self, config: &PluginConfig) -> tusflow_core::Result<BoxLayer> {
///         let c: TagConfig = config.extract()?;
///         let value = http::HeaderValue::try_from(c.value)
///             .map_err(|_| tusflow_core::Error::config("tag.value is not a header value"))?;
///         Ok(BoxLayer::new("tag", tower::layer::layer_fn(move |inner: tusflow_core::plugin::Stack| {
///             let value = value.clone();
///             tower::util::MapRequest::new(inner, move |mut req: tusflow_core::Request| {
///                 req.headers_mut().insert("x-tag", value.clone());
///                 req
///             })
///         })))
///     }
/// }
///
/// let mut registry = tusflow_core::plugin::Registry::new();
/// registry.register(Tag);
/// assert_eq!(registry.names().collect::<Vec<_>>(), ["tag"]);
/// ```
pub trait Plugin: Send + Sync + 'static {
    /// The name used in `middleware.stack` and as the config section.
    fn name(&self) -> &str;

    /// Build the layer from this plugin's config section.
    fn layer(&self, config: &PluginConfig) -> Result<BoxLayer>;
}

/// Named plugins, and the stack built from a list of their names.
#[derive(Clone, Default)]
pub struct Registry {
    plugins: BTreeMap<String, Arc<dyn Plugin>>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.plugins.keys()).finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add `plugin` under its name, replacing one of the same name.
    pub fn register(&mut self, plugin: impl Plugin) -> &mut Self {
        self.register_arc(Arc::new(plugin))
    }

    /// Add a shared plugin under its name, replacing one of the same name.
    pub fn register_arc(&mut self, plugin: Arc<dyn Plugin>) -> &mut Self {
        self.plugins.insert(plugin.name().to_owned(), plugin);
        self
    }

    /// The plugin named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Plugin>> {
        self.plugins.get(name)
    }

    /// The names of the registered plugins, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.plugins.keys().map(String::as_str)
    }

    /// Build the layers named in `stack` (outermost first), each from its section
    /// `middleware.<name>` of `config`. An unknown name is an error that lists the
    /// known ones; a name given twice is an error too.
    pub fn build(&self, stack: &[String], config: &Figment) -> Result<Vec<BoxLayer>> {
        let mut layers = Vec::with_capacity(stack.len());
        for (i, name) in stack.iter().enumerate() {
            if stack[..i].contains(name) {
                return Err(Error::config(format!(
                    "middleware.stack names plugin {name:?} twice"
                )));
            }
            let plugin = self.get(name).ok_or_else(|| {
                let known: Vec<&str> = self.names().collect();
                let hint = suggest(name, &known)
                    .map(|s| format!(" (did you mean {s:?}?)"))
                    .unwrap_or_default();
                Error::config(format!(
                    "middleware.stack: unknown plugin {name:?}{hint}; known plugins are: {}",
                    known.join(", ")
                ))
            })?;
            let section = PluginConfig::new(config.clone(), format!("middleware.{name}"));
            layers.push(plugin.layer(&section)?);
        }
        Ok(layers)
    }
}

/// Apply `layers` (outermost first) around `inner`.
pub fn apply(layers: &[BoxLayer], inner: Stack) -> Stack {
    layers.iter().rev().fold(inner, |s, l| l.layer(s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use figment::providers::{Format, Toml};
    use serde::Deserialize;

    #[derive(Deserialize, Debug, Default, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Conf {
        attempts: u32,
        name: String,
    }

    struct P;
    impl Plugin for P {
        fn name(&self) -> &str {
            "p"
        }
        fn layer(&self, config: &PluginConfig) -> Result<BoxLayer> {
            let _: Conf = config.extract()?;
            Ok(BoxLayer::new("p", tower::layer::util::Identity::new()))
        }
    }

    #[test]
    fn sections_extract_with_defaults_and_reject_unknown_keys() {
        let f = Figment::from(Toml::string("[middleware.p]\nattempts = 3\n"));
        let c: Conf = PluginConfig::new(f, "middleware.p").extract().unwrap();
        assert_eq!(
            c,
            Conf {
                attempts: 3,
                name: String::new()
            }
        );

        let c: Conf = PluginConfig::empty("middleware.p").extract().unwrap();
        assert_eq!(c, Conf::default());

        let f = Figment::from(Toml::string("[middleware.p]\natempts = 3\n"));
        let e = PluginConfig::new(f, "middleware.p")
            .extract::<Conf>()
            .unwrap_err();
        let msg = e.to_string();
        assert!(e.is_invalid());
        assert!(
            msg.contains("atempts") && msg.contains("middleware.p"),
            "{msg}"
        );

        let f = Figment::from(Toml::string("[middleware.p]\nattempts = \"many\"\n"));
        let msg = PluginConfig::new(f, "middleware.p")
            .extract::<Conf>()
            .unwrap_err()
            .to_string();
        assert!(msg.contains("middleware.p.attempts"), "{msg}");
    }

    #[test]
    fn unknown_plugins_list_the_known_names() {
        let mut r = Registry::new();
        r.register(P);
        let f = Figment::new();
        assert_eq!(r.build(&["p".into()], &f).unwrap().len(), 1);
        let msg = r
            .build(&["p".into(), "nope".into()], &f)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("\"nope\"") && msg.contains("known plugins are: p"),
            "{msg}"
        );
        let msg = r
            .build(&["p".into(), "p".into()], &f)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("twice"), "{msg}");
    }
}
