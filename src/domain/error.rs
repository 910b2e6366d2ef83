//! What is wrong with a value from outside, before it reaches any rule or store.

/// A value that cannot be taken as it is. Edges report `Invalid` as `bad_request` and
/// `TooLarge` as `too_large`; precedence between them is the caller's (PROTOCOL §5).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    TooLarge(String),
}

impl DomainError {
    pub fn invalid(msg: impl Into<String>) -> Self {
        DomainError::Invalid(msg.into())
    }
}

pub type DomainResult<T> = Result<T, DomainError>;
