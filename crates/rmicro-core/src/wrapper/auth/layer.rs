//! The auth layer: its keys and rules, and the verification of one call.

use super::{AuthService, Principal};
use crate::errors::Error;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// What a resource needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Anyone, no token needed.
    Public,
    /// Any valid token.
    Authenticated,
    /// A valid token granting at least one of these scopes (or roles).
    Scopes(Vec<String>),
}

/// A key that cannot be used to verify tokens.
#[derive(Debug, thiserror::Error)]
#[error("auth: the {what} key cannot verify tokens: {reason}")]
pub struct AuthError {
    pub(super) what: &'static str,
    pub(super) reason: String,
}

/// One trusted key and the algorithm it verifies.
#[derive(Clone)]
struct Key {
    key: DecodingKey,
    algorithm: Algorithm,
    /// The `kid` tokens signed with it name, when known.
    id: Option<String>,
}

#[derive(Debug, Clone)]
struct Rule {
    pattern: String,
    access: Access,
}

/// Client certificates (mutual TLS) accepted as principals.
#[derive(Debug, Clone)]
struct PeerRule {
    /// Matched against the certificate's SANs, then its subject.
    pattern: String,
    scopes: Vec<String>,
}

/// Verifies each call's bearer token and checks it against rules; a
/// `wrap_handler` layer. See the [module docs](super).
#[derive(Clone)]
pub struct AuthLayer {
    pub(super) verifier: Arc<Verifier>,
}

impl std::fmt::Debug for AuthLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthLayer")
            .field("rules", &self.verifier.rules)
            .finish_non_exhaustive()
    }
}

/// What the layer's services share. The keys are shared too with every layer
/// configured from this one (`issuer`, `public`, …), so a rotation or a JWKS
/// refresh reaches them all.
pub(super) struct Verifier {
    keys: Arc<RwLock<Arc<Vec<Key>>>>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway: Duration,
    rules: Vec<Rule>,
    peers: Vec<PeerRule>,
    public_health: bool,
    /// What a token of each accepted algorithm is checked against (`exp`, `nbf`,
    /// `iss`, `aud`, the leeway), made when the layer is configured rather than
    /// on every call: see [`Verifier::validations`].
    validations: Vec<(Algorithm, Validation)>,
}

/// The algorithms a trusted key can have (what [`Key`]s are made with).
const ALGORITHMS: [Algorithm; 4] = [
    Algorithm::HS256,
    Algorithm::RS256,
    Algorithm::ES256,
    Algorithm::EdDSA,
];

impl AuthLayer {
    fn with_keys(keys: Vec<Key>) -> Self {
        let mut verifier = Verifier {
            keys: Arc::new(RwLock::new(Arc::new(keys))),
            issuer: None,
            audience: None,
            leeway: Duration::from_secs(30),
            rules: Vec::new(),
            peers: Vec::new(),
            public_health: true,
            validations: Vec::new(),
        };
        verifier.validations = verifier.validations();
        AuthLayer {
            verifier: Arc::new(verifier),
        }
    }

    /// Trusts tokens signed with HMAC-SHA256 and `secret`.
    pub fn hs256(secret: &[u8]) -> Self {
        Self::with_keys(vec![Key {
            key: DecodingKey::from_secret(secret),
            algorithm: Algorithm::HS256,
            id: None,
        }])
    }

    /// Trusts tokens signed by the RSA key whose public half is `pem` (RS256).
    pub fn rs256_pem(pem: &[u8]) -> Result<Self, AuthError> {
        Ok(Self::with_keys(vec![Key::pem(
            "RS256",
            Algorithm::RS256,
            pem,
        )?]))
    }

    /// Trusts tokens signed by the P-256 key whose public half is `pem` (ES256).
    pub fn es256_pem(pem: &[u8]) -> Result<Self, AuthError> {
        Ok(Self::with_keys(vec![Key::pem(
            "ES256",
            Algorithm::ES256,
            pem,
        )?]))
    }

    /// Trusts tokens signed by the Ed25519 key whose public half is `pem` (EdDSA).
    pub fn eddsa_pem(pem: &[u8]) -> Result<Self, AuthError> {
        Ok(Self::with_keys(vec![Key::pem(
            "EdDSA",
            Algorithm::EdDSA,
            pem,
        )?]))
    }

    fn configured(self, change: impl FnOnce(&mut Verifier)) -> Self {
        let old = &self.verifier;
        let mut verifier = Verifier {
            keys: old.keys.clone(),
            issuer: old.issuer.clone(),
            audience: old.audience.clone(),
            leeway: old.leeway,
            rules: old.rules.clone(),
            peers: old.peers.clone(),
            public_health: old.public_health,
            validations: Vec::new(),
        };
        change(&mut verifier);
        verifier.validations = verifier.validations();
        AuthLayer {
            verifier: Arc::new(verifier),
        }
    }

