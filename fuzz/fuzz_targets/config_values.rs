//! Settings (`src/config/`, `Config::from_map`): any values for any of the settings, as the
//! environment would give them.
//! Holds: no panic; a refusal names a real setting and never repeats a secret (the JWT
//! secret, encryption keys, database and Redis URLs); an accepted configuration has every
//! number within its documented range (finite, for rates), and its lists read back.
//! Left out on purpose: `TSUNAGI_CONFIG` and the `…_FILE` variables (they name files to read,
//! tested in the unit tests), and `TSUNAGI_LISTEN` values that need a DNS lookup (slow and
//! outside this process; `ip:port` and malformed values are fuzzed).
#![no_main]

use std::collections::HashMap;
use std::net::SocketAddr;

use base64::Engine;
use libfuzzer_sys::fuzz_target;
use tsunagi::config::{Config, SECRET_SETTINGS, SETTINGS};

/// Whether `TSUNAGI_LISTEN = s` would be looked up in DNS (see `listen_address`).
fn needs_lookup(s: &str) -> bool {
    let s = s.trim();
    s.parse::<SocketAddr>().is_err()
        && s.rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // One setting a line: the first character picks it, the rest is its value.
    let mut env = HashMap::new();
    for line in text.split('\n') {
        let mut chars = line.chars();
        let Some(pick) = chars.next() else { continue };
        let (name, _, _) = SETTINGS[pick as usize % SETTINGS.len()];
        let value = chars.as_str();
        if name == "TSUNAGI_LISTEN" && needs_lookup(value) {
            continue;
        }
        env.insert(name.to_owned(), value.to_owned());
    }
    // The secrets given, as far as they are secret: the key material of encryption keys
    // (their ids are shown by design), the whole value of the others.
    let secrets: Vec<String> = SECRET_SETTINGS
        .iter()
        .filter_map(|name| env.get(*name).map(|v| (*name, v)))
        .flat_map(|(name, v)| {
            if name == "TSUNAGI_ENCRYPTION_KEYS" {
                v.split(',')
                    .filter_map(|e| e.split_once(':').map(|(_, k)| k.trim().to_owned()))
                    .collect()
            } else {
                vec![v.clone()]
            }
        })
        .filter(|v| v.len() >= 16)
        // a secret that is also in another setting's value may be quoted as that one
        .filter(|v| {
            env.iter().all(|(k, other)| {
                SECRET_SETTINGS.contains(&k.as_str()) || !other.contains(v.as_str())
            })
        })
        .collect();

    match Config::from_map(&env) {
        Err(e) => {
            assert!(
                SETTINGS.iter().any(|(n, _, _)| *n == e.name),
                "an error names no setting: {e}"
            );
            let shown = e.to_string();
            for s in &secrets {
                assert!(!shown.contains(s.as_str()), "a secret in an error: {shown}");
            }
        }
        Ok(c) => {
            for (name, rate) in [
                ("send_rate", c.send_rate),
                ("typing_rate", c.typing_rate),
                ("read_rate_kib", c.read_rate_kib),
                ("db_pool_warn_share", c.db_pool_warn_share),
                ("event_rate", c.event_rate),
                ("write_rate", c.write_rate),
                ("login_rate_per_min", c.login_rate_per_min),
                ("sensor_live_rate", c.sensor_live_rate),
            ] {
                assert!(rate.is_finite() && rate >= 0.0, "{name} = {rate}");
            }
            assert!(c.db_pool_warn_share <= 1.0 && c.sensor_live_rate >= 0.01);
            assert!((1..=16 << 20).contains(&c.max_message_bytes));
            assert!(c.jwt_secret.as_ref().is_none_or(|s| s.len() >= 16));
            assert!(!c.is_postgres() || c.jwt_secret.is_some());
            // lists read back through their own syntax
            let proxies: Vec<String> = c.trusted_proxies.iter().map(ToString::to_string).collect();
            let again = Config::from_map(&HashMap::from([(
                "TSUNAGI_TRUSTED_PROXIES".to_owned(),
                proxies.join(","),
            )]))
            .expect("proxies as shown are accepted");
            assert_eq!(again.trusted_proxies, c.trusted_proxies);
            let b64 = base64::engine::general_purpose::STANDARD;
            let keys: Vec<String> = c
                .encryption_keys
                .iter()
                .map(|k| format!("{}:{}", k.id, b64.encode(k.key)))
                .collect();
            let again = Config::from_map(&HashMap::from([(
                "TSUNAGI_ENCRYPTION_KEYS".to_owned(),
                keys.join(","),
            )]))
            .expect("keys as written are accepted");
            assert_eq!(again.encryption_keys, c.encryption_keys);
            // what is shown of the databases carries no password
            for shown in [c.describe_database(), c.describe_cold_storage()] {
                for s in &secrets {
                    if let Ok(u) = url::Url::parse(s)
                        && let Some(p) = u.password().filter(|p| p.len() >= 8)
                    {
                        assert!(!shown.contains(p), "a password shown: {shown}");
                    }
                }
            }
        }
    }
});
