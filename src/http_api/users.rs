//! User routes: send to a user, broadcast, user presence and privacy.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::channels::{MessageBody, check_data};
use super::{ApiError, ApiPath, JsonBody, check_event, check_uid};
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

pub(super) async fn send_to_user(
    State(app): State<App>,
    ApiPath(uid): ApiPath<String>,
    JsonBody(body): JsonBody<MessageBody>,
) -> Result<Response, ApiError> {
    check_uid(&uid)?;
    let msg = direct(body)?;
    let reached = app.presence.send_to_user(&uid, &msg);
    app.cluster
        .forward_direct(DirectTarget::User(uid.clone()), &msg);
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"uid": uid, "event": msg.event, "id": msg.id, "connections": reached})),
    )
        .into_response())
}

pub(super) async fn broadcast(
    State(app): State<App>,
    JsonBody(body): JsonBody<MessageBody>,
) -> Result<Response, ApiError> {
    let msg = direct(body)?;
    let reached = app.presence.broadcast(&msg);
    app.cluster.forward_direct(DirectTarget::All, &msg);
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"event": msg.event, "id": msg.id, "connections": reached})),
    )
        .into_response())
}

pub(super) async fn status(
    State(app): State<App>,
    ApiPath(uid): ApiPath<String>,
) -> Result<Json<UserStatus>, ApiError> {
    check_uid(&uid)?;
    Ok(Json(app.services.users().status(&uid)))
}

pub(super) async fn get_privacy(
    State(app): State<App>,
    ApiPath(uid): ApiPath<String>,
) -> Result<Json<PrivacyStatus>, ApiError> {
    check_uid(&uid)?;
    Ok(Json(app.services.privacy().status(&uid)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PrivacyBody {
    visible: Option<bool>,
}

/// Stores and applies a choice off the runtime (the store fsyncs).
async fn set_privacy(
    app: &App,
    uid: String,
    visible: Option<bool>,
) -> Result<Json<PrivacyStatus>, ApiError> {
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
        Ok(status) => Ok(Json(status)),
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

pub(super) async fn put_privacy(
    State(app): State<App>,
    ApiPath(uid): ApiPath<String>,
    JsonBody(body): JsonBody<PrivacyBody>,
) -> Result<Json<PrivacyStatus>, ApiError> {
    check_uid(&uid)?;
    set_privacy(&app, uid, body.visible).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ClientPrivacyBody {
    connection_id: String,
    connection_secret: String,
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

pub(super) async fn client_privacy(
    State(app): State<App>,
    JsonBody(body): JsonBody<ClientPrivacyBody>,
) -> Result<Json<PrivacyStatus>, ApiError> {
    let conn = client_connection(&app, &body.connection_id, &body.connection_secret)?;
    let Some(uid) = conn.user_id else {
        return Err(ApiError::bad_request(
            "NO_USER",
            "this connection is anonymous: privacy belongs to users; connect with a token that has a uid",
        ));
    };
    set_privacy(&app, uid.to_string(), body.visible).await
}
