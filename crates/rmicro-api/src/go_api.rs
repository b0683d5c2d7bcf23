//! The `api` handler: the whole HTTP request as go-micro's `go.api.Request`, the
//! reply `go.api.Response` as the HTTP response (same field numbers as go-micro's
//! `api.proto`, which rmicro-build carries as `go/api/api.proto`).

use bytes::Bytes;
use std::collections::HashMap;

/// `go.api.Pair`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Pair {
    #[prost(string, tag = "1")]
    pub(crate) key: String,
    #[prost(string, repeated, tag = "2")]
    pub(crate) values: Vec<String>,
}

/// `go.api.Request`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Request {
    #[prost(string, tag = "1")]
    pub(crate) method: String,
    #[prost(string, tag = "2")]
    pub(crate) path: String,
    #[prost(map = "string, message", tag = "3")]
    pub(crate) header: HashMap<String, Pair>,
    #[prost(map = "string, message", tag = "4")]
    pub(crate) get: HashMap<String, Pair>,
    #[prost(map = "string, message", tag = "5")]
    pub(crate) post: HashMap<String, Pair>,
    #[prost(string, tag = "6")]
    pub(crate) body: String,
    #[prost(string, tag = "7")]
    pub(crate) url: String,
}

/// `go.api.Response`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Response {
    #[prost(int32, tag = "1")]
    pub(crate) status_code: i32,
    #[prost(map = "string, message", tag = "2")]
    pub(crate) header: HashMap<String, Pair>,
    #[prost(string, tag = "3")]
    pub(crate) body: String,
}

fn add(map: &mut HashMap<String, Pair>, key: &str, value: String) {
    map.entry(key.to_owned())
        .or_insert_with(|| Pair {
            key: key.to_owned(),
            values: Vec::new(),
        })
        .values
        .push(value);
}

/// The `go.api.Request` of an HTTP request; header names as go-micro sends
/// them (canonical `Content-Type` form).
pub(crate) fn request(parts: &http::request::Parts, body: &[u8]) -> Request {
    let mut request = Request {
        method: parts.method.as_str().to_owned(),
        path: parts.uri.path().to_owned(),
        url: parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_owned(), |p| p.as_str().to_owned()),
        ..Request::default()
    };
    for (name, value) in &parts.headers {
        if let Ok(value) = value.to_str() {
            add(
                &mut request.header,
                &canonical(name.as_str()),
                value.to_owned(),
            );
        }
    }
    for (name, value) in crate::form_urlencoded(parts.uri.query().unwrap_or_default()) {
        add(&mut request.get, &name, value);
    }
    let form = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"));
    if form {
        for (name, value) in crate::form_urlencoded(&String::from_utf8_lossy(body)) {
            add(&mut request.post, &name, value);
        }
    } else {
        request.body = String::from_utf8_lossy(body).into_owned();
    }
    request
}

/// `content-type` → `Content-Type`, as Go's `net/http` names headers.
fn canonical(name: &str) -> String {
    name.split('-')
        .map(|word| {
            let mut chars = word.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// The HTTP response a `go.api.Response` describes (status 0 is 200, as go-micro
/// answers).
pub(crate) fn response(reply: Response) -> http::Response<rmicro::transport::Body> {
    let status = u16::try_from(reply.status_code)
        .ok()
        .filter(|s| *s != 0)
        .and_then(|s| http::StatusCode::from_u16(s).ok())
        .unwrap_or(http::StatusCode::OK);
    let mut response = http::Response::new(rmicro::transport::Body::from(Bytes::from(reply.body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    for pair in reply.header.into_values() {
        let Ok(name) = http::HeaderName::from_bytes(pair.key.as_bytes()) else {
            continue;
        };
        for value in pair.values {
            if let Ok(value) = http::HeaderValue::from_str(&value) {
                headers.append(name.clone(), value);
            }
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    #[test]
    fn the_request_carries_everything_go_micro_sends() {
        let (parts, ()) = http::Request::post("/foo/bar?a=1&a=2&b=x")
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-user-id", "7")
            .body(())
            .expect("a request")
            .into_parts();
        let request = request(&parts, b"name=ann&tag=a&tag=b");
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/foo/bar");
        assert_eq!(request.url, "/foo/bar?a=1&a=2&b=x");
        assert_eq!(request.get["a"].values, ["1", "2"]);
        assert_eq!(request.post["tag"].values, ["a", "b"]);
        assert_eq!(request.header["X-User-Id"].values, ["7"]);
        assert!(request.body.is_empty());
        // The wire format: field 1 is the method, as in go-micro's api.proto.
        let bytes = request.encode_to_vec();
        assert_eq!(&bytes[..6], b"\x0a\x04POST");
        let (parts, ()) = http::Request::put("/x")
            .body(())
            .expect("a request")
            .into_parts();
        assert_eq!(super::request(&parts, b"{\"j\":1}").body, "{\"j\":1}");
    }

    #[test]
    fn the_response_sets_status_headers_and_body() {
        let mut header = HashMap::new();
        add(&mut header, "Set-Cookie", "a=1".into());
        add(&mut header, "Set-Cookie", "b=2".into());
        let r = response(Response {
            status_code: 201,
            header,
            body: "made".into(),
        });
        assert_eq!(r.status(), 201);
        assert_eq!(r.headers().get_all("set-cookie").iter().count(), 2);
        assert_eq!(response(Response::default()).status(), 200);
        assert_eq!(
            response(Response {
                status_code: 99,
                ..Response::default()
            })
            .status(),
            200
        );
    }
}
