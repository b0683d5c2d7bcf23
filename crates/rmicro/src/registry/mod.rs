//! Registry records in go-micro's shape: services, their nodes and their endpoints.
//!
//! Codegen fills [`Endpoint`]s from the `.proto`, so a registry can tell callers and
//! tools (`rmicro describe`) which endpoints a service has and what their messages
//! look like. The JSON form matches go-micro's, so tools that read a go-micro registry
//! read ours.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A field of a message, or a message itself: `{name, type, values}`, nested up to 3 levels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Value {
    /// Field name (the message's name at the top level).
    pub name: String,
    /// Type name: a scalar (`string`, `int32`, …) or a message name (`HelloRequest`).
    #[serde(rename = "type")]
    pub kind: String,
    /// Fields of a message type; empty for scalars.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<Value>,
}

impl Value {
    /// A value with the given name, type and fields.
    pub fn new(name: impl Into<String>, kind: impl Into<String>, values: Vec<Value>) -> Self {
        Value {
            name: name.into(),
            kind: kind.into(),
            values,
        }
    }
}

/// An endpoint of a service: `{name, request, response, metadata}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Endpoint {
    /// `Service.Method`, e.g. `Greeter.SayHello`.
    pub name: String,
    /// The request message.
    pub request: Option<Value>,
    /// The response message.
    pub response: Option<Value>,
    /// `stream: "true"|"false"` and, for subscribers, `topic` and `subscriber`.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_like_go_micro() {
        let ep = Endpoint {
            name: "Greeter.SayHello".into(),
            request: Some(Value::new(
                "HelloRequest",
                "HelloRequest",
                vec![Value::new("name", "string", vec![])],
            )),
            response: None,
            metadata: [("stream".to_owned(), "false".to_owned())].into(),
        };
        let json = serde_json::to_value(&ep).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "name": "Greeter.SayHello",
                "request": {"name": "HelloRequest", "type": "HelloRequest",
                            "values": [{"name": "name", "type": "string"}]},
                "response": null,
                "metadata": {"stream": "false"}
            })
        );
        let back: Endpoint = serde_json::from_value(json).unwrap();
        assert_eq!(back, ep);
    }
}
