//! `POST /api/presence/refresh`: content and service presence leases.
//!
//! ```text
//! backend (API key):  {"user":"u1","ids":["content:42","service:abc"],"ttl_ms":30000}
//! client (no key):    {"connection_id":"8c1f2a3b00000001","connection_secret":"…","ids":["content:42"],"ttl_ms":30000}
//! answer:             {"ids":["content:42","service:abc"],"ttl_ms":30000,"expires_at":"2024-10-13T19:09:53Z","rejected":[]}
//! ```

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::users::client_connection;
use super::{ApiError, JsonBody, check_api_key, check_channel, check_uid};
use crate::app::App;
use crate::services::leases::{LeaseOwner, Refresh};

/// Id prefixes a client may lease (a backend may lease any channel).
pub const CLIENT_PREFIXES: [&str; 3] = ["content:", "service:", "user:"];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RefreshBody {
    user: Option<String>,
    connection_id: Option<String>,
    connection_secret: Option<String>,
    ids: Vec<String>,
    ttl_ms: Option<u64>,
    info: Option<Value>,
}

pub(super) async fn refresh(
    State(app): State<App>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<RefreshBody>,
) -> Result<Json<Value>, ApiError> {
    let backend = check_api_key(&app, &headers)?;
    let config = app.services.config();
    let ttl = match body.ttl_ms {
        None => config.lease_ttl,
        Some(ms) => {
            let ttl = Duration::from_millis(ms);
            if ms == 0 || ttl > config.max_lease_ttl {
                return Err(ApiError::bad_request(
                    "INVALID_TTL",
                    format!("ttl_ms must be 1 to {}", config.max_lease_ttl.as_millis()),
                ));
            }
            ttl
        }
    };
    if body.ids.len() > config.max_lease_ids {
        return Err(ApiError::bad_request(
            "TOO_MANY_IDS",
            format!(
                "{} ids; a lease holds at most {}",
                body.ids.len(),
                config.max_lease_ids
            ),
        ));
    }
    let mut ids: Vec<Arc<str>> = Vec::with_capacity(body.ids.len());
    for id in &body.ids {
        check_channel(id)?;
        if !backend && !CLIENT_PREFIXES.iter().any(|p| id.starts_with(p)) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "ID_NOT_ALLOWED",
                format!(
                    "a client may lease only content:, service: and user: ids, not {id:?}; lease other channels from your backend with the API key"
                ),
            ));
        }
        if !ids.iter().any(|i| **i == **id) {
            ids.push(Arc::from(id.as_str()));
        }
    }
    let request = match (&body.user, &body.connection_id) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "INVALID_BODY",
                "send either user (with the API key) or connection_id and connection_secret, not both",
            ));
        }
        (Some(user), None) => {
            if !backend {
                return Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "MISSING_API_KEY",
                    "refreshing a user's lease needs 'Authorization: Bearer <api key>'; a client sends its connection_id and connection_secret instead",
                ));
            }
            check_uid(user)?;
            let uid: Arc<str> = Arc::from(user.as_str());
            Refresh {
                owner: LeaseOwner::User(uid.clone()),
                member_key: uid.clone(),
                user_id: Some(uid),
                info: Arc::new(body.info.unwrap_or(Value::Null)),
                ids,
                ttl,
            }
        }
        (None, Some(conn_id)) => {
            if body.info.is_some() {
                return Err(ApiError::bad_request(
                    "INVALID_BODY",
                    "info is for backend leases; a connection's lease shows the connection's member data",
                ));
            }
            let Some(secret) = &body.connection_secret else {
                return Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "INVALID_CONNECTION",
                    "connection_secret is missing; send the connectionSecret of hotsock.connected",
                ));
            };
            let conn = client_connection(&app, conn_id, secret)?;
            Refresh {
                owner: LeaseOwner::Conn(conn.id),
                member_key: conn.member_key,
                user_id: conn.user_id,
                info: conn.info,
                ids,
                ttl,
            }
        }
        (None, None) => {
            return Err(ApiError::bad_request(
                "INVALID_BODY",
                "name the lease holder: user (a backend, with the API key) or connection_id and connection_secret (a client)",
            ));
        }
    };
    let outcome = app.services.leases().refresh(request);
    Ok(Json(json!({
        "ids": outcome.ids,
        "ttl_ms": ttl.as_millis() as u64,
        "expires_at": outcome.expires_at,
        "rejected": outcome.rejected,
    })))
}
