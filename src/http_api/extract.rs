//! Extractors whose rejections are JSON [`ApiError`]s with a message that
//! says what to send instead.

use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::{ApiError, MAX_BODY_BYTES, MAX_DATA_BYTES};

/// A JSON request body; a bad one is `400 INVALID_BODY` (or `413
/// MESSAGE_TOO_LARGE` over [`MAX_BODY_BYTES`]).
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(JsonBody(v)),
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "MESSAGE_TOO_LARGE",
                format!(
                    "the request body is over {MAX_BODY_BYTES} bytes; data may be at most {MAX_DATA_BYTES} bytes"
                ),
            )),
            Err(e) => Err(ApiError::bad_request(
                "INVALID_BODY",
                format!(
                    "{}; send a JSON object (Content-Type: application/json) as shown in GET /api/openapi.json",
                    e.body_text()
                ),
            )),
        }
    }
}

/// Path parameters; a bad one (e.g. invalid UTF-8) is `400 INVALID_PATH`.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| ApiPath(v))
            .map_err(|e| {
                ApiError::bad_request(
                    "INVALID_PATH",
                    format!(
                        "{}; path segments must be percent-encoded UTF-8",
                        e.body_text()
                    ),
                )
            })
    }
}

/// Query parameters; bad ones are `400 INVALID_QUERY`.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| ApiQuery(v))
            .map_err(|e| {
                ApiError::bad_request(
                    "INVALID_QUERY",
                    format!(
                        "{}; see GET /api/openapi.json for this route's parameters",
                        e.body_text()
                    ),
                )
            })
    }
}
