//! Channel routes: publish, send to everyone present, listings, members
//! and counts, health.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use utoipa::{IntoParams, ToSchema};

use super::{
    ApiError, ApiPath, ApiQuery, EXAMPLE_ID, ErrorBody, JsonBody, MAX_DATA_BYTES, check_channel,
    check_event, errors,
};
use crate::app::App;
use crate::cluster::BusState;
use crate::ids;
use crate::presence::{ChannelMessage, ChannelSummary};

/// `GET /healthz`.
#[derive(Serialize, ToSchema)]
pub(super) struct Health {
    /// The cluster bus link (`/readyz` turns it into a status code).
    bus: BusLink,
    /// Channels with at least one subscriber or member on this node.
    channels: usize,
    /// Open connections on this node.
    connections: usize,
    /// Nodes alive, this one included.
    nodes: usize,
    /// Always `ok` while the process answers.
    status: HealthStatus,
}

/// The health status: the process answers.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(super) enum HealthStatus {
    Ok,
}

/// The state of the node's cluster bus link.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(super) enum BusLink {
    /// `--bus memory`: one node, nothing to connect to.
    Standalone,
    Connecting,
    Connected,
    /// Connected, but the node's own heartbeats stopped coming back.
    Stalled,
    /// Not connected; retrying.
    Disconnected,
    /// Shutting down.
    Left,
}

impl From<BusState> for BusLink {
    fn from(state: BusState) -> Self {
        match state {
            BusState::Standalone => BusLink::Standalone,
            BusState::Connecting => BusLink::Connecting,
            BusState::Connected => BusLink::Connected,
            BusState::Stalled => BusLink::Stalled,
            BusState::Disconnected => BusLink::Disconnected,
            BusState::Left => BusLink::Left,
        }
    }
}

/// `GET /healthz`.
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "getHealth",
    tag = "health",
    summary = "Liveness and counts",
    description = "Always 200 while the process answers; `bus` says whether the cluster link is up. Open: no API key.",
    security(()),
    responses(
        (status = 200, description = "Alive", body = Health,
            example = json!({"bus": "standalone", "channels": 3, "connections": 12, "nodes": 1, "status": "ok"}))
    )
)]
pub(super) async fn healthz(State(app): State<App>) -> Json<Health> {
    let stats = app.presence.stats();
    let cluster = app.cluster_stats();
    // Alive as long as it answers; `bus` says whether the cluster link is up
    // (`/readyz` turns that into a status code for load balancers).
    Json(Health {
        bus: cluster.bus_state.into(),
        channels: stats.channels,
        connections: stats.connections,
        nodes: cluster.nodes,
        status: HealthStatus::Ok,
    })
}

/// The body of `POST /api/publish`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PublishBody {
    /// 1-256 characters without whitespace or control characters.
    channel: String,
    /// The event name.
    event: String,
    /// Any JSON value, at most 32 KiB; null or absent: none.
    #[serde(default)]
    #[schema(value_type = Value)]
    data: Option<Box<RawValue>>,
}

/// `{"event","data"}`: a message without a channel (the route names the
/// target).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct MessageBody {
    /// The event name.
    pub(super) event: String,
    /// Any JSON value, at most 32 KiB; null or absent: none.
    #[serde(default)]
    #[schema(value_type = Value)]
    pub(super) data: Option<Box<RawValue>>,
}

/// A channel message was published.
#[derive(Serialize, ToSchema)]
pub(super) struct Published {
    channel: String,
    event: String,
    /// The message id (a ULID), as subscribers get it.
    id: String,
}

/// A message went to everyone present to a channel.
#[derive(Serialize, ToSchema)]
pub(super) struct SentToPresent {
    channel: String,
    /// Connections reached on the node asked.
    connections: usize,
    event: String,
    /// The message id (a ULID).
    id: String,
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

/// `POST /api/publish`.
#[utoipa::path(
    post,
    path = "/api/publish",
    operation_id = "publish",
    tag = "messages",
    summary = "Publish to a channel",
    description = "Every subscriber of the channel, on every front end, receives a channel message `{\"id\",\"event\",\"channel\",\"data\"}` (no `meta`). See also `POST /api/channels/{name}/send`, which also reaches lease holders.",
    security(("apiKey" = [])),
    request_body(content = PublishBody,
        example = json!({"channel": "presence.room1", "event": "news", "data": {"text": "hi"}})),
    responses(
        (status = 202, description = "Published", body = Published,
            example = json!({"channel": "presence.room1", "event": "news", "id": EXAMPLE_ID})),
        (status = 400, description = "`INVALID_BODY`, `INVALID_CHANNEL_NAME`, `INVALID_EVENT_NAME`, `MESSAGE_TOO_LARGE` (data over 32 KiB)", body = ErrorBody),
        (status = 401, description = errors::UNAUTHORIZED, body = ErrorBody),
        (status = 408, description = errors::REQUEST_TIMEOUT, body = ErrorBody),
        (status = 413, description = errors::BODY_TOO_LARGE, body = ErrorBody)
    )
)]
pub(super) async fn publish(
    State(app): State<App>,
    JsonBody(body): JsonBody<PublishBody>,
) -> Result<(StatusCode, Json<Published>), ApiError> {
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
        Json(Published {
            channel: body.channel,
            event: msg.event,
            id: msg.id,
        }),
    ))
}

