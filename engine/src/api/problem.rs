//! Every API error is an RFC 9457 problem (`application/problem+json`),
//! produced here and nowhere else. Internal details are logged, not returned.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An error answer: status, a stable type, a title, a detail that says what
/// was wrong and, for validation errors, the offending field.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl Problem {
    fn new(status: StatusCode, kind: &'static str, title: &'static str, detail: String) -> Self {
        Problem {
            kind,
            title,
            status: status.as_u16(),
            detail,
            field: None,
        }
    }

    /// 400: the body is not JSON.
    pub fn malformed(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "urn:hookshift:problem:malformed-json",
            "Malformed JSON",
            detail.into(),
        )
    }

    /// 422: a field is missing, of the wrong type, or out of range.
    pub fn invalid(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Problem {
            field: Some(field.into()),
            ..Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "urn:hookshift:problem:validation",
                "Invalid field",
                detail.into(),
            )
        }
    }

    /// 404.
    pub fn not_found(what: &str, id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "urn:hookshift:problem:not-found",
            "Not found",
            format!("no {what} with id `{id}`"),
        )
    }

    /// 409: the request conflicts with what is stored.
    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "urn:hookshift:problem:conflict",
            "Conflict",
            detail.into(),
        )
    }

    /// 413.
    pub fn too_large(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "urn:hookshift:problem:too-large",
            "Payload too large",
            detail.into(),
        )
    }

    /// 401.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "urn:hookshift:problem:unauthorized",
            "Unauthorized",
            "send `Authorization: Bearer <token>` with a configured API token".into(),
        )
    }

    /// 415.
    pub fn unsupported_media(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "urn:hookshift:problem:unsupported-media-type",
            "Unsupported media type",
            detail.into(),
        )
    }

    /// 503: our side cannot serve now; a retry may help. The cause is logged.
    pub fn unavailable(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "request failed on our side");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "urn:hookshift:problem:unavailable",
            "Service unavailable",
            "the engine could not complete the request; retry later".into(),
        )
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self).expect("problem serializes");
        (
            status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            body,
        )
            .into_response()
    }
}

impl From<crate::store::StoreError> for Problem {
    fn from(e: crate::store::StoreError) -> Self {
        Problem::unavailable(&e)
    }
}
