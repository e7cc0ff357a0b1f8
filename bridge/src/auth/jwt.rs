//! Token authentication for browser apps: a JSON Web Token in the CONNECT password.
//!
//! A web app's backend signs a short-lived token for its user; the browser connects with it
//! and never holds a password. Checked here:
//! - the signature: HS256/384/512 with `[auth.jwt] secret`, or with `public_key_file` (PEM)
//!   whatever family the key is: RS*/PS* for RSA, ES256/ES384 for EC, EdDSA for Ed25519 (the
//!   algorithm family comes from the key, never from the token, so an RSA public key cannot be
//!   used as an HMAC secret);
//! - `exp` (required) and `nbf` (if present) against the clock, with `leeway_secs`; `iss` and
//!   `aud` when `issuer` / `audience` are set;
//! - the user name: the `username_claim` claim (default `sub`), a non-empty string; a user
//!   name in the CONNECT, if any, must equal it.
//!
//! The result is an [`Identity`] that expires with the token (the engine closes the
//! connection then) and, if the token has an `acl` claim in EMQX's shape
//! `{"pub": [filters], "sub": [filters], "all": [filters]}`, [`Grants`] that narrow what the
//! connection may do (`all` counts for both).

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use broker::auth::{Grants, Identity};
use jsonwebtoken::{DecodingKey, Validation};
use protocol::TopicFilter;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::AuthError;

/// The `[auth.jwt]` table.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct JwtConfig {
    /// The HMAC secret (HS256); exclusive with `public_key_file`.
    #[serde(default)]
    pub(crate) secret: Option<String>,
    /// A PEM public key (RSA, EC P-256/P-384 or Ed25519); exclusive with `secret`.
    #[serde(default)]
    pub(crate) public_key_file: Option<PathBuf>,
    /// The claim holding the user name.
    #[serde(default = "default_username_claim")]
    pub(crate) username_claim: String,
    /// When set, `iss` must equal it.
    #[serde(default)]
    pub(crate) issuer: Option<String>,
    /// When set, `aud` must contain it.
    #[serde(default)]
    pub(crate) audience: Option<String>,
    /// Seconds of clock skew allowed on `exp` and `nbf`.
    #[serde(default)]
    pub(crate) leeway_secs: u64,
}

fn default_username_claim() -> String {
    "sub".to_owned()
}

impl fmt::Debug for JwtConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtConfig")
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("public_key_file", &self.public_key_file)
            .field("username_claim", &self.username_claim)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway_secs", &self.leeway_secs)
            .finish()
    }
}

/// Checks tokens against one key.
pub(crate) struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
    username_claim: String,
    leeway: Duration,
}

impl fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("algorithms", &self.validation.algorithms)
            .field("username_claim", &self.username_claim)
            .finish_non_exhaustive()
    }
}

impl JwtVerifier {
    /// Builds the verifier, reading the key file if one is configured.
    pub(crate) fn load(config: &JwtConfig) -> Result<JwtVerifier, AuthError> {
        let invalid = |why: &str| AuthError::Config(format!("[auth.jwt] {why}"));
        let key = match (&config.secret, &config.public_key_file) {
            (Some(secret), None) => DecodingKey::from_secret(secret.as_bytes())
                .map_err(|_| invalid("secret must not be empty"))?,
            (None, Some(path)) => {
                let pem = std::fs::read(path).map_err(|e| AuthError::read(path, e))?;
                DecodingKey::from_ec_pem(&pem)
                    .or_else(|_| DecodingKey::from_rsa_pem(&pem))
                    .or_else(|_| DecodingKey::from_ed_pem(&pem))
                    .map_err(|_| AuthError::Key {
                        path: path.clone(),
                        why: "not a PEM public key (RSA, EC or Ed25519)".to_owned(),
                    })?
            }
            (Some(_), Some(_)) => return Err(invalid("has both secret and public_key_file")),
            (None, None) => return Err(invalid("needs a secret or a public_key_file")),
        };
        if config.username_claim.is_empty() {
            return Err(invalid("username_claim must not be empty"));
        }
        let mut validation = Validation::new_for_family(key.family());
        validation.required_spec_claims = ["exp".to_owned()].into();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.leeway = config.leeway_secs;
        if let Some(issuer) = &config.issuer {
            validation.set_issuer(&[issuer]);
            validation.required_spec_claims.insert("iss".to_owned());
        }
        match &config.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                validation.required_spec_claims.insert("aud".to_owned());
            }
            None => validation.validate_aud = false,
        }
        Ok(JwtVerifier {
            key,
            validation,
            username_claim: config.username_claim.clone(),
            leeway: Duration::from_secs(config.leeway_secs),
        })
    }

    /// Checks `token`; `username` is the CONNECT's user name, if it sent one. The error says
    /// why, for the log (never for the client).
    pub(crate) fn verify(&self, token: &str, username: Option<&str>) -> Result<Identity, String> {
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &self.key, &self.validation)
            .map_err(|e| format!("token refused: {e}"))?;
        let claims = data.claims;
        let Some(name) = claims.get(&self.username_claim).and_then(Value::as_str) else {
            return Err(format!(
                "token has no string claim {:?} for the user name",
                self.username_claim
            ));
        };
        if name.is_empty() {
            // As `bridge passwd` and the ACL file: an empty name is no one's.
            return Err(format!("token's {:?} claim is empty", self.username_claim));
        }
        if let Some(sent) = username {
            if sent != name {
                return Err(format!(
                    "user name {sent:?} differs from the token's {:?} ({name:?})",
                    self.username_claim
                ));
            }
        }
        let exp = claims
            .get("exp")
            .and_then(Value::as_f64)
            .filter(|exp| exp.is_finite() && *exp >= 0.0)
            .ok_or("token has no valid exp")?;
        let expires_at = SystemTime::UNIX_EPOCH
            .checked_add(Duration::from_secs_f64(exp.min(1e12)))
            .and_then(|t| t.checked_add(self.leeway));
        let grants = match claims.get("acl") {
            None => None,
            Some(acl) => Some(Arc::new(grants(acl)?)),
        };
        Ok(Identity {
            username: Some(Arc::from(name)),
            expires_at,
            grants,
        })
    }
}

