//! Token verification (`src/auth.rs`, `Tokens::verify`) over any text a client can put in
//! `auth.token` or `Authorization: Bearer`.
//! Holds: no panic; a refusal is `invalid_token` or `token_expired` and never quotes the
//! token; text that is not signed with the key is never accepted.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tsunagi::auth::{AuthCode, Tokens};

const SECRET: &[u8] = b"fuzzing-secret-fuzzing-secret-32";

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let tokens = Tokens::new(SECRET);
    match tokens.verify(token) {
        Ok(id) => panic!("an unsigned token was accepted: {id:?}"),
        Err(e) => {
            assert!(
                matches!(e.code, AuthCode::InvalidToken | AuthCode::TokenExpired),
                "{:?}",
                e.code
            );
            // (a token has dots, the refusals none: a shorter text may be a word of them)
            if token.len() >= 8 && token.contains('.') {
                assert!(!e.message.contains(token), "the refusal quotes the token");
            }
        }
    }
});
