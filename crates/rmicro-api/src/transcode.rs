//! HTTP → protobuf and back: a JSON body, query parameters and path parameters
//! become one request message by the proto3 JSON mapping; a reply becomes JSON.

use bytes::Bytes;
use prost::Message as _;
use prost_reflect::{DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, SerializeOptions};
use rmicro::Error;
use serde::de::DeserializeSeed as _;
use serde_json::{Map, Value};

/// A 400 naming what is wrong with the request.
pub(crate) fn bad_request(detail: String) -> Error {
    Error::bad_request(crate::ID, detail)
}

/// The request body as a JSON object (`{}` when empty); anything else is a 400.
pub(crate) fn body_object(body: &[u8]) -> Result<Map<String, Value>, Error> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(bad_request(format!(
            "the request body must be a JSON object, not {}",
            kind_of(&other)
        ))),
        Err(e) => Err(bad_request(format!(
            "the request body is not valid JSON: {e}"
        ))),
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The field of `message` a JSON or query name means: its JSON name
/// (`userName`) or its proto name (`user_name`).
fn field(message: &MessageDescriptor, name: &str) -> Option<FieldDescriptor> {
    message
        .get_field_by_json_name(name)
        .or_else(|| message.get_field_by_name(name))
}

/// Sets the dotted `name` (`user.first_name`) to the text `value` in `object`,
/// typed by `message`'s descriptor: a query or path parameter. Repeated fields
/// collect every value given; an unknown name is a 400 naming it.
pub(crate) fn set_text(
    object: &mut Map<String, Value>,
    message: &MessageDescriptor,
    name: &str,
    value: &str,
) -> Result<(), Error> {
    let mut parts = name.split('.').peekable();
    let mut object = object;
    let mut message = message.clone();
    while let Some(part) = parts.next() {
        let field = field(&message, part).ok_or_else(|| {
            bad_request(format!(
                "`{name}`: `{}` has no field `{part}`",
                message.full_name()
            ))
        })?;
        let key = field.json_name().to_owned();
        if parts.peek().is_none() {
            let typed =
                typed(&field, value).map_err(|why| bad_request(format!("`{name}`: {why}")))?;
            if field.is_list() {
                match object
                    .entry(key)
                    .or_insert_with(|| Value::Array(Vec::new()))
                {
                    Value::Array(items) => items.push(typed),
                    other => *other = Value::Array(vec![typed]),
                }
            } else {
                object.insert(key, typed);
            }
            return Ok(());
        }
        let Kind::Message(inner) = field.kind() else {
            return Err(bad_request(format!(
                "`{name}`: `{part}` is not a message, it has no fields"
            )));
        };
        let slot = object
            .entry(key)
            .or_insert_with(|| Value::Object(Map::new()));
        // A scalar given earlier for a message field gives way to its fields.
        if !slot.is_object() {
            *slot = Value::Object(Map::new());
        }
        let Value::Object(map) = slot else {
            return Err(bad_request(format!("`{name}`: `{part}` is not an object")));
        };
        object = map;
        message = inner;
    }
    Ok(())
}

/// A parameter's text as the JSON value its field takes.
fn typed(field: &FieldDescriptor, text: &str) -> Result<Value, String> {
    Ok(match field.kind() {
        Kind::Bool => Value::Bool(match text {
            "true" | "1" => true,
            "false" | "0" => false,
            _ => return Err(format!("`{text}` is not a boolean")),
        }),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Value::from(
            text.parse::<i32>()
                .map_err(|_| format!("`{text}` is not an int32"))?,
        ),
        Kind::Uint32 | Kind::Fixed32 => Value::from(
            text.parse::<u32>()
                .map_err(|_| format!("`{text}` is not a uint32"))?,
        ),
        Kind::Float | Kind::Double => match text.parse::<f64>() {
            Ok(n) if n.is_finite() => Value::from(n),
            // "NaN", "Infinity": proto3 JSON spells them as strings.
            _ => Value::String(text.to_owned()),
        },
        // 64-bit integers, enums (by name or number), strings, bytes (base64) and
        // the well-known wrapper types take strings in proto3 JSON.
        _ => Value::String(text.to_owned()),
    })
}

/// Encodes `object` as a `message`; a field of the wrong type or an unknown field
/// is a 400 naming it by its path (`user.age`).
pub(crate) fn encode(
    message: &MessageDescriptor,
    object: Map<String, Value>,
) -> Result<Bytes, Error> {
    let value = Value::Object(object);
    let mut track = serde_path_to_error::Track::new();
    let decoded = message
        .clone()
        .deserialize(serde_path_to_error::Deserializer::new(&value, &mut track))
        .map_err(|e| {
            let path = track.path().to_string();
            if path.is_empty() || path == "." {
                bad_request(format!(
                    "the request is not a `{}`: {e}",
                    message.full_name()
                ))
            } else {
                bad_request(format!("field `{path}` of `{}`: {e}", message.full_name()))
            }
        })?;
    Ok(Bytes::from(decoded.encode_to_vec()))
}

