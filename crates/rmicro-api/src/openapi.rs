//! `GET /openapi.json`: an OpenAPI 3.0 document of every route the gateway
//! serves, its schemas made from the messages' descriptors by the proto3 JSON
//! mapping (64-bit integers as strings, enums by name, well-known types as their
//! JSON forms).

use crate::table::{Method, RouteKind, Table};
use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{Map, Value, json};

/// The document for `table`'s routes.
pub(crate) fn document(table: &Table, namespace: &str, handler: &'static str) -> Value {
    let mut paths = Map::new();
    let mut schemas = Map::new();
    schemas.insert("rmicro.Error".into(), error_schema());
    let routes = table.routes(namespace, handler);
    for route in &routes {
        let Some(method) = table
            .services
            .get(&route.service)
            .and_then(|e| e.methods.iter().find(|m| m.endpoint == route.endpoint))
        else {
            continue;
        };
        let Some((input, output)) = &method.types else {
            continue;
        };
        if method.client_streaming {
            continue;
        }
        let (path, parameters) = openapi_path(&route.path, route.rule, input);
        let verb = match route.method.as_str() {
            "*" => "post".to_owned(),
            other => other.to_ascii_lowercase(),
        };
        let binding = method
            .bindings
            .iter()
            .find(|b| b.verb == route.method && b.template.text == route.path);
        let body_rule = match (route.rule, binding) {
            (RouteKind::HttpAnnotation, Some(b)) => b.body.clone(),
            _ => "*".to_owned(),
        };
        let mut operation = Map::new();
        operation.insert(
            "operationId".into(),
            Value::String(operation_id(
                &route.service,
                method,
                route.rule,
                &verb,
                &path,
            )),
        );
        operation.insert(
            "summary".into(),
            Value::String(format!(
                "{} {} ({})",
                route.service, route.endpoint, route.grpc_path
            )),
        );
        operation.insert("tags".into(), json!([route.service]));
        let mut parameters = parameters;
        if body_rule != "*" {
            // Fields not in the path or the body are query parameters.
            for field in input.fields() {
                let name = field.json_name().to_owned();
                let in_path = parameters
                    .iter()
                    .any(|p| p["name"] == name || p["name"] == field.name());
                if in_path || field.name() == body_rule || !is_scalar(&field) {
                    continue;
                }
                parameters.push(json!({
                    "name": name,
                    "in": "query",
                    "required": false,
                    "schema": field_schema(&field, &mut schemas),
                }));
            }
        }
        if !parameters.is_empty() {
            operation.insert("parameters".into(), Value::Array(parameters));
        }
        let body_schema = match body_rule.as_str() {
            "" => None,
            "*" => Some(message_ref(input, &mut schemas)),
            field => input
                .get_field_by_name(field)
                .map(|f| field_schema(&f, &mut schemas)),
        };
        if let Some(schema) = body_schema {
            operation.insert(
                "requestBody".into(),
                json!({"required": false, "content": {"application/json": {"schema": schema}}}),
            );
        }
        let reply = if method.server_streaming {
            json!({"description": "one JSON reply per line", "content": {"application/x-ndjson": {"schema": message_ref(output, &mut schemas)}}})
        } else if crate::transcode::is_empty(output) {
            json!({"description": "no content"})
        } else {
            json!({"description": "the reply", "content": {"application/json": {"schema": message_ref(output, &mut schemas)}}})
        };
        let status = if !method.server_streaming && crate::transcode::is_empty(output) {
            "204"
        } else {
            "200"
        };
        operation.insert(
            "responses".into(),
            json!({
                status: reply,
                "default": {"description": "an error, as go-micro writes it", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/rmicro.Error"}}}},
            }),
        );
        let item = paths
            .entry(path)
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(item) = item {
            item.entry(verb).or_insert(Value::Object(operation));
        }
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "rmicro api",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Every route of the services in the registry, as the gateway serves them.",
        },
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

/// An OpenAPI path (`/v1/{name}`) and its path parameters, from a route's path.
fn openapi_path(path: &str, rule: RouteKind, input: &MessageDescriptor) -> (String, Vec<Value>) {
    if rule != RouteKind::HttpAnnotation {
        return (path.to_owned(), Vec::new());
    }
    let mut out = String::with_capacity(path.len());
    let mut parameters = Vec::new();
    let mut rest = path;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let Some(len) = rest[start..].find('}') else {
            break;
        };
        let inner = &rest[start + 1..start + len];
        let field = inner.split_once('=').map_or(inner, |(f, _)| f);
        out.push('{');
        out.push_str(field);
        out.push('}');
        let schema = field_by_path(input, field)
            .map(|f| scalar_schema(&f))
            .unwrap_or_else(|| json!({"type": "string"}));
        parameters.push(json!({"name": field, "in": "path", "required": true, "schema": schema}));
        rest = &rest[start + len + 1..];
    }
    out.push_str(rest);
    (out, parameters)
}

fn field_by_path(message: &MessageDescriptor, path: &str) -> Option<FieldDescriptor> {
    let mut message = message.clone();
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        let field = message.get_field_by_name(part)?;
        if parts.peek().is_none() {
            return Some(field);
        }
        let Kind::Message(inner) = field.kind() else {
            return None;
        };
        message = inner;
    }
    None
}

