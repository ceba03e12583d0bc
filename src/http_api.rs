//! The server-side HTTP API. Every route is listed in [`routes`]; all but
//! `/healthz` need `Authorization: Bearer <api key>`.
//!
//! ```text
//! POST /api/publish          {"channel","event","data"} -> 202 {"channel","event","id"}
//! GET  /api/channels         -> {"channels":[{"name","members","connections"}]}
//! GET  /api/channels/{name}  -> {"name","subscriptionsCount","members":[{"uid","umd"}]} (members: presence. channels and channels with members)
//! GET  /healthz              -> {"status":"ok","connections","channels"}
//! ```

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::app::App;
use crate::ids;
use crate::presence::ChannelMessage;

/// Largest accepted request body.
const MAX_BODY_BYTES: usize = 256 * 1024;
/// Largest `data` of a publish (as for client messages).
const MAX_DATA_BYTES: usize = 32 * 1024;

/// The API routes.
pub fn routes(app: App) -> Router<App> {
    let api = Router::new()
        .route("/api/publish", post(publish))
        .route("/api/channels", get(list_channels))
        .route("/api/channels/{name}", get(channel_info))
        .layer(middleware::from_fn_with_state(app, require_api_key))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES));
    Router::new().route("/healthz", get(healthz)).merge(api)
}

/// An API error: status plus `{"error":{"code","message"}}`.
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"error": {"code": self.code, "message": self.message}})),
        )
            .into_response()
    }
}

/// Constant-time comparison, so the key cannot be guessed byte by byte.
fn keys_match(given: &[u8], expected: &[u8]) -> bool {
    if given.len() != expected.len() {
        return false;
    }
    given
        .iter()
        .zip(expected)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

async fn require_api_key(State(app): State<App>, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(key) if keys_match(key.trim().as_bytes(), app.config.api_key.as_bytes()) => {
            next.run(req).await
        }
        Some(_) => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "INVALID_API_KEY",
            "the bearer key does not match the server's --api-key",
        )
        .into_response(),
        None => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "MISSING_API_KEY",
            "send the server's API key as 'Authorization: Bearer <key>'",
        )
        .into_response(),
    }
}

async fn healthz(State(app): State<App>) -> Json<Value> {
    let stats = app.presence.stats();
    Json(json!({
        "status": "ok",
        "connections": stats.connections,
        "channels": stats.channels,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishBody {
    channel: String,
    event: String,
    #[serde(default)]
    data: Option<Box<RawValue>>,
}

/// Checks a channel name: 1-256 characters, no whitespace or control
/// characters (the rules every front end can address).
fn check_channel(name: &str) -> Result<(), ApiError> {
    if name.is_empty() || name.chars().count() > 256 {
        return Err(ApiError::bad_request(
            "INVALID_CHANNEL_NAME",
            "channel must be 1 to 256 characters",
        ));
    }
    if name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(ApiError::bad_request(
            "INVALID_CHANNEL_NAME",
            "channel may not contain whitespace or control characters",
        ));
    }
    Ok(())
}

async fn publish(
    State(app): State<App>,
    body: Result<Json<PublishBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "MESSAGE_TOO_LARGE",
                format!("the request body is over {MAX_BODY_BYTES} bytes; data may be at most {MAX_DATA_BYTES} bytes"),
            );
        }
        ApiError::bad_request(
            "INVALID_BODY",
            format!(
                "{}; expected {{\"channel\":\"…\",\"event\":\"…\",\"data\":…}}",
                e.body_text()
            ),
        )
    })?;
    check_channel(&body.channel)?;
    if body.event.is_empty()
        || body.event.chars().count() > 128
        || body.event.starts_with("hotsock.")
        || body.event.starts_with('#')
        || body.event.chars().any(char::is_control)
    {
        return Err(ApiError::bad_request(
            "INVALID_EVENT_NAME",
            "event must be 1 to 128 characters, without control characters, and not start with 'hotsock.' or '#'",
        ));
    }
    if let Some(data) = &body.data
        && data.get().len() > MAX_DATA_BYTES
    {
        return Err(ApiError::bad_request(
            "MESSAGE_TOO_LARGE",
            format!(
                "data is {} bytes; the limit is {MAX_DATA_BYTES}",
                data.get().len()
            ),
        ));
    }
    let msg = ChannelMessage {
        id: ids::ulid(),
        channel: Arc::from(body.channel.as_str()),
        event: body.event,
        data: body.data.filter(|d| d.get() != "null"),
        sender: None,
    };
    app.presence.publish(&msg);
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"channel": &*msg.channel, "event": msg.event, "id": msg.id})),
    )
        .into_response())
}

async fn list_channels(State(app): State<App>) -> Json<Value> {
    Json(json!({ "channels": app.presence.channels() }))
}

async fn channel_info(
    State(app): State<App>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    check_channel(&name)?;
    let info = app.presence.channel_info(&name);
    let members: Vec<Value> = info
        .members
        .iter()
        .map(|m| json!({"uid": &*m.user_id, "umd": &*m.info}))
        .collect();
    let mut body = json!({
        "name": info.name,
        "subscriptionsCount": info.connections,
    });
    // As Hotsock: `members` on presence channels (even when empty) and,
    // since any front end can make members, on every channel that has some.
    if name.starts_with("presence.") || !members.is_empty() {
        body["members"] = Value::Array(members);
    }
    Ok(Json(body))
}

#[cfg(test)]
mod tests {
    use super::keys_match;

    #[test]
    fn key_comparison() {
        assert!(keys_match(b"abc", b"abc"));
        assert!(!keys_match(b"abd", b"abc"));
        assert!(!keys_match(b"ab", b"abc"));
    }
}