    /// Accepts only tokens whose `iss` is `issuer`.
    pub fn issuer(self, issuer: impl Into<String>) -> Self {
        let issuer = issuer.into();
        self.configured(|v| v.issuer = Some(issuer))
    }

    /// Accepts only tokens whose `aud` holds `audience`.
    pub fn audience(self, audience: impl Into<String>) -> Self {
        let audience = audience.into();
        self.configured(|v| v.audience = Some(audience))
    }

    /// How far clocks may disagree when `exp` and `nbf` are checked (30 s; at
    /// most 5 minutes).
    pub fn leeway(self, leeway: Duration) -> Self {
        self.configured(|v| v.leeway = leeway.min(Duration::from_secs(300)))
    }

    /// Also trusts `other`'s keys (several issuers, or a key being rolled in).
    pub fn trust(self, other: &AuthLayer) -> Self {
        let more = crate::sync::read(&other.verifier.keys).clone();
        self.configured(|v| {
            let mut keys = (**crate::sync::read(&v.keys)).clone();
            keys.extend(more.iter().cloned());
            // A key set of its own from here on: the layer trusted from stays as it was.
            v.keys = Arc::new(RwLock::new(Arc::new(keys)));
        })
    }

    /// Replaces the trusted keys by `other`'s, for calls from now on, in this
    /// layer and every service made from it: a key rotation without a restart.
    pub fn rotate(&self, other: &AuthLayer) {
        let keys = crate::sync::read(&other.verifier.keys).clone();
        *crate::sync::write(&self.verifier.keys) = keys;
    }

    /// Trusts the keys of a JWKS document (RFC 7517, what an identity provider
    /// serves at its `jwks_uri`): RSA (RS256), P-256 (ES256), Ed25519 (EdDSA) and
    /// `oct` (HS256) keys, each with its `kid`, so a token is checked against the key
    /// it names. Keys marked for encryption, or of other kinds, are skipped.
    pub fn jwks(document: &[u8]) -> Result<Self, AuthError> {
        Ok(Self::with_keys(jwks_keys(document)?))
    }

    /// Reads the key set of `source` again every `every` and trusts what it holds
    /// from then on, in this layer and every layer configured from it (a key
    /// rotation at the identity provider, without a restart). A source that cannot
    /// be read, or holds no usable key, leaves the keys as they were and logs a
    /// warning. Runs until the returned handle is aborted; needs a Tokio runtime.
    pub fn refresh(&self, source: Jwks, every: Duration) -> tokio::task::JoinHandle<()> {
        let keys = self.verifier.keys.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every.max(Duration::from_millis(100)));
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                match source.read().await.and_then(|doc| jwks_keys(&doc)) {
                    Ok(fresh) => *crate::sync::write(&keys) = Arc::new(fresh),
                    Err(err) => tracing::warn!(
                        source = %source,
                        error = %err,
                        "cannot refresh the JWKS keys ({err}); keeping the ones trusted now"
                    ),
                }
            }
        })
    }

    /// Resources matching `pattern` (`user.User.Login`, `user.*`) need no token.
    pub fn public(self, pattern: impl Into<String>) -> Self {
        self.rule(pattern, Access::Public)
    }

    /// Resources matching `pattern` need a valid token.
    pub fn authenticated(self, pattern: impl Into<String>) -> Self {
        self.rule(pattern, Access::Authenticated)
    }

    /// Resources matching `pattern` need a token granting one of `scopes`.
    pub fn require(self, pattern: impl Into<String>, scopes: &[&str]) -> Self {
        let scopes = scopes.iter().map(|s| (*s).to_owned()).collect();
        self.rule(pattern, Access::Scopes(scopes))
    }

    /// Adds a rule; the first rule that matches a resource decides.
    pub fn rule(self, pattern: impl Into<String>, access: Access) -> Self {
        let pattern = pattern.into();
        self.configured(|v| v.rules.push(Rule { pattern, access }))
    }

    /// Accepts a caller's verified client certificate (mutual TLS, see
    /// `--tls-client-ca-file`) as its principal when the call carries no bearer
    /// token and one of the certificate's SANs (a `spiffe://` URI, a DNS name, …)
    /// or its subject (`CN=billing`) matches `pattern` (`*` = any run of
    /// characters). The principal's subject is the name that matched, its scopes
    /// are `scopes`, and its claims hold `subject` and `sans`. The first pattern
    /// that matches decides; a bearer token, when sent, always decides instead.
    pub fn peer(self, pattern: impl Into<String>, scopes: &[&str]) -> Self {
        let rule = PeerRule {
            pattern: pattern.into(),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        };
        self.configured(|v| v.peers.push(rule))
    }

    /// Makes `grpc.health.v1.Health` follow the rules like any endpoint (it is
    /// public by default, as load balancers and orchestrators probe it).
    pub fn protect_health(self) -> Self {
        self.configured(|v| v.public_health = false)
    }

    /// Decides a call to `resource` (`service.Endpoint`) that carries `headers`:
    /// `Ok(None)` public, `Ok(Some(principal))` allowed, or the error to answer.
    pub fn verify(
        &self,
        headers: &http::HeaderMap,
        resource: &str,
    ) -> Result<Option<Principal>, Error> {
        self.verifier.verify(headers, None, resource)
    }

    /// As [`AuthLayer::verify`], for a caller that presented the client
    /// certificate `peer` (see [`AuthLayer::peer`]).
    pub fn verify_with_peer(
        &self,
        headers: &http::HeaderMap,
        peer: Option<&crate::wrapper::PeerIdentity>,
        resource: &str,
    ) -> Result<Option<Principal>, Error> {
        self.verifier.verify(headers, peer, resource)
    }
}

