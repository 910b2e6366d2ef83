//! Encryption at rest (PROTOCOL.md §7, `TSUNAGI_ENCRYPTION_KEYS`): message `content`, state
//! `value` and job payloads (webhook deliveries carry MESSAGE and STATE) are sealed with
//! AES-256-GCM before they reach a database and opened when they are read back, at the store
//! boundary: the rest of the app never sees ciphertext.
//!
//! Stored form: the existing column holds `base64(nonce ‖ ciphertext ‖ tag)` (a fresh random
//! 96-bit nonce per value) and a nullable column beside it the key id (`NULL`: plaintext,
//! written before encryption was on). A separate column, not a prefix in the text: a client's
//! content could otherwise be forged to look sealed.
//!
//! Each value is bound (AEAD associated data) to what it is and where it lives — a message to
//! its room and id, a state value to its room and key, a job payload to its job id — so a
//! ciphertext copied into another row does not open. These never change when a row is archived
//! or rekeyed, so neither has to open a value to move it.
//!
//! Layout: `mod.rs` the sealer; `rekey.rs` the `tsunagi rekey` pass; the stores keep the key ids
//! in use in a small table (the start check reads it, see [`check_keys_in_use`]).

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use crate::config::EncryptionKey;
use crate::domain::{Message, State};

pub mod rekey;

const NONCE_BYTES: usize = 12;

/// What went wrong opening a stored value (never carries key material or plaintext).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error(
        "a stored value is sealed under key id {0}, which TSUNAGI_ENCRYPTION_KEYS does not list"
    )]
    UnknownKey(String),
    #[error("a stored value under key id {0} does not authenticate (tampered, or moved)")]
    Tampered(String),
    #[error("a stored value under key id {0} is not base64 of nonce and ciphertext")]
    Malformed(String),
}

/// What a sealed value is and where it lives: the associated data it is bound to.
#[derive(Debug, Clone, Copy)]
pub enum Binding<'a> {
    Message { room: &'a str, id: &'a str },
    State { room: &'a str, key: &'a str },
    Job { id: &'a str },
}

impl Binding<'_> {
    fn aad(&self) -> Vec<u8> {
        // NUL-separated: room ids, keys and ids never hold NUL, so parts cannot run together
        let parts: &[&str] = match self {
            Binding::Message { room, id } => &["tsunagi/message", room, id],
            Binding::State { room, key } => &["tsunagi/state", room, key],
            Binding::Job { id } => &["tsunagi/job", id],
        };
        parts.join("\0").into_bytes()
    }
}

/// A value as stored: `key_id` None = plaintext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub key_id: Option<String>,
    pub text: String,
}

/// The configured keys, the first current; none = encryption off (values stored as given, and
/// only plaintext ones can be read).
pub struct Sealer {
    keys: Vec<(String, Aes256Gcm)>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.key_ids().collect();
        write!(f, "Sealer({ids:?})")
    }
}

impl Sealer {
    pub fn new(keys: &[EncryptionKey]) -> Sealer {
        Sealer {
            keys: keys
                .iter()
                .map(|k| (k.id.clone(), Aes256Gcm::new(&k.key.into())))
                .collect(),
        }
    }

    /// Encryption off.
    pub fn off() -> Sealer {
        Sealer { keys: Vec::new() }
    }

