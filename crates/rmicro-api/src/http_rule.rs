//! `google.api.http` annotations: the `HttpRule` of a method's options and the
//! path templates in it (`/v1/{name=shelves/*}/books/{book_id}:publish`), matched
//! as grpc-gateway and kratos match them.

use prost::Message as _;
use prost_reflect::MethodDescriptor;

/// The field number of `google.api.http` in `google.protobuf.MethodOptions`.
const HTTP_OPTION: u64 = 72295728;

/// `google.api.HttpRule`, the fields a gateway reads (same numbers as published).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct HttpRule {
    #[prost(string, optional, tag = "2")]
    get: Option<String>,
    #[prost(string, optional, tag = "3")]
    put: Option<String>,
    #[prost(string, optional, tag = "4")]
    post: Option<String>,
    #[prost(string, optional, tag = "5")]
    delete: Option<String>,
    #[prost(string, optional, tag = "6")]
    patch: Option<String>,
    #[prost(string, tag = "7")]
    body: String,
    #[prost(message, optional, tag = "8")]
    custom: Option<CustomHttpPattern>,
    #[prost(message, repeated, tag = "11")]
    additional_bindings: Vec<HttpRule>,
    #[prost(string, tag = "12")]
    response_body: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct CustomHttpPattern {
    #[prost(string, tag = "1")]
    kind: String,
    #[prost(string, tag = "2")]
    path: String,
}

/// One HTTP binding of a method: verb, template, and where body and reply go.
#[derive(Debug, Clone)]
pub(crate) struct Binding {
    /// `GET`, `POST`, … (upper case).
    pub(crate) verb: String,
    pub(crate) template: Template,
    /// `""` (no body), `"*"` (the whole request) or a top-level field's name.
    pub(crate) body: String,
    /// The reply field sent back, or `""` for the whole reply.
    pub(crate) response_body: String,
}

/// The HTTP bindings a method declares with `option (google.api.http)`, its
/// additional bindings included; a template that does not parse is skipped with
/// a warning naming it.
pub(crate) fn bindings(method: &MethodDescriptor) -> Vec<Binding> {
    let options = method.options().encode_to_vec();
    let Some(rule) = field_bytes(&options, HTTP_OPTION).and_then(|b| HttpRule::decode(b).ok())
    else {
        return Vec::new();
    };
    // The primary binding, then its additional ones, in declaration order.
    let mut rules = vec![rule];
    let mut next = 0;
    while next < rules.len() {
        let more = std::mem::take(&mut rules[next].additional_bindings);
        rules.extend(more);
        next += 1;
    }
    let mut out = Vec::new();
    for rule in rules {
        let (verb, path) = match (
            &rule.get,
            &rule.put,
            &rule.post,
            &rule.delete,
            &rule.patch,
            &rule.custom,
        ) {
            (Some(p), ..) => ("GET".to_owned(), p.clone()),
            (_, Some(p), ..) => ("PUT".to_owned(), p.clone()),
            (_, _, Some(p), ..) => ("POST".to_owned(), p.clone()),
            (_, _, _, Some(p), ..) => ("DELETE".to_owned(), p.clone()),
            (_, _, _, _, Some(p), _) => ("PATCH".to_owned(), p.clone()),
            (.., Some(c)) => (c.kind.to_ascii_uppercase(), c.path.clone()),
            _ => continue,
        };
        match Template::parse(&path) {
            Ok(template) => out.push(Binding {
                verb,
                template,
                body: rule.body,
                response_body: rule.response_body,
            }),
            Err(why) => tracing::warn!(
                method = method.full_name(),
                template = path,
                "skipping an HTTP binding: {why}"
            ),
        }
    }
    out
}

/// The bytes of length-delimited field `number` in an encoded message.
fn field_bytes(mut buf: &[u8], number: u64) -> Option<&[u8]> {
    while !buf.is_empty() {
        let key = prost::encoding::decode_varint(&mut buf).ok()?;
        let (field, wire) = (key >> 3, key & 7);
        match wire {
            0 => {
                prost::encoding::decode_varint(&mut buf).ok()?;
            }
            1 => buf = buf.get(8..)?,
            2 => {
                let len = usize::try_from(prost::encoding::decode_varint(&mut buf).ok()?).ok()?;
                let value = buf.get(..len)?;
                if field == number {
                    return Some(value);
                }
                buf = &buf[len..];
            }
            5 => buf = buf.get(4..)?,
            _ => return None,
        }
    }
    None
}

