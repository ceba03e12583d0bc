//! The server-side HTTP API. Every route is listed once, in [`table`]: the
//! router ([`routes`]) and the OpenAPI document (`GET /api/openapi.json`,
//! [`openapi`]) are both built from that table, so they cannot disagree.
//!
//! Routes marked "API key" need `Authorization: Bearer <api key>`; client
//! routes authenticate with a connection's id and secret (Hotsock's
//! `connectionId` / `connectionSecret`) in the body. Every error, including
//! unknown routes and wrong methods, is JSON:
//!
//! ```json
//! {"error":{"code":"INVALID_CHANNEL_NAME","message":"channel must be 1 to 256 characters"}}
//! ```

mod admin;
mod channels;
mod events;
mod extract;
mod leases;
pub mod openapi;
mod users;

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post, put};
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::app::App;

pub use extract::{ApiPath, ApiQuery, JsonBody};

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// Largest `data` of a message (as for client messages).
pub const MAX_DATA_BYTES: usize = 32 * 1024;

/// How a route is authenticated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Auth {
    /// Open.
    None,
    /// `Authorization: Bearer <api key>`.
    ApiKey,
    /// A connection's id and secret in the body.
    Client,
    /// Either of the two (checked by the handler).
    ApiKeyOrClient,
}

/// One route: where, how it is authenticated, what it does, its handler
/// and the examples the OpenAPI document shows.
pub struct Route {
    /// HTTP method.
    pub method: Method,
    /// Path, with `{param}` segments.
    pub path: &'static str,
    /// Authentication.
    pub auth: Auth,
    /// Group (OpenAPI tag).
    pub tag: &'static str,
    /// One line.
    pub summary: &'static str,
    /// More detail.
    pub description: &'static str,
    /// Query parameters: (name, description).
    pub query: &'static [(&'static str, &'static str)],
    /// Example request body, if the route takes one.
    pub request: Option<Value>,
    /// Success status and example response body.
    pub response: (u16, Value),
    handler: MethodRouter<App>,
}

impl Route {
    fn new(method: Method, path: &'static str, handler: MethodRouter<App>) -> Self {
        Route {
            method,
            path,
            auth: Auth::ApiKey,
            tag: "",
            summary: "",
            description: "",
            query: &[],
            request: None,
            response: (200, Value::Null),
            handler,
        }
    }

    fn auth(mut self, auth: Auth) -> Self {
        self.auth = auth;
        self
    }

    fn doc(mut self, tag: &'static str, summary: &'static str, description: &'static str) -> Self {
        self.tag = tag;
        self.summary = summary;
        self.description = description;
        self
    }

    fn query(mut self, query: &'static [(&'static str, &'static str)]) -> Self {
        self.query = query;
        self
    }

    fn request(mut self, example: Value) -> Self {
        self.request = Some(example);
        self
    }

    fn response(mut self, status: u16, example: Value) -> Self {
        self.response = (status, example);
        self
    }
}