async fn send_present(
    app: &App,
    channel: String,
    body: MessageBody,
) -> Result<(StatusCode, Json<SentToPresent>), ApiError> {
    check_channel(&channel)?;
    check_event(&body.event)?;
    let data = check_data(body.data)?;
    let (id, reached) = app.services.send_to_present(&channel, &body.event, data);
    Ok((
        StatusCode::ACCEPTED,
        Json(SentToPresent {
            channel,
            connections: reached,
            event: body.event,
            id,
        }),
    ))
}

/// `POST /api/channels/{name}/send`.
#[utoipa::path(
    post,
    path = "/api/channels/{name}/send",
    operation_id = "sendToChannelPresent",
    tag = "messages",
    summary = "Send to everyone present to a channel",
    description = "Everyone present to the channel gets the message: its subscribers as a channel message `{\"id\",\"event\",\"channel\",\"data\"}` (as `POST /api/publish`), and lease holders that are not subscribed as a direct message with the same `id`, `event` and `data`, on every node of a cluster (`connections` counts the node asked). Hidden users still receive it.",
    security(("apiKey" = [])),
    params(("name" = String, Path, description = "The channel", example = "content:42")),
    request_body(content = MessageBody, example = json!({"event": "ideavoted", "data": {"yes": 3, "no": 1}})),
    responses(
        (status = 202, description = "Sent", body = SentToPresent,
            example = json!({"channel": "content:42", "connections": 5, "event": "ideavoted", "id": EXAMPLE_ID})),
        (status = 400, description = "`INVALID_PATH`, `INVALID_BODY`, `INVALID_CHANNEL_NAME`, `INVALID_EVENT_NAME`, `MESSAGE_TOO_LARGE` (data over 32 KiB)", body = ErrorBody),
        (status = 401, description = errors::UNAUTHORIZED, body = ErrorBody),
        (status = 408, description = errors::REQUEST_TIMEOUT, body = ErrorBody),
        (status = 413, description = errors::BODY_TOO_LARGE, body = ErrorBody)
    )
)]
pub(super) async fn send_to_present(
    State(app): State<App>,
    ApiPath(name): ApiPath<String>,
    JsonBody(body): JsonBody<MessageBody>,
) -> Result<(StatusCode, Json<SentToPresent>), ApiError> {
    send_present(&app, name, body).await
}

/// `POST /api/content/{id}/send`.
#[utoipa::path(
    post,
    path = "/api/content/{id}/send",
    operation_id = "sendToContentPresent",
    tag = "messages",
    summary = "Send to everyone present to a content id",
    description = "Same as `POST /api/channels/content:{id}/send` (the seed's SendToUsersPresentToContent).",
    security(("apiKey" = [])),
    params(("id" = String, Path, description = "The content id: the channel is `content:{id}`", example = "42")),
    request_body(content = MessageBody, example = json!({"event": "ideavoted", "data": {"yes": 3, "no": 1}})),
    responses(
        (status = 202, description = "Sent", body = SentToPresent,
            example = json!({"channel": "content:42", "connections": 5, "event": "ideavoted", "id": EXAMPLE_ID})),
        (status = 400, description = "`INVALID_PATH`, `INVALID_BODY`, `INVALID_CHANNEL_NAME`, `INVALID_EVENT_NAME`, `MESSAGE_TOO_LARGE` (data over 32 KiB)", body = ErrorBody),
        (status = 401, description = errors::UNAUTHORIZED, body = ErrorBody),
        (status = 408, description = errors::REQUEST_TIMEOUT, body = ErrorBody),
        (status = 413, description = errors::BODY_TOO_LARGE, body = ErrorBody)
    )
)]
pub(super) async fn send_to_content(
    State(app): State<App>,
    ApiPath(id): ApiPath<String>,
    JsonBody(body): JsonBody<MessageBody>,
) -> Result<(StatusCode, Json<SentToPresent>), ApiError> {
    send_present(&app, format!("content:{id}"), body).await
}

