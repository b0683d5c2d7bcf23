//! Streaming endpoints over WebSocket: a client-streaming or bidirectional method
//! (or any other) is called by upgrading a `GET` of its route to a WebSocket, as
//! grpc-gateway's websocket proxy does.
//!
//! - Each text (or binary) message the client sends is one request, as proto3
//!   JSON. A method that takes one request (unary, server streaming) takes the
//!   first message; a second is refused.
//! - An empty message or the text `EOF` ends the requests (the call's half-close;
//!   WebSocket has none of its own); the replies keep coming.
//! - Each reply is one text message, proto3 JSON.
//! - The call's end is a close frame: `1000` with reason `OK` when it succeeded;
//!   otherwise first a text message `{"error": {"id", "code", "detail", "status"}}`
//!   (go-micro's error, the HTTP status of its gRPC code), then the close frame,
//!   `1008` (policy violation) for the client's mistakes (4xx) and `1011` (server
//!   error) for the rest, its reason the detail cut to what a close frame holds.
//! - A client that closes first (or goes away) cancels the call.
//!
//! The call's deadline is the request's `Timeout` / `Grpc-Timeout` header if it
//! has one, else [`STREAM_TIMEOUT`]: a stream lives longer than the gateway's
//! `--timeout` for one reply.

use crate::table::Method;
use crate::{Error, ID, error_json};
use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use rmicro::{CallOptions, Client};
use std::sync::Arc;
use std::time::Duration;
use tokio_websockets::{CloseCode, Message};

/// How long a WebSocket stream may run when the request does not say.
pub const STREAM_TIMEOUT: Duration = Duration::from_secs(3600);

/// RFC 6455's GUID, appended to the client's key for the accept value.
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Whether `headers` ask to upgrade the connection to a WebSocket.
pub(crate) fn is_upgrade(headers: &HeaderMap) -> bool {
    let has = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    has(header::UPGRADE, "websocket") && has(header::CONNECTION, "upgrade")
}

/// The `101 Switching Protocols` answer to a valid upgrade request, or the
/// error that says what is wrong with it.
pub(crate) fn accept(
    headers: &HeaderMap,
) -> Result<http::Response<rmicro::transport::Body>, Error> {
    use base64::Engine as _;
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        return Err(Error::bad_request(
            ID,
            "a WebSocket upgrade needs Sec-WebSocket-Version: 13".to_owned(),
        ));
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .filter(|k| !k.is_empty())
        .ok_or_else(|| {
            Error::bad_request(
                ID,
                "a WebSocket upgrade needs a Sec-WebSocket-Key".to_owned(),
            )
        })?;
    let mut sha1 = sha1_smol::Sha1::new();
    sha1.update(key.as_bytes());
    sha1.update(GUID.as_bytes());
    let accept = base64::engine::general_purpose::STANDARD.encode(sha1.digest().bytes());
    let mut response = http::Response::new(rmicro::transport::Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    if let Ok(value) = HeaderValue::from_str(&accept) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, value);
    }
    Ok(response)
}

/// How the client's side of a bridged stream ended, when it ended the call.
enum ClientEnd {
    /// It closed or went away: the call is cancelled.
    Gone,
    /// It sent something the call cannot take.
    Bad(Error),
}

