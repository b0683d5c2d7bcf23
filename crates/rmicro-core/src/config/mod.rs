//! Configuration: layered sources merged into one tree, read typed, and watched live.
//!
//! Layers, later wins: in-code defaults < files (`--config-file`, YAML/TOML/JSON)
//! < environment (`MICRO_MYSQL_HOST` → `mysql.host`) < command-line values
//! (`--config-set mysql.host=db`) < config centers (`--config-source
//! etcd://127.0.0.1:2379/micro/config`, `consul://…`, repeatable; from the adapter
//! crates). Every change in any source replaces the merged tree at once, so a
//! reader never sees half an update; a bad value is reported and the last good one
//! kept.
//!
//! ```
//! # extern crate rmicro_core as rmicro;
//! use rmicro::config::{Config, source::Values};
//! use serde::Deserialize;
//! use serde_json::json;
//!
//! #[derive(Deserialize)]
//! struct Mysql { host: String, port: u16 }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), rmicro::config::ConfigError> {
//! let config = Config::builder()
//!     .defaults(json!({"mysql": {"host": "localhost", "port": 3306}}))
//!     .source(Values::from_pairs("flags", [("mysql.host", "db.internal")]))
//!     .build()
//!     .await?;
//! let mysql: Mysql = config.get("mysql").scan()?;
//! assert_eq!((mysql.host.as_str(), mysql.port), ("db.internal", 3306));
//! assert_eq!(config.get("mysql.pool").int_or(10), 10);
//! assert_eq!(config.get("mysql.host").source(), Some("flags".to_string()));
//! # Ok(()) }
//! ```

mod lenient;
mod secret;
pub mod source;
pub use secret::{REDACTED, is_secret_key, redacted};
mod tree;

use arc_swap::ArcSwap;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use source::{Source, SourceEvent, Values};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast;

/// Why configuration could not be loaded or read.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConfigError {
    /// A source could not be read or holds something unparseable.
    #[error("config source {source_name}: {detail}")]
    Source {
        /// The source (`file:/etc/app.yaml`, `etcd://…/micro/config`).
        source_name: String,
        /// What went wrong.
        detail: String,
    },
    /// A path holds nothing.
    #[error("config path `{path}` is not set in any source ({sources})")]
    Missing {
        /// The path asked for.
        path: String,
        /// The sources consulted.
        sources: String,
    },
    /// A value does not have the type asked for.
    #[error("config path `{path}` (from {source_name}) is {found}, expected {expected}")]
    Type {
        /// The full path of the offending value.
        path: String,
        /// Where the value came from.
        source_name: String,
        /// What the reader expected (a type or serde's explanation).
        expected: String,
        /// What is there.
        found: String,
    },
}

/// A JSON value's kind, for messages.
pub(crate) fn kind(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) if s.chars().count() > 40 => "a string".into(),
        Value::String(s) => format!("the string {s:?}"),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "a mapping".into(),
    }
}

/// The merged tree at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    tree: Value,
    origins: BTreeMap<String, String>,
    version: u64,
    sources: Arc<Vec<String>>,
}

impl Snapshot {
    /// The whole tree.
    pub fn tree(&self) -> &Value {
        &self.tree
    }

    /// Increases with every change.
    pub fn version(&self) -> u64 {
        self.version
    }
}

/// What `get` returns: the value at a path (if any) and where it came from.
#[derive(Debug, Clone)]
pub struct ConfigValue {
    path: String,
    snapshot: Arc<Snapshot>,
}

impl ConfigValue {
    /// The raw value, if set.
    pub fn raw(&self) -> Option<&Value> {
        tree::get(&self.snapshot.tree, &self.path)
    }

    /// Whether the path is set.
    pub fn exists(&self) -> bool {
        self.raw().is_some_and(|v| !v.is_null())
    }

    /// The source(s) the value came from.
    pub fn source(&self) -> Option<String> {
        tree::origin_of(&self.snapshot.origins, &self.path)
    }

    fn missing(&self) -> ConfigError {
        ConfigError::Missing {
            path: self.path.clone(),
            sources: self.snapshot.sources.join(", "),
        }
    }