impl Key {
    fn pem(what: &'static str, algorithm: Algorithm, pem: &[u8]) -> Result<Key, AuthError> {
        let key = match algorithm {
            Algorithm::RS256 => DecodingKey::from_rsa_pem(pem),
            Algorithm::ES256 => DecodingKey::from_ec_pem(pem),
            _ => DecodingKey::from_ed_pem(pem),
        }
        .map_err(|e| AuthError {
            what,
            reason: e.to_string(),
        })?;
        Ok(Key {
            key,
            algorithm,
            id: None,
        })
    }
}

/// Where a JWKS key set is read from: a file, or an `http(s)://` URL (the
/// identity provider's `jwks_uri`).
///
/// ```no_run
/// # extern crate rmicro_core as rmicro;
/// # async fn run() -> Result<(), rmicro::wrapper::auth::AuthError> {
/// use rmicro::wrapper::auth::{AuthLayer, Jwks};
/// use std::time::Duration;
/// let source = Jwks::url("https://auth.example.com/.well-known/jwks.json");
/// let auth = AuthLayer::jwks(&source.read().await?)?.issuer("https://auth.example.com");
/// let _refresh = auth.refresh(source, Duration::from_secs(300));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Jwks {
    place: JwksPlace,
    ca_pem: Option<Vec<u8>>,
}

#[derive(Debug, Clone)]
enum JwksPlace {
    File(std::path::PathBuf),
    Url(String),
}

impl std::fmt::Display for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.place {
            JwksPlace::File(path) => write!(f, "{}", path.display()),
            JwksPlace::Url(url) => f.write_str(url),
        }
    }
}

impl Jwks {
    /// A JWKS file.
    pub fn file(path: impl Into<std::path::PathBuf>) -> Self {
        Jwks {
            place: JwksPlace::File(path.into()),
            ca_pem: None,
        }
    }

    /// A JWKS URL, `http://` or `https://` (verified against the web's roots).
    pub fn url(url: impl Into<String>) -> Self {
        Jwks {
            place: JwksPlace::Url(url.into()),
            ca_pem: None,
        }
    }

    /// Verifies an `https://` source against this CA (PEM) instead of the web's roots.
    pub fn trusting(mut self, ca_pem: impl Into<Vec<u8>>) -> Self {
        self.ca_pem = Some(ca_pem.into());
        self
    }

    /// Reads the document now (a URL within 10 s, at most 1 MiB).
    pub async fn read(&self) -> Result<Vec<u8>, AuthError> {
        let failed = |reason: String| AuthError {
            what: "JWKS",
            reason,
        };
        match &self.place {
            JwksPlace::File(path) => tokio::fs::read(path)
                .await
                .map_err(|e| failed(format!("cannot read `{}`: {e}", path.display()))),
            JwksPlace::Url(url) => crate::transport::fetch::get(
                url,
                self.ca_pem.as_deref(),
                1 << 20,
                Duration::from_secs(10),
            )
            .await
            .map(|body| body.to_vec())
            .map_err(failed),
        }
    }
}