    /// The key new values are sealed under (None: stored as plaintext).
    pub fn current(&self) -> Option<&str> {
        self.keys.first().map(|(id, _)| id.as_str())
    }

    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|(id, _)| id.as_str())
    }

    pub fn knows(&self, key_id: &str) -> bool {
        self.keys.iter().any(|(id, _)| id == key_id)
    }

    /// `plaintext` as it is to be stored: sealed under the current key, or as it is when off.
    pub fn seal(&self, what: Binding<'_>, plaintext: &str) -> Stored {
        let Some((id, cipher)) = self.keys.first() else {
            return Stored {
                key_id: None,
                text: plaintext.to_owned(),
            };
        };
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let aad = what.aad();
        let sealed = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: &aad,
                },
            )
            .expect("AES-GCM seals any input under 64 GiB");
        let mut bytes = Vec::with_capacity(NONCE_BYTES + sealed.len());
        bytes.extend_from_slice(&nonce);
        bytes.extend_from_slice(&sealed);
        Stored {
            key_id: Some(id.clone()),
            text: B64.encode(bytes),
        }
    }

    /// The plaintext of a stored value (`key_id` None: it is the text itself).
    pub fn open(
        &self,
        what: Binding<'_>,
        key_id: Option<&str>,
        text: String,
    ) -> Result<String, SealError> {
        let Some(key_id) = key_id else {
            return Ok(text);
        };
        let (_, cipher) = self
            .keys
            .iter()
            .find(|(id, _)| id == key_id)
            .ok_or_else(|| SealError::UnknownKey(key_id.to_owned()))?;
        let bytes = B64
            .decode(text.as_bytes())
            .ok()
            .filter(|b| b.len() >= NONCE_BYTES + 16)
            .ok_or_else(|| SealError::Malformed(key_id.to_owned()))?;
        let (nonce, sealed) = bytes.split_at(NONCE_BYTES);
        let nonce: [u8; NONCE_BYTES] = nonce.try_into().expect("split at the nonce's length");
        let aad = what.aad();
        let plain = cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: sealed,
                    aad: &aad,
                },
            )
            .map_err(|_| SealError::Tampered(key_id.to_owned()))?;
        String::from_utf8(plain).map_err(|_| SealError::Tampered(key_id.to_owned()))
    }

    /// A message read with its content as stored, opened.
    pub fn open_message(&self, stored: StoredMessage) -> Result<Message, SealError> {
        let StoredMessage {
            mut message,
            content_key,
        } = stored;
        let what = Binding::Message {
            room: &message.room,
            id: &message.id,
        };
        let content = self.open(
            what,
            content_key.as_deref(),
            std::mem::take(&mut message.content),
        )?;
        message.content = content;
        Ok(message)
    }

    /// A new message's content as it is to be stored.
    pub fn seal_message(&self, m: &Message) -> Stored {
        self.seal(
            Binding::Message {
                room: &m.room,
                id: &m.id,
            },
            &m.content,
        )
    }

    /// A state value (JSON) as it is to be stored: sealed, the JSON text under the key.
    pub fn seal_state(&self, s: &State) -> Stored {
        self.seal(
            Binding::State {
                room: &s.room,
                key: &s.key,
            },
            &s.value.to_string(),
        )
    }

    /// A state value's JSON from its stored text.
    pub fn open_state(
        &self,
        room: &str,
        key: &str,
        key_id: Option<&str>,
        text: String,
    ) -> Result<serde_json::Value, SealError> {
        let json = self.open(Binding::State { room, key }, key_id, text)?;
        serde_json::from_str(&json)
            .map_err(|_| SealError::Malformed(key_id.unwrap_or("none").into()))
    }

    /// A job payload as it is to be stored.
    pub fn seal_job(&self, id: &str, payload: &serde_json::Value) -> Stored {
        self.seal(Binding::Job { id }, &payload.to_string())
    }

    pub fn open_job(
        &self,
        id: &str,
        key_id: Option<&str>,
        text: String,
    ) -> Result<serde_json::Value, SealError> {
        let json = self.open(Binding::Job { id }, key_id, text)?;
        serde_json::from_str(&json)
            .map_err(|_| SealError::Malformed(key_id.unwrap_or("none").into()))
    }
}

/// A message row as stored: `message.content` is the stored text (sealed when `content_key` is
/// set). The archiver moves these as they are; reads open them ([`Sealer::open_message`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    pub message: Message,
    pub content_key: Option<String>,
}

impl std::ops::Deref for StoredMessage {
    type Target = Message;
    fn deref(&self) -> &Message {
        &self.message
    }
}