/// Bridges the upgraded connection and the call of `method` on `service`,
/// until one of them ends.
pub(crate) async fn bridge(
    upgrade: hyper::upgrade::OnUpgrade,
    client: Client,
    service: String,
    method: Arc<Method>,
    options: CallOptions,
    max_message: usize,
) {
    let Ok(upgraded) = upgrade.await else {
        // The client left before the upgrade: nothing to say to anyone.
        return;
    };
    let plain = method.plain;
    let limits = tokio_websockets::Limits::default().max_payload_len(Some(max_message));
    let ws = tokio_websockets::ServerBuilder::new()
        .limits(limits)
        .serve(hyper_util::rt::TokioIo::new(upgraded));
    let (mut sink, mut source) = ws.split();
    let (requests_tx, requests_rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    let (ended_tx, mut ended_rx) = tokio::sync::oneshot::channel::<ClientEnd>();
    let input = method.types.as_ref().map(|(input, _)| input.clone());
    let one_request = !method.client_streaming;
    let endpoint = method.endpoint.clone();
    // The client's messages become requests until it ends them, closes, or
    // sends one the call cannot take.
    let reader = tokio::spawn(async move {
        let mut requests = Some(requests_tx);
        let end = loop {
            let message = match source.next().await {
                Some(Ok(message)) => message,
                // Closed or broken (a frame over the limit is an error here).
                Some(Err(e)) => {
                    break ClientEnd::Bad(Error::bad_request(
                        ID,
                        format!("the WebSocket failed: {e}"),
                    ));
                }
                None => break ClientEnd::Gone,
            };
            if message.is_close() {
                break ClientEnd::Gone;
            }
            if !(message.is_text() || message.is_binary()) {
                continue; // ping and pong are answered by the library
            }
            let payload: &[u8] = message.as_payload();
            if payload.is_empty() || payload == b"EOF" {
                requests = None; // the half-close
                continue;
            }
            let Some(sender) = &requests else {
                break ClientEnd::Bad(Error::bad_request(
                    ID,
                    if one_request {
                        format!("`{endpoint}` takes one request; send EOF or wait for its replies")
                    } else {
                        "a request came after EOF".to_owned()
                    },
                ));
            };
            let encoded = match &input {
                Some(input) => crate::transcode::encode_body(input, payload, plain.request),
                None => Err(no_descriptors()),
            };
            match encoded {
                Ok(request) => {
                    if sender.send(request).await.is_err() {
                        break ClientEnd::Gone; // the call is over
                    }
                    if one_request {
                        requests = None;
                    }
                }
                Err(e) => break ClientEnd::Bad(e),
            }
        };
        let _ = ended_tx.send(end);
    });
    let requests = futures_util::stream::unfold(requests_rx, |mut rx| async move {
        rx.recv().await.map(|r| (r, rx))
    });
    let output = method.types.as_ref().map(|(_, output)| output.clone());
    let replies = async {
        let Some(output) = output else {
            return Err(no_descriptors());
        };
        let mut replies = client
            .streaming_bytes(&service, &method.grpc_path, &method.endpoint, requests)?
            .options(options)
            .await?;
        while let Some(reply) = replies.message().await? {
            let json = crate::transcode::reply_json(&output, &reply.0, "", plain.reply)?;
            let text = String::from_utf8(json)
                .map_err(|e| Error::internal(ID, format!("a reply's JSON is not UTF-8: {e}")))?;
            sink.send(Message::text(text))
                .await
                .map_err(|e| Error::new(ID, 499, format!("the WebSocket client went away: {e}")))?;
        }
        Ok(())
    };
    let outcome = tokio::select! {
        outcome = replies => outcome,
        end = &mut ended_rx => match end {
            Ok(ClientEnd::Bad(e)) => Err(e),
            // Gone: the call is dropped here, which cancels it.
            Ok(ClientEnd::Gone) | Err(_) => {
                reader.abort();
                return;
            }
        },
    };
    reader.abort();
    let close = match outcome {
        Ok(()) => Message::close(Some(CloseCode::NORMAL_CLOSURE), "OK"),
        Err(e) => {
            let json = serde_json::json!({ "error": error_json(&e) }).to_string();
            let _ = sink.send(Message::text(json)).await;
            let code = if (400..500).contains(&crate::http_status(&e).as_u16()) {
                CloseCode::POLICY_VIOLATION
            } else {
                CloseCode::INTERNAL_SERVER_ERROR
            };
            Message::close(Some(code), close_reason(&e.detail))
        }
    };
    let _ = sink.send(close).await;
    let _ = sink.close().await;
}

/// `detail` cut (on a character boundary) to the 123 bytes a close frame's
/// reason may hold.
fn close_reason(detail: &str) -> &str {
    let mut end = detail.len().min(123);
    while !detail.is_char_boundary(end) {
        end -= 1;
    }
    &detail[..end]
}

/// Why a service's streams cannot be bridged: without descriptors there is no
/// JSON mapping.
fn no_descriptors() -> Error {
    Error::bad_request(
        ID,
        "the service gave no descriptors (server reflection): its streams cannot be transcoded"
            .to_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_accept_value_is_rfc_6455s() {
        // The example of RFC 6455 §1.3.
        let mut headers = HeaderMap::new();
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        headers.insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        headers.insert(
            header::SEC_WEBSOCKET_KEY,
            HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
        );
        assert!(is_upgrade(&headers));
        let response = accept(&headers).expect("a valid upgrade");
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(
            response.headers()[header::SEC_WEBSOCKET_ACCEPT],
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        headers.remove(header::SEC_WEBSOCKET_KEY);
        let err = accept(&headers).expect_err("no key");
        assert!(err.detail.contains("Sec-WebSocket-Key"), "{err}");
    }

    #[test]
    fn close_reasons_fit_a_frame_and_keep_whole_characters() {
        let long = "é".repeat(100);
        let reason = close_reason(&long);
        assert!(reason.len() <= 123);
        assert_eq!(reason.len(), 122);
        assert_eq!(close_reason("short"), "short");
    }
}
