//! Service authentication and authorization (go-micro's `auth`, in spirit): a
//! server wrapper that verifies the bearer token of each call and checks it
//! against rules, and a client wrapper that attaches one.
//!
//! - **Tokens**: JWTs in the `authorization: Bearer …` metadata, signed with
//!   HS256, RS256, ES256 or EdDSA; `exp` and `nbf` checked with a bounded clock
//!   skew (30 s by default), `iss` and `aud` when configured. A token signed with
//!   `alg: none`, another algorithm than its key's, or a key that is not trusted
//!   is refused. Keys can be replaced while serving ([`AuthLayer::rotate`]), or
//!   come from a JWKS file or URL read again in the background
//!   ([`AuthLayer::jwks`], [`AuthLayer::refresh`], [`Jwks`]).
//! - **Rules** map resources — `service.Endpoint` (`user.User.Login`), with `*`
//!   matching any run of characters — to what they need: [`Access::Public`] (no
//!   token), [`Access::Authenticated`] (any valid token) or
//!   [`Access::Scopes`] (a valid token granting one of the scopes, read from the
//!   OAuth 2 `scope` claim, space-separated, or a `scopes`/`roles` array). The
//!   first rule that matches decides; when there are rules and none matches, the
//!   call is denied. With no rules every call needs a valid token. Health
//!   (`*.Health.*`) is public unless [`AuthLayer::protect_health`] says otherwise.
//! - **Statuses**, by the gRPC rules: no token, or one that does not verify, is
//!   `UNAUTHENTICATED` (401) saying why ("the token has expired"); a valid token
//!   without the scope is `PERMISSION_DENIED` (403) naming what is missing. The
//!   token itself is never echoed nor logged.
//! - **Client certificates** (mutual TLS): [`AuthLayer::peer`] accepts a caller's
//!   verified certificate as its principal when it sends no token, by a pattern
//!   on its SANs (`spiffe://acme/billing`) or subject, with the scopes given.
//! - The verified [`Principal`] (subject, scopes, claims) is handed to the
//!   handler: `request.context().get::<Principal>()`.
//!
//! Laid out as tower lays out its middleware: `layer.rs` (configuration and
//! verification), `service.rs`, `future.rs`; [`BearerToken`] is the client side.
//!
//! ```
//! # extern crate rmicro_core as rmicro;
//! use rmicro::wrapper::auth::{AuthLayer, BearerToken};
//! let auth = AuthLayer::hs256(b"a secret of at least 32 bytes, really")
//!     .issuer("https://auth.example.com")
//!     .public("user.User.Register")
//!     .public("user.User.Login")
//!     .require("user.User.DeleteUser", &["admin"])
//!     .authenticated("user.User.*");
//! let service = rmicro::Service::builder("user")
//!     .args(["user"])
//!     .wrap_handler(auth)
//!     .wrap_client(BearerToken::fixed("eyJ…"))
//!     .build()
//!     .expect("valid flags");
//! ```

mod client;
mod flags;
mod future;
mod layer;
mod service;

pub use client::{BearerToken, BearerTokenService};
pub use flags::AuthFlags;
pub use future::AuthFuture;
pub use layer::{Access, AuthError, AuthLayer, Jwks};
pub use service::AuthService;

/// Who made a call, as its verified token says; in the handler's
/// [`Context`](crate::Context).
#[derive(Debug, Clone, PartialEq)]
pub struct Principal {
    /// The token's `sub`.
    pub subject: String,
    /// What it grants: its `scope` (space-separated), `scopes` and `roles`.
    pub scopes: Vec<String>,
    /// Every claim of the token, as JSON.
    pub claims: serde_json::Map<String, serde_json::Value>,
}

impl Principal {
    /// Whether the token grants `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}
