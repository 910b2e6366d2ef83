//! Text values of the contract with rules of their own: message content, usernames, emails.

use serde::{Deserialize, Serialize};

use super::error::{DomainError, DomainResult};

/// Message content: non-empty, no U+0000, at most the configured bytes of UTF-8.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Content(String);

impl Content {
    pub fn parse(s: String, max_bytes: usize) -> DomainResult<Self> {
        if s.is_empty() {
            return Err(DomainError::invalid("content must not be empty"));
        }
        if s.contains('\0') {
            return Err(DomainError::invalid("content must not contain U+0000"));
        }
        if s.len() > max_bytes {
            return Err(DomainError::TooLarge(format!(
                "content is {} bytes, the limit is {max_bytes}",
                s.len()
            )));
        }
        Ok(Content(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// A username: 3 to 32 of `A-Z a-z 0-9 _ - .` (unique without regard to case).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Username(String);

impl Username {
    pub fn parse(s: &str) -> DomainResult<Self> {
        let ok = (3..=32).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if ok {
            Ok(Username(s.to_owned()))
        } else {
            Err(DomainError::invalid(
                "username must be 3 to 32 of A-Z, a-z, 0-9, _, - and .",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An email address, stored lower case. A practical check, not RFC 5322: one `@`, a local part,
/// a dotted domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(s: &str) -> DomainResult<Self> {
        let bad = || DomainError::invalid("email is not a valid address");
        // The limits hold for what is stored: lower case can be longer (`İ` → `i̇`).
        let s = s.to_lowercase();
        if s.len() > 254 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad());
        }
        let (local, domain) = s.split_once('@').ok_or_else(bad)?;
        let domain_ok = domain.contains('.')
            && domain.split('.').all(|l| {
                !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if local.is_empty() || local.len() > 64 || domain.contains('@') || !domain_ok {
            return Err(bad());
        }
        Ok(Email(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_rules() {
        let parse = |s: &str| Content::parse(s.to_owned(), 10);
        assert!(parse("hi").is_ok());
        assert!(matches!(parse(""), Err(DomainError::Invalid(_))));
        assert!(matches!(parse("a\0b"), Err(DomainError::Invalid(_))));
        assert!(matches!(parse("ééééé_"), Err(DomainError::TooLarge(_))));
        assert!(parse("ééééé").is_ok());
    }

    #[test]
    fn usernames_and_emails() {
        assert!(Username::parse("alice_1.x").is_ok());
        assert!(Username::parse("al").is_err());
        assert!(Username::parse("a@b").is_err());
        assert_eq!(
            Email::parse("Al.Ice@Example.ORG").unwrap().as_str(),
            "al.ice@example.org"
        );
        for bad in ["a", "a@b", "@x.io", "a@x..io", "a b@x.io", "a@b@x.io"] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
    }

    /// Found by fuzzing (fuzz/fuzz_targets/domain_values.rs): `İ` is two bytes and its lower
    /// case three, so a 62-byte local part was stored as 92 bytes, past the 64 allowed, and
    /// the stored address was no longer one `parse` accepts.
    #[test]
    fn an_email_is_checked_as_it_is_stored() {
        let long = format!("{}ab@x.io", "\u{130}".repeat(30));
        assert!(Email::parse(&long).is_err());
        let short = Email::parse("\u{130}ab@x.io").unwrap();
        assert_eq!(Email::parse(short.as_str()).as_ref(), Ok(&short));
    }
}
