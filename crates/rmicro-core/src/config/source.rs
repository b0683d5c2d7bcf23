//! Configuration sources: in-code values, files, environment variables, flags, and
//! config centers (etcd, Consul KV — from their adapter crates).

use super::ConfigError;
use super::tree;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// What a watched source reports.
#[derive(Debug, Clone)]
pub enum SourceEvent {
    /// The source's whole tree, after a change.
    Tree(Value),
    /// Something went wrong (unparseable value, connection lost); the source keeps
    /// its last good tree and goes on watching.
    Error(ConfigError),
}

/// A layer of configuration.
pub trait Source: Send + Sync + 'static {
    /// A short name for messages: `file:/etc/app.yaml`, `env:MICRO_`, `etcd://…`.
    fn name(&self) -> String;

    /// Reads the source's whole tree.
    fn load(&self) -> BoxFuture<'_, Result<Value, ConfigError>>;

    /// Follows changes, reconnecting by itself; `None` for sources that never change.
    /// The stream may begin with the current tree.
    fn watch(self: Arc<Self>) -> Option<BoxStream<'static, SourceEvent>> {
        None
    }

    /// Writes `value` at `path` (config centers only; others refuse).
    fn set(&self, path: &str, value: &Value) -> BoxFuture<'_, Result<(), ConfigError>> {
        let _ = (path, value);
        let name = self.name();
        Box::pin(async move {
            Err(ConfigError::Source {
                source_name: name,
                detail: "this source is read-only".into(),
            })
        })
    }
}

/// The key a config center stores `path` under: `prefix/mysql/port` for `mysql.port`.
pub fn path_key(prefix: &str, path: &str) -> String {
    let prefix = prefix.trim_end_matches('/');
    let rest = tree::segments(path).collect::<Vec<_>>().join("/");
    if rest.is_empty() {
        prefix.to_owned()
    } else {
        format!("{prefix}/{rest}")
    }
}

/// Parses every key's value, keeping the last good value of a key whose new value
/// does not parse; returns the errors for those keys. Shared by config centers.
pub fn parse_keys(
    source_name: &str,
    good: &mut BTreeMap<String, Value>,
    changes: impl IntoIterator<Item = (String, Option<String>)>,
) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    for (key, text) in changes {
        match text {
            None => {
                good.remove(&key);
            }
            Some(text) => match parse_value(&text) {
                Ok(value) => {
                    good.insert(key, value);
                }
                Err(detail) => errors.push(ConfigError::Source {
                    source_name: source_name.to_owned(),
                    detail: format!(
                        "key `{key}` holds an unreadable value, keeping the last good one: {detail}"
                    ),
                }),
            },
        }
    }
    errors
}

/// A fixed tree: in-code defaults or values set on the command line.
pub struct Values {
    name: String,
    tree: Value,
}

impl Values {
    /// A source named `name` holding `tree`.
    pub fn new(name: impl Into<String>, tree: Value) -> Self {
        Values {
            name: name.into(),
            tree,
        }
    }

    /// `PATH=VALUE` pairs (from `--config-set`); each value is read as JSON if it
    /// parses, else kept as a string.
    pub fn from_pairs<'a>(
        name: impl Into<String>,
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Self {
        let mut tree = Value::Object(Map::new());
        for (path, value) in pairs {
            let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.into()));
            tree::insert(&mut tree, path, value);
        }
        Values::new(name, tree)
    }
}

impl Source for Values {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn load(&self) -> BoxFuture<'_, Result<Value, ConfigError>> {
        let tree = self.tree.clone();
        Box::pin(async move { Ok(tree) })
    }
}

/// Environment variables under a prefix: with prefix `MICRO_`, `MICRO_MYSQL_HOST=db`
/// becomes `mysql.host = "db"` (a double underscore stands for a literal one:
/// `MICRO_MYSQL_MAX__IDLE` → `mysql.max_idle`). Values stay strings; scanning turns
/// them into numbers or booleans where the target type asks for one.
pub struct Env {
    prefix: String,
    vars: Option<Vec<(String, String)>>,
}

impl Env {
    /// Reads the process environment under `prefix` (e.g. `MICRO_`).
    pub fn new(prefix: impl Into<String>) -> Self {
        Env {
            prefix: prefix.into(),
            vars: None,
        }
    }

    /// Reads `vars` instead of the process environment (for tests and tools).
    pub fn from_vars(prefix: impl Into<String>, vars: Vec<(String, String)>) -> Self {
        Env {
            prefix: prefix.into(),
            vars: Some(vars),
        }
    }

