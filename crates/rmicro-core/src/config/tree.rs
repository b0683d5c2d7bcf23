//! The configuration tree: JSON values addressed by dotted paths, merged layer by
//! layer with the source of every leaf remembered.

use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Splits `a.b.c` into its segments; the empty path is the root.
pub(crate) fn segments(path: &str) -> impl Iterator<Item = &str> {
    path.split('.').filter(|s| !s.is_empty())
}

/// The value at `path`, if any.
pub(crate) fn get<'a>(tree: &'a Value, path: &str) -> Option<&'a Value> {
    segments(path).try_fold(tree, |node, key| match node {
        Value::Object(map) => map.get(key),
        Value::Array(items) => key.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    })
}

/// Puts `value` at `path`, creating objects on the way (a leaf in the way is
/// replaced by an object).
pub(crate) fn insert(tree: &mut Value, path: &str, value: Value) {
    let keys: Vec<&str> = segments(path).collect();
    let Some((last, parents)) = keys.split_last() else {
        *tree = value;
        return;
    };
    let mut node = tree;
    for key in parents {
        if !node.is_object() {
            *node = Value::Object(Map::new());
        }
        let Value::Object(map) = node else { return };
        node = map
            .entry((*key).to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    if !node.is_object() {
        *node = Value::Object(Map::new());
    }
    if let Value::Object(map) = node {
        match (map.get_mut(*last), value) {
            // Keys written below an object merge into it rather than replace it.
            (Some(existing @ Value::Object(_)), Value::Object(new)) => {
                merge_into(existing, Value::Object(new), "", &mut BTreeMap::new(), "");
            }
            (_, value) => {
                map.insert((*last).to_owned(), value);
            }
        }
    }
}

/// Merges `layer` into `tree`: objects merge key by key, anything else replaces.
/// Records `source` as the origin of every leaf written, under its full path.
pub(crate) fn merge_into(
    tree: &mut Value,
    layer: Value,
    path: &str,
    origins: &mut BTreeMap<String, String>,
    source: &str,
) {
    match (tree, layer) {
        (Value::Object(base), Value::Object(layer)) => {
            for (key, value) in layer {
                let child = join(path, &key);
                let slot = base.entry(key).or_insert(Value::Null);
                if slot.is_object() && value.is_object() {
                    merge_into(slot, value, &child, origins, source);
                } else {
                    // A replaced subtree's old origins no longer apply.
                    let prefix = format!("{child}.");
                    origins.retain(|k, _| k != &child && !k.starts_with(&prefix));
                    record_origins(&value, &child, origins, source);
                    *slot = value;
                }
            }
        }
        (tree, layer) => {
            origins.clear();
            record_origins(&layer, path, origins, source);
            *tree = layer;
        }
    }
}

fn record_origins(value: &Value, path: &str, origins: &mut BTreeMap<String, String>, source: &str) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, child) in map {
                record_origins(child, &join(path, key), origins, source);
            }
        }
        _ => {
            origins.insert(path.to_owned(), source.to_owned());
        }
    }
}

/// `a` + `b` → `a.b` (or `b` at the root).
pub(crate) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// The source of `path`: its own origin, or that of its nearest ancestor leaf, or —
/// for an object — the sources of the leaves below it, joined.
pub(crate) fn origin_of(origins: &BTreeMap<String, String>, path: &str) -> Option<String> {
    if let Some(source) = origins.get(path) {
        return Some(source.clone());
    }
    let prefix = if path.is_empty() {
        String::new()
    } else {
        format!("{path}.")
    };
    let mut below: Vec<&str> = origins
        .iter()
        .filter(|(k, _)| k.starts_with(&prefix))
        .map(|(_, v)| v.as_str())
        .collect();
    below.sort_unstable();
    below.dedup();
    if !below.is_empty() {
        return Some(below.join(", "));
    }
    let mut ancestor = path;
    while let Some((parent, _)) = ancestor.rsplit_once('.') {
        if let Some(source) = origins.get(parent) {
            return Some(source.clone());
        }
        ancestor = parent;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn later_layers_win_leaf_by_leaf_and_remember_their_source() {
        let mut tree = Value::Object(Map::new());
        let mut origins = BTreeMap::new();
        merge_into(
            &mut tree,
            json!({"mysql": {"host": "a", "port": 3306}, "debug": false}),
            "",
            &mut origins,
            "defaults",
        );
        merge_into(
            &mut tree,
            json!({"mysql": {"host": "b"}}),
            "",
            &mut origins,
            "file",
        );
        assert_eq!(
            tree,
            json!({"mysql": {"host": "b", "port": 3306}, "debug": false})
        );
        assert_eq!(origins["mysql.host"], "file");
        assert_eq!(origins["mysql.port"], "defaults");
        assert_eq!(
            origin_of(&origins, "mysql").as_deref(),
            Some("defaults, file")
        );
        // A leaf replacing an object drops the object's origins.
        merge_into(
            &mut tree,
            json!({"mysql": "dsn://x"}),
            "",
            &mut origins,
            "env",
        );
        assert_eq!(origin_of(&origins, "mysql").as_deref(), Some("env"));
        assert_eq!(origin_of(&origins, "mysql.host").as_deref(), Some("env"));
        assert!(!origins.contains_key("mysql.port"));
    }

    #[test]
    fn paths_insert_and_read() {
        let mut tree = json!({});
        insert(&mut tree, "mysql", json!({"host": "a"}));
        insert(&mut tree, "mysql.port", json!(3306));
        insert(&mut tree, "mysql", json!({"user": "root"}));
        assert_eq!(
            tree,
            json!({"mysql": {"host": "a", "port": 3306, "user": "root"}})
        );
        assert_eq!(get(&tree, "mysql.port"), Some(&json!(3306)));
        assert_eq!(get(&tree, "mysql.nope"), None);
        assert_eq!(get(&tree, ""), Some(&tree));
        insert(&mut tree, "list", json!([1, 2]));
        assert_eq!(get(&tree, "list.1"), Some(&json!(2)));
    }
}
