//! Signed tokens: what `Login` returns and rmicro's `wrapper::auth` verifies.

use crate::domain::model::User;
use rmicro::Error;
use rmicro::wrapper::auth::AuthLayer;
use serde::Deserialize;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The shortest HS256 secret accepted, in bytes (RFC 7518 §3.2: the hash's size).
pub const MIN_SECRET: usize = 32;

/// The `iss` of the tokens this service signs.
pub const ISSUER: &str = crate::NAME;

/// The server wrapper checking the tokens [`Tokens`] signs: `Register`, `Login`
/// and health are public, everything else needs a valid token. It is made
/// before the configuration is read (wrappers are fixed when the service is
/// built) with a random key no token matches; [`Tokens::install`] puts the
/// configured key in.
pub fn auth_layer() -> AuthLayer {
    let unusable = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    AuthLayer::hs256(unusable.as_bytes())
        .issuer(ISSUER)
        .public(format!("{}.User.Register", crate::NAME))
        .public(format!("{}.User.Login", crate::NAME))
        .authenticated(format!("{}.User.*", crate::NAME))
}

/// The `user` section of the configuration.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// The HS256 key tokens are signed and checked with (at least 32 bytes).
    /// Every replica needs the same one; when empty, each process makes a random
    /// one and says so (tokens then hold only on the node that signed them).
    pub jwt_secret: String,
    /// How long a token holds, in seconds.
    pub token_ttl_seconds: u64,
    /// User names whose tokens grant the `admin` scope: they may change and
    /// remove other users.
    pub admins: Vec<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            jwt_secret: String::new(),
            token_ttl_seconds: 3600,
            admins: Vec::new(),
        }
    }
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field(
                "jwt_secret",
                &if self.jwt_secret.is_empty() {
                    ""
                } else {
                    "(set)"
                },
            )
            .field("token_ttl_seconds", &self.token_ttl_seconds)
            .field("admins", &self.admins)
            .finish()
    }
}

/// Signs tokens for users who logged in.
#[derive(Clone)]
pub struct Tokens {
    key: jsonwebtoken::EncodingKey,
    secret: std::sync::Arc<Vec<u8>>,
    ttl: Duration,
    admins: std::sync::Arc<Vec<String>>,
}

impl Tokens {
    /// Tokens as `settings` say; a secret shorter than [`MIN_SECRET`] is refused
    /// with a sentence (the length, never the secret).
    pub fn new(settings: &Settings) -> Result<Tokens, String> {
        let secret = if settings.jwt_secret.is_empty() {
            tracing::warn!(
                "user.jwt_secret is not set: signing with a random key of this process's own; tokens hold only on this node and until it restarts"
            );
            format!(
                "{}{}",
                uuid::Uuid::new_v4().simple(),
                uuid::Uuid::new_v4().simple()
            )
        } else {
            settings.jwt_secret.clone()
        };
        if secret.len() < MIN_SECRET {
            return Err(format!(
                "user.jwt_secret is {} bytes long; HS256 needs at least {MIN_SECRET}",
                secret.len()
            ));
        }
        if settings.token_ttl_seconds == 0 {
            return Err("user.token_ttl_seconds must be above 0".to_owned());
        }
        Ok(Tokens {
            key: jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
            secret: std::sync::Arc::new(secret.into_bytes()),
            ttl: Duration::from_secs(settings.token_ttl_seconds),
            admins: std::sync::Arc::new(settings.admins.clone()),
        })
    }

    /// Makes `layer` (from [`auth_layer`]) check tokens signed with this key,
    /// from the next call on.
    pub fn install(&self, layer: &AuthLayer) {
        layer.rotate(&AuthLayer::hs256(&self.secret));
    }

    /// A token for `user` (`sub` = the user id, `name`, `scope`) and when it
    /// expires (Unix seconds).
    pub fn issue(&self, user: &User) -> Result<(String, i64), Error> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let expires = now.saturating_add(self.ttl.as_secs());
        let scope = if self.admins.contains(&user.user_name) {
            "user admin"
        } else {
            "user"
        };
        let claims = serde_json::json!({
            "sub": user.id.to_string(),
            "name": user.user_name,
            "scope": scope,
            "iss": ISSUER,
            "iat": now,
            "exp": expires,
        });
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &self.key,
        )
        .map_err(|_| Error::internal(crate::NAME, "the token could not be signed"))?;
        Ok((token, i64::try_from(expires).unwrap_or(i64::MAX)))
    }
}
