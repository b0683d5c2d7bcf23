//! The call form's two halves: a request pre-filled from the endpoint's
//! description in the registry (each field at its proto3 zero value, nested
//! messages as objects), and `POST /api/call`, which makes the call through the
//! client and the selector and answers the reply or the error with the latency.

use rmicro::registry::Value;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// The most replies of a streaming endpoint the form shows.
const MAX_REPLIES: usize = 100;

/// A JSON request with every described field at its zero value, in the
/// message's field order, pretty-printed for the form.
pub(crate) fn skeleton(message: &Value) -> String {
    let mut out = String::new();
    write_message(message, 0, &mut out);
    out
}

fn write_message(message: &Value, depth: usize, out: &mut String) {
    let fields: Vec<(&Value, &str)> = message
        .values
        .iter()
        .filter_map(|field| zero(field).map(|zero| (field, zero)))
        .collect();
    if fields.is_empty() {
        out.push_str("{}");
        return;
    }
    out.push_str("{\n");
    for (i, (field, zero)) in fields.iter().enumerate() {
        out.push_str(&"  ".repeat(depth + 1));
        out.push_str(&serde_json::Value::String(json_name(&field.name)).to_string());
        out.push_str(": ");
        if zero.is_empty() {
            write_message(field, depth + 1, out);
        } else {
            out.push_str(zero);
        }
        out.push_str(if i + 1 < fields.len() { ",\n" } else { "\n" });
    }
    out.push_str(&"  ".repeat(depth));
    out.push('}');
}

/// The zero value of a field's type as proto3 JSON writes it (empty: a nested
/// message, written field by field); `None` for an enum or an undescribed
/// message (the descriptor cannot tell them apart: left out).
fn zero(field: &Value) -> Option<&'static str> {
    let kind = field.kind.as_str();
    if kind.starts_with("[]") {
        return Some("[]");
    }
    if kind.starts_with("map[") {
        return Some("{}");
    }
    Some(match kind {
        // proto3 JSON writes 64-bit integers and bytes as strings.
        "string" | "bytes" => "\"\"",
        "int64" | "uint64" | "sint64" | "fixed64" | "sfixed64" => "\"0\"",
        "int32" | "uint32" | "sint32" | "fixed32" | "sfixed32" => "0",
        "double" | "float" => "0.0",
        "bool" => "false",
        _ if !field.values.is_empty() => "",
        _ => return None,
    })
}

/// A proto field name in proto3 JSON's lowerCamelCase.
fn json_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = false;
    for c in name.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// What the form posts.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CallRequest {
    /// The service, by its registry name.
    pub service: String,
    /// `Service.Method` or fully qualified.
    pub endpoint: String,
    /// The request: JSON text, or a JSON value.
    pub request: serde_json::Value,
    /// A node's address, to call it rather than one the selector picks.
    #[serde(default)]
    pub address: Option<String>,
    /// Whether the endpoint streams (its replies are gathered, up to 100).
    #[serde(default)]
    pub stream: bool,
}

/// What the form shows.
#[derive(Debug, Serialize)]
pub(crate) struct CallResult {
    /// Whether the call succeeded.
    pub ok: bool,
    /// The reply (an array of replies for a stream).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply: Option<serde_json::Value>,
    /// The error: `id`, `code`, `detail`, `status`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<rmicro::Error>,
    /// How long the call took, milliseconds.
    pub latency_ms: f64,
}

impl CallResult {
    /// The result of work begun at `started` that ended with `outcome`.
    fn of(outcome: Result<Option<serde_json::Value>, rmicro::Error>, started: Instant) -> Self {
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        match outcome {
            Ok(reply) => CallResult {
                ok: true,
                reply,
                error: None,
                latency_ms,
            },
            Err(err) => CallResult {
                ok: false,
                reply: None,
                error: Some(err),
                latency_ms,
            },
        }
    }
}

/// Makes the call `request` describes with `client`.
pub(crate) async fn call(
    client: &rmicro::Client,
    request: CallRequest,
    timeout: Duration,
    forwarded: Option<&str>,
) -> CallResult {
    let json = match &request.request {
        serde_json::Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    let mut options = rmicro::CallOptions::new().timeout(timeout);
    if let Some(address) = request.address.as_deref().filter(|a| !a.is_empty()) {
        options = options.address(address);
    }
    if let Some(authorization) = forwarded {
        options = options.metadata("authorization", authorization);
    }
    let started = Instant::now();
    let outcome = if request.stream {
        stream(client, &request, &json, options).await
    } else {
        match client.unary_json(&request.service, &request.endpoint, &json, options) {
            Ok(call) => call.await.map(|reply| parse_reply(&reply.0)),
            Err(err) => Err(err),
        }
    };
    CallResult::of(outcome.map(Some), started)
}

/// The replies of a streaming call, one request message sent.
async fn stream(
    client: &rmicro::Client,
    request: &CallRequest,
    json: &str,
    options: rmicro::CallOptions,
) -> Result<serde_json::Value, rmicro::Error> {
    let mut replies = client
        .stream_json(&request.service, &request.endpoint, json, options)?
        .await?;
    let mut out = Vec::new();
    while out.len() < MAX_REPLIES
        && let Some(reply) = replies.message().await?
    {
        out.push(parse_reply(&reply.0));
    }
    Ok(serde_json::Value::Array(out))
}

/// What the publish form posts.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PublishRequest {
    /// The topic.
    pub topic: String,
    /// The message, as JSON.
    pub message: serde_json::Value,
}

/// Publishes `request`'s message as JSON through `client`'s broker.
pub(crate) async fn publish(client: &rmicro::Client, request: PublishRequest) -> CallResult {
    let started = Instant::now();
    let outcome = if request.topic.trim().is_empty() {
        Err(rmicro::Error::bad_request(
            "rmicro.web",
            "name the topic to publish on",
        ))
    } else {
        match rmicro::broker::typed::encode_json(&request.message) {
            Ok(message) => client.publish_message(&request.topic, message).await,
            Err(err) => Err(err),
        }
    };
    CallResult::of(outcome.map(|()| None), started)
}

/// A reply's JSON, or its text when it is not JSON.
fn parse_reply(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skeletons_hold_every_field_at_its_zero_value() {
        let inner = Value::new(
            "inner",
            "Inner",
            vec![Value::new("display_name", "string", vec![])],
        );
        let message = Value::new(
            "Outer",
            "Outer",
            vec![
                Value::new("name", "string", vec![]),
                Value::new("user_id", "int64", vec![]),
                Value::new("age", "int32", vec![]),
                Value::new("ok", "bool", vec![]),
                Value::new("tags", "[]string", vec![]),
                Value::new("counts", "map[string]int32", vec![]),
                Value::new("color", "Color", vec![]),
                inner,
            ],
        );
        let text = skeleton(&message);
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            parsed,
            serde_json::json!({
                "name": "", "userId": "0", "age": 0, "ok": false, "tags": [], "counts": {},
                "inner": {"displayName": ""}
            })
        );
        // In the message's order, not the alphabet's.
        assert!(text.find("\"name\"") < text.find("\"age\""), "{text}");
        assert!(
            text.contains("\n  \"inner\": {\n    \"displayName\": \"\"\n  }\n}"),
            "{text}"
        );
        assert_eq!(skeleton(&Value::new("Empty", "Empty", vec![])), "{}");
    }
}
