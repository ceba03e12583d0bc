//! User routes: send to a user, broadcast, user presence and privacy.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::channels::{MessageBody, check_data};
use super::{ApiError, ApiPath, EXAMPLE_ID, ErrorBody, JsonBody, check_event, check_uid, errors};
use crate::app::App;
use crate::cluster::wire::DirectTarget;
use crate::ids::{self, ConnId};
use crate::presence::DirectMessage;
use crate::services::privacy::{PrivacyError, PrivacyStatus};
use crate::services::user_presence::UserStatus;

fn direct(body: MessageBody) -> Result<DirectMessage, ApiError> {
    check_event(&body.event)?;
    Ok(DirectMessage {
        id: ids::ulid(),
        event: body.event,
        data: check_data(body.data)?,
    })
}

/// A direct message went to a user's connections.
#[derive(Serialize, ToSchema)]
pub(super) struct SentToUser {
    /// Connections reached on the node asked (0 if the user has none
    /// there).
    connections: usize,
    event: String,
    /// The message id (a ULID).
    id: String,
    uid: String,
}

/// `POST /api/users/{uid}/send`.
#[utoipa::path(
    post,
    path = "/api/users/{uid}/send",
    operation_id = "sendToUser",
    tag = "messages",
    summary = "Send to one user",
    description = "A direct message to every connection of the user (all front ends, and in a cluster all nodes). `connections` is how many were reached on the node asked (0 if the user has none there); the other nodes deliver to theirs.",
    security(("apiKey" = [])),
    params(("uid" = String, Path, description = "The user id", example = "alice")),
    request_body(content = MessageBody, example = json!({"event": "greet", "data": "Hello Alice"})),
    responses(
        (status = 202, description = "Sent", body = SentToUser,
            example = json!({"connections": 2, "event": "greet", "id": EXAMPLE_ID, "uid": "alice"})),
        (status = 400, description = "`INVALID_PATH`, `INVALID_USER_ID`, `INVALID_BODY`, `INVALID_EVENT_NAME`, `MESSAGE_TOO_LARGE` (data over 32 KiB)", body = ErrorBody),
        (status = 401, description = errors::UNAUTHORIZED, body = ErrorBody),
        (status = 408, description = errors::REQUEST_TIMEOUT, body = ErrorBody),
        (status = 413, description = errors::BODY_TOO_LARGE, body = ErrorBody)
    )
)]
pub(super) async fn send_to_user(
    State(app): State<App>,
    ApiPath(uid): ApiPath<String>,
    JsonBody(body): JsonBody<MessageBody>,
) -> Result<(StatusCode, Json<SentToUser>), ApiError> {
    check_uid(&uid)?;
    let msg = direct(body)?;
    let reached = app.presence.send_to_user(&uid, &msg);
    app.cluster
        .forward_direct(DirectTarget::User(uid.clone()), &msg);
    Ok((
        StatusCode::ACCEPTED,
        Json(SentToUser {
            connections: reached,
            event: msg.event,
            id: msg.id,
            uid,
        }),
    ))
}

/// A direct message went to every connection.
#[derive(Serialize, ToSchema)]
pub(super) struct Broadcast {
    /// Connections reached on the node asked; the other nodes deliver to
    /// theirs.
    connections: usize,
    event: String,
    /// The message id (a ULID).
    id: String,
}

/// `POST /api/broadcast`.
#[utoipa::path(
    post,
    path = "/api/broadcast",
    operation_id = "broadcast",
    tag = "messages",
    summary = "Send to everyone",
    description = "A direct message to every connection, on every front end and (in a cluster) every node. `connections` counts those reached on the node asked; the other nodes deliver to theirs.",
    security(("apiKey" = [])),
    request_body(content = MessageBody, example = json!({"event": "ideavoted", "data": {"yes": 3, "no": 1}})),
    responses(
        (status = 202, description = "Sent", body = Broadcast,
            example = json!({"connections": 42, "event": "ideavoted", "id": EXAMPLE_ID})),
        (status = 400, description = "`INVALID_BODY`, `INVALID_EVENT_NAME`, `MESSAGE_TOO_LARGE` (data over 32 KiB)", body = ErrorBody),
        (status = 401, description = errors::UNAUTHORIZED, body = ErrorBody),
        (status = 408, description = errors::REQUEST_TIMEOUT, body = ErrorBody),
        (status = 413, description = errors::BODY_TOO_LARGE, body = ErrorBody)
    )
)]
pub(super) async fn broadcast(
    State(app): State<App>,
    JsonBody(body): JsonBody<MessageBody>,
) -> Result<(StatusCode, Json<Broadcast>), ApiError> {
    let msg = direct(body)?;
    let reached = app.presence.broadcast(&msg);
    app.cluster.forward_direct(DirectTarget::All, &msg);
    Ok((
        StatusCode::ACCEPTED,
        Json(Broadcast {
            connections: reached,
            event: msg.event,
            id: msg.id,
        }),
    ))
}