/// One piece of a template, flattened: what it matches, and the variable (by
/// index) it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(String),
    /// `*`: one segment.
    One,
    /// `**`: any number of segments (the rest of the path).
    Rest,
}

/// A parsed path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template {
    /// The template as written.
    pub(crate) text: String,
    pieces: Vec<(Piece, Option<usize>)>,
    /// The variables' field paths (`book.name`), by index.
    variables: Vec<String>,
    verb: Option<String>,
}

impl Template {
    /// Parses `/v1/{name=shelves/*}/books/{id}:verb`; an error says what is wrong.
    pub(crate) fn parse(text: &str) -> Result<Template, String> {
        let rest = text
            .strip_prefix('/')
            .ok_or_else(|| "a template starts with `/`".to_owned())?;
        // The verb follows the last segment's `:`, outside any `{...}`.
        let (body, verb) = match rest.rfind(':') {
            Some(i) if !rest[i..].contains('}') && !rest[i..].contains('/') => {
                (&rest[..i], Some(rest[i + 1..].to_owned()))
            }
            _ => (rest, None),
        };
        let mut pieces = Vec::new();
        let mut variables = Vec::new();
        let mut chars = body;
        while !chars.is_empty() {
            if let Some(inner) = chars.strip_prefix('{') {
                let end = inner
                    .find('}')
                    .ok_or_else(|| format!("`{{` without `}}` in `{text}`"))?;
                let (field, pattern) = match inner[..end].split_once('=') {
                    Some((field, pattern)) => (field, pattern),
                    None => (&inner[..end], "*"),
                };
                if field.is_empty()
                    || !field.split('.').all(|p| {
                        !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                    })
                {
                    return Err(format!("`{field}` is not a field path in `{text}`"));
                }
                let index = variables.len();
                variables.push(field.to_owned());
                for segment in pattern.split('/') {
                    pieces.push((literal_or_wild(segment, text)?, Some(index)));
                }
                chars = &inner[end + 1..];
            } else {
                let end = chars.find('/').unwrap_or(chars.len());
                let segment = &chars[..end];
                if segment.contains('{') || segment.contains('}') {
                    return Err(format!("a variable must be a whole segment in `{text}`"));
                }
                pieces.push((literal_or_wild(segment, text)?, None));
                chars = &chars[end..];
            }
            if let Some(next) = chars.strip_prefix('/') {
                if next.is_empty() {
                    return Err(format!("`{text}` ends with `/`"));
                }
                chars = next;
            } else if !chars.is_empty() {
                return Err(format!("a variable must be a whole segment in `{text}`"));
            }
        }
        if let Some(i) = pieces.iter().position(|(p, _)| *p == Piece::Rest)
            && i + 1 != pieces.len()
        {
            return Err(format!("`**` must be the last segment in `{text}`"));
        }
        Ok(Template {
            text: text.to_owned(),
            pieces,
            variables,
            verb,
        })
    }

    /// How many literal segments it has: more is more specific.
    pub(crate) fn literals(&self) -> usize {
        self.pieces
            .iter()
            .filter(|(p, _)| matches!(p, Piece::Literal(_)))
            .count()
    }

    /// The variables' values when `path` matches (decoded), else `None`.
    pub(crate) fn matches(&self, path: &str) -> Option<Vec<(String, String)>> {
        let rest = path.strip_prefix('/')?;
        // Most templates start with a literal: most paths are told apart there,
        // before anything is allocated.
        if let Some((Piece::Literal(first), _)) = self.pieces.first() {
            let after = rest.strip_prefix(first.as_str())?;
            if !(after.is_empty() || after.starts_with('/') || after.starts_with(':')) {
                return None;
            }
        }
        let rest = match &self.verb {
            Some(verb) => rest.strip_suffix(verb.as_str())?.strip_suffix(':')?,
            None => rest,
        };
        let segments: Vec<&str> = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split('/').collect()
        };
        let mut values: Vec<Vec<&str>> = vec![Vec::new(); self.variables.len()];
        let mut at = 0;
        for (piece, variable) in &self.pieces {
            let taken: &[&str] = match piece {
                Piece::Literal(l) => {
                    if segments.get(at) != Some(&l.as_str()) {
                        return None;
                    }
                    &segments[at..at + 1]
                }
                Piece::One => {
                    let s = segments.get(at)?;
                    if s.is_empty() {
                        return None;
                    }
                    &segments[at..at + 1]
                }
                Piece::Rest => &segments[at..],
            };
            at += taken.len();
            if let Some(v) = variable {
                values[*v].extend_from_slice(taken);
            }
        }
        if at != segments.len() {
            return None;
        }
        Some(
            self.variables
                .iter()
                .zip(values)
                .map(|(field, parts)| {
                    let joined = parts.join("/");
                    (
                        field.clone(),
                        percent_encoding::percent_decode_str(&joined)
                            .decode_utf8_lossy()
                            .into_owned(),
                    )
                })
                .collect(),
        )
    }
}

