//! The one error type services return, and its single mapping to the contract's codes
//! (PROTOCOL.md §3 ack codes, §4 HTTP statuses). Everything inside maps into this once.

use axum::http::StatusCode;
use serde::Serialize;

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

/// The connect / 401 codes of §3 and §5.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthCode {
    AuthRequired,
    InvalidToken,
    TokenExpired,
}

impl AuthCode {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthCode::AuthRequired => "auth_required",
            AuthCode::InvalidToken => "invalid_token",
            AuthCode::TokenExpired => "token_expired",
        }
    }
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

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        use crate::store::StoreError;
        match e {
            StoreError::Conflict(what) => ApiError::Conflict(what),
            StoreError::NotFound(what) => ApiError::NotFound(what),
            StoreError::Unavailable(_) | StoreError::Statement(_) => {
                ApiError::Unavailable("storage is unavailable, try again".into())
            }
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
