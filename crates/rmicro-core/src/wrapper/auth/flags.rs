//! Auth from flags: the keys and rules of an [`AuthLayer`] as command-line flags
//! (and `MICRO_AUTH_*` variables), so that a binary — `rmicro api` first — applies
//! the same rules as a service's code would, with no code.

use super::{Access, AuthError, AuthLayer, Jwks};
use std::path::PathBuf;
use std::time::Duration;

/// The `--auth-*` flags. With no key flag given, [`AuthFlags::layer`] is `None`:
/// no auth.
#[derive(Debug, Clone, Default, clap::Args)]
#[group(id = "rmicro-auth-flags")]
pub struct AuthFlags {
    /// Verify bearer tokens signed with HMAC-SHA256 (HS256) by the secret in FILE.
    #[arg(long, env = "MICRO_AUTH_HS256_SECRET_FILE", value_name = "FILE")]
    pub auth_hs256_secret_file: Option<PathBuf>,
    /// Verify bearer tokens with the public key in FILE (PEM: RSA → RS256,
    /// P-256 → ES256, Ed25519 → EdDSA; go-micro's --auth_public_key).
    #[arg(long, env = "MICRO_AUTH_PUBLIC_KEY_FILE", value_name = "FILE")]
    pub auth_public_key_file: Option<PathBuf>,
    /// Verify bearer tokens with the keys of a JWKS: a file, or the identity
    /// provider's http(s) URL; read again every --auth-jwks-refresh.
    #[arg(long, env = "MICRO_AUTH_JWKS", value_name = "FILE|URL")]
    pub auth_jwks: Option<String>,
    /// How often the JWKS is read again [default: 5m].
    #[arg(long, env = "MICRO_AUTH_JWKS_REFRESH", value_name = "DURATION", value_parser = crate::cmd::parse_duration)]
    pub auth_jwks_refresh: Option<Duration>,
    /// Accept only tokens whose `iss` is this.
    #[arg(long, env = "MICRO_AUTH_ISSUER", value_name = "ISSUER")]
    pub auth_issuer: Option<String>,
    /// Accept only tokens whose `aud` holds this.
    #[arg(long, env = "MICRO_AUTH_AUDIENCE", value_name = "AUDIENCE")]
    pub auth_audience: Option<String>,
    /// A rule, `PATTERN=public`, `PATTERN=authenticated` or `PATTERN=SCOPE|SCOPE…`,
    /// for resources `service.Endpoint` (`*` = any run of characters); repeatable,
    /// the first that matches decides, a resource no rule names is denied. With no
    /// rule every call needs a valid token.
    #[arg(long = "auth-rule", env = "MICRO_AUTH_RULES", value_name = "PATTERN=ACCESS", value_delimiter = ',', value_parser = parse_rule)]
    pub auth_rules: Vec<(String, Access)>,
    /// Make health follow the rules too (it is public by default, for probes).
    #[arg(long, env = "MICRO_AUTH_PROTECT_HEALTH")]
    pub auth_protect_health: bool,
}

fn parse_rule(text: &str) -> Result<(String, Access), String> {
    let (pattern, access) = text.split_once('=').ok_or_else(|| {
        format!("`{text}` is not PATTERN=ACCESS (e.g. `user.User.Login=public`, `user.*=authenticated`, `user.User.Delete*=admin|root`)")
    })?;
    let (pattern, access) = (pattern.trim(), access.trim());
    if pattern.is_empty() || access.is_empty() {
        return Err(format!("`{text}` has an empty pattern or access"));
    }
    let access = match access {
        "public" => Access::Public,
        "authenticated" => Access::Authenticated,
        scopes => Access::Scopes(scopes.split('|').map(|s| s.trim().to_owned()).collect()),
    };
    Ok((pattern.to_owned(), access))
}

fn read(path: &std::path::Path, what: &'static str) -> Result<Vec<u8>, AuthError> {
    std::fs::read(path).map_err(|e| AuthError {
        what,
        reason: format!("cannot read `{}`: {e}", path.display()),
    })
}

impl AuthFlags {
    /// Whether a key flag is set: then [`AuthFlags::layer`] makes a layer.
    pub fn is_set(&self) -> bool {
        self.auth_hs256_secret_file.is_some()
            || self.auth_public_key_file.is_some()
            || self.auth_jwks.is_some()
    }

    /// The layer these flags describe, its keys read now; `None` when no key flag
    /// is set. A JWKS is then read again in the background (needs a Tokio
    /// runtime), for as long as the process runs.
    pub async fn layer(&self) -> Result<Option<AuthLayer>, AuthError> {
        let mut layers = Vec::new();
        if let Some(path) = &self.auth_hs256_secret_file {
            let secret = read(path, "HS256")?;
            // A trailing newline from `echo … > file` is not part of the secret.
            let secret = secret.trim_ascii_end();
            layers.push(AuthLayer::hs256(secret));
        }
        if let Some(path) = &self.auth_public_key_file {
            let pem = read(path, "public")?;
            let layer = AuthLayer::rs256_pem(&pem)
                .or_else(|_| AuthLayer::es256_pem(&pem))
                .or_else(|_| AuthLayer::eddsa_pem(&pem))
                .map_err(|_| AuthError {
                    what: "public",
                    reason: format!(
                        "`{}` holds no RSA, P-256 or Ed25519 public key in PEM",
                        path.display()
                    ),
                })?;
            layers.push(layer);
        }
        let mut jwks = None;
        if let Some(place) = &self.auth_jwks {
            let source = if place.starts_with("http://") || place.starts_with("https://") {
                Jwks::url(place.clone())
            } else {
                Jwks::file(place.clone())
            };
            layers.push(AuthLayer::jwks(&source.read().await?)?);
            jwks = Some(source);
        }
        let Some(mut layer) = layers.pop() else {
            return Ok(None);
        };
        for other in &layers {
            layer = layer.trust(other);
        }
        if let Some(issuer) = &self.auth_issuer {
            layer = layer.issuer(issuer.clone());
        }
        if let Some(audience) = &self.auth_audience {
            layer = layer.audience(audience.clone());
        }
        for (pattern, access) in &self.auth_rules {
            layer = layer.rule(pattern.clone(), access.clone());
        }
        if self.auth_protect_health {
            layer = layer.protect_health();
        }
        if let Some(source) = jwks {
            // Only the JWKS's keys are refreshed; other keys the flags named stay.
            if layers.is_empty() {
                let every = self.auth_jwks_refresh.unwrap_or(Duration::from_secs(300));
                // Lives with the process, as the flags do.
                drop(layer.refresh(source, every));
            } else {
                tracing::warn!(
                    "--auth-jwks with another key flag: the JWKS is read once, not refreshed"
                );
            }
        }
        Ok(Some(layer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_in_order_and_bad_ones_say_why() {
        assert_eq!(
            parse_rule("user.User.Login=public"),
            Ok(("user.User.Login".into(), Access::Public))
        );
        assert_eq!(
            parse_rule("user.*=authenticated"),
            Ok(("user.*".into(), Access::Authenticated))
        );
        assert_eq!(
            parse_rule("user.User.Delete*=admin|root"),
            Ok((
                "user.User.Delete*".into(),
                Access::Scopes(vec!["admin".into(), "root".into()])
            ))
        );
        assert!(parse_rule("user.*").unwrap_err().contains("PATTERN=ACCESS"));
        assert!(parse_rule("=public").unwrap_err().contains("empty"));
    }
}