/// The start check: every key id the database has values under must be configured. `in_use` is
/// the stores' registry of key ids (kept by writes and by `tsunagi rekey`), so this reads one
/// small table, never the big ones.
pub fn check_keys_in_use(sealer: &Sealer, in_use: &[String]) -> anyhow::Result<()> {
    let missing: Vec<&str> = in_use
        .iter()
        .map(String::as_str)
        .filter(|id| !sealer.knows(id))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let configured: Vec<&str> = sealer.key_ids().collect();
    anyhow::bail!(
        "the database holds values encrypted under key id{} {}, which TSUNAGI_ENCRYPTION_KEYS \
         does not list (configured: {}); add {} to TSUNAGI_ENCRYPTION_KEYS (after the current \
         key) and start again",
        if missing.len() > 1 { "s" } else { "" },
        missing.join(", "),
        if configured.is_empty() {
            "none".to_owned()
        } else {
            configured.join(", ")
        },
        if missing.len() > 1 { "them" } else { "it" },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str, byte: u8) -> EncryptionKey {
        EncryptionKey {
            id: id.into(),
            key: [byte; 32],
        }
    }

    const M: Binding<'static> = Binding::Message {
        room: "lobby",
        id: "m1",
    };

    #[test]
    fn a_sealed_value_opens_to_what_was_sealed() {
        let s = Sealer::new(&[key("k1", 1)]);
        let stored = s.seal(M, "hello ünïcode");
        assert_eq!(stored.key_id.as_deref(), Some("k1"));
        assert!(!stored.text.contains("hello"));
        assert_eq!(s.open(M, Some("k1"), stored.text).unwrap(), "hello ünïcode");
        // plaintext rows (written before encryption) read as they are
        assert_eq!(s.open(M, None, "plain".into()).unwrap(), "plain");
        // off: stored as given
        let off = Sealer::off().seal(M, "x");
        assert_eq!((off.key_id, off.text.as_str()), (None, "x"));
    }

    #[test]
    fn older_keys_still_open_and_unknown_ones_are_named() {
        let old = Sealer::new(&[key("k1", 1)]);
        let stored = old.seal(M, "v");
        let rotated = Sealer::new(&[key("k2", 2), key("k1", 1)]);
        assert_eq!(rotated.current(), Some("k2"));
        assert_eq!(
            rotated.open(M, Some("k1"), stored.text.clone()).unwrap(),
            "v"
        );
        let without = Sealer::new(&[key("k2", 2)]);
        assert_eq!(
            without.open(M, Some("k1"), stored.text),
            Err(SealError::UnknownKey("k1".into()))
        );
    }

    #[test]
    fn a_wrong_key_under_the_same_id_does_not_open() {
        let stored = Sealer::new(&[key("k1", 1)]).seal(M, "v");
        let other = Sealer::new(&[key("k1", 9)]);
        assert_eq!(
            other.open(M, Some("k1"), stored.text),
            Err(SealError::Tampered("k1".into()))
        );
    }

    #[test]
    fn tampered_or_moved_ciphertext_does_not_open() {
        let s = Sealer::new(&[key("k1", 1)]);
        let stored = s.seal(M, "secret");
        let mut bytes = B64.decode(&stored.text).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(matches!(
            s.open(M, Some("k1"), B64.encode(&bytes)),
            Err(SealError::Tampered(_))
        ));
        // the same ciphertext in another room, another message, or as a state value
        let elsewhere = Binding::Message {
            room: "other",
            id: "m1",
        };
        assert!(s.open(elsewhere, Some("k1"), stored.text.clone()).is_err());
        let state = Binding::State {
            room: "lobby",
            key: "m1",
        };
        assert!(s.open(state, Some("k1"), stored.text.clone()).is_err());
        assert!(matches!(
            s.open(M, Some("k1"), "not base64!".into()),
            Err(SealError::Malformed(_))
        ));
        assert!(matches!(
            s.open(M, Some("k1"), "AAAA".into()),
            Err(SealError::Malformed(_))
        ));
    }

    #[test]
    fn every_seal_takes_a_fresh_nonce() {
        let s = Sealer::new(&[key("k1", 1)]);
        let nonces: std::collections::HashSet<Vec<u8>> = (0..1000)
            .map(|_| B64.decode(s.seal(M, "same").text).unwrap()[..NONCE_BYTES].to_vec())
            .collect();
        assert_eq!(nonces.len(), 1000);
    }

    #[test]
    fn state_and_job_values_round_trip_as_json() {
        let s = Sealer::new(&[key("k1", 1)]);
        let value = serde_json::json!({"board": [1, 2, "x"]});
        let job = s.seal_job("j1", &value);
        assert_eq!(
            s.open_job("j1", job.key_id.as_deref(), job.text).unwrap(),
            value
        );
        let st = s.seal(
            Binding::State {
                room: "r",
                key: "k",
            },
            &value.to_string(),
        );
        assert_eq!(
            s.open_state("r", "k", st.key_id.as_deref(), st.text)
                .unwrap(),
            value
        );
    }

    /// The CPU cost of one seal and one open of a 100-byte content (docs/benchmarks.md, "Encryption at rest"):
    /// `cargo test --release --lib seal_cost -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn seal_cost() {
        let s = Sealer::new(&[key("k1", 1)]);
        let content = "x".repeat(100);
        let n = 200_000;
        let started = std::time::Instant::now();
        let sealed: Vec<Stored> = (0..n).map(|_| s.seal(M, &content)).collect();
        let seal = started.elapsed();
        let started = std::time::Instant::now();
        for v in sealed {
            assert_eq!(s.open(M, v.key_id.as_deref(), v.text).unwrap().len(), 100);
        }
        let open = started.elapsed();
        println!(
            "100 B: seal {:.2} µs, open {:.2} µs",
            seal.as_secs_f64() * 1e6 / n as f64,
            open.as_secs_f64() * 1e6 / n as f64
        );
    }

    #[test]
    fn the_start_check_names_the_missing_key() {
        let s = Sealer::new(&[key("k3", 3)]);
        let e = check_keys_in_use(&s, &["k2".into(), "k3".into()]).unwrap_err();
        assert!(e.to_string().contains("key id k2"), "{e}");
        assert!(check_keys_in_use(&s, &["k3".into()]).is_ok());
        let e = check_keys_in_use(&Sealer::off(), &["k1".into()]).unwrap_err();
        assert!(e.to_string().contains("k1") && e.to_string().contains("none"));
    }
}