/// Every route of the API, in one place.
pub fn table() -> Vec<Route> {
    use Method as M;
    let msg = json!({"event": "ideavoted", "data": {"yes": 3, "no": 1}});
    let privacy = json!({"uid": "alice", "visible": false, "choice": false, "tracking": true, "user_toggle": true});
    vec![
        Route::new(M::GET, "/healthz", get(channels::healthz))
            .auth(Auth::None)
            .doc("health", "Liveness and counts", "Open: no API key.")
            .response(200, json!({"status": "ok", "connections": 12, "channels": 3})),
        Route::new(M::GET, "/api/openapi.json", get(openapi::serve))
            .auth(Auth::None)
            .doc("meta", "This document", "OpenAPI 3.1, built from the same route table as the router. Open: no API key."),
        Route::new(M::POST, "/api/publish", post(channels::publish))
            .doc("messages", "Publish to a channel", "Every subscriber of the channel, on every front end, receives a channel message `{\"id\",\"event\",\"channel\",\"data\"}` (no `meta`). `channel`: 1-256 characters without whitespace or control characters. See also `POST /api/channels/{name}/send`, which also reaches lease holders.")
            .request(json!({"channel": "presence.room1", "event": "news", "data": {"text": "hi"}}))
            .response(202, json!({"channel": "presence.room1", "event": "news", "id": "01JA2Z4K8Q3W7E5R9T1Y6V0H2N"})),
        Route::new(M::POST, "/api/broadcast", post(users::broadcast))
            .doc("messages", "Send to everyone", "A direct message to every connection, on every front end and (in a cluster) every node. `connections` counts those reached on the node asked; the other nodes deliver to theirs.")
            .request(msg.clone())
            .response(202, json!({"event": "ideavoted", "id": "01JA2Z4K8Q3W7E5R9T1Y6V0H2N", "connections": 42})),
        Route::new(M::POST, "/api/users/{uid}/send", post(users::send_to_user))
            .doc("messages", "Send to one user", "A direct message to every connection of the user (all front ends, and in a cluster all nodes). `connections` is how many were reached on the node asked (0 if the user has none there); the other nodes deliver to theirs.")
            .request(msg.clone())
            .response(202, json!({"uid": "alice", "event": "ideavoted", "id": "01JA2Z4K8Q3W7E5R9T1Y6V0H2N", "connections": 2})),
        Route::new(M::POST, "/api/channels/{name}/send", post(channels::send_to_present))
            .doc("messages", "Send to everyone present to a channel", MESSAGE_TO_PRESENT)
            .request(msg.clone())
            .response(202, json!({"channel": "content:42", "event": "ideavoted", "id": "01JA2Z4K8Q3W7E5R9T1Y6V0H2N", "connections": 5})),
        Route::new(M::POST, "/api/content/{id}/send", post(channels::send_to_content))
            .doc("messages", "Send to everyone present to a content id", "Same as `POST /api/channels/content:{id}/send` (the seed's SendToUsersPresentToContent).")
            .request(msg.clone())
            .response(202, json!({"channel": "content:42", "event": "ideavoted", "id": "01JA2Z4K8Q3W7E5R9T1Y6V0H2N", "connections": 5})),
        Route::new(M::POST, "/api/services/{id}/send", post(channels::send_to_service))
            .doc("messages", "Send to everyone present to a service id", "Same as `POST /api/channels/service:{id}/send` (the seed's SendToUsersPresentToService).")
            .request(msg)
            .response(202, json!({"channel": "service:abc", "event": "ideavoted", "id": "01JA2Z4K8Q3W7E5R9T1Y6V0H2N", "connections": 1})),
        Route::new(M::GET, "/api/channels", get(channels::list))
            .doc("channels", "List occupied channels with counts", "Sorted by name. `connections` counts subscriptions plus leases and remote presences; hidden users count nowhere.")
            .query(&[("prefix", "only channels whose name starts with this, e.g. `content:`")])
            .response(200, json!({"channels": [{"name": "content:42", "members": 2, "connections": 3, "member_bytes": 64}]})),
        Route::new(M::GET, "/api/channels/{name}", get(channels::info))
            .doc("channels", "A channel's members", "`subscriptionsCount` counts connections (in a cluster: on every node, other nodes' non-member subscriptions as of their last heartbeat); `members` (join order) is present on `presence.` channels, even when empty, and on any channel that has members. For large channels use `/members`.")
            .response(200, json!({"name": "content:42", "subscriptionsCount": 3, "members": [{"uid": "alice", "umd": {"name": "Alice"}}]})),
        Route::new(M::GET, "/api/channels/{name}/members", get(channels::members))
            .doc("channels", "A channel's members, one page at a time", "Members in join order from `offset` (default 0), at most `limit` (default 100, at most 1000). `next_offset` is null on the last page.")
            .query(&[("offset", "members to skip"), ("limit", "page size, 1-1000")])
            .response(200, json!({"channel": "content:42", "total": 250, "offset": 0, "members": [{"uid": "alice", "umd": null}], "next_offset": 100})),
        Route::new(M::GET, "/api/channels/{name}/summary", get(channels::summary))
            .doc("channels", "Counts for a channel", "Members (distinct users) and connections (subscriptions, leases and remote presences).")
            .response(200, json!({"channel": "content:42", "members": 2, "connections": 3})),
        Route::new(M::GET, "/api/content/{id}/summary", get(channels::content_summary))
            .doc("channels", "Counts for a content id", "The seed's content presence summary: counts of `content:{id}`.")
            .response(200, json!({"channel": "content:42", "members": 2, "connections": 3})),
        Route::new(M::GET, "/api/services/{id}/summary", get(channels::service_summary))
            .doc("channels", "Counts for a service id", "Counts of `service:{id}`.")
            .response(200, json!({"channel": "service:abc", "members": 1, "connections": 1})),
        Route::new(M::GET, "/api/events", get(events::stream))
            .doc("events", "Stream events to a backend (Server-Sent Events)", EVENTS_DOC)
            .query(&[("channel", "comma-separated channel patterns (names, `*` globs, `#regex:`); with it, events without a channel are left out"), ("type", "comma-separated event names, e.g. `member_added,member_removed`"), ("bus", "comma-separated bus topics: their `bus_message`s (only those, unless `type` names more)")])
            .response(200, json!("event: member_added\nid: 01JA2Z4K8Q3W7E5R9T1Y6V0H2N\ndata: {\"id\":\"01JA2Z4K8Q3W7E5R9T1Y6V0H2N\",\"name\":\"member_added\",\"channel\":\"presence.room\",\"user_id\":\"alice\",\"data\":{\"name\":\"Alice\"},\"time_ms\":1728846563000}")),
        Route::new(M::POST, "/api/bus/publish", post(events::bus_publish))
            .doc("events", "Send an application message to backends on every node", "Every `GET /api/events?bus=TOPIC` reader on every node of the cluster gets it as `bus_message` with `topic`, `data` and `node` (where it was sent). Not stored: readers connected later do not get it.")
            .request(json!({"topic": "cache.invalidate", "data": {"key": "user:42"}}))
            .response(202, json!({"topic": "cache.invalidate", "id": "01JA2Z4K8Q3W7E5R9T1Y6V0H2N"})),
        Route::new(M::POST, "/api/presence/refresh", post(leases::refresh))
            .auth(Auth::ApiKeyOrClient)
            .doc("presence", "Refresh a presence lease", LEASE_DOC)
            .request(json!({"user": "u1", "ids": ["content:42", "service:abc"], "ttl_ms": 30000}))
            .response(200, json!({"ids": ["content:42", "service:abc"], "ttl_ms": 30000, "expires_at": "2024-10-13T19:09:53Z", "rejected": []})),
        Route::new(M::GET, "/api/users/{uid}", get(users::status))
            .doc("users", "A user's presence", "Online while any connection or lease of the user is live (on any node of a cluster; `connections` counts all nodes). `since`: when they came online (null while offline). A hidden user is reported offline with 0 connections.")
            .response(200, json!({"uid": "alice", "online": true, "since": "2024-10-13T19:09:23Z", "connections": 2})),
        Route::new(M::GET, "/api/users/{uid}/connections", get(admin::connections))
            .doc("admin", "A user's connections on every node", "Each with its `id`, `node`, `protocol` and `channels` (on this node every channel it is subscribed to; on another node the channels it is a member of). Sorted: this node's first.")
            .response(200, json!({"uid": "alice", "connections": [{"id": "8c1f2a3b00000001", "node": "node-a", "protocol": "hotsock", "channels": ["presence.room"]}]})),
        Route::new(M::POST, "/api/users/{uid}/disconnect", post(admin::disconnect_user))
            .doc("admin", "Disconnect every connection of a user", "On every node. Each client is closed with code 4100 and `reason` (default \"disconnected by the server's operator\"; at most 120 bytes), a Socket.IO client gets an error event with it and a disconnect; backends see `connection_closed` with reason `kicked`. The body is optional. `connections` counts those closed on the node asked. Clients may reconnect: revoke their tokens to keep them out.")
            .request(json!({"reason": "account suspended"}))
            .response(202, json!({"uid": "alice", "connections": 2, "reason": "account suspended"})),
        Route::new(M::POST, "/api/connections/{id}/disconnect", post(admin::disconnect_connection))
            .doc("admin", "Disconnect one connection", "Wherever it is in the cluster, as `POST /api/users/{uid}/disconnect` does for one connection. `here`: it was on the node asked (otherwise the other nodes were told).")
            .request(json!({"reason": "duplicate session"}))
            .response(202, json!({"connection": "8c1f2a3b00000001", "here": true, "reason": "duplicate session"})),
        Route::new(M::POST, "/api/channels/{name}/members/{uid}/remove", post(admin::remove_member))
            .doc("admin", "Remove a user from a channel", "On every node, each of the user's connections subscribed to the channel is unsubscribed as if it had asked, and told `reason` (default \"removed from the channel by the server's operator\"; at most 120 bytes) in its protocol: Hotsock `hotsock.unsubscribed` with `data.reason`, Socket.IO `CHANNEL_UNSUBSCRIBED` with `reason`, SocketCluster `#kickOut` with the reason as `message` (for the channel and its `presence>` feed), sgc `channel@member@remove` with `reason: \"kicked\"` and the reason as `message.text`. The others see the member leave. The connections stay open, and may subscribe again if the channel policy allows: change their grants to keep them out. Presence leases are the backend's and are not ended. `connections` counts those told on the node asked.")
            .request(json!({"reason": "off-topic"}))
            .response(202, json!({"channel": "presence.room", "uid": "alice", "connections": 1, "reason": "off-topic"})),
        Route::new(M::POST, "/api/admin/reload-keys", post(admin::reload_keys))
            .doc("admin", "Reload the JWT keys", "Reads `--jwt-secrets-file` and the `--jwt-public-key` files again on the node asked (as SIGHUP does), for key rotation without a restart; `keys` says what is accepted now. The body is ignored. 422 if a file is unreadable or invalid: the previous keys stay in use.")
            .request(json!({}))
            .response(200, json!({"keys": "HS256/HS384/HS512 (secret), HS* by kid (2026-11, 2026-12)"})),
        Route::new(M::GET, "/api/users/{uid}/privacy", get(users::get_privacy))
            .doc("privacy", "A user's privacy", "`visible`: whether others see the user now; `choice`: the user's stored choice (null: the default, `--default-visible`); `tracking`: `--presence-tracking`; `user_toggle`: `--allow-user-toggle`.")
            .response(200, privacy.clone()),
        Route::new(M::PUT, "/api/users/{uid}/privacy", put(users::put_privacy))
            .doc("privacy", "Set a user's privacy", "`visible`: true, false, or null (back to the default). Durable before the answer. A hidden user still connects, subscribes and receives messages, but appears in no member list, count, member event, user presence or webhook, on any front end; their current memberships end at once. 409 without `--allow-user-toggle`.")
            .request(json!({"visible": false}))
            .response(200, privacy.clone()),
        Route::new(M::POST, "/api/client/privacy", post(users::client_privacy))
            .auth(Auth::Client)
            .doc("privacy", "A client sets its own privacy", "Authenticated by the connection's id and secret (Hotsock: `connectionId` and `connectionSecret` of `hotsock.connected`) instead of the API key; sets the privacy of the connection's user, as `PUT /api/users/{uid}/privacy`.")
            .request(json!({"connection_id": "8c1f2a3b00000001", "connection_secret": "q8Z...", "visible": false}))
            .response(200, privacy),
    ]
}