/// `POST /api/services/{id}/send`.
#[utoipa::path(
    post,
    path = "/api/services/{id}/send",
    operation_id = "sendToServicePresent",
    tag = "messages",
    summary = "Send to everyone present to a service id",
    description = "Same as `POST /api/channels/service:{id}/send` (the seed's SendToUsersPresentToService).",
    security(("apiKey" = [])),
    params(("id" = String, Path, description = "The service id: the channel is `service:{id}`", example = "abc")),
    request_body(content = MessageBody, example = json!({"event": "ideavoted", "data": {"yes": 3, "no": 1}})),
    responses(
        (status = 202, description = "Sent", body = SentToPresent,
            example = json!({"channel": "service:abc", "connections": 1, "event": "ideavoted", "id": EXAMPLE_ID})),
        (status = 400, description = "`INVALID_PATH`, `INVALID_BODY`, `INVALID_CHANNEL_NAME`, `INVALID_EVENT_NAME`, `MESSAGE_TOO_LARGE` (data over 32 KiB)", body = ErrorBody),
        (status = 401, description = errors::UNAUTHORIZED, body = ErrorBody),
        (status = 408, description = errors::REQUEST_TIMEOUT, body = ErrorBody),
        (status = 413, description = errors::BODY_TOO_LARGE, body = ErrorBody)
    )
)]
pub(super) async fn send_to_service(
    State(app): State<App>,
    ApiPath(id): ApiPath<String>,
    JsonBody(body): JsonBody<MessageBody>,
) -> Result<(StatusCode, Json<SentToPresent>), ApiError> {
    send_present(&app, format!("service:{id}"), body).await
}

/// The query of `GET /api/channels`.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct ListQuery {
    /// Only channels whose name starts with this, e.g. `content:`.
    prefix: Option<String>,
    /// Only channels whose name contains this.
    contains: Option<String>,
    /// Channels to skip (default 0).
    offset: Option<usize>,
    /// Page size, 1-1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// `GET /api/channels`: one page.
#[derive(Serialize, ToSchema)]
pub(super) struct ChannelList {
    /// Occupied channels, sorted by name.
    channels: Vec<ChannelCounts>,
    /// The offset of the next page; null on the last page.
    #[schema(required = true)]
    next_offset: Option<usize>,
    offset: usize,
    /// Channels that match the filters, on every page together.
    total: usize,
}

/// One occupied channel.
#[derive(Serialize, ToSchema)]
pub(super) struct ChannelCounts {
    /// Subscriptions plus leases and remote presences.
    connections: usize,
    /// Member-data bytes in use (JSON size of uid and umd per member).
    member_bytes: usize,
    /// Distinct members.
    members: usize,
    name: String,
}

impl From<ChannelSummary> for ChannelCounts {
    fn from(c: ChannelSummary) -> Self {
        ChannelCounts {
            connections: c.connections,
            member_bytes: c.member_bytes,
            members: c.members,
            name: c.name,
        }
    }
}

/// `GET /api/channels`.
#[utoipa::path(
    get,
    path = "/api/channels",
    operation_id = "listChannels",
    tag = "channels",
    summary = "List occupied channels with counts, one page at a time",
    description = "Sorted by name, from `offset` (default 0), at most `limit` (default 100, at most 1000). `total` counts the channels that match the filters; `next_offset` is null on the last page. `connections` counts subscriptions plus leases and remote presences; hidden users count nowhere.",
    security(("apiKey" = [])),
    params(ListQuery),
    responses(
        (status = 200, description = "The channels", body = ChannelList,
            example = json!({"channels": [{"connections": 3, "member_bytes": 64, "members": 2, "name": "content:42"}], "next_offset": null, "offset": 0, "total": 1})),
        (status = 400, description = "`INVALID_QUERY` (e.g. `limit` out of range)", body = ErrorBody),
        (status = 401, description = errors::UNAUTHORIZED, body = ErrorBody)
    )
)]
pub(super) async fn list(
    State(app): State<App>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<ChannelList>, ApiError> {
    let (offset, limit) = page_bounds(q.offset, q.limit)?;
    // Cluster-wide: other nodes' members and subscribers are in the core.
    let mut channels = app.presence.channels();
    if let Some(prefix) = &q.prefix {
        channels.retain(|c| c.name.starts_with(prefix.as_str()));
    }
    if let Some(part) = &q.contains {
        channels.retain(|c| c.name.contains(part.as_str()));
    }
    let total = channels.len();
    let page: Vec<ChannelCounts> = channels
        .into_iter()
        .skip(offset)
        .take(limit)
        .map(ChannelCounts::from)
        .collect();
    let next = offset.saturating_add(page.len());
    Ok(Json(ChannelList {
        channels: page,
        next_offset: (next < total).then_some(next),
        offset,
        total,
    }))
}

/// Page size when the query names no `limit`.
const DEFAULT_PAGE: usize = 100;

/// `offset` (default 0) and `limit` (default [`DEFAULT_PAGE`], 1 to
/// [`MAX_PAGE`]) of a paged listing.
fn page_bounds(offset: Option<usize>, limit: Option<usize>) -> Result<(usize, usize), ApiError> {
    let limit = limit.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::bad_request(
            "INVALID_QUERY",
            format!("limit must be 1 to {MAX_PAGE}"),
        ));
    }
    Ok((offset.unwrap_or(0), limit))
}