    /// Reads the value into `T` (strings that hold numbers or booleans are accepted
    /// for numeric and boolean fields). Errors name the offending path, its source
    /// and the expected type.
    pub fn scan<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        let Some(value) = self.raw().filter(|v| !v.is_null()) else {
            return Err(self.missing());
        };
        serde_path_to_error::deserialize(lenient::Lenient(value)).map_err(|err| {
            let inner = err.path().to_string();
            let path = if inner == "." || inner.is_empty() {
                self.path.clone()
            } else {
                tree::join(&self.path, &inner)
            };
            let found = tree::get(&self.snapshot.tree, &path)
                .map(kind)
                .unwrap_or_else(|| "missing".into());
            ConfigError::Type {
                source_name: tree::origin_of(&self.snapshot.origins, &path)
                    .unwrap_or_else(|| "no source".into()),
                path,
                expected: err.into_inner().to_string(),
                found,
            }
        })
    }

    fn typed<T: DeserializeOwned>(&self, default: T, expected: &str) -> T {
        if !self.exists() {
            return default;
        }
        match self.scan::<T>() {
            Ok(value) => value,
            Err(err) => {
                tracing::warn!(error = %err, expected, "using the default instead");
                default
            }
        }
    }

    /// A string (numbers and booleans are written out).
    pub fn string(&self) -> Result<String, ConfigError> {
        self.scan()
    }

    /// The string, or `default` when unset (or not a string: logged).
    pub fn string_or(&self, default: &str) -> String {
        self.typed(default.to_owned(), "a string")
    }

    /// An integer.
    pub fn int(&self) -> Result<i64, ConfigError> {
        self.scan()
    }

    /// The integer, or `default` when unset (or not an integer: logged).
    pub fn int_or(&self, default: i64) -> i64 {
        self.typed(default, "an integer")
    }

    /// A float.
    pub fn float(&self) -> Result<f64, ConfigError> {
        self.scan()
    }

    /// The float, or `default` when unset (or not a number: logged).
    pub fn float_or(&self, default: f64) -> f64 {
        self.typed(default, "a number")
    }

    /// A boolean (`true/false`, `yes/no`, `on/off`, `1/0` in strings).
    pub fn bool(&self) -> Result<bool, ConfigError> {
        self.scan()
    }

    /// The boolean, or `default` when unset (or not a boolean: logged).
    pub fn bool_or(&self, default: bool) -> bool {
        self.typed(default, "a boolean")
    }

    /// A duration: `5s`, `250ms`, `2m`, or a number of seconds.
    pub fn duration(&self) -> Result<Duration, ConfigError> {
        let text: String = self.scan()?;
        crate::cmd::parse_duration(&text).map_err(|detail| ConfigError::Type {
            path: self.path.clone(),
            source_name: self.source().unwrap_or_else(|| "no source".into()),
            expected: "a duration such as 5s, 250ms or 2m".into(),
            found: format!("{text:?} ({detail})"),
        })
    }

    /// The duration, or `default` when unset (or unreadable: logged).
    pub fn duration_or(&self, default: Duration) -> Duration {
        if !self.exists() {
            return default;
        }
        self.duration().unwrap_or_else(|err| {
            tracing::warn!(error = %err, "using the default instead");
            default
        })
    }
}

/// What watchers hear.
#[derive(Debug, Clone)]
enum Change {
    Tree,
    Error(ConfigError),
}

struct Layer {
    name: String,
    tree: Value,
    loaded: bool,
}

struct Inner {
    ready_timeout: Duration,
    /// Sources whose loaders have not started (no runtime when the config was built).
    pending: Mutex<Vec<Arc<dyn Source>>>,
    layers: Mutex<Vec<Layer>>,
    snapshot: ArcSwap<Snapshot>,
    changes: broadcast::Sender<Change>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in crate::sync::lock(&self.tasks).iter() {
            task.abort();
        }
    }
}

/// The merged configuration. Cheap to clone; clones share the same tree.
#[derive(Clone)]
pub struct Config {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Config({})",
            self.inner.snapshot.load().sources.join(" < ")
        )
    }
}

impl Default for Config {
    /// An empty configuration with no sources.
    fn default() -> Self {
        Config::from_layers(Vec::new(), DEFAULT_READY_TIMEOUT)
    }
}

/// How long [`Config::ready`] waits for the first load by default.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Collects sources, then loads them with [`ConfigBuilder::build`].
pub struct ConfigBuilder {
    sources: Vec<Arc<dyn Source>>,
    ready_timeout: Duration,
}