const MESSAGE_TO_PRESENT: &str = "Everyone present to the channel gets the message: its subscribers as a channel message `{\"id\",\"event\",\"channel\",\"data\"}` (as `POST /api/publish`), and lease holders that are not subscribed as a direct message with the same `id`, `event` and `data`, on every node of a cluster (`connections` counts the node asked). Hidden users still receive it.";

const EVENTS_DOC: &str = "`text/event-stream`. Each event is `event: <name>`, `id: <ULID>`, `data: <JSON>` with the webhooks' event JSON: `member_added`, `member_updated`, `member_removed`, `channel_occupied`, `channel_vacated`, `user_online`, `user_offline`, `client_message` (client messages of `--forward-channels` and `[[forward-rules]]`), and `connection_opened`, `connection_closed` with `connection`, `protocol`, `node` and, closed, `reason` (`client_closed`, `timeout`, `slow_consumer`, `kicked`, `server_shutdown`, `policy`, `protocol_error`, `node_lost`; none for hidden users unless `--hidden-connection-events`): the whole cluster's, on any node. A reader more than `--events-backlog` events behind loses the oldest and gets `event: gap`, `data: {\"missed\": N}` (N counts lost events of every type, before the filters). Comment lines keep the connection alive; the stream ends when the server shuts down.";

