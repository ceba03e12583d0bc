//! Channel routes: publish, send to everyone present, listings, members
//! and counts, health.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::{ApiError, ApiPath, ApiQuery, JsonBody, MAX_DATA_BYTES, check_channel, check_event};
use crate::app::App;
use crate::ids;
use crate::presence::ChannelMessage;

pub(super) async fn healthz(State(app): State<App>) -> Json<Value> {
    let stats = app.presence.stats();
    let cluster = app.cluster.stats();
    // Alive as long as it answers; `bus` says whether the cluster link is up
    // (`/readyz` turns that into a status code for load balancers).
    Json(json!({
        "status": "ok",
        "connections": stats.connections,
        "channels": stats.channels,
        "bus": cluster.bus_state,
        "nodes": cluster.nodes,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PublishBody {
    channel: String,
    event: String,
    #[serde(default)]
    data: Option<Box<RawValue>>,
}

/// `{"event","data"}`: a message without a channel (the route names the
/// target).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MessageBody {
    pub(super) event: String,
    #[serde(default)]
    pub(super) data: Option<Box<RawValue>>,
}

/// Checks `data`'s size; JSON `null` counts as no data.
pub(super) fn check_data(data: Option<Box<RawValue>>) -> Result<Option<Box<RawValue>>, ApiError> {
    if let Some(d) = &data
        && d.get().len() > MAX_DATA_BYTES
    {
        return Err(ApiError::bad_request(
            "MESSAGE_TOO_LARGE",
            format!(
                "data is {} bytes; the limit is {MAX_DATA_BYTES}",
                d.get().len()
            ),
        ));
    }
    Ok(data.filter(|d| d.get() != "null"))
}

pub(super) async fn publish(
    State(app): State<App>,
    JsonBody(body): JsonBody<PublishBody>,
) -> Result<Response, ApiError> {
    check_channel(&body.channel)?;
    check_event(&body.event)?;
    let data = check_data(body.data)?;
    let msg = ChannelMessage {
        id: ids::ulid(),
        channel: Arc::from(body.channel.as_str()),
        event: body.event,
        data,
        sender: None,
    };
    app.presence.publish(&msg);
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"channel": &*msg.channel, "event": msg.event, "id": msg.id})),
    )
        .into_response())
}

async fn send_present(app: &App, channel: &str, body: MessageBody) -> Result<Response, ApiError> {
    check_channel(channel)?;
    check_event(&body.event)?;
    let data = check_data(body.data)?;
    let (id, reached) = app.services.send_to_present(channel, &body.event, data);
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"channel": channel, "event": body.event, "id": id, "connections": reached})),
    )
        .into_response())
}

pub(super) async fn send_to_present(
    State(app): State<App>,
    ApiPath(name): ApiPath<String>,
    JsonBody(body): JsonBody<MessageBody>,
) -> Result<Response, ApiError> {
    send_present(&app, &name, body).await
}

pub(super) async fn send_to_content(
    State(app): State<App>,
    ApiPath(id): ApiPath<String>,
    JsonBody(body): JsonBody<MessageBody>,
) -> Result<Response, ApiError> {
    send_present(&app, &format!("content:{id}"), body).await
}

pub(super) async fn send_to_service(
    State(app): State<App>,
    ApiPath(id): ApiPath<String>,
    JsonBody(body): JsonBody<MessageBody>,
) -> Result<Response, ApiError> {
    send_present(&app, &format!("service:{id}"), body).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    prefix: Option<String>,
}

pub(super) async fn list(State(app): State<App>, ApiQuery(q): ApiQuery<ListQuery>) -> Json<Value> {
    // Cluster-wide: other nodes' members and subscribers are in the core.
    let mut channels = app.presence.channels();
    if let Some(prefix) = &q.prefix {
        channels.retain(|c| c.name.starts_with(prefix.as_str()));
    }
    Json(json!({ "channels": channels }))
}

pub(super) async fn info(
    State(app): State<App>,
    ApiPath(name): ApiPath<String>,
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PageQuery {
    offset: Option<usize>,
    limit: Option<usize>,
}

/// Largest page of members.
const MAX_PAGE: usize = 1000;

pub(super) async fn members(
    State(app): State<App>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<Value>, ApiError> {
    check_channel(&name)?;
    let offset = q.offset.unwrap_or(0);
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::bad_request(
            "INVALID_QUERY",
            format!("limit must be 1 to {MAX_PAGE}"),
        ));
    }
    let (total, page) = app
        .presence
        .with_members(&name, |m| {
            let page: Vec<Value> = m
                .iter()
                .skip(offset)
                .take(limit)
                .map(|m| json!({"uid": m.user_id, "umd": m.info}))
                .collect();
            (m.len(), page)
        })
        .unwrap_or((0, Vec::new()));
    let next = offset.saturating_add(page.len());
    Ok(Json(json!({
        "channel": name,
        "total": total,
        "offset": offset,
        "members": page,
        "next_offset": (next < total).then_some(next),
    })))
}

fn summary_of(app: &App, channel: &str) -> Result<Json<Value>, ApiError> {
    check_channel(channel)?;
    let info = app.presence.channel_info(channel);
    Ok(Json(json!({
        "channel": channel,
        "members": info.members.len(),
        "connections": info.connections,
    })))
}

pub(super) async fn summary(
    State(app): State<App>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    summary_of(&app, &name)
}

pub(super) async fn content_summary(
    State(app): State<App>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    summary_of(&app, &format!("content:{id}"))
}

pub(super) async fn service_summary(
    State(app): State<App>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    summary_of(&app, &format!("service:{id}"))
}