/// Encodes a JSON body that is the whole request: a `plain` message straight to
/// protobuf bytes ([`crate::direct`]), any other parsed into the message (no tree
/// of values in between); only a body that does not fit is parsed again, slowly,
/// to name what is wrong.
pub(crate) fn encode_body(
    message: &MessageDescriptor,
    body: &[u8],
    plain: bool,
) -> Result<Bytes, Error> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Bytes::new());
    }
    if plain && let Ok(encoded) = crate::direct::encode(message, body) {
        return Ok(Bytes::from(encoded));
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    match message
        .clone()
        .deserialize(&mut de)
        .and_then(|decoded| de.end().map(|()| decoded))
    {
        Ok(decoded) => Ok(Bytes::from(decoded.encode_to_vec())),
        Err(_) => encode(message, body_object(body)?),
    }
}

/// Whether a reply of this type has nothing to say (`google.protobuf.Empty` or any
/// message with no fields): the gateway answers 204.
pub(crate) fn is_empty(message: &MessageDescriptor) -> bool {
    message.fields().len() == 0
}

/// The request object an annotation's `body: "field"` makes: the whole body is
/// that field's JSON value.
pub(crate) fn body_field(
    message: &MessageDescriptor,
    name: &str,
    body: &[u8],
) -> Result<Map<String, Value>, Error> {
    let field = field(message, name).ok_or_else(|| {
        Error::internal(
            crate::ID,
            format!(
                "the HTTP binding's body names `{name}`, which `{}` does not have",
                message.full_name()
            ),
        )
    })?;
    let mut object = Map::new();
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(object);
    }
    let value = serde_json::from_slice::<Value>(body)
        .map_err(|e| bad_request(format!("the request body is not valid JSON: {e}")))?;
    object.insert(field.json_name().to_owned(), value);
    Ok(object)
}

