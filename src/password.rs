//! Password hashing (argon2id, PHC strings) and the password policy.
//!
//! Hashing is CPU- and memory-heavy by design, so it runs on a few worker threads of its own —
//! one per core — each with one argon2 working set allocated at start and reused for every hash:
//! a burst of logins costs no memory beyond those, and the allocator is never left holding the
//! peak. At most `queue` hashes wait for a worker; past that a request is refused (`Busy`) at
//! once instead of queueing without bound. Verification compares in constant time (the PHC
//! output's own comparison), and a login for an unknown user verifies against a dummy hash, so
//! both failures cost the same time.

use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};

use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use tokio::sync::oneshot;

use crate::domain::{DomainError, DomainResult};

/// A hash job, run on a worker with its reusable working set.
type Job = Box<dyn FnOnce(&Argon2<'static>, &mut [Block]) + Send>;

pub struct Passwords {
    jobs: SyncSender<Job>,
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    /// Every worker is busy and the queue is full: try again in a moment.
    #[error("too many password checks at once, try again")]
    Busy,
    /// The job failed (argon2 refused, or the worker died): the request may be tried again.
    #[error("could not hash the password, try again")]
    Failed,
}

impl Passwords {
    /// Starts one worker per core; at most `queue` jobs wait for them.
    pub fn new(memory_kib: u32, iterations: u32, queue: usize) -> anyhow::Result<Arc<Self>> {
        let params = Params::new(memory_kib, iterations, 1, None)
            .map_err(|e| anyhow::anyhow!("argon2 parameters: {e}"))?;
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
        let mut memory = vec![Block::default(); params.block_count()];
        let dummy = hash_with(&argon, &mut memory, uuid::Uuid::new_v4().as_bytes())
            .map_err(|_| anyhow::anyhow!("argon2 could not hash"))?;
        drop(memory);
        let (jobs, rx) = sync_channel::<Job>(queue);
        let rx = Arc::new(Mutex::new(rx));
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        for i in 0..cores {
            let (argon, rx) = (argon.clone(), rx.clone());
            let blocks = params.block_count();
            std::thread::Builder::new()
                .name(format!("tsunagi-argon2-{i}"))
                .spawn(move || work(argon, blocks, rx))?;
        }
        Ok(Arc::new(Passwords { jobs, dummy }))
    }

    /// Runs `job` on a worker; `Busy` when the queue is full.
    async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce(&Argon2<'static>, &mut [Block]) -> T + Send + 'static,
    ) -> Result<T, PasswordError> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |argon, memory| {
            tx.send(job(argon, memory)).ok();
        });
        match self.jobs.try_send(job) {
            Ok(()) => rx.await.map_err(|_| PasswordError::Failed),
            Err(TrySendError::Full(_)) => Err(PasswordError::Busy),
            Err(TrySendError::Disconnected(_)) => Err(PasswordError::Failed),
        }
    }

    pub async fn hash(&self, password: String) -> Result<String, PasswordError> {
        self.run(move |argon, memory| hash_with(argon, memory, password.as_bytes()))
            .await?
            .map_err(|_| PasswordError::Failed)
    }

    /// Whether `password` matches `hash`; with no hash (unknown user), spends the same time
    /// and answers false.
    pub async fn verify(
        &self,
        password: String,
        hash: Option<String>,
    ) -> Result<bool, PasswordError> {
        let known = hash.is_some();
        let stored = hash.unwrap_or_else(|| self.dummy.clone());
        self.run(move |_, memory| verify_with(memory, password.as_bytes(), &stored) && known)
            .await
    }
}

/// A worker: takes jobs until the pool is dropped, always with the same working set.
fn work(argon: Argon2<'static>, blocks: usize, jobs: Arc<Mutex<Receiver<Job>>>) {
    let mut memory = vec![Block::default(); blocks];
    loop {
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        job(&argon, &mut memory);
    }
}

/// The PHC string of `password` under a fresh random salt, computed in `memory`.
fn hash_with(argon: &Argon2<'_>, memory: &mut [Block], password: &[u8]) -> Result<String, ()> {
    let salt_bytes: [u8; 16] = rand::random();
    let salt = Salt::new(&salt_bytes).map_err(|_| ())?;
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    argon
        .hash_password_into_with_memory(password, salt.as_ref(), &mut out, &mut *memory)
        .map_err(|_| ())?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(argon.params()).map_err(|_| ())?,
        salt: Some(salt),
        hash: Some(Output::new(&out).map_err(|_| ())?),
    };
    Ok(phc.to_string())
}

/// Whether `password` hashes to the PHC string `stored` (its own parameters and salt), in
/// `memory` when the parameters fit it; compared in constant time.
fn verify_with(memory: &mut [Block], password: &[u8], stored: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(stored) else {
        return false;
    };
    let (Some(salt), Some(expected), Ok(params)) =
        (&parsed.salt, &parsed.hash, Params::try_from(&parsed))
    else {
        return false;
    };
    let hasher = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let mut out = vec![0u8; expected.len()];
    let done = if params.block_count() <= memory.len() {
        hasher.hash_password_into_with_memory(
            password,
            salt.as_ref(),
            &mut out,
            &mut memory[..params.block_count()],
        )
    } else {
        // stored under larger parameters than today's: a one-off allocation
        hasher.hash_password_into(password, salt.as_ref(), &mut out)
    };
    done.is_ok() && Output::new(&out).is_ok_and(|o| &o == expected)
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
        let p = Passwords::new(256, 1, 8).unwrap();
        let h = p.hash("a fine passphrase".into()).await.unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=256,t=1,p=1$"), "{h}");
        assert!(
            p.verify("a fine passphrase".into(), Some(h.clone()))
                .await
                .unwrap()
        );
        assert!(
            !p.verify("a fine passphrasE".into(), Some(h.clone()))
                .await
                .unwrap()
        );
        assert!(!p.verify("anything".into(), None).await.unwrap());
        // hashes made by the argon2 crate's own hasher (older tsunagi) still verify
        use argon2::password_hash::PasswordHasher;
        let argon = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(512, 1, 1, None).unwrap(),
        );
        let old = argon
            .hash_password(b"older passphrase")
            .unwrap()
            .to_string();
        assert!(
            p.verify("older passphrase".into(), Some(old.clone()))
                .await
                .unwrap()
        );
        assert!(
            !p.verify("older passphrasE".into(), Some(old))
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn past_the_queue_a_check_is_refused_busy_at_once() {
        let p = Passwords::new(8192, 3, 1).unwrap();
        let checks = (0..40).map(|i| p.verify(format!("pw{i}"), None));
        let answers = futures::future::join_all(checks).await;
        let busy = answers
            .iter()
            .filter(|a| **a == Err(PasswordError::Busy))
            .count();
        assert!(busy > 0, "40 at once with a queue of 1 were all taken");
        assert!(answers.contains(&Ok(false)), "none ran");
    }
}