impl Default for ConfigBuilder {
    fn default() -> Self {
        ConfigBuilder {
            sources: Vec::new(),
            ready_timeout: DEFAULT_READY_TIMEOUT,
        }
    }
}

impl ConfigBuilder {
    /// How long loading may take before [`Config::ready`] (and so `build` and a
    /// service's `start`) fails (default [`DEFAULT_READY_TIMEOUT`]).
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// In-code defaults: the lowest layer (call first).
    pub fn defaults(self, tree: Value) -> Self {
        self.source(Values::new("defaults", tree))
    }

    /// Adds a source above the ones added before.
    pub fn source(mut self, source: impl Source) -> Self {
        self.sources.push(Arc::new(source));
        self
    }

    /// Adds a shared source above the ones added before.
    pub fn shared_source(mut self, source: Arc<dyn Source>) -> Self {
        self.sources.push(source);
        self
    }

    /// Adds the standard layers from flags: `--config-file`, the environment under
    /// `--config-env-prefix` (`MICRO_`), `--config-set` values and each
    /// `--config-source`.
    pub fn flags(mut self, flags: &crate::cmd::Flags) -> Result<Self, ConfigError> {
        if let Some(path) = &flags.config_file {
            self = self.source(source::File::new(path)?);
        }
        let prefix = flags.config_env_prefix.as_deref().unwrap_or("MICRO_");
        self = self.source(source::Env::new(prefix));
        if !flags.config_set.is_empty() {
            self = self.source(Values::from_pairs(
                "flags",
                flags
                    .config_set
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str())),
            ));
        }
        for url in &flags.config_source {
            self = self.shared_source(source::from_url(url)?);
        }
        Ok(self)
    }

    /// Loads every source once (failing with the first source that cannot be
    /// read), then follows the ones that change.
    pub async fn build(self) -> Result<Config, ConfigError> {
        let config = self.start();
        config.ready().await?;
        Ok(config)
    }

    /// Returns at once and loads in the background — from now on inside a tokio
    /// runtime, else from the first [`Config::ready`], which waits for the first
    /// load. Used by the service builder.
    pub fn start(self) -> Config {
        let layers = self
            .sources
            .iter()
            .map(|s| Layer {
                name: s.name(),
                tree: Value::Object(Map::new()),
                loaded: false,
            })
            .collect();
        let config = Config::from_layers(layers, self.ready_timeout);
        *crate::sync::lock(&config.inner.pending) = self.sources;
        if tokio::runtime::Handle::try_current().is_ok() {
            config.spawn_loaders();
        }
        config
    }
}