/// A member of a channel.
#[derive(Serialize, ToSchema)]
pub(super) struct Member {
    /// The user id (or the connection id of an anonymous member).
    uid: String,
    /// The member's data: any JSON value the client or backend gave.
    #[schema(value_type = Value)]
    umd: Value,
}

/// `GET /api/channels/{name}`.
#[derive(Serialize, ToSchema)]
pub(super) struct ChannelInfo {
    /// Members in join order: present on `presence.` channels (even when
    /// empty) and on any channel that has members.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    members: Option<Vec<Member>>,
    name: String,
    /// Connections subscribed (in a cluster: on every node).
    #[serde(rename = "subscriptionsCount")]
    subscriptions_count: usize,
}

/// `GET /api/channels/{name}`.
#[utoipa::path(
    get,
    path = "/api/channels/{name}",
    operation_id = "getChannel",
    tag = "channels",
    summary = "A channel's members",
    description = "`subscriptionsCount` counts connections (in a cluster: on every node, other nodes' non-member subscriptions as of their last heartbeat); `members` (join order) is present on `presence.` channels, even when empty, and on any channel that has members. For large channels use `/members`.",
    security(("apiKey" = [])),
    params(("name" = String, Path, description = "The channel", example = "content:42")),
    responses(
        (status = 200, description = "The channel", body = ChannelInfo,
            example = json!({"members": [{"uid": "alice", "umd": {"name": "Alice"}}], "name": "content:42", "subscriptionsCount": 3})),
        (status = 400, description = "`INVALID_PATH`, `INVALID_CHANNEL_NAME`", body = ErrorBody),
        (status = 401, description = errors::UNAUTHORIZED, body = ErrorBody)
    )
)]
pub(super) async fn info(
    State(app): State<App>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<ChannelInfo>, ApiError> {
    check_channel(&name)?;
    let info = app.presence.channel_info(&name);
    let members: Vec<Member> = info
        .members
        .iter()
        .map(|m| Member {
            uid: m.user_id.to_string(),
            umd: (*m.info).clone(),
        })
        .collect();
    // As Hotsock: `members` on presence channels (even when empty) and,
    // since any front end can make members, on every channel that has some.
    let members = (name.starts_with("presence.") || !members.is_empty()).then_some(members);
    Ok(Json(ChannelInfo {
        members,
        name: info.name,
        subscriptions_count: info.connections,
    }))
}

/// The query of `GET /api/channels/{name}/members`.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct PageQuery {
    /// Members to skip (default 0).
    offset: Option<usize>,
    /// Page size, 1-1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// One page of a channel's members.
#[derive(Serialize, ToSchema)]
pub(super) struct MemberPage {
    channel: String,
    /// Members in join order.
    members: Vec<Member>,
    /// The offset of the next page; null on the last page.
    #[schema(required = true)]
    next_offset: Option<usize>,
    offset: usize,
    /// Members in the channel.
    total: usize,
}

/// Largest page of members or channels.
const MAX_PAGE: usize = 1000;

/// `GET /api/channels/{name}/members`.
#[utoipa::path(
    get,
    path = "/api/channels/{name}/members",
    operation_id = "listChannelMembers",
    tag = "channels",
    summary = "A channel's members, one page at a time",
    description = "Members in join order from `offset` (default 0), at most `limit` (default 100, at most 1000). `next_offset` is null on the last page.",
    security(("apiKey" = [])),
    params(("name" = String, Path, description = "The channel", example = "content:42"), PageQuery),
    responses(
        (status = 200, description = "One page", body = MemberPage,
            example = json!({"channel": "content:42", "members": [{"uid": "alice", "umd": null}], "next_offset": 100, "offset": 0, "total": 250})),
        (status = 400, description = "`INVALID_PATH`, `INVALID_CHANNEL_NAME`, `INVALID_QUERY` (e.g. `limit` out of range)", body = ErrorBody),
        (status = 401, description = errors::UNAUTHORIZED, body = ErrorBody)
    )
)]
pub(super) async fn members(
    State(app): State<App>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<MemberPage>, ApiError> {
    check_channel(&name)?;
    let (offset, limit) = page_bounds(q.offset, q.limit)?;
    let (total, page) = app
        .presence
        .with_members(&name, |m| {
            let page: Vec<Member> = m
                .iter()
                .skip(offset)
                .take(limit)
                .map(|m| Member {
                    uid: m.user_id.to_string(),
                    umd: m.info.clone(),
                })
                .collect();
            (m.len(), page)
        })
        .unwrap_or((0, Vec::new()));
    let next = offset.saturating_add(page.len());
    Ok(Json(MemberPage {
        channel: name,
        members: page,
        next_offset: (next < total).then_some(next),
        offset,
        total,
    }))
}

/// Counts for a channel.
#[derive(Serialize, ToSchema)]
pub(super) struct Summary {
    channel: String,
    /// Subscriptions, leases and remote presences.
    connections: usize,
    /// Distinct members.
    members: usize,
}

fn summary_of(app: &App, channel: String) -> Result<Json<Summary>, ApiError> {
    check_channel(&channel)?;
    let info = app.presence.channel_info(&channel);
    Ok(Json(Summary {
        channel,
        connections: info.connections,
        members: info.members.len(),
    }))
}

/// `GET /api/channels/{name}/summary`.
#[utoipa::path(
    get,
    path = "/api/channels/{name}/summary",
    operation_id = "getChannelSummary",
    tag = "channels",
    summary = "Counts for a channel",
    description = "Members (distinct users) and connections (subscriptions, leases and remote presences).",
    security(("apiKey" = [])),
    params(("name" = String, Path, description = "The channel", example = "content:42")),
    responses(
        (status = 200, description = "The counts", body = Summary,
            example = json!({"channel": "content:42", "connections": 3, "members": 2})),
        (status = 400, description = "`INVALID_PATH`, `INVALID_CHANNEL_NAME`", body = ErrorBody),
        (status = 401, description = errors::UNAUTHORIZED, body = ErrorBody)
    )
)]
pub(super) async fn summary(
    State(app): State<App>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<Summary>, ApiError> {
    summary_of(&app, name)
}

/// `GET /api/content/{id}/summary`.
#[utoipa::path(
    get,
    path = "/api/content/{id}/summary",
    operation_id = "getContentSummary",
    tag = "channels",
    summary = "Counts for a content id",
    description = "The seed's content presence summary: counts of `content:{id}`.",
    security(("apiKey" = [])),
    params(("id" = String, Path, description = "The content id: the channel is `content:{id}`", example = "42")),
    responses(
        (status = 200, description = "The counts", body = Summary,
            example = json!({"channel": "content:42", "connections": 3, "members": 2})),
        (status = 400, description = "`INVALID_PATH`, `INVALID_CHANNEL_NAME`", body = ErrorBody),
        (status = 401, description = errors::UNAUTHORIZED, body = ErrorBody)
    )
)]
pub(super) async fn content_summary(
    State(app): State<App>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Summary>, ApiError> {
    summary_of(&app, format!("content:{id}"))
}

/// `GET /api/services/{id}/summary`.
#[utoipa::path(
    get,
    path = "/api/services/{id}/summary",
    operation_id = "getServiceSummary",
    tag = "channels",
    summary = "Counts for a service id",
    description = "Counts of `service:{id}`.",
    security(("apiKey" = [])),
    params(("id" = String, Path, description = "The service id: the channel is `service:{id}`", example = "abc")),
    responses(
        (status = 200, description = "The counts", body = Summary,
            example = json!({"channel": "service:abc", "connections": 1, "members": 1})),
        (status = 400, description = "`INVALID_PATH`, `INVALID_CHANNEL_NAME`", body = ErrorBody),
        (status = 401, description = errors::UNAUTHORIZED, body = ErrorBody)
    )
)]
pub(super) async fn service_summary(
    State(app): State<App>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Summary>, ApiError> {
    summary_of(&app, format!("service:{id}"))
}
