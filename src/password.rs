//! Password hashing (argon2id, PHC strings) and the password policy.
//!
//! Hashing is CPU- and memory-heavy by design, so it runs on the blocking pool, at most one
//! hash per core at a time (a burst of logins queues instead of exhausting memory).
//! Verification compares in constant time (the argon2 crate's `verify_password`), and a login
//! for an unknown user verifies against a dummy hash, so both failures cost the same time.

use std::sync::Arc;

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

use crate::domain::{DomainError, DomainResult};

pub struct Passwords {
    argon: Argon2<'static>,
    permits: Arc<Semaphore>,
    /// A hash of a random password: what an unknown login is verified against.
    dummy: String,
}

/// Passwords nobody should be allowed to pick (NIST SP 800-63B: refuse known-compromised
/// values); the length rule already removes the shorter classics.
const COMMON: &[&str] = &[
    "password",
    "password1",
    "password12",
    "password123",
    "password1234",
    "passw0rd",
    "p@ssw0rd",
    "p@ssword",
    "12345678",
    "123456789",
    "1234567890",
    "123123123",
    "987654321",
    "11111111",
    "00000000",
    "qwertyui",
    "qwertyuiop",
    "qwerty123",
    "qwerty1234",
    "1q2w3e4r",
    "1qaz2wsx",
    "zaq12wsx",
    "asdfghjk",
    "asdfghjkl",
    "zxcvbnm1",
    "iloveyou",
    "iloveyou1",
    "sunshine",
    "princess",
    "football",
    "baseball",
    "superman",
    "trustno1",
    "welcome1",
    "welcome123",
    "letmein1",
    "letmein123",
    "abc12345",
    "abcd1234",
    "admin123",
    "admin1234",
    "administrator",
    "changeme",
    "changeme123",
    "starwars",
    "dragon123",
    "monkey123",
    "master123",
    "whatever",
    "computer",
    "internet",
    "michael1",
    "jennifer",
    "charlie1",
];

/// The policy (README, "Accounts"): 8 to 128 characters, not a known common password, not one
/// repeated character, and not containing the username or the email's local part.
pub fn check_policy(password: &str, username: &str, email: &str) -> DomainResult<()> {
    let n = password.chars().count();
    if n < 8 {
        return Err(DomainError::invalid(
            "password must be at least 8 characters",
        ));
    }
    if n > 128 {
        return Err(DomainError::invalid(
            "password must be at most 128 characters",
        ));
    }
    let lower = password.to_lowercase();
    if COMMON.contains(&lower.as_str()) {
        return Err(DomainError::invalid("password is too common"));
    }
    let mut chars = password.chars();
    let first = chars.next();
    if chars.all(|c| Some(c) == first) {
        return Err(DomainError::invalid(
            "password must not be one repeated character",
        ));
    }
    let local = email.split('@').next().unwrap_or("").to_lowercase();
    for part in [username.to_lowercase(), local] {
        if part.chars().count() >= 3 && lower.contains(&part) {
            return Err(DomainError::invalid(
                "password must not contain the username or email",
            ));
        }
    }
    Ok(())
}

/// Hashing failed (the job panicked or argon2 refused): the request may be tried again.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("could not hash the password, try again")]
pub struct HashFailed;

impl Passwords {
    pub fn new(memory_kib: u32, iterations: u32) -> anyhow::Result<Arc<Self>> {
        let params = Params::new(memory_kib, iterations, 1, None)
            .map_err(|e| anyhow::anyhow!("argon2 parameters: {e}"))?;
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let random = uuid::Uuid::new_v4().to_string();
        let dummy = argon
            .hash_password(random.as_bytes())
            .map_err(|e| anyhow::anyhow!("argon2: {e}"))?
            .to_string();
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Ok(Arc::new(Passwords {
            argon,
            permits: Arc::new(Semaphore::new(cores)),
            dummy,
        }))
    }

    /// Runs `job` on the blocking pool under a core permit; `None` if the job panicked. The
    /// permit moves into the job: a cancelled request does not free the core early.
    async fn on_a_core<T: Send + 'static>(
        self: &Arc<Self>,
        job: impl FnOnce(&Passwords) -> T + Send + 'static,
    ) -> Option<T> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("never closed");
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            job(&me)
        })
        .await
        .ok()
    }

    pub async fn hash(self: &Arc<Self>, password: String) -> Result<String, HashFailed> {
        self.on_a_core(move |me| {
            me.argon
                .hash_password(password.as_bytes())
                .map(|h| h.to_string())
        })
        .await
        .and_then(Result::ok)
        .ok_or(HashFailed)
    }

    /// True if `password` matches `hash`; with no hash (unknown user), spends the same time
    /// and answers false.
    pub async fn verify(self: &Arc<Self>, password: String, hash: Option<String>) -> bool {
        self.on_a_core(move |me| {
            let known = hash.is_some();
            let stored = hash.unwrap_or_else(|| me.dummy.clone());
            let Ok(parsed) = PasswordHash::new(&stored) else {
                return false;
            };
            me.argon
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
                && known
        })
        .await
        .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy() {
        assert!(check_policy("correct horse battery", "alice", "a@x.io").is_ok());
        let weak = [
            "short1!",
            "password123",
            "PassWord123",
            "aaaaaaaaaa",
            "xxalice-secretxx",
            "myalicemail-2",
        ];
        for pw in weak {
            let e = check_policy(pw, "alice", "alicemail@x.io").unwrap_err();
            assert!(matches!(e, DomainError::Invalid(_)), "{pw}");
        }
        assert!(check_policy(&"é1".repeat(65), "bob", "b@x.io").is_err());
    }

    #[tokio::test]
    async fn hash_and_verify() {
        let p = Passwords::new(256, 1).unwrap();
        let h = p.hash("a fine passphrase".into()).await.unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(p.verify("a fine passphrase".into(), Some(h.clone())).await);
        assert!(!p.verify("a fine passphrasE".into(), Some(h)).await);
        assert!(!p.verify("anything".into(), None).await);
    }
}
