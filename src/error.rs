//! The edges' error: a failure as the contract words it, with its single mapping to ack codes
//! (PROTOCOL.md §3) and HTTP statuses (§4). Only `http` and `gateway` use it; everything inside
//! (domain, auth, services) has its own typed error, turned into this once, here.

use axum::http::StatusCode;

pub use crate::auth::AuthCode;
use crate::auth::AuthError;
use crate::domain::DomainError;
use crate::services::error::ServiceError;

/// A failure as the contract names it. The order of the variants is the contract's precedence
/// (§5 "Everywhere"): when several apply, the caller reports the first.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("rate limited")]
    RateLimited { retry_after_ms: u64 },
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Conflict(String),
    #[error("the room's history was reset: drop what you hold and re-join")]
    Reset,
    #[error("{1}")]
    Unauthorized(AuthCode, String),
    #[error("this method is not allowed on this path")]
    MethodNotAllowed,
}

impl ApiError {
    pub fn bad_request(msg: impl Into<String>) -> Self {
        ApiError::BadRequest(msg.into())
    }
    pub fn not_found(msg: impl Into<String>) -> Self {
        ApiError::NotFound(msg.into())
    }
    pub fn forbidden(msg: impl Into<String>) -> Self {
        ApiError::Forbidden(msg.into())
    }
    pub fn unavailable(msg: impl Into<String>) -> Self {
        ApiError::Unavailable(msg.into())
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::TooLarge(_) => "too_large",
            ApiError::NotFound(_) => "not_found",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Conflict(_) => "conflict",
            ApiError::Reset => "reset",
            ApiError::Unauthorized(code, _) => code.as_str(),
            ApiError::MethodNotAllowed => "method_not_allowed",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Reset => StatusCode::CONFLICT,
            ApiError::Unauthorized(..) => StatusCode::UNAUTHORIZED,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    /// The `error` object shared by acks and HTTP bodies.
    pub fn body(&self) -> serde_json::Value {
        let mut err = serde_json::json!({ "code": self.code(), "message": self.to_string() });
        if let ApiError::RateLimited { retry_after_ms } = self {
            err["retry_after_ms"] = (*retry_after_ms).into();
        }
        err
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        let message = e.to_string();
        match e {
            ServiceError::BadRequest(_) => ApiError::BadRequest(message),
            ServiceError::TooLarge(_) => ApiError::TooLarge(message),
            ServiceError::NotFound(_) => ApiError::NotFound(message),
            ServiceError::Forbidden(_) => ApiError::Forbidden(message),
            ServiceError::RateLimited(retry_after_ms) => ApiError::RateLimited { retry_after_ms },
            ServiceError::Storage(_) | ServiceError::Unavailable(_) => {
                ApiError::Unavailable(message)
            }
            ServiceError::Conflict(_) => ApiError::Conflict(message),
            ServiceError::Reset => ApiError::Reset,
            ServiceError::Unauthorized(code, _) => ApiError::Unauthorized(code, message),
        }
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        ServiceError::from(e).into()
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        ApiError::Unauthorized(e.code, e.message)
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