    fn tree(&self) -> Value {
        let vars = match &self.vars {
            Some(vars) => vars.clone(),
            None => std::env::vars().collect(),
        };
        let mut sorted: BTreeMap<String, String> = BTreeMap::new();
        for (key, value) in vars {
            let Some(rest) = key.strip_prefix(&self.prefix) else {
                continue;
            };
            // The variables that configure the config itself are not config.
            if rest.is_empty() || rest.starts_with("CONFIG_") {
                continue;
            }
            let path = rest
                .to_ascii_lowercase()
                .split("__")
                .map(|part| part.replace('_', "."))
                .collect::<Vec<_>>()
                .join("_");
            sorted.insert(path, value);
        }
        let mut tree = Value::Object(Map::new());
        for (path, value) in sorted {
            tree::insert(&mut tree, &path, Value::String(value));
        }
        tree
    }
}

impl Source for Env {
    fn name(&self) -> String {
        format!("env:{}*", self.prefix)
    }

    fn load(&self) -> BoxFuture<'_, Result<Value, ConfigError>> {
        let tree = self.tree();
        Box::pin(async move { Ok(tree) })
    }
}

/// Reads `text` as JSON, else YAML (a JSON superset for our purposes).
pub fn parse_value(text: &str) -> Result<Value, String> {
    match serde_json::from_str(text) {
        Ok(value) => Ok(value),
        Err(json_err) => match serde_norway::from_str::<Value>(text) {
            Ok(value) => Ok(value),
            Err(_) => Err(format!("neither JSON nor YAML: {json_err}")),
        },
    }
}

/// The file formats a [`File`] source reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `.json`
    Json,
    /// `.yaml` / `.yml`
    Yaml,
    /// `.toml`
    Toml,
}

impl Format {
    /// The format of `path`, by extension.
    pub fn of(path: &Path) -> Option<Format> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "json" => Some(Format::Json),
            "yaml" | "yml" => Some(Format::Yaml),
            "toml" => Some(Format::Toml),
            _ => None,
        }
    }

    /// Parses `text` in this format into a tree.
    pub fn parse(self, text: &str) -> Result<Value, String> {
        let value = match self {
            Format::Json => serde_json::from_str(text).map_err(|e| e.to_string()),
            Format::Yaml => serde_norway::from_str::<Value>(text).map_err(|e| e.to_string()),
            Format::Toml => toml::from_str::<Value>(text).map_err(|e| e.to_string()),
        }?;
        match value {
            Value::Object(_) => Ok(value),
            Value::Null => Ok(Value::Object(Map::new())),
            other => Err(format!(
                "the top level must be a mapping, not {}",
                super::kind(&other)
            )),
        }
    }
}

/// A YAML, TOML or JSON file (by extension), re-read when it changes.
pub struct File {
    path: PathBuf,
    format: Format,
    poll: Duration,
}

impl File {
    /// A file source; fails for an extension other than json, yaml, yml or toml.
    pub fn new(path: impl Into<PathBuf>) -> Result<Self, ConfigError> {
        let path = path.into();
        let format = Format::of(&path).ok_or_else(|| ConfigError::Source {
            source_name: format!("file:{}", path.display()),
            detail: "unknown format: name the file .yaml, .yml, .toml or .json".into(),
        })?;
        Ok(File {
            path,
            format,
            poll: Duration::from_millis(250),
        })
    }

    /// How often the file is checked for changes (default 250 ms).
    pub fn poll_interval(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }

    fn read(&self) -> Result<(Value, String), ConfigError> {
        let failed = |detail: String| ConfigError::Source {
            source_name: self.name(),
            detail,
        };
        let text = std::fs::read_to_string(&self.path).map_err(|e| failed(e.to_string()))?;
        let tree = self.format.parse(&text).map_err(failed)?;
        Ok((tree, text))
    }
}

impl Source for File {
    fn name(&self) -> String {
        format!("file:{}", self.path.display())
    }

    fn load(&self) -> BoxFuture<'_, Result<Value, ConfigError>> {
        let result = self.read().map(|(tree, _)| tree);
        Box::pin(async move { result })
    }

    fn watch(self: Arc<Self>) -> Option<BoxStream<'static, SourceEvent>> {
        // Polls the contents: robust across editors that replace the file, network
        // file systems and container mounts, where change notifications are unreliable.
        let last = std::fs::read_to_string(&self.path).ok();
        let stream = futures_util::stream::unfold((self, last), |(me, mut last)| async move {
            loop {
                tokio::time::sleep(me.poll).await;
                let text = std::fs::read_to_string(&me.path).ok();
                if text == last {
                    continue;
                }
                last = text;
                let event = match me.read() {
                    Ok((tree, _)) => SourceEvent::Tree(tree),
                    Err(err) => SourceEvent::Error(err),
                };
                return Some((event, (me, last)));
            }
        });
        Some(Box::pin(stream))
    }
}

/// Builds a config-center source from an address and a key prefix.
pub type SourceFactory = fn(address: &str, prefix: &str) -> Result<Arc<dyn Source>, ConfigError>;

