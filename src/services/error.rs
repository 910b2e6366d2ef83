//! What a service call can fail with. The edges (`http`, `gateway`) turn it into the contract's
//! code and status, once (the edges' `ApiError`); services never know either.

use crate::auth::AuthCode;
use crate::domain::DomainError;
use crate::store::StoreError;

/// The order of the variants is the contract's precedence (§5 "Everywhere"): when several
/// apply, the caller reports the first.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ServiceError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Forbidden(String),
    /// Try again after this many milliseconds.
    #[error("rate limited")]
    RateLimited(u64),
    /// The database did not answer in time (the cause kept as the source).
    #[error("storage is unavailable, try again")]
    Storage(#[source] StoreError),
    #[error("{0}")]
    Unavailable(String),
    /// Unavailable for now (a full buffer): try again after this many milliseconds.
    #[error("the server is busy, try again")]
    Busy(u64),
    #[error("{0}")]
    Conflict(String),
    /// A state write expected another version: the key's current STATE (JSON; null when the
    /// key does not exist), for the caller to merge and retry.
    #[error("the key is not at the expected version")]
    VersionConflict(Box<serde_json::Value>),
    #[error("the room's history was reset: drop what you hold and re-join")]
    Reset,
    #[error("{1}")]
    Unauthorized(AuthCode, String),
}

pub type ServiceResult<T> = Result<T, ServiceError>;

impl ServiceError {
    pub fn bad_request(msg: impl Into<String>) -> Self {
        ServiceError::BadRequest(msg.into())
    }
    pub fn not_found(msg: impl Into<String>) -> Self {
        ServiceError::NotFound(msg.into())
    }
    pub fn forbidden(msg: impl Into<String>) -> Self {
        ServiceError::Forbidden(msg.into())
    }
    pub fn unavailable(msg: impl Into<String>) -> Self {
        ServiceError::Unavailable(msg.into())
    }
}

impl From<DomainError> for ServiceError {
    fn from(e: DomainError) -> Self {
        match e {
            DomainError::Invalid(m) => ServiceError::BadRequest(m),
            DomainError::TooLarge(m) => ServiceError::TooLarge(m),
        }
    }
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(what) => ServiceError::Conflict(what),
            StoreError::NotFound(what) => ServiceError::NotFound(what),
            e @ (StoreError::Unavailable(_) | StoreError::Statement(_) | StoreError::Sealed(_)) => {
                ServiceError::Storage(e)
            }
        }
    }
}

impl From<crate::password::PasswordError> for ServiceError {
    fn from(e: crate::password::PasswordError) -> Self {
        match e {
            // the queue of password checks is full: come back in a second (429, Retry-After)
            crate::password::PasswordError::Busy => ServiceError::RateLimited(1000),
            crate::password::PasswordError::Failed => ServiceError::Unavailable(e.to_string()),
        }
    }
}
