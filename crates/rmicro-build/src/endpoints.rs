//! Describes request and response messages as go-micro `Value` trees, for the registry.

use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FileDescriptorSet};
use std::collections::HashMap;

/// go-micro stops describing nested messages after this depth.
const MAX_DEPTH: usize = 3;

/// A `Value` as it will be emitted: name, type, fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ValueDesc {
    pub name: String,
    pub kind: String,
    pub values: Vec<ValueDesc>,
}

/// Every message of a descriptor set by full name (`.greeter.v1.HelloRequest`).
pub(crate) struct Messages {
    by_name: HashMap<String, DescriptorProto>,
}

fn collect(
    prefix: &str,
    messages: &[DescriptorProto],
    into: &mut HashMap<String, DescriptorProto>,
) {
    for m in messages {
        let name = format!("{prefix}.{}", m.name());
        collect(&name, &m.nested_type, into);
        into.insert(name, m.clone());
    }
}

fn short(type_name: &str) -> &str {
    type_name.rsplit('.').next().unwrap_or(type_name)
}

impl Messages {
    pub(crate) fn new(fds: &FileDescriptorSet) -> Self {
        let mut by_name = HashMap::new();
        for file in &fds.file {
            let prefix = match file.package() {
                "" => String::new(),
                p => format!(".{p}"),
            };
            collect(&prefix, &file.message_type, &mut by_name);
        }
        Messages { by_name }
    }

    /// Describes message `full_name` as a top-level value named after it.
    pub(crate) fn describe(&self, full_name: &str) -> ValueDesc {
        let name = short(full_name).to_owned();
        ValueDesc {
            name: name.clone(),
            kind: name,
            values: self.fields(full_name, 1),
        }
    }

    fn fields(&self, full_name: &str, depth: usize) -> Vec<ValueDesc> {
        let Some(message) = self.by_name.get(full_name) else {
            return Vec::new();
        };
        if depth > MAX_DEPTH {
            return Vec::new();
        }
        message
            .field
            .iter()
            .map(|field| {
                let (kind, nested) = self.field_type(field, depth);
                ValueDesc {
                    name: field.name().to_owned(),
                    kind,
                    values: nested,
                }
            })
            .collect()
    }

    fn field_type(
        &self,
        field: &prost_types::FieldDescriptorProto,
        depth: usize,
    ) -> (String, Vec<ValueDesc>) {
        let repeated = field.label() == Label::Repeated;
        let (base, nested) = match field.r#type() {
            Type::Message => {
                let type_name = field.type_name();
                if let Some(entry) = self.by_name.get(type_name)
                    && entry.options.as_ref().is_some_and(|o| o.map_entry())
                {
                    let key = entry.field.first().map(|f| self.field_type(f, depth).0);
                    let value = entry.field.get(1).map(|f| self.field_type(f, depth).0);
                    return (
                        format!(
                            "map[{}]{}",
                            key.unwrap_or_default(),
                            value.unwrap_or_default()
                        ),
                        Vec::new(),
                    );
                }
                (
                    short(type_name).to_owned(),
                    self.fields(type_name, depth + 1),
                )
            }
            Type::Enum => (short(field.type_name()).to_owned(), Vec::new()),
            other => (scalar_name(other).to_owned(), Vec::new()),
        };
        if repeated {
            (format!("[]{base}"), nested)
        } else {
            (base, nested)
        }
    }
}

fn scalar_name(kind: Type) -> &'static str {
    match kind {
        Type::Double => "double",
        Type::Float => "float",
        Type::Int64 => "int64",
        Type::Uint64 => "uint64",
        Type::Int32 => "int32",
        Type::Fixed64 => "fixed64",
        Type::Fixed32 => "fixed32",
        Type::Bool => "bool",
        Type::String => "string",
        Type::Bytes => "bytes",
        Type::Uint32 => "uint32",
        Type::Sfixed32 => "sfixed32",
        Type::Sfixed64 => "sfixed64",
        Type::Sint32 => "sint32",
        Type::Sint64 => "sint64",
        Type::Group => "group",
        Type::Message => "message",
        Type::Enum => "enum",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(proto: &str) -> FileDescriptorSet {
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("rmicro-build-test-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("t.proto"), proto).unwrap();
        let fds = protox::compile(["t.proto"], [&dir]);
        let _ = std::fs::remove_dir_all(&dir);
        fds.unwrap()
    }

    #[test]
    fn describes_nested_repeated_and_map_fields() {
        let fds = compile(
            r#"syntax = "proto3"; package t;
            message Inner { string s = 1; }
            message Outer { repeated Inner items = 1; map<string, int32> counts = 2; Inner one = 3; bool ok = 4; }"#,
        );
        let v = Messages::new(&fds).describe(".t.Outer");
        assert_eq!(v.name, "Outer");
        let kinds: Vec<_> = v
            .values
            .iter()
            .map(|f| (f.name.as_str(), f.kind.as_str()))
            .collect();
        assert_eq!(
            kinds,
            [
                ("items", "[]Inner"),
                ("counts", "map[string]int32"),
                ("one", "Inner"),
                ("ok", "bool")
            ]
        );
        assert_eq!(v.values[2].values[0].name, "s");
    }

    #[test]
    fn stops_at_three_levels_for_recursive_messages() {
        let fds = compile(r#"syntax = "proto3"; package t; message Node { Node next = 1; }"#);
        let v = Messages::new(&fds).describe(".t.Node");
        let mut depth = 0;
        let mut cur = &v;
        while let Some(next) = cur.values.first() {
            depth += 1;
            cur = next;
        }
        assert_eq!(depth, 3);
    }
}
