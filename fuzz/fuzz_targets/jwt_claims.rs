//! The claims of a correctly signed token (`src/auth.rs`): whatever JSON an application's
//! backend puts in a token signed with the shared secret, under any header.
//! Holds: no panic; a token is admitted only with a `sub` of 1 to 128 characters without
//! U+0000, a numeric `exp` in the future, no `nbf` in the future, a `role` of user or admin (or
//! none) and HS256; a refusal is `invalid_token` or `token_expired`; what `mint` makes for a
//! valid `sub` verifies to the same identity.
#![no_main]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tsunagi::auth::{AuthCode, Tokens};
use tsunagi::domain::UserId;

const SECRET: &[u8] = b"fuzzing-secret-fuzzing-secret-32";

fn sign(header: &[u8], claims: &[u8]) -> String {
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET).expect("any key length");
    mac.update(signing_input.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signing_input}.{signature}")
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fuzz_target!(|data: &[u8]| {
    let tokens = Tokens::new(SECRET);
    // The first byte picks the header; the rest are the claims, as signed bytes.
    let Some((&pick, claims)) = data.split_first() else {
        return;
    };
    let header: &[u8] = match pick % 4 {
        0 => br#"{"alg":"HS256","typ":"JWT"}"#,
        1 => br#"{"alg":"HS256"}"#,
        2 => br#"{"alg":"none","typ":"JWT"}"#,
        _ => br#"{"alg":"HS384","typ":"JWT"}"#,
    };
    let token = sign(header, claims);
    match tokens.verify(&token) {
        Ok(id) => {
            assert!(
                pick % 4 < 2,
                "admitted under {}",
                String::from_utf8_lossy(header)
            );
            assert!(UserId::parse(&id.user_id).is_ok(), "sub {:?}", id.user_id);
            // Claims the library skips are not checked for UTF-8 or lone surrogates (signed
            // by the key holder, and never read): read the rest as a lenient reader would.
            let Ok(c) = serde_json::from_str::<Value>(&String::from_utf8_lossy(claims)) else {
                return;
            };
            assert_eq!(c["sub"].as_str(), Some(id.user_id.as_str()));
            let exp = c["exp"].as_f64().expect("admitted without a numeric exp");
            assert!(exp > now() - 5.0, "admitted with exp {exp}");
            if let Some(nbf) = c.get("nbf").filter(|v| !v.is_null()) {
                assert!(nbf.as_f64().is_some_and(|n| n <= now() + 5.0), "nbf {nbf}");
            }
            let role = c.get("role").filter(|v| !v.is_null());
            assert_eq!(id.admin, role == Some(&Value::from("admin")));
            assert!(
                role.is_none_or(|r| r == "user" || r == "admin"),
                "role {role:?}"
            );
        }
        Err(e) => assert!(
            matches!(e.code, AuthCode::InvalidToken | AuthCode::TokenExpired),
            "{:?}",
            e.code
        ),
    }

    // mint → verify is the identity for any sub the contract allows.
    if let Ok(text) = std::str::from_utf8(claims) {
        let (sub, name) = text.split_once('\u{1}').unwrap_or((text, ""));
        let name = (!name.is_empty()).then_some(name);
        let minted = tokens.mint(sub, pick & 1 == 1, name, 3600);
        match tokens.verify(&minted) {
            Ok(id) => {
                assert_eq!(id.user_id, sub);
                assert_eq!(id.admin, pick & 1 == 1);
                assert_eq!(id.name.as_deref(), name);
            }
            Err(e) => assert!(
                UserId::parse(sub).is_err(),
                "minted for {sub:?}, refused: {e}"
            ),
        }
    }
});