/// The usable keys of a JWKS document.
fn jwks_keys(document: &[u8]) -> Result<Vec<Key>, AuthError> {
    use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, PublicKeyUse};
    let failed = |reason: String| AuthError {
        what: "JWKS",
        reason,
    };
    let set: JwkSet = serde_json::from_slice(document)
        .map_err(|e| failed(format!("the document is not a JWKS key set: {e}")))?;
    let mut keys = Vec::new();
    for jwk in &set.keys {
        if jwk.common.public_key_use == Some(PublicKeyUse::Encryption) {
            continue;
        }
        let algorithm = match jwk.common.key_algorithm {
            Some(alg) => match Algorithm::try_from(alg) {
                Ok(alg) => alg,
                Err(_) => continue,
            },
            None => match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => Algorithm::RS256,
                AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
                    Algorithm::ES256
                }
                AlgorithmParameters::OctetKeyPair(_) => Algorithm::EdDSA,
                AlgorithmParameters::OctetKey(_) => Algorithm::HS256,
                _ => continue,
            },
        };
        let Ok(key) = DecodingKey::from_jwk(jwk) else {
            continue;
        };
        keys.push(Key {
            key,
            algorithm,
            id: jwk.common.key_id.clone(),
        });
    }
    if keys.is_empty() {
        return Err(failed(format!(
            "none of its {} key(s) can verify tokens (RSA, P-256, Ed25519 or oct signing keys)",
            set.keys.len()
        )));
    }
    Ok(keys)
}

/// Whether `text` matches `pattern`, where `*` stands for any run of characters.
fn glob(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty(); // no `*` at all
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

impl Verifier {
    fn access(&self, resource: &str) -> Option<&Access> {
        if self.public_health && resource.contains(".Health.") {
            return Some(&Access::Public);
        }
        if self.rules.is_empty() {
            return Some(&Access::Authenticated);
        }
        self.rules
            .iter()
            .find(|r| glob(&r.pattern, resource))
            .map(|r| &r.access)
    }

    pub(super) fn verify(
        &self,
        headers: &http::HeaderMap,
        peer: Option<&crate::wrapper::PeerIdentity>,
        resource: &str,
    ) -> Result<Option<Principal>, Error> {
        let access = self.access(resource);
        if access == Some(&Access::Public) {
            return Ok(None);
        }
        let unauthenticated = |why: &str| Error::unauthorized("auth", format!("{resource}: {why}"));
        let principal = match (bearer(headers), peer) {
            (Some(token), _) => self.principal(token).map_err(|why| unauthenticated(&why))?,
            (None, Some(peer)) if !self.peers.is_empty() => {
                self.peer_principal(peer).ok_or_else(|| {
                    unauthenticated(&format!(
                        "no bearer token, and the client certificate ({}) is not one this service accepts",
                        peer.subject
                    ))
                })?
            }
            (None, _) if !self.peers.is_empty() => {
                return Err(unauthenticated(
                    "no bearer token (send `authorization: Bearer <token>`) and no client certificate this service accepts",
                ));
            }
            (None, _) => {
                return Err(unauthenticated(
                    "no bearer token (send `authorization: Bearer <token>`)",
                ));
            }
        };
        match access {
            // Deny by default: rules exist and none names this resource.
            None => Err(Error::forbidden(
                "auth",
                format!("{resource}: no rule allows it"),
            )),
            Some(Access::Scopes(needed)) if !needed.iter().any(|s| principal.has_scope(s)) => {
                Err(Error::forbidden(
                    "auth",
                    format!(
                        "{resource} needs scope {}; {} grants {}",
                        needed.join(" or "),
                        if principal.claims.contains_key("sans") {
                            "the client certificate"
                        } else {
                            "the token"
                        },
                        if principal.scopes.is_empty() {
                            "none".to_owned()
                        } else {
                            principal.scopes.join(", ")
                        }
                    ),
                ))
            }
            _ => Ok(Some(principal)),
        }
    }

    /// The principal of a client certificate, if a peer rule accepts it.
    fn peer_principal(&self, peer: &crate::wrapper::PeerIdentity) -> Option<Principal> {
        self.peers.iter().find_map(|rule| {
            let name = peer
                .sans
                .iter()
                .chain(std::iter::once(&peer.subject))
                .find(|name| glob(&rule.pattern, name))?;
            let mut claims = serde_json::Map::new();
            claims.insert("sub".into(), name.clone().into());
            claims.insert("subject".into(), peer.subject.clone().into());
            claims.insert("sans".into(), peer.sans.clone().into());
            Some(Principal {
                subject: name.clone(),
                scopes: rule.scopes.clone(),
                claims,
            })
        })
    }

    /// The checks of a token signed with each algorithm, as configured.
    fn validations(&self) -> Vec<(Algorithm, Validation)> {
        ALGORITHMS
            .iter()
            .map(|&algorithm| {
                let mut validation = Validation::new(algorithm);
                validation.leeway = self.leeway.as_secs();
                validation.validate_nbf = true;
                validation.set_required_spec_claims(&["exp", "sub"]);
                match &self.audience {
                    Some(audience) => validation.set_audience(&[audience]),
                    None => validation.validate_aud = false,
                }
                if let Some(issuer) = &self.issuer {
                    validation.set_issuer(&[issuer]);
                }
                (algorithm, validation)
            })
            .collect()
    }

    /// The checks for tokens signed with `algorithm`.
    fn validation(&self, algorithm: Algorithm) -> Option<&Validation> {
        self.validations
            .iter()
            .find(|(a, _)| *a == algorithm)
            .map(|(_, v)| v)
    }

    /// Verifies `token`; the reason it is refused, as a sentence, when it is.
    fn principal(&self, token: &str) -> Result<Principal, String> {
        let keys = crate::sync::read(&self.keys).clone();
        // One key with no id (a service's own secret): the token's header need
        // not be read first to pick it — `decode` refuses a token signed with
        // another algorithm, which then takes the general path below for the
        // same sentence.
        if let [key] = keys.as_slice()
            && key.id.is_none()
            && let Some(validation) = self.validation(key.algorithm)
        {
            match jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
                token, &key.key, validation,
            ) {
                Ok(data) => return Ok(principal(data.claims)),
                Err(e) if !matches!(e.kind(), ErrorKind::InvalidAlgorithm) => {
                    return Err(why(e.kind()));
                }
                Err(_) => {}
            }
        }
        let header = jsonwebtoken::decode_header(token).map_err(|e| why(e.kind()))?;
        let mut candidates = keys
            .iter()
            .filter(|k| k.algorithm == header.alg)
            .filter(|k| match (&k.id, &header.kid) {
                (Some(id), Some(kid)) => id == kid,
                _ => true,
            })
            .peekable();
        if candidates.peek().is_none() {
            return Err(format!(
                "the token is signed with {:?}, which no trusted key verifies",
                header.alg
            ));
        }
        let validation = self.validation(header.alg).ok_or_else(|| {
            format!(
                "the token is signed with {:?}, which no trusted key verifies",
                header.alg
            )
        })?;
        let mut last = String::new();
        for key in candidates {
            match jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
                token, &key.key, validation,
            ) {
                Ok(data) => return Ok(principal(data.claims)),
                Err(e) => last = why(e.kind()),
            }
        }
        Err(last)
    }
}