const LEASE_DOC: &str = "Replaces the caller's list of ids (channel names) it is present to; each id is a membership of that channel while the lease lives (`GET /api/channels/content:42` lists the user). Not refreshed within `ttl_ms` (default `--lease-ttl`), the lease expires and its memberships end; `ids: []` ends it at once. A backend uses the API key and names the `user` (optionally its member `info`); any channel may be leased. A client sends its `connection_id` and `connection_secret` instead; it may lease only `content:`, `service:` and `user:` ids, its lease ends with the connection, and its member data is the connection's. Several connections or tabs of one user are one member.";

/// The API routes, built from [`table`].
pub fn routes(app: App) -> Router<App> {
    let mut router = Router::new();
    for route in table() {
        let handler = match route.auth {
            Auth::ApiKey => route
                .handler
                .route_layer(middleware::from_fn_with_state(app.clone(), require_api_key)),
            _ => route.handler,
        };
        router = router.route(route.path, handler);
    }
    router
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(app, body_in_time))
}

/// Reads the request body within `--header-timeout` (and at most
/// [`MAX_BODY_BYTES`]): a client that sends its body a byte at a time holds
/// no connection for long.
async fn body_in_time(
    State(app): State<App>,
    req: Request,
    next: middleware::Next,
) -> axum::response::Response {
    let limit = app.admission.config().header_timeout;
    let (parts, body) = req.into_parts();
    // One byte over the limit, so the handlers still see (and explain) an
    // oversized body.
    let read = axum::body::to_bytes(body, MAX_BODY_BYTES + 1);
    match tokio::time::timeout(limit, read).await {
        Ok(Ok(bytes)) => next.run(Request::from_parts(parts, axum::body::Body::from(bytes))).await,
        Ok(Err(_)) => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "MESSAGE_TOO_LARGE",
            format!("the request body is over {MAX_BODY_BYTES} bytes"),
        )
        .into_response(),
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "REQUEST_TIMEOUT",
            format!(
                "the request body did not arrive within {limit:?} (--header-timeout); send it at once"
            ),
        )
        .into_response(),
    }
}

