//! Identity (PROTOCOL.md §2): HS256 JWTs, checked the same way for Socket.IO and HTTP.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};

use crate::domain::UserId;

/// The connect / 401 codes of §3 and §5.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthCode {
    AuthRequired,
    InvalidToken,
    TokenExpired,
}

impl AuthCode {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthCode::AuthRequired => "auth_required",
            AuthCode::InvalidToken => "invalid_token",
            AuthCode::TokenExpired => "token_expired",
        }
    }
}

/// A token that does not admit its bearer, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct AuthError {
    pub code: AuthCode,
    pub message: String,
}

fn refused(code: AuthCode, message: &str) -> AuthError {
    AuthError {
        code,
        message: message.to_owned(),
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    /// A NumericDate (RFC 7519): seconds, with or without a fraction (`time.time() + 3600`).
    pub exp: NumericDate,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<NumericDate>,
    /// When the token was issued: a role changed after it is not in its `role` claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<NumericDate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Seconds since the epoch as JSON writes them: an integer or a fraction.
pub type NumericDate = serde_json::Number;

fn seconds(n: &NumericDate) -> f64 {
    n.as_f64().unwrap_or(f64::NAN)
}

/// Who is calling, from a verified token.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    pub user_id: String,
    pub admin: bool,
    pub name: Option<String>,
    /// The token's `iat` (seconds since the epoch), when it has a numeric one.
    pub issued_at: Option<f64>,
}

#[derive(Clone)]
pub struct Tokens {
    encoding: Arc<EncodingKey>,
    decoding: Arc<DecodingKey>,
    validation: Arc<Validation>,
}

impl Tokens {
    pub fn new(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        // exp and nbf are checked in `verify`: the library takes only whole seconds, and RFC
        // 7519 allows fractions. A missing exp still fails, as `Claims::exp` is required.
        validation.set_required_spec_claims(&["sub"]);
        validation.leeway = 0;
        validation.validate_exp = false;
        validation.validate_nbf = false;
        Tokens {
            encoding: Arc::new(EncodingKey::from_secret(secret)),
            decoding: Arc::new(DecodingKey::from_secret(secret)),
            validation: Arc::new(validation),
        }
    }

    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => {
                    refused(AuthCode::TokenExpired, "the token has expired")
                }
                _ => refused(AuthCode::InvalidToken, "the token is not valid"),
            })?;
        let c = data.claims;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let exp = seconds(&c.exp);
        if exp.is_nan() {
            return Err(refused(
                AuthCode::InvalidToken,
                "the token's exp is not a number",
            ));
        }
        if now >= exp {
            return Err(refused(AuthCode::TokenExpired, "the token has expired"));
        }
        // a nbf that is not a number, or later than now, is not valid yet
        if c.nbf
            .as_ref()
            .is_some_and(|nbf| seconds(nbf).is_nan() || seconds(nbf) > now)
        {
            return Err(refused(
                AuthCode::InvalidToken,
                "the token is not valid yet",
            ));
        }
        if UserId::parse(&c.sub).is_err() {
            return Err(refused(
                AuthCode::InvalidToken,
                "the token's sub must be 1 to 128 characters",
            ));
        }
        let admin = match c.role.as_deref() {
            None | Some("user") => false,
            Some("admin") => true,
            Some(_) => {
                return Err(refused(
                    AuthCode::InvalidToken,
                    "the token's role must be user or admin",
                ));
            }
        };
        Ok(Identity {
            user_id: c.sub,
            admin,
            name: c.name,
            issued_at: c.iat.as_ref().map(seconds).filter(|t| t.is_finite()),
        })
    }

    pub fn mint(&self, sub: &str, admin: bool, name: Option<&str>, ttl_secs: u64) -> String {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = Claims {
            sub: sub.to_owned(),
            exp: (now + ttl_secs).into(),
            nbf: None,
            iat: Some(now.into()),
            role: Some(if admin { "admin" } else { "user" }.to_owned()),
            name: name.map(str::to_owned),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 encoding of plain claims cannot fail")
    }
}