/// Loads one source, then applies its changes until the config is dropped.
async fn follow(inner: std::sync::Weak<Inner>, index: usize, source: Arc<dyn Source>) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let loaded = source.load().await;
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let config = Config { inner: strong };
        match loaded {
            Ok(tree) => {
                config.apply(index, tree);
                break;
            }
            Err(err) => {
                config.report(index, err);
                drop(config);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
    let Some(mut events) = source.watch() else {
        return;
    };
    while let Some(event) = events.next().await {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let config = Config { inner: strong };
        match event {
            SourceEvent::Tree(tree) => config.apply(index, tree),
            SourceEvent::Error(err) => config.report(index, err),
        }
    }
}

impl Config {
    /// Starts a builder.
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder::default()
    }

    fn from_layers(layers: Vec<Layer>, ready_timeout: Duration) -> Config {
        let config = Config {
            inner: Arc::new(Inner {
                ready_timeout,
                pending: Mutex::new(Vec::new()),
                layers: Mutex::new(layers),
                snapshot: ArcSwap::from_pointee(Snapshot::default()),
                changes: broadcast::channel(64).0,
                tasks: Mutex::new(Vec::new()),
            }),
        };
        config.remerge();
        config
    }

    /// Starts loading and following the sources not started yet.
    fn spawn_loaders(&self) {
        let sources = match self.inner.pending.lock() {
            Ok(mut pending) => std::mem::take(&mut *pending),
            Err(_) => return,
        };
        for (index, source) in sources.into_iter().enumerate() {
            let task = tokio::spawn(follow(Arc::downgrade(&self.inner), index, source));
            crate::sync::lock(&self.inner.tasks).push(task);
        }
    }

    fn layers(&self) -> std::sync::MutexGuard<'_, Vec<Layer>> {
        crate::sync::lock(&self.inner.layers)
    }

    /// Rebuilds the merged tree from the layers and publishes it in one step.
    fn remerge(&self) {
        let layers = self.layers();
        let mut tree = Value::Object(Map::new());
        let mut origins = BTreeMap::new();
        for layer in layers.iter() {
            tree::merge_into(&mut tree, layer.tree.clone(), "", &mut origins, &layer.name);
        }
        let version = self.inner.snapshot.load().version + 1;
        self.inner.snapshot.store(Arc::new(Snapshot {
            tree,
            origins,
            version,
            sources: Arc::new(layers.iter().map(|l| l.name.clone()).collect()),
        }));
    }

    fn apply(&self, index: usize, tree: Value) {
        {
            let mut layers = self.layers();
            let Some(layer) = layers.get_mut(index) else {
                return;
            };
            if layer.loaded && layer.tree == tree {
                return;
            }
            layer.tree = tree;
            layer.loaded = true;
        }
        self.remerge();
        let _ = self.inner.changes.send(Change::Tree);
    }

    fn report(&self, index: usize, err: ConfigError) {
        let name = self
            .layers()
            .get(index)
            .map(|l| l.name.clone())
            .unwrap_or_default();
        tracing::warn!(source = %name, error = %err, "config source problem; keeping the last good values");
        let _ = self.inner.changes.send(Change::Error(err));
    }

    /// Waits until every source has been loaded once; fails after the ready
    /// timeout (10 s by default) naming the sources still missing and their last error.
    pub async fn ready(&self) -> Result<(), ConfigError> {
        let mut changes = self.inner.changes.subscribe();
        self.spawn_loaders();
        let limit = self.inner.ready_timeout;
        let deadline = tokio::time::Instant::now() + limit;
        let mut last_error: Option<ConfigError> = None;
        loop {
            let pending: Vec<String> = self
                .layers()
                .iter()
                .filter(|l| !l.loaded)
                .map(|l| l.name.clone())
                .collect();
            if pending.is_empty() {
                return Ok(());
            }
            match tokio::time::timeout_at(deadline, changes.recv()).await {
                Ok(Ok(Change::Error(err))) => last_error = Some(err),
                Ok(_) => {}
                Err(_) => {
                    return Err(ConfigError::Source {
                        source_name: pending.join(", "),
                        detail: match last_error {
                            Some(err) => format!("not loaded within {limit:?}: {err}"),
                            None => format!("not loaded within {limit:?}"),
                        },
                    });
                }
            }
        }
    }

    /// The current merged tree.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.inner.snapshot.load_full()
    }

    /// The value at `path` (`mysql`, `mysql.port`; `""` for everything), read from
    /// the current snapshot.
    pub fn get(&self, path: &str) -> ConfigValue {
        ConfigValue {
            path: path.trim_matches('.').to_owned(),
            snapshot: self.snapshot(),
        }
    }

    /// The sources, lowest first.
    pub fn sources(&self) -> Vec<String> {
        self.layers().iter().map(|l| l.name.clone()).collect()
    }

    /// The value at `path` now and after every change to it, read as `T`.
    ///
    /// A value that does not scan into `T`, or a source problem (unparseable value,
    /// lost connection), comes as an `Err` item and the stream goes on; the tree
    /// keeps the last good values.
    pub fn watch<T: DeserializeOwned + Send + 'static>(
        &self,
        path: &str,
    ) -> BoxStream<'static, Result<T, ConfigError>> {
        let path = path.trim_matches('.').to_owned();
        let changes = self.inner.changes.subscribe();
        let config = self.clone();
        let state = (config, changes, None::<Option<Value>>, path);
        Box::pin(futures_util::stream::unfold(
            state,
            |(config, mut changes, mut last, path)| async move {
                loop {
                    let current = config.get(&path);
                    let raw = current.raw().cloned();
                    if last.as_ref() != Some(&raw) {
                        last = Some(raw);
                        let scanned = current.scan::<T>();
                        if let Err(err) = &scanned
                            && current.exists()
                        {
                            tracing::warn!(error = %err, "config value unusable; keep the last good one");
                        }
                        return Some((scanned, (config, changes, last, path)));
                    }
                    match changes.recv().await {
                        Ok(Change::Tree) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Ok(Change::Error(err)) => {
                            return Some((Err(err), (config, changes, last, path)));
                        }
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            },
        ))
    }
}