/// A user's presence (as [`UserStatus`], the fields in its order).
#[derive(Serialize, ToSchema)]
pub(super) struct UserPresence {
    uid: String,
    /// Whether the user is online (and visible).
    online: bool,
    /// When the user came online (RFC 3339); null while offline.
    #[schema(required = true, format = DateTime)]
    since: Option<String>,
    /// The user's open connections on every node (0 while hidden).
    connections: usize,
}

impl From<UserStatus> for UserPresence {
    fn from(s: UserStatus) -> Self {
        UserPresence {
            uid: s.uid,
            online: s.online,
            since: s.since,
            connections: s.connections,
        }
    }
}

/// `GET /api/users/{uid}`.
#[utoipa::path(
    get,
    path = "/api/users/{uid}",
    operation_id = "getUser",
    tag = "users",
    summary = "A user's presence",
    description = "Online while any connection or lease of the user is live (on any node of a cluster; `connections` counts all nodes). `since`: when they came online (null while offline). A hidden user is reported offline with 0 connections.",
    security(("apiKey" = [])),
    params(("uid" = String, Path, description = "The user id", example = "alice")),
    responses(
        (status = 200, description = "The user's presence", body = UserPresence,
            example = json!({"uid": "alice", "online": true, "since": "2024-10-13T19:09:23Z", "connections": 2})),
        (status = 400, description = "`INVALID_PATH`, `INVALID_USER_ID`", body = ErrorBody),
        (status = 401, description = errors::UNAUTHORIZED, body = ErrorBody)
    )
)]
pub(super) async fn status(
    State(app): State<App>,
    ApiPath(uid): ApiPath<String>,
) -> Result<Json<UserPresence>, ApiError> {
    check_uid(&uid)?;
    Ok(Json(app.services.users().status(&uid).into()))
}

/// A user's privacy (as [`PrivacyStatus`], the fields in its order).
#[derive(Serialize, ToSchema)]
pub(super) struct Privacy {
    uid: String,
    /// Whether others see the user now.
    visible: bool,
    /// The user's stored choice; null: never chose (`--default-visible`
    /// applies).
    #[schema(required = true)]
    choice: Option<bool>,
    /// `--presence-tracking`.
    tracking: bool,
    /// `--allow-user-toggle`: whether users' own choices count.
    user_toggle: bool,
}

impl From<PrivacyStatus> for Privacy {
    fn from(s: PrivacyStatus) -> Self {
        Privacy {
            uid: s.uid,
            visible: s.visible,
            choice: s.choice,
            tracking: s.tracking,
            user_toggle: s.user_toggle,
        }
    }
}

/// `GET /api/users/{uid}/privacy`.
#[utoipa::path(
    get,
    path = "/api/users/{uid}/privacy",
    operation_id = "getUserPrivacy",
    tag = "privacy",
    summary = "A user's privacy",
    description = "`visible`: whether others see the user now; `choice`: the user's stored choice (null: the default, `--default-visible`); `tracking`: `--presence-tracking`; `user_toggle`: `--allow-user-toggle`.",
    security(("apiKey" = [])),
    params(("uid" = String, Path, description = "The user id", example = "alice")),
    responses(
        (status = 200, description = "The user's privacy", body = Privacy,
            example = json!({"uid": "alice", "visible": false, "choice": false, "tracking": true, "user_toggle": true})),
        (status = 400, description = "`INVALID_PATH`, `INVALID_USER_ID`", body = ErrorBody),
        (status = 401, description = errors::UNAUTHORIZED, body = ErrorBody)
    )
)]
pub(super) async fn get_privacy(
    State(app): State<App>,
    ApiPath(uid): ApiPath<String>,
) -> Result<Json<Privacy>, ApiError> {
    check_uid(&uid)?;
    Ok(Json(app.services.privacy().status(&uid).into()))
}

/// The body of `PUT /api/users/{uid}/privacy`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PrivacyBody {
    /// true, false, or null (back to the default, `--default-visible`).
    visible: Option<bool>,
}

/// Stores and applies a choice off the runtime (the store fsyncs).
async fn set_privacy(
    app: &App,
    uid: String,
    visible: Option<bool>,
) -> Result<Json<Privacy>, ApiError> {
    let services = app.services.clone();
    let result = tokio::task::spawn_blocking(move || services.set_privacy(&uid, visible))
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL",
                format!("the privacy change did not complete ({e}); check it with GET and retry"),
            )
        })?;
    match result {
        Ok(status) => Ok(Json(status.into())),
        Err(e @ PrivacyError::ToggleDisabled) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "USER_TOGGLE_DISABLED",
            e.to_string(),
        )),
        Err(e @ PrivacyError::Store(_)) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "PRIVACY_STORE_FAILED",
            e.to_string(),
        )),
    }
}