/// The secret kept in the data directory when none is configured (SQLite only): made once,
/// mode 0600, reused on every start so tokens survive restarts.
pub fn load_or_create_secret(data_dir: &Path) -> anyhow::Result<String> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(data_dir)?;
    let path = data_dir.join("jwt_secret");
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_owned()),
        Ok(_) => anyhow::bail!(
            "{} is empty: delete it to generate a new secret",
            path.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    let secret = hex::encode(rand::random::<[u8; 32]>());
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    f.write_all(secret.as_bytes())?;
    f.sync_all()?;
    Ok(secret)
}

/// Parses `30s`, `15m`, `1h`, `7d` or plain seconds.
pub fn parse_ttl(s: &str) -> Result<u64, String> {
    crate::domain::parse_duration(s)
        .map(|d| d.as_secs())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let t = Tokens::new(b"0123456789abcdef0123456789abcdef");
        let tok = t.mint("alice", true, Some("Alice"), 60);
        let id = t.verify(&tok).unwrap();
        assert_eq!(id.user_id, "alice");
        assert!(id.admin);

        let other = Tokens::new(b"another-secret-another-secret!!");
        assert_eq!(
            other.verify(&tok).unwrap_err().code.as_str(),
            "invalid_token"
        );
        assert_eq!(
            t.verify("garbage").unwrap_err().code.as_str(),
            "invalid_token"
        );

        // alg: none
        let header = hex_free_b64(r#"{"alg":"none","typ":"JWT"}"#);
        let body = hex_free_b64(r#"{"sub":"alice","exp":9999999999}"#);
        assert_eq!(
            t.verify(&format!("{header}.{body}."))
                .unwrap_err()
                .code
                .as_str(),
            "invalid_token"
        );

        let expired = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &Claims {
                sub: "a".into(),
                exp: 1.into(),
                nbf: None,
                iat: None,
                role: None,
                name: None,
            },
            &EncodingKey::from_secret(b"0123456789abcdef0123456789abcdef"),
        )
        .unwrap();
        assert_eq!(
            t.verify(&expired).unwrap_err().code.as_str(),
            "token_expired"
        );
    }

    #[test]
    fn fractional_dates_are_numeric_dates_and_exp_is_required() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let t = Tokens::new(secret);
        let sign = |claims: serde_json::Value| {
            jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &claims,
                &EncodingKey::from_secret(secret),
            )
            .unwrap()
        };
        let now = jsonwebtoken::get_current_timestamp() as f64;
        let code = |tok: String| {
            t.verify(&tok)
                .map(|i| i.user_id)
                .map_err(|e| e.code.as_str())
        };
        assert_eq!(
            code(sign(
                serde_json::json!({ "sub": "a", "exp": now + 3600.25 })
            )),
            Ok("a".into())
        );
        assert_eq!(
            code(sign(serde_json::json!({ "sub": "a", "exp": now - 0.5 }))),
            Err("token_expired")
        );
        assert_eq!(
            code(sign(
                serde_json::json!({ "sub": "a", "exp": now + 60.0, "nbf": now + 30.5 })
            )),
            Err("invalid_token")
        );
        assert_eq!(
            code(sign(
                serde_json::json!({ "sub": "a", "exp": now + 60.0, "nbf": now - 1.5 })
            )),
            Ok("a".into())
        );
        assert_eq!(
            code(sign(serde_json::json!({ "sub": "a" }))),
            Err("invalid_token")
        );
        assert_eq!(
            code(sign(serde_json::json!({ "sub": "a", "exp": "soon" }))),
            Err("invalid_token")
        );
    }

    fn hex_free_b64(s: &str) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
    }

    #[test]
    fn ttl() {
        assert_eq!(parse_ttl("1h").unwrap(), 3600);
        assert_eq!(parse_ttl("90").unwrap(), 90);
        assert!(parse_ttl("1y").is_err());
    }
}