/// The `acl` claim, EMQX's shape: `{"pub": [...], "sub": [...], "all": [...]}`; other keys
/// are ignored (they could only have narrowed further).
fn grants(acl: &Value) -> Result<Grants, String> {
    let Some(acl) = acl.as_object() else {
        return Err("the acl claim is not an object".to_owned());
    };
    let list = |key: &str| -> Result<Vec<TopicFilter>, String> {
        match acl.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| {
                    item.as_str()
                        .and_then(|s| TopicFilter::new(s).ok())
                        .ok_or_else(|| format!("acl.{key}: {item} is not a topic filter"))
                })
                .collect(),
            Some(_) => Err(format!("acl.{key} is not a list of topic filters")),
        }
    };
    let all = list("all")?;
    let mut publish = list("pub")?;
    let mut subscribe = list("sub")?;
    publish.extend(all.iter().cloned());
    subscribe.extend(all);
    Ok(Grants { publish, subscribe })
}

/// Whether a password is a JWT: three non-empty base64url segments, the first of which
/// decodes to a JSON object with an `alg` member (a JOSE header). The shape alone is not
/// enough: `correct.horse.battery` is a fine password.
pub(crate) fn is_jwt(password: &[u8]) -> bool {
    let mut segments = 0;
    for segment in password.split(|b| *b == b'.') {
        segments += 1;
        if segment.is_empty()
            || !segment
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
        {
            return false;
        }
    }
    if segments != 3 {
        return false;
    }
    let header = password.split(|b| *b == b'.').next().unwrap_or_default();
    URL_SAFE_NO_PAD
        .decode(header)
        .ok()
        .and_then(|json| serde_json::from_slice::<Map<String, Value>>(&json).ok())
        .is_some_and(|header| header.contains_key("alg"))
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    use super::*;

    fn config(secret: &str) -> JwtConfig {
        JwtConfig {
            secret: Some(secret.to_owned()),
            public_key_file: None,
            username_claim: default_username_claim(),
            issuer: None,
            audience: None,
            leeway_secs: 0,
        }
    }

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default()
    }

    fn token(secret: &str, claims: Value) -> String {
        encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()).expect("key"),
        )
        .expect("signed")
    }

    #[test]
    fn a_valid_token_gives_its_subject_expiry_and_grants() {
        let v = JwtVerifier::load(&config("s3cret")).expect("verifier");
        let exp = now() + 600;
        let t = token(
            "s3cret",
            json!({"sub": "web-1", "exp": exp, "acl": {"pub": ["a/#"], "sub": ["b/+"], "all": ["c"]}}),
        );
        let id = v.verify(&t, None).expect("accepted");
        assert_eq!(id.username.as_deref(), Some("web-1"));
        assert_eq!(
            id.expires_at,
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(exp))
        );
        let grants = id.grants.expect("grants");
        let names = |l: &[TopicFilter]| l.iter().map(|f| f.to_string()).collect::<Vec<_>>();
        assert_eq!(names(&grants.publish), ["a/#", "c"]);
        assert_eq!(names(&grants.subscribe), ["b/+", "c"]);
        assert!(v.verify(&t, Some("web-1")).is_ok());
        assert!(v.verify(&t, Some("web-2")).is_err());
        let plain = token("s3cret", json!({"sub": "w", "exp": exp}));
        assert_eq!(v.verify(&plain, None).expect("accepted").grants, None);
    }

    #[test]
    fn bad_tokens_are_refused() {
        let v = JwtVerifier::load(&config("s3cret")).expect("verifier");
        let t = now();
        for (why, tok) in [
            (
                "expired",
                token("s3cret", json!({"sub": "u", "exp": t - 10})),
            ),
            ("no exp", token("s3cret", json!({"sub": "u"}))),
            (
                "not yet valid",
                token(
                    "s3cret",
                    json!({"sub": "u", "exp": t + 600, "nbf": t + 300}),
                ),
            ),
            (
                "other key",
                token("other", json!({"sub": "u", "exp": t + 600})),
            ),
            ("no sub", token("s3cret", json!({"exp": t + 600}))),
            (
                "empty sub",
                token("s3cret", json!({"sub": "", "exp": t + 600})),
            ),
            (
                "numeric sub",
                token("s3cret", json!({"sub": 7, "exp": t + 600})),
            ),
            (
                "bad acl",
                token(
                    "s3cret",
                    json!({"sub": "u", "exp": t + 600, "acl": {"pub": ["a/#/b"]}}),
                ),
            ),
            (
                "acl list",
                token("s3cret", json!({"sub": "u", "exp": t + 600, "acl": ["a"]})),
            ),
            ("garbage", "a.b.c".to_owned()),
        ] {
            assert!(v.verify(&tok, None).is_err(), "{why} accepted");
        }
    }

    #[test]
    fn issuer_audience_and_username_claim_are_honoured() {
        let mut c = config("k");
        c.issuer = Some("https://issuer".to_owned());
        c.audience = Some("mqtt".to_owned());
        c.username_claim = "preferred_username".to_owned();
        let v = JwtVerifier::load(&c).expect("verifier");
        let exp = now() + 600;
        let good = token(
            "k",
            json!({"preferred_username": "ann", "sub": "x", "iss": "https://issuer", "aud": "mqtt", "exp": exp}),
        );
        assert_eq!(
            v.verify(&good, None).expect("accepted").username.as_deref(),
            Some("ann")
        );
        let wrong_aud = token(
            "k",
            json!({"preferred_username": "ann", "iss": "https://issuer", "aud": "web", "exp": exp}),
        );
        assert!(v.verify(&wrong_aud, None).is_err());
        let no_iss = token(
            "k",
            json!({"preferred_username": "ann", "aud": "mqtt", "exp": exp}),
        );
        assert!(v.verify(&no_iss, None).is_err());
    }

    #[test]
    fn the_key_configuration_must_name_exactly_one_key() {
        let mut c = config("");
        assert!(JwtVerifier::load(&c).is_err(), "empty secret");
        c.secret = None;
        assert!(JwtVerifier::load(&c).is_err(), "no key");
        c.secret = Some("x".to_owned());
        c.public_key_file = Some(PathBuf::from("/nonexistent"));
        assert!(JwtVerifier::load(&c).is_err(), "two keys");
        c.secret = None;
        assert!(matches!(JwtVerifier::load(&c), Err(AuthError::Read { .. })));
    }

    #[test]
    fn only_three_base64url_segments_with_a_jose_header_are_a_jwt() {
        let t = token("k", json!({"sub": "u", "exp": now() + 600}));
        assert!(is_jwt(t.as_bytes()));
        // {"alg":"none"} . {} . sig
        assert!(is_jwt(b"eyJhbGciOiJub25lIn0.e30.c2ln-_"));
        assert!(!is_jwt(b"secret"));
        assert!(!is_jwt(b"correct.horse.battery"), "the shape alone");
        assert!(!is_jwt(b"e30.e30.c2ln"), "a JSON object without alg");
        assert!(!is_jwt(b"eyJh.eyJz.c2ln-_"), "not JSON");
        assert!(!is_jwt(b"a.b"));
        assert!(!is_jwt(b"eyJhbGciOiJub25lIn0.e30.c2ln.d"));
        assert!(!is_jwt(b"eyJhbGciOiJub25lIn0..c2ln"));
        assert!(!is_jwt(b"eyJhbGciOiJub25lIn0.e30.c2ln="));
        assert!(!is_jwt(b"p@ss.w.rd"));
    }
}