fn literal_or_wild(segment: &str, text: &str) -> Result<Piece, String> {
    Ok(match segment {
        "*" => Piece::One,
        "**" => Piece::Rest,
        "" => return Err(format!("an empty segment in `{text}`")),
        s if s.contains('*') => return Err(format!("`{s}` mixes `*` with text in `{text}`")),
        s => Piece::Literal(s.to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(template: &str, path: &str) -> Option<Vec<(String, String)>> {
        Template::parse(template).expect("parses").matches(path)
    }

    #[test]
    fn templates_match_as_grpc_gateway_does() {
        let pair = |f: &str, v: &str| (f.to_owned(), v.to_owned());
        assert_eq!(
            values("/v1/greeter/hello/{name}", "/v1/greeter/hello/ann"),
            Some(vec![pair("name", "ann")])
        );
        assert_eq!(
            values("/v1/greeter/hello/{name}", "/v1/greeter/hello/a%20b"),
            Some(vec![pair("name", "a b")])
        );
        assert_eq!(
            values("/v1/greeter/hello/{name}", "/v1/greeter/hello"),
            None
        );
        assert_eq!(
            values("/v1/greeter/hello/{name}", "/v1/greeter/hello/a/b"),
            None
        );
        assert_eq!(
            values(
                "/v1/{name=shelves/*}/books/{book.id}",
                "/v1/shelves/s1/books/7"
            ),
            Some(vec![pair("name", "shelves/s1"), pair("book.id", "7")])
        );
        assert_eq!(
            values(
                "/v1/{name=shelves/*}/books/{book.id}",
                "/v1/shelf/s1/books/7"
            ),
            None
        );
        assert_eq!(
            values("/v1/{path=files/**}", "/v1/files/a/b/c.txt"),
            Some(vec![pair("path", "files/a/b/c.txt")])
        );
        assert_eq!(
            values("/v1/{path=files/**}", "/v1/files"),
            Some(vec![pair("path", "files")])
        );
        assert_eq!(
            values("/v1/books/{id}:publish", "/v1/books/9:publish"),
            Some(vec![pair("id", "9")])
        );
        assert_eq!(values("/v1/books/{id}:publish", "/v1/books/9"), None);
        assert_eq!(values("/v1/*/items", "/v1/x/items"), Some(vec![]));
        assert_eq!(values("/v1/*/items", "/v1//items"), None);
    }

    #[test]
    fn bad_templates_say_what_is_wrong() {
        for (template, why) in [
            ("v1/x", "starts with `/`"),
            ("/v1/{name", "without"),
            ("/v1/{}", "not a field path"),
            ("/v1/{a-b}", "not a field path"),
            ("/v1/x{name}", "whole segment"),
            ("/v1/**/x", "last segment"),
            ("/v1//x", "empty segment"),
            ("/v1/a*", "mixes"),
            ("/v1/x/", "ends with"),
        ] {
            let err = Template::parse(template).unwrap_err();
            assert!(err.contains(why), "{template}: {err}");
        }
    }

    #[test]
    fn the_option_is_found_among_other_fields() {
        let rule = HttpRule {
            get: Some("/v1/x/{id}".into()),
            additional_bindings: vec![HttpRule {
                post: Some("/v1/x".into()),
                body: "*".into(),
                ..HttpRule::default()
            }],
            ..HttpRule::default()
        };
        let mut options = Vec::new();
        // Some other option before it (deprecated = true, field 33, varint).
        prost::encoding::encode_key(33, prost::encoding::WireType::Varint, &mut options);
        prost::encoding::encode_varint(1, &mut options);
        prost::encoding::bytes::encode(HTTP_OPTION as u32, &rule.encode_to_vec(), &mut options);
        let found = field_bytes(&options, HTTP_OPTION).expect("found");
        assert_eq!(HttpRule::decode(found).expect("decodes"), rule);
        assert_eq!(field_bytes(&options[..3], HTTP_OPTION), None);
    }
}
