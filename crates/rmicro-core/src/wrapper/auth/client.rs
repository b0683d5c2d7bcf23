//! The client side: a bearer token on every attempt.

use std::sync::Arc;
use std::task::{Context, Poll};
use tower::Service;

type Source = Arc<dyn Fn() -> Option<String> + Send + Sync>;

/// Attaches `authorization: Bearer <token>` to each call made; a `wrap_client`
/// (or `wrap_call`) layer. The token comes from a function asked per call, so a
/// provider that refreshes it in the background serves every call the newest.
#[derive(Clone)]
pub struct BearerToken {
    source: Source,
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("BearerToken").finish_non_exhaustive()
    }
}

impl BearerToken {
    /// Always `token`.
    pub fn fixed(token: impl Into<String>) -> Self {
        let token = token.into();
        Self::from_fn(move || Some(token.clone()))
    }

    /// Whatever `source` answers at each call; `None` sends none.
    pub fn from_fn(source: impl Fn() -> Option<String> + Send + Sync + 'static) -> Self {
        BearerToken {
            source: Arc::new(source),
        }
    }
}

impl<S> tower::Layer<S> for BearerToken {
    type Service = BearerTokenService<S>;

    fn layer(&self, inner: S) -> BearerTokenService<S> {
        BearerTokenService {
            inner,
            source: self.source.clone(),
        }
    }
}

/// The service of [`BearerToken`].
#[derive(Clone)]
pub struct BearerTokenService<S> {
    inner: S,
    source: Source,
}

impl<S> std::fmt::Debug for BearerTokenService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BearerTokenService").finish_non_exhaustive()
    }
}

impl<S, B> Service<http::Request<B>> for BearerTokenService<S>
where
    S: Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> S::Future {
        if let Some(token) = (self.source)()
            && let Ok(mut value) = http::HeaderValue::from_str(&format!("Bearer {token}"))
        {
            // Never indexed by HPACK: a credential stays out of the connection's table.
            value.set_sensitive(true);
            request
                .headers_mut()
                .insert(http::header::AUTHORIZATION, value);
        }
        self.inner.call(request)
    }
}
