//! Who may see the dashboard: anyone (the default, for a dashboard bound to
//! loopback or behind a proxy that checks), HTTP basic auth, or bearer tokens
//! verified as the services verify them (`--auth-*`, the auth wrapper's verifier).
//! When both are configured either one lets a request in.
//!
//! Token rules name two resources: `web.Page` (every page, event stream and
//! asset) and `web.Call` (the call and publish forms), so `--auth-rule 'web.Page=authenticated'
//! --auth-rule 'web.Call=operator'` lets anyone signed in look and only operators call.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use rmicro::wrapper::auth::AuthLayer;
use std::sync::Arc;

/// The resource a page or asset is, for token rules.
pub(crate) const PAGE: &str = "web.Page";
/// The resource the call form is, for token rules.
pub(crate) const CALL: &str = "web.Call";

/// Who may see the dashboard and call through it.
#[derive(Clone, Default)]
pub struct Access {
    basic: Option<Arc<(String, String)>>,
    tokens: Option<AuthLayer>,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("basic", &self.basic.as_ref().map(|b| &b.0))
            .field("tokens", &self.tokens.is_some())
            .finish()
    }
}

impl Access {
    /// Anyone may look and call.
    pub fn open() -> Access {
        Access::default()
    }

    /// Also let in requests with HTTP basic auth as `user` with `password`.
    pub fn basic(mut self, user: impl Into<String>, password: impl Into<String>) -> Access {
        self.basic = Some(Arc::new((user.into(), password.into())));
        self
    }

    /// Parses `USER:PASSWORD` (the `--basic-auth` flag) into basic auth.
    pub fn basic_from(self, pair: &str) -> Result<Access, String> {
        match pair.split_once(':') {
            Some((user, password)) if !user.is_empty() && !password.is_empty() => {
                Ok(self.basic(user, password))
            }
            _ => Err("basic auth must be USER:PASSWORD, both non-empty".to_owned()),
        }
    }

    /// Also let in requests whose bearer token `layer` accepts for the resource.
    pub fn tokens(mut self, layer: AuthLayer) -> Access {
        self.tokens = Some(layer);
        self
    }

    /// Whether anything is checked at all.
    pub fn is_open(&self) -> bool {
        self.basic.is_none() && self.tokens.is_none()
    }

    /// Whether `headers` may reach `resource`; the refusal to answer if not.
    pub(crate) fn check(&self, headers: &http::HeaderMap, resource: &str) -> Result<(), Refusal> {
        if self.is_open() {
            return Ok(());
        }
        let authorization = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if let Some(pair) = &self.basic
            && let Some(encoded) = authorization.strip_prefix("Basic ")
            && let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim())
        {
            let expected = format!("{}:{}", pair.0, pair.1);
            if constant_time_eq(&decoded, expected.as_bytes()) {
                return Ok(());
            }
        }
        let mut why = "sign in to see the dashboard".to_owned();
        if let Some(tokens) = &self.tokens
            && authorization.starts_with("Bearer ")
        {
            match tokens.verify(headers, resource) {
                Ok(_) => return Ok(()),
                Err(err) if err.code == 403 => {
                    return Err(Refusal {
                        status: http::StatusCode::FORBIDDEN,
                        detail: err.detail,
                        challenge: None,
                    });
                }
                Err(err) => why = err.detail,
            }
        }
        Err(Refusal {
            status: http::StatusCode::UNAUTHORIZED,
            detail: why,
            challenge: Some(if self.basic.is_some() {
                "Basic realm=\"rmicro\", charset=\"UTF-8\""
            } else {
                "Bearer realm=\"rmicro\""
            }),
        })
    }
}

/// Why a request may not pass: 401 with the challenge to answer, or 403.
#[derive(Debug)]
pub(crate) struct Refusal {
    status: http::StatusCode,
    detail: String,
    challenge: Option<&'static str>,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut response = (self.status, self.detail).into_response();
        if let Some(challenge) = self.challenge {
            response.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static(challenge),
            );
        }
        response
    }
}

/// Compares without an early exit, so the time taken tells nothing about the secret.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The middleware: every route but the call form is a `web.Page`.
pub(crate) async fn guard(State(access): State<Access>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let resource = if path == crate::server::CALL_PATH || path == crate::server::PUBLISH_PATH {
        CALL
    } else {
        PAGE
    };
    match access.check(request.headers(), resource) {
        Ok(()) => next.run(request).await,
        Err(refused) => refused.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user_password: &str) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        let value = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(user_password)
        );
        headers.insert(http::header::AUTHORIZATION, value.parse().unwrap());
        headers
    }

    #[test]
    fn basic_auth_lets_in_only_the_right_pair() {
        let access = Access::open().basic_from("ops:s3cret").unwrap();
        assert!(access.check(&basic("ops:s3cret"), PAGE).is_ok());
        let refused = access
            .check(&basic("ops:wrong"), PAGE)
            .unwrap_err()
            .into_response();
        assert_eq!(refused.status(), http::StatusCode::UNAUTHORIZED);
        assert!(
            refused.headers()[http::header::WWW_AUTHENTICATE]
                .to_str()
                .unwrap()
                .starts_with("Basic")
        );
        assert!(access.check(&http::HeaderMap::new(), PAGE).is_err());
        assert!(Access::open().check(&http::HeaderMap::new(), CALL).is_ok());
    }

    #[test]
    fn a_malformed_pair_is_refused_with_a_sentence() {
        for bad in ["ops", ":pw", "ops:", ""] {
            let err = Access::open().basic_from(bad).unwrap_err();
            assert!(err.contains("USER:PASSWORD"), "{err}");
        }
    }
}