/// `PUT /api/users/{uid}/privacy`.
#[utoipa::path(
    put,
    path = "/api/users/{uid}/privacy",
    operation_id = "setUserPrivacy",
    tag = "privacy",
    summary = "Set a user's privacy",
    description = "`visible`: true, false, or null (back to the default). Durable before the answer. A hidden user still connects, subscribes and receives messages, but appears in no member list, count, member event, user presence or webhook, on any front end; their current memberships end at once. 409 without `--allow-user-toggle`.",
    security(("apiKey" = [])),
    params(("uid" = String, Path, description = "The user id", example = "alice")),
    request_body(content = PrivacyBody, example = json!({"visible": false})),
    responses(
        (status = 200, description = "The user's privacy now", body = Privacy,
            example = json!({"uid": "alice", "visible": false, "choice": false, "tracking": true, "user_toggle": true})),
        (status = 400, description = "`INVALID_PATH`, `INVALID_USER_ID`, `INVALID_BODY`", body = ErrorBody),
        (status = 401, description = errors::UNAUTHORIZED, body = ErrorBody),
        (status = 408, description = errors::REQUEST_TIMEOUT, body = ErrorBody),
        (status = 409, description = "`USER_TOGGLE_DISABLED`: the server runs without `--allow-user-toggle`", body = ErrorBody),
        (status = 413, description = errors::BODY_TOO_LARGE, body = ErrorBody),
        (status = 500, description = "`INTERNAL`: the change did not complete; check it with GET and retry", body = ErrorBody),
        (status = 503, description = "`PRIVACY_STORE_FAILED`: the privacy store could not record the choice", body = ErrorBody)
    )
)]
pub(super) async fn put_privacy(
    State(app): State<App>,
    ApiPath(uid): ApiPath<String>,
    JsonBody(body): JsonBody<PrivacyBody>,
) -> Result<Json<Privacy>, ApiError> {
    check_uid(&uid)?;
    set_privacy(&app, uid, body.visible).await
}

/// The body of `POST /api/client/privacy`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ClientPrivacyBody {
    /// Hotsock: `connectionId` of `hotsock.connected`.
    connection_id: String,
    /// Hotsock: `connectionSecret` of `hotsock.connected`.
    connection_secret: String,
    /// true, false, or null (back to the default).
    visible: Option<bool>,
}

/// The connection a client names with its id and secret, or 401.
pub(super) fn client_connection(
    app: &App,
    id: &str,
    secret: &str,
) -> Result<crate::presence::ConnectionRef, ApiError> {
    ConnId::parse(id)
        .and_then(|id| app.presence.find_connection(id, secret))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "INVALID_CONNECTION",
                "no open connection has this connection_id and connection_secret; use the values of hotsock.connected on a live connection",
            )
        })
}

/// `POST /api/client/privacy`.
#[utoipa::path(
    post,
    path = "/api/client/privacy",
    operation_id = "setOwnPrivacy",
    tag = "privacy",
    summary = "A client sets its own privacy",
    description = "Authenticated by the connection's id and secret (Hotsock: `connectionId` and `connectionSecret` of `hotsock.connected`) instead of the API key; sets the privacy of the connection's user, as `PUT /api/users/{uid}/privacy`.",
    security(()),
    request_body(content = ClientPrivacyBody,
        example = json!({"connection_id": "8c1f2a3b00000001", "connection_secret": "q8ZxW3kT9vB2", "visible": false})),
    responses(
        (status = 200, description = "The user's privacy now", body = Privacy,
            example = json!({"uid": "alice", "visible": false, "choice": false, "tracking": true, "user_toggle": true})),
        (status = 400, description = "`INVALID_BODY`; `NO_USER`: the connection is anonymous", body = ErrorBody),
        (status = 401, description = "`INVALID_CONNECTION`: no open connection has this id and secret", body = ErrorBody),
        (status = 408, description = errors::REQUEST_TIMEOUT, body = ErrorBody),
        (status = 409, description = "`USER_TOGGLE_DISABLED`: the server runs without `--allow-user-toggle`", body = ErrorBody),
        (status = 413, description = errors::BODY_TOO_LARGE, body = ErrorBody),
        (status = 500, description = "`INTERNAL`: the change did not complete; check it and retry", body = ErrorBody),
        (status = 503, description = "`PRIVACY_STORE_FAILED`: the privacy store could not record the choice", body = ErrorBody)
    )
)]
pub(super) async fn client_privacy(
    State(app): State<App>,
    JsonBody(body): JsonBody<ClientPrivacyBody>,
) -> Result<Json<Privacy>, ApiError> {
    let conn = client_connection(&app, &body.connection_id, &body.connection_secret)?;
    let Some(uid) = conn.user_id else {
        return Err(ApiError::bad_request(
            "NO_USER",
            "this connection is anonymous: privacy belongs to users; connect with a token that has a uid",
        ));
    };
    set_privacy(&app, uid.to_string(), body.visible).await
}