/// A unique, stable operation id.
fn operation_id(service: &str, method: &Method, rule: RouteKind, verb: &str, path: &str) -> String {
    let base = format!("{service}.{}", method.endpoint);
    match rule {
        RouteKind::GrpcPath => base,
        RouteKind::MicroPath => format!("{base}.micro"),
        RouteKind::HttpAnnotation => {
            let tail: String = path
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect();
            format!("{base}.{verb}{tail}")
        }
    }
}

fn is_scalar(field: &FieldDescriptor) -> bool {
    !matches!(field.kind(), Kind::Message(_)) || wkt_schema(&field_message(field)).is_some()
}

fn field_message(field: &FieldDescriptor) -> String {
    match field.kind() {
        Kind::Message(m) => m.full_name().to_owned(),
        _ => String::new(),
    }
}

/// The JSON form of a well-known type, if `name` is one.
fn wkt_schema(name: &str) -> Option<Value> {
    Some(match name {
        "google.protobuf.Timestamp" => json!({"type": "string", "format": "date-time"}),
        "google.protobuf.Duration" => json!({"type": "string", "example": "1.5s"}),
        "google.protobuf.FieldMask" => json!({"type": "string"}),
        "google.protobuf.Struct" => json!({"type": "object", "additionalProperties": true}),
        "google.protobuf.Value" | "google.protobuf.Any" => json!({}),
        "google.protobuf.ListValue" => json!({"type": "array", "items": {}}),
        "google.protobuf.Empty" => json!({"type": "object"}),
        "google.protobuf.StringValue" => json!({"type": "string"}),
        "google.protobuf.BytesValue" => json!({"type": "string", "format": "byte"}),
        "google.protobuf.BoolValue" => json!({"type": "boolean"}),
        "google.protobuf.Int32Value" | "google.protobuf.UInt32Value" => {
            json!({"type": "integer", "format": "int32"})
        }
        "google.protobuf.Int64Value" | "google.protobuf.UInt64Value" => {
            json!({"type": "string", "format": "int64"})
        }
        "google.protobuf.FloatValue" | "google.protobuf.DoubleValue" => json!({"type": "number"}),
        _ => return None,
    })
}

/// The schema of one value of `field` (not the list or map around it).
fn scalar_schema(field: &FieldDescriptor) -> Value {
    match field.kind() {
        Kind::Double | Kind::Float => json!({"type": "number"}),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            json!({"type": "integer", "format": "int32"})
        }
        Kind::Uint32 | Kind::Fixed32 => json!({"type": "integer", "format": "int32", "minimum": 0}),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 | Kind::Uint64 | Kind::Fixed64 => {
            json!({"type": "string", "format": "int64"})
        }
        Kind::Bool => json!({"type": "boolean"}),
        Kind::String => json!({"type": "string"}),
        Kind::Bytes => json!({"type": "string", "format": "byte"}),
        Kind::Enum(e) => {
            json!({"type": "string", "enum": e.values().map(|v| v.name().to_owned()).collect::<Vec<_>>()})
        }
        Kind::Message(m) => wkt_schema(m.full_name()).unwrap_or_else(|| json!({"type": "object"})),
    }
}

/// The schema of `field`, lists and maps included, adding message schemas.
fn field_schema(field: &FieldDescriptor, schemas: &mut Map<String, Value>) -> Value {
    if field.is_map() {
        let Kind::Message(entry) = field.kind() else {
            return json!({"type": "object"});
        };
        let value = entry.map_entry_value_field();
        return json!({"type": "object", "additionalProperties": field_schema(&value, schemas)});
    }
    let one = match field.kind() {
        Kind::Message(m) if wkt_schema(m.full_name()).is_none() => message_ref(&m, schemas),
        _ => scalar_schema(field),
    };
    if field.is_list() {
        json!({"type": "array", "items": one})
    } else {
        one
    }
}

/// A `$ref` to `message`'s schema, adding it (and what it uses) when new.
fn message_ref(message: &MessageDescriptor, schemas: &mut Map<String, Value>) -> Value {
    let name = message.full_name().to_owned();
    if let Some(wkt) = wkt_schema(&name) {
        return wkt;
    }
    if !schemas.contains_key(&name) {
        // A placeholder first: a message that contains itself refers back.
        schemas.insert(name.clone(), json!({"type": "object"}));
        let mut properties = Map::new();
        for field in message.fields() {
            properties.insert(field.json_name().to_owned(), field_schema(&field, schemas));
        }
        schemas.insert(
            name.clone(),
            json!({"type": "object", "properties": properties}),
        );
    }
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn error_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "code": {"type": "integer", "format": "int32"},
            "detail": {"type": "string"},
            "status": {"type": "string"},
        },
    })
}
