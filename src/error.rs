//! The edges' error: a failure as the contract words it, with its single mapping to ack codes
//! (PROTOCOL.md §3) and HTTP statuses (§4). Only `http` and `gateway` use it; everything inside
//! (domain, auth, services) has its own typed error, turned into this once, here.

use axum::http::StatusCode;

pub use crate::auth::AuthCode;
use crate::auth::AuthError;
use crate::domain::DomainError;
use crate::services::error::ServiceError;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ApiError {
    /// Whatever the domain, a token check or a service refused (its variants are in the
    /// contract's order of precedence).
    #[error(transparent)]
    Service(#[from] ServiceError),
    /// Only the HTTP edge knows methods.
    #[error("this method is not allowed on this path")]
    MethodNotAllowed,
}

impl ApiError {
    pub fn bad_request(msg: impl Into<String>) -> Self {
        ServiceError::bad_request(msg).into()
    }
    pub fn too_large(msg: impl Into<String>) -> Self {
        ServiceError::TooLarge(msg.into()).into()
    }
    pub fn not_found(msg: impl Into<String>) -> Self {
        ServiceError::not_found(msg).into()
    }
    pub fn unavailable(msg: impl Into<String>) -> Self {
        ServiceError::unavailable(msg).into()
    }
    pub fn rate_limited(retry_after_ms: u64) -> Self {
        ServiceError::RateLimited(retry_after_ms).into()
    }
    pub fn unauthorized(code: AuthCode, msg: impl Into<String>) -> Self {
        ServiceError::Unauthorized(code, msg.into()).into()
    }

    /// How long a rate-limited caller is to wait.
    pub fn retry_after_ms(&self) -> Option<u64> {
        match self {
            ApiError::Service(ServiceError::RateLimited(ms) | ServiceError::Busy(ms)) => Some(*ms),
            _ => None,
        }
    }

    pub fn code(&self) -> &'static str {
        let ApiError::Service(e) = self else {
            return "method_not_allowed";
        };
        match e {
            ServiceError::BadRequest(_) => "bad_request",
            ServiceError::TooLarge(_) => "too_large",
            ServiceError::NotFound(_) => "not_found",
            ServiceError::Forbidden(_) => "forbidden",
            ServiceError::RateLimited(_) => "rate_limited",
            ServiceError::Storage(_) | ServiceError::Unavailable(_) | ServiceError::Busy(_) => {
                "unavailable"
            }
            ServiceError::Conflict(_) | ServiceError::VersionConflict(_) => "conflict",
            ServiceError::Reset => "reset",
            ServiceError::Unauthorized(code, _) => code.as_str(),
        }
    }

    pub fn status(&self) -> StatusCode {
        let ApiError::Service(e) = self else {
            return StatusCode::METHOD_NOT_ALLOWED;
        };
        match e {
            ServiceError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ServiceError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ServiceError::NotFound(_) => StatusCode::NOT_FOUND,
            ServiceError::Forbidden(_) => StatusCode::FORBIDDEN,
            ServiceError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            ServiceError::Storage(_) | ServiceError::Unavailable(_) | ServiceError::Busy(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ServiceError::Conflict(_) | ServiceError::VersionConflict(_) | ServiceError::Reset => {
                StatusCode::CONFLICT
            }
            ServiceError::Unauthorized(..) => StatusCode::UNAUTHORIZED,
        }
    }

    /// The `error` object shared by acks and HTTP bodies.
    pub fn body(&self) -> serde_json::Value {
        let mut err = serde_json::json!({ "code": self.code(), "message": self.to_string() });
        if let Some(ms) = self.retry_after_ms() {
            err["retry_after_ms"] = ms.into();
        }
        if let ApiError::Service(ServiceError::VersionConflict(current)) = self {
            err["current"] = (**current).clone();
        }
        err
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        ServiceError::from(e).into()
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        ApiError::unauthorized(e.code, e.message)
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
