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
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::users::client_connection;
use super::{ApiError, ErrorBody, JsonBody, check_api_key, check_channel, check_uid, errors};
use crate::app::App;
use crate::services::leases::{LeaseOwner, Refresh, Rejected};

/// Id prefixes a client may lease (a backend may lease any channel).
pub const CLIENT_PREFIXES: [&str; 3] = ["content:", "service:", "user:"];

/// The body of `POST /api/presence/refresh`: `user` (a backend, with the
/// API key) or `connection_id` and `connection_secret` (a client).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RefreshBody {
    /// The user the backend's lease is for (with the API key).
    user: Option<String>,
    /// A client's own connection (Hotsock: `connectionId`).
    connection_id: Option<String>,
    /// Its secret (Hotsock: `connectionSecret`).
    connection_secret: Option<String>,
    /// Every id (channel name) the holder is present to now; `[]` ends the
    /// lease.
    ids: Vec<String>,
    /// How long the lease lives without another refresh (default
    /// `--lease-ttl`, at most `--max-lease-ttl`).
    #[schema(minimum = 1)]
    ttl_ms: Option<u64>,
    /// A backend lease's member data: any JSON value.
    #[schema(value_type = Value, required = false)]
    info: Option<Value>,
}

/// The lease after a refresh.
#[derive(Serialize, ToSchema)]
pub(super) struct LeaseRefreshed {
    /// When the lease expires without another refresh (RFC 3339); null
    /// when `ids` was empty and the lease ended.
    #[schema(required = true, format = DateTime)]
    expires_at: Option<String>,
    /// The ids the holder is present to now.
    ids: Vec<String>,
    /// Ids that could not be joined.
    rejected: Vec<RejectedId>,
    ttl_ms: u64,
}

/// An id a refresh could not join.
#[derive(Serialize, ToSchema)]
pub(super) struct RejectedId {
    /// Why (e.g. the channel is full).
    error: String,
    id: String,
}

impl From<Rejected> for RejectedId {
    fn from(r: Rejected) -> Self {
        RejectedId {
            error: r.error,
            id: r.id,
        }
    }
}

/// `POST /api/presence/refresh`.
#[utoipa::path(
    post,
    path = "/api/presence/refresh",
    operation_id = "refreshPresenceLease",
    tag = "presence",
    summary = "Refresh a presence lease",
    description = "Replaces the caller's list of ids (channel names) it is present to; each id is a membership of that channel while the lease lives (`GET /api/channels/content:42` lists the user). Not refreshed within `ttl_ms` (default `--lease-ttl`), the lease expires and its memberships end; `ids: []` ends it at once. A backend uses the API key and names the `user` (optionally its member `info`); any channel may be leased. A client sends its `connection_id` and `connection_secret` instead; it may lease only `content:`, `service:` and `user:` ids, its lease ends with the connection, and its member data is the connection's. Several connections or tabs of one user are one member.",
    security(("apiKey" = []), ()),
    request_body(content = RefreshBody, example = json!({"user": "u1", "ids": ["content:42", "service:abc"], "ttl_ms": 30000})),
    responses(
        (status = 200, description = "The lease now", body = LeaseRefreshed,
            example = json!({"expires_at": "2024-10-13T19:09:53Z", "ids": ["content:42", "service:abc"], "rejected": [], "ttl_ms": 30000})),
        (status = 400, description = "`INVALID_BODY` (e.g. both or neither of `user` and `connection_id`), `INVALID_TTL`, `TOO_MANY_IDS`, `INVALID_CHANNEL_NAME`, `INVALID_USER_ID`", body = ErrorBody),
        (status = 401, description = "`INVALID_API_KEY`: a wrong key; `MISSING_API_KEY`: a `user` lease without the key; `INVALID_CONNECTION`: no open connection has this id and secret", body = ErrorBody),
        (status = 403, description = "`ID_NOT_ALLOWED`: a client may lease only `content:`, `service:` and `user:` ids", body = ErrorBody),
        (status = 408, description = errors::REQUEST_TIMEOUT, body = ErrorBody),
        (status = 413, description = errors::BODY_TOO_LARGE, body = ErrorBody)
    )
)]
pub(super) async fn refresh(
    State(app): State<App>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<RefreshBody>,
) -> Result<Json<LeaseRefreshed>, ApiError> {
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
    Ok(Json(LeaseRefreshed {
        expires_at: outcome.expires_at,
        ids: outcome.ids,
        rejected: outcome.rejected.into_iter().map(RejectedId::from).collect(),
        ttl_ms: ttl.as_millis() as u64,
    }))
}