/// A reply as proto3 JSON, every field shown (defaults too), as rmicro's JSON codec
/// writes it — or only its field `only` (an annotation's `response_body`); bytes
/// that do not decode are a 502. A `plain` message is written straight from its
/// bytes ([`crate::direct`]).
pub(crate) fn reply_json(
    message: &MessageDescriptor,
    bytes: &[u8],
    only: &str,
    plain: bool,
) -> Result<Vec<u8>, Error> {
    if plain
        && only.is_empty()
        && let Ok(json) = crate::direct::reply(message, bytes)
    {
        return Ok(json);
    }
    let decoded = DynamicMessage::decode(message.clone(), bytes).map_err(|e| {
        Error::new(
            crate::ID,
            502,
            format!("the reply is not a valid `{}`: {e}", message.full_name()),
        )
    })?;
    let options = SerializeOptions::new().skip_default_fields(false);
    let cannot =
        |e: String| Error::internal(crate::ID, format!("cannot write the reply as JSON: {e}"));
    if !only.is_empty() {
        let field = field(message, only).ok_or_else(|| {
            cannot(format!(
                "`{}` has no field `{only}` (the binding's response_body)",
                message.full_name()
            ))
        })?;
        let whole = decoded
            .serialize_with_options(serde_json::value::Serializer, &options)
            .map_err(|e| cannot(e.to_string()))?;
        let part = whole.get(field.json_name()).cloned().unwrap_or(Value::Null);
        return serde_json::to_vec(&part).map_err(|e| cannot(e.to_string()));
    }
    let mut out = Vec::with_capacity(bytes.len() * 2 + 2);
    decoded
        .serialize_with_options(&mut serde_json::Serializer::new(&mut out), &options)
        .map_err(|e| cannot(e.to_string()))?;
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use prost_types::FieldDescriptorProto;
    use prost_types::field_descriptor_proto::{Label, Type};

    /// A field of a test message (`type_name` for messages and enums).
    pub(crate) fn field_proto(
        name: &str,
        number: i32,
        kind: Type,
        label: Label,
        type_name: Option<&str>,
    ) -> FieldDescriptorProto {
        FieldDescriptorProto {
            name: Some(name.to_owned()),
            number: Some(number),
            r#type: Some(kind as i32),
            label: Some(label as i32),
            type_name: type_name.map(str::to_owned),
            ..Default::default()
        }
    }

    fn pool() -> prost_reflect::DescriptorPool {
        use prost_types::{DescriptorProto, FileDescriptorProto};
        let f = field_proto;
        let file = FileDescriptorProto {
            name: Some("t.proto".into()),
            package: Some("t".into()),
            syntax: Some("proto3".into()),
            message_type: vec![
                DescriptorProto {
                    name: Some("Req".into()),
                    field: vec![
                        f("user_name", 1, Type::String, Label::Optional, None),
                        f("count", 2, Type::Int32, Label::Optional, None),
                        f("tags", 3, Type::String, Label::Repeated, None),
                        f("inner", 4, Type::Message, Label::Optional, Some(".t.Inner")),
                        f("big", 5, Type::Int64, Label::Optional, None),
                        f("ok", 6, Type::Bool, Label::Optional, None),
                    ],
                    ..Default::default()
                },
                DescriptorProto {
                    name: Some("Inner".into()),
                    field: vec![f("age", 1, Type::Uint32, Label::Optional, None)],
                    ..Default::default()
                },
                DescriptorProto {
                    name: Some("Nothing".into()),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let mut pool = prost_reflect::DescriptorPool::new();
        pool.add_file_descriptor_proto(file).expect("a valid file");
        pool
    }

    #[test]
    fn body_query_and_path_make_one_message() {
        let pool = pool();
        let req = pool.get_message_by_name("t.Req").unwrap();
        let mut object = body_object(br#"{"userName": "ann"}"#).unwrap();
        set_text(&mut object, &req, "count", "3").unwrap();
        set_text(&mut object, &req, "tags", "a").unwrap();
        set_text(&mut object, &req, "tags", "b").unwrap();
        set_text(&mut object, &req, "inner.age", "41").unwrap();
        set_text(&mut object, &req, "big", "9007199254740993").unwrap();
        set_text(&mut object, &req, "ok", "true").unwrap();
        let bytes = encode(&req, object).unwrap();
        let json: Value =
            serde_json::from_slice(&reply_json(&req, &bytes, "", false).unwrap()).unwrap();
        assert_eq!(json["userName"], "ann");
        assert_eq!(json["count"], 3);
        assert_eq!(json["tags"], serde_json::json!(["a", "b"]));
        assert_eq!(json["inner"]["age"], 41);
        assert_eq!(json["big"], "9007199254740993");
        assert_eq!(json["ok"], true);
    }

    #[test]
    fn wrong_input_names_the_field() {
        let pool = pool();
        let req = pool.get_message_by_name("t.Req").unwrap();
        let err = encode(&req, body_object(br#"{"count": "many"}"#).unwrap()).unwrap_err();
        assert_eq!(err.code, 400);
        assert!(err.detail.contains("`count`"), "{}", err.detail);
        let err = encode(&req, body_object(br#"{"inner": {"age": -1}}"#).unwrap()).unwrap_err();
        assert!(err.detail.contains("`inner.age`"), "{}", err.detail);
        let err = encode(&req, body_object(br#"{"nmae": "x"}"#).unwrap()).unwrap_err();
        assert!(err.detail.contains("nmae"), "{}", err.detail);
        let err = set_text(&mut Map::new(), &req, "count", "x").unwrap_err();
        assert!(
            err.detail.contains("`count`: `x` is not an int32"),
            "{}",
            err.detail
        );
        let err = set_text(&mut Map::new(), &req, "inner.height", "1").unwrap_err();
        assert!(
            err.detail.contains("has no field `height`"),
            "{}",
            err.detail
        );
        for body in [&b"[1]"[..], b"\"x\"", b"{", b"{\"a\":1} junk"] {
            assert_eq!(body_object(body).unwrap_err().code, 400);
        }
        assert!(body_object(b"  ").unwrap().is_empty());
    }

    #[test]
    fn a_whole_body_is_parsed_at_once_and_bad_ones_are_named() {
        let pool = pool();
        let req = pool.get_message_by_name("t.Req").unwrap();
        let fast = encode_body(&req, br#"{"userName": "a", "inner": {"age": 2}}"#, false).unwrap();
        let mut object = Map::new();
        set_text(&mut object, &req, "user_name", "a").unwrap();
        set_text(&mut object, &req, "inner.age", "2").unwrap();
        assert_eq!(fast, encode(&req, object).unwrap());
        assert!(encode_body(&req, b" ", false).unwrap().is_empty());
        let err = encode_body(&req, br#"{"inner": {"age": "x"}}"#, false).unwrap_err();
        assert!(err.detail.contains("`inner.age`"), "{}", err.detail);
        assert!(
            encode_body(&req, b"[1]", false)
                .unwrap_err()
                .detail
                .contains("JSON object")
        );
    }

    #[test]
    fn a_message_without_fields_is_an_empty_reply() {
        let pool = pool();
        assert!(is_empty(&pool.get_message_by_name("t.Nothing").unwrap()));
        assert!(!is_empty(&pool.get_message_by_name("t.Req").unwrap()));
    }
}