/// The config-center sources adapter crates add for `--config-source SCHEME://…`,
/// collected by the linker (see [`static@crate::registry::REGISTRIES`]).
#[linkme::distributed_slice]
pub static SOURCES: [(&'static str, SourceFactory)];

static FACTORIES: crate::plugins::Plugins<SourceFactory> =
    crate::plugins::Plugins::new(Vec::new, || SOURCES.static_slice());

/// Makes `--config-source SCHEME://host:port/prefix` build its source with `factory`,
/// for a source of the application's own (adapter crates add theirs to [`static@SOURCES`]).
pub fn install(scheme: &str, factory: SourceFactory) {
    FACTORIES.install(scheme, factory);
}

/// Builds the source a `--config-source` URL names, e.g.
/// `etcd://127.0.0.1:2379/micro/config` or `consul://127.0.0.1:8500/micro/config`.
pub fn from_url(url: &str) -> Result<Arc<dyn Source>, ConfigError> {
    let bad = |detail: String| ConfigError::Source {
        source_name: url.to_owned(),
        detail,
    };
    let (scheme, rest) = url.split_once("://").ok_or_else(|| {
        bad("expected SCHEME://HOST:PORT/PREFIX, e.g. etcd://127.0.0.1:2379/micro/config".into())
    })?;
    let (address, prefix) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/micro/config"),
    };
    if address.is_empty() {
        return Err(bad("no HOST:PORT".into()));
    }
    match FACTORIES.get(scheme) {
        Some(factory) => factory(address, prefix),
        None => {
            let known = FACTORIES.names();
            Err(bad(format!(
                "unknown config center `{scheme}`; this program knows: {}",
                if known.is_empty() {
                    "none (install rmicro_etcd or rmicro_consul)".to_owned()
                } else {
                    known.join(", ")
                }
            )))
        }
    }
}

/// Turns the keys of a key-value config center into a tree: the prefix is
/// stripped, the rest of each key is a path (`/` separated), each value is JSON or
/// YAML. Keys are applied in order, so `mysql` then `mysql/port` merge.
pub fn tree_from_keys<'a>(
    prefix: &str,
    entries: impl IntoIterator<Item = (&'a str, &'a Value)>,
) -> Value {
    let mut sorted: Vec<(&str, &Value)> = entries.into_iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut tree = Value::Object(Map::new());
    for (key, value) in sorted {
        let path = key_path(prefix, key);
        if path.is_empty() {
            if value.is_object() {
                tree::merge_into(&mut tree, value.clone(), "", &mut BTreeMap::new(), "");
            }
            continue;
        }
        tree::insert(&mut tree, &path, value.clone());
    }
    tree
}

/// Whether a center's `key` is `prefix` itself or below it (`prefix/…`, not a
/// sibling such as `prefixes/…`).
pub fn is_under(prefix: &str, key: &str) -> bool {
    key == prefix
        || key
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// The config path of a center's key: prefix stripped, `/` → `.`.
pub fn key_path(prefix: &str, key: &str) -> String {
    let prefix = prefix.trim_matches('/');
    let key = key.trim_matches('/');
    let rest = key.strip_prefix(prefix).unwrap_or(key);
    rest.trim_matches('/').replace('/', ".")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn env_names_become_paths() {
        let env = Env::from_vars(
            "MICRO_",
            vec![
                ("MICRO_MYSQL_HOST".into(), "db".into()),
                ("MICRO_MYSQL_MAX__IDLE".into(), "4".into()),
                ("MICRO_CONFIG_FILE".into(), "x.yaml".into()),
                ("OTHER_THING".into(), "1".into()),
            ],
        );
        assert_eq!(
            env.tree(),
            json!({"mysql": {"host": "db", "max_idle": "4"}})
        );
    }

    #[test]
    fn files_parse_by_extension() {
        assert_eq!(
            Format::Toml.parse("[mysql]\nport = 3306\n").unwrap(),
            json!({"mysql": {"port": 3306}})
        );
        assert_eq!(
            Format::Yaml.parse("mysql:\n  host: db\n").unwrap(),
            json!({"mysql": {"host": "db"}})
        );
        assert!(Format::Json.parse("[1]").unwrap_err().contains("mapping"));
        assert!(File::new("/etc/app.ini").is_err());
    }

    #[test]
    fn center_keys_become_a_tree() {
        let mysql = json!({"host": "db"});
        let port = json!(3306);
        let tree = tree_from_keys(
            "/micro/config",
            [
                ("/micro/config/mysql/port", &port),
                ("/micro/config/mysql", &mysql),
            ],
        );
        assert_eq!(tree, json!({"mysql": {"host": "db", "port": 3306}}));
        assert_eq!(parse_value("a: 1").unwrap(), json!({"a": 1}));
        assert!(parse_value("{\"a\": ").is_err());
    }

    #[test]
    fn urls_name_their_center() {
        let err = from_url("zookeeper://h:1/x").err().unwrap();
        assert!(
            err.to_string()
                .contains("unknown config center `zookeeper`"),
            "{err}"
        );
        assert!(from_url("no-scheme").is_err());
    }
}