/// The token of an `authorization: Bearer …` header.
fn bearer(headers: &http::HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Why a token was refused, as a caller should read it (never the token).
fn why(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::ExpiredSignature => "the token has expired".into(),
        ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)".into(),
        ErrorKind::InvalidSignature => "the token's signature does not verify".into(),
        ErrorKind::InvalidAudience => "the token is not meant for this audience (aud)".into(),
        ErrorKind::InvalidIssuer => "the token's issuer is not trusted (iss)".into(),
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            "the token's algorithm is not accepted".into()
        }
        ErrorKind::MissingRequiredClaim(claim) => format!("the token has no `{claim}` claim"),
        _ => "the token is malformed".into(),
    }
}

/// The principal a verified token's claims name.
fn principal(claims: serde_json::Map<String, serde_json::Value>) -> Principal {
    let mut scopes: Vec<String> = claims
        .get("scope")
        .and_then(|s| s.as_str())
        .map(|s| s.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default();
    for list in ["scopes", "roles"] {
        if let Some(values) = claims.get(list).and_then(|v| v.as_array()) {
            scopes.extend(values.iter().filter_map(|v| v.as_str()).map(str::to_owned));
        }
    }
    Principal {
        subject: claims
            .get("sub")
            .and_then(|s| s.as_str())
            .unwrap_or_default()
            .to_owned(),
        scopes,
        claims,
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> AuthService<S> {
        AuthService::new(inner, self.verifier.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn globs_match_runs_of_any_characters() {
        assert!(glob("user.User.Login", "user.User.Login"));
        assert!(!glob("user.User.Login", "user.User.LoginX"));
        assert!(glob("user.*", "user.User.Login"));
        assert!(glob("*.Login", "user.User.Login"));
        assert!(glob("user.*.Get*", "user.User.GetUserInfo"));
        assert!(!glob("user.*.Get*", "user.User.List"));
        assert!(glob("*", "anything"));
        assert!(!glob("order.*", "user.User.Login"));
    }
}