async fn not_found(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        format!(
            "no route {} {}; the routes are listed at GET /api/openapi.json",
            req.method(),
            req.uri().path()
        ),
    )
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        format!(
            "{} is not allowed on {}; see GET /api/openapi.json for the methods of each route",
            req.method(),
            req.uri().path()
        ),
    )
}

/// An API error: status plus `{"error":{"code","message"}}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    /// An error with this status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// A 400 error.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
}

impl IntoResponse for ApiError {
    /// The JSON error; the access log shows its code as the reason.
    fn into_response(self) -> Response {
        let response = (
            self.status,
            Json(json!({"error": {"code": self.code, "message": self.message}})),
        )
            .into_response();
        crate::access::with_reason(response, self.code)
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

/// Checks the bearer key of a request: Ok(true) with the right key,
/// Ok(false) without an Authorization header, Err for a wrong one.
fn check_api_key(app: &App, headers: &axum::http::HeaderMap) -> Result<bool, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(false);
    };
    // The auth scheme is case-insensitive (RFC 9110 §11.1).
    let given = value
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, key)| key);
    match given {
        Some(key) if keys_match(key.trim().as_bytes(), app.config.api_key.as_bytes()) => Ok(true),
        _ => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "INVALID_API_KEY",
            "the bearer key does not match the server's --api-key",
        )),
    }
}

async fn require_api_key(State(app): State<App>, req: Request, next: Next) -> Response {
    match check_api_key(&app, req.headers()) {
        Ok(true) => next.run(req).await,
        Ok(false) => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "MISSING_API_KEY",
            "send the server's API key as 'Authorization: Bearer <key>'",
        )
        .into_response(),
        Err(e) => e.into_response(),
    }
}

/// Checks a channel name with the rule every front end shares
/// ([`crate::names::check_channel`]): what a client can subscribe to, the
/// API can address, and the other way round.
pub fn check_channel(name: &str) -> Result<(), ApiError> {
    crate::names::check_channel(name)
        .map_err(|why| ApiError::bad_request("INVALID_CHANNEL_NAME", why))
}

/// Checks an event name ([`crate::names::check_event`]).
pub fn check_event(event: &str) -> Result<(), ApiError> {
    crate::names::check_event(event).map_err(|why| ApiError::bad_request("INVALID_EVENT_NAME", why))
}

/// Checks a user id ([`crate::names::check_user_id`]).
pub fn check_uid(uid: &str) -> Result<(), ApiError> {
    crate::names::check_user_id(uid).map_err(|why| ApiError::bad_request("INVALID_USER_ID", why))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_comparison() {
        assert!(keys_match(b"abc", b"abc"));
        assert!(!keys_match(b"abd", b"abc"));
        assert!(!keys_match(b"ab", b"abc"));
    }

    #[test]
    fn every_route_is_documented_once() {
        let table = table();
        let mut seen = std::collections::HashSet::new();
        for r in &table {
            assert!(
                seen.insert((r.method.clone(), r.path)),
                "{} {} twice",
                r.method,
                r.path
            );
            assert!(
                !r.summary.is_empty() && !r.tag.is_empty(),
                "{} {}",
                r.method,
                r.path
            );
            let takes_body = matches!(r.method, Method::POST | Method::PUT);
            assert_eq!(r.request.is_some(), takes_body, "{} {}", r.method, r.path);
            // Example ids are real ULIDs (Crockford base32: no I, L, O, U).
            for example in [&r.response.1].into_iter().chain(r.request.as_ref()) {
                if let Some(id) = example.get("id").and_then(|id| id.as_str()) {
                    assert!(crate::ids::is_ulid(id), "{} {}: {id}", r.method, r.path);
                }
            }
        }
    }
}
