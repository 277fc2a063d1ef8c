//! The one HTTP error type. Internal detail is logged, never shown to clients.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// An error a handler returns.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The request is wrong; the message says what, and is shown.
    #[error("{0}")]
    BadRequest(String),
    /// Not logged in.
    #[error("unauthorized")]
    Unauthorized,
    /// Logged in (or not), but this request is refused; the message says why, and is shown.
    #[error("{0}")]
    Forbidden(String),
    /// No such thing.
    #[error("not found")]
    NotFound,
    /// Something failed inside; logged, not shown.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<sqlx::Error> for AppError {
    fn from(e: sqlx::Error) -> Self {
        AppError::Internal(e.to_string())
    }
}

impl From<crate::DbError> for AppError {
    fn from(e: crate::DbError) -> Self {
        AppError::Internal(e.to_string())
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, message) = match &self {
            AppError::BadRequest(m) => (StatusCode::BAD_REQUEST, m.clone()),
            AppError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized".to_string()),
            AppError::Forbidden(m) => (StatusCode::FORBIDDEN, m.clone()),
            AppError::NotFound => (StatusCode::NOT_FOUND, "not found".to_string()),
            AppError::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error".to_string(),
                )
            }
        };
        (status, Json(json!({"error": message}))).into_response()
    }
}
