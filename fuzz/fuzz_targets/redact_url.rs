//! `config::redact_url`, which makes every database and Redis URL fit for a log and for
//! `check-config`: no password, no query parameters (PROTOCOL §7: "no secret, token, password
//! or query parameter is ever written to a log").
//! Holds: no panic; no `?` (the start of the query) is in the output; for a URL the settings
//! accept (`postgres…`, `sqlite:`, `redis://`, `rediss://`) from which a URL parser reads a
//! password, that password (as written, or percent-decoded) is not in the output when it
//! appears nowhere else in the URL.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tsunagi::config::redact_url;

fuzz_target!(|data: &[u8]| {
    let Ok(url) = std::str::from_utf8(data) else {
        return;
    };
    let shown = redact_url(url);
    assert!(!shown.contains('?'), "{url:?} → {shown:?}");
    let accepted = ["postgres", "sqlite:", "redis://", "rediss://"]
        .iter()
        .any(|s| url.starts_with(s));
    let Ok(parsed) = url::Url::parse(url) else {
        return;
    };
    let Some(p) = parsed.password().filter(|_| accepted) else {
        return;
    };
    let decoded = percent_encoding::percent_decode_str(p)
        .decode_utf8_lossy()
        .into_owned();
    for secret in [p.to_owned(), decoded] {
        if secret.len() >= 4 && url.matches(secret.as_str()).count() == 1 {
            assert!(
                !shown.contains(&secret),
                "password kept: {url:?} → {shown:?}"
            );
        }
    }
});
