//! `GET /api/events`: the event stream for backends, as Server-Sent
//! Events. Each event is `event: <name>`, `id: <ULID>` and `data:` the
//! webhook event's JSON; a reader that fell further behind than
//! `--events-backlog` gets `event: gap` with `{"missed": N}` and goes on
//! with the newest events.
//!
//! `POST /api/bus/publish` sends a backend's application message to every
//! node's readers of its topic (`?bus=TOPIC`).

use std::convert::Infallible;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;
use utoipa::{IntoParams, ToSchema};

use super::{ApiError, ApiQuery, EXAMPLE_ID, ErrorBody, JsonBody, MAX_DATA_BYTES, errors};
use crate::app::App;
use crate::auth::Pattern;
use crate::services::webhooks::WebhookEvent;

/// The stream's filters, from the query.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct Filters {
    /// Comma-separated channel patterns (names, `*` globs, `#regex:`);
    /// with it, events without a channel are left out.
    channel: Option<String>,
    /// Comma-separated event names, e.g. `member_added,member_removed`.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    types: Option<String>,
    /// Comma-separated bus topics: their `bus_message`s (only those,
    /// unless `type` names more).
    bus: Option<String>,
}

/// What one reader wants.
struct Wanted {
    channels: Option<Vec<Pattern>>,
    types: Option<Vec<String>>,
    /// Bus topics (bus messages go only to readers that name their topic).
    topics: Vec<String>,
}

impl Wanted {
    fn parse(filters: Filters) -> Result<Wanted, ApiError> {
        let list = |s: &str| -> Vec<String> {
            s.split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(String::from)
                .collect()
        };
        let channels = filters
            .channel
            .as_deref()
            .map(|s| {
                list(s)
                    .iter()
                    .map(|p| {
                        Pattern::parse(p).map_err(|e| {
                            ApiError::bad_request(
                                "INVALID_QUERY",
                                format!("channel pattern {p:?} {e}"),
                            )
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        let topics = filters.bus.as_deref().map(list).unwrap_or_default();
        // A reader of bus topics that names no event types wants only
        // the bus messages.
        let types = match (filters.types.as_deref(), topics.is_empty()) {
            (Some(t), _) => Some(list(t)),
            (None, false) => Some(vec!["bus_message".to_string()]),
            (None, true) => None,
        };
        Ok(Wanted {
            channels,
            types,
            topics,
        })
    }

    /// With a channel filter, events without a channel (user and
    /// connection events) are left out.
    fn wants(&self, event: &WebhookEvent) -> bool {
        if let Some(topic) = &event.topic {
            return self.topics.iter().any(|t| t == topic);
        }
        let type_ok = self
            .types
            .as_ref()
            .is_none_or(|types| types.iter().any(|t| t == event.name));
        let channel_ok = match (&self.channels, &event.channel) {
            (None, _) => true,
            (Some(patterns), Some(channel)) => patterns.iter().any(|p| p.matches(channel)),
            (Some(_), None) => false,
        };
        type_ok && channel_ok
    }
}

/// `data` of `event: gap`: the reader fell behind.
#[derive(Serialize)]
struct Gap {
    /// Events lost, of every type, before the filters.
    missed: u64,
}

/// The handler: a stream that ends when the server shuts down.
#[utoipa::path(
    get,
    path = "/api/events",
    operation_id = "streamEvents",
    tag = "events",
    summary = "Stream events to a backend (Server-Sent Events)",
    description = "`text/event-stream`. Each event is `event: <name>`, `id: <ULID>`, `data: <JSON>` with the webhooks' event JSON: `member_added`, `member_updated`, `member_removed`, `channel_occupied`, `channel_vacated`, `user_online`, `user_offline`, `client_message` (client messages of `--forward-channels` and `[[forward-rules]]`), `bus_message`, and `connection_opened`, `connection_closed` with `connection`, `protocol`, `node` and, closed, `reason` (`client_closed`, `timeout`, `slow_consumer`, `kicked`, `server_shutdown`, `policy`, `protocol_error`, `node_lost`; none for hidden users unless `--hidden-connection-events`): the whole cluster's, on any node. A reader more than `--events-backlog` events behind loses the oldest and gets `event: gap`, `data: {\"missed\": N}` (N counts lost events of every type, before the filters). Comment lines keep the connection alive; the stream ends when the server shuts down.",
    security(("apiKey" = [])),
    params(Filters),
    responses(
        (status = 200, description = "The event stream, until the server shuts down", content_type = "text/event-stream", body = String,
            example = json!("event: member_added\nid: 01JA2Z4K8Q3W7E5R9T1Y6V0H2N\ndata: {\"id\":\"01JA2Z4K8Q3W7E5R9T1Y6V0H2N\",\"name\":\"member_added\",\"channel\":\"presence.room\",\"user_id\":\"alice\",\"data\":{\"name\":\"Alice\"},\"time_ms\":1728846563000}\n\n")),
        (status = 400, description = "`INVALID_QUERY`: e.g. an invalid channel pattern", body = ErrorBody),
        (status = 401, description = errors::UNAUTHORIZED, body = ErrorBody)
    )
)]
pub(super) async fn stream(
    State(app): State<App>,
    ApiQuery(filters): ApiQuery<Filters>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let wanted = Wanted::parse(filters)?;
    let rx = app.services.events().subscribe();
    let shutdown = app.shutdown.handle();
    let events = futures_util::stream::unfold(
        (rx, wanted, shutdown),
        |(mut rx, wanted, mut shutdown)| async move {
            let event = loop {
                let next = tokio::select! {
                    next = rx.recv() => next,
                    _ = shutdown.wait() => return None,
                };
                match next {
                    Ok(event) if wanted.wants(&event) => break sse_event(&event),
                    Ok(_) => continue,
                    Err(RecvError::Lagged(missed)) => {
                        let gap = serde_json::to_string(&Gap { missed });
                        break Event::default()
                            .event("gap")
                            .data(gap.unwrap_or_else(|_| "{}".into()));
                    }
                    Err(RecvError::Closed) => return None,
                }
            };
            Some((Ok(event), (rx, wanted, shutdown)))
        },
    );
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

/// The body of `POST /api/bus/publish`.
#[derive(Debug, Deserialize, ToSchema)]
pub(super) struct BusBody {
    /// The topic: 1-256 characters without whitespace or control
    /// characters.
    topic: String,
    /// Any JSON value, at most 32 KiB.
    #[serde(default)]
    #[schema(value_type = Value)]
    data: Value,
}

/// A bus message was sent.
#[derive(Serialize, ToSchema)]
pub(super) struct BusPublished {
    /// The message id (a ULID).
    id: String,
    topic: String,
}

/// `POST /api/bus/publish`: to every node's readers of the topic.
#[utoipa::path(
    post,
    path = "/api/bus/publish",
    operation_id = "publishToBus",
    tag = "events",
    summary = "Send an application message to backends on every node",
    description = "Every `GET /api/events?bus=TOPIC` reader on every node of the cluster gets it as `bus_message` with `topic`, `data` and `node` (where it was sent). Not stored: readers connected later do not get it.",
    security(("apiKey" = [])),
    request_body(content = BusBody, example = json!({"topic": "cache.invalidate", "data": {"key": "user:42"}})),
    responses(
        (status = 202, description = "Sent", body = BusPublished,
            example = json!({"id": EXAMPLE_ID, "topic": "cache.invalidate"})),
        (status = 400, description = "`INVALID_BODY`, `INVALID_TOPIC`", body = ErrorBody),
        (status = 401, description = errors::UNAUTHORIZED, body = ErrorBody),
        (status = 408, description = errors::REQUEST_TIMEOUT, body = ErrorBody),
        (status = 413, description = "`MESSAGE_TOO_LARGE`: the body is over 256 KiB or `data` over 32 KiB", body = ErrorBody)
    )
)]
pub(super) async fn bus_publish(
    State(app): State<App>,
    JsonBody(body): JsonBody<BusBody>,
) -> Result<(StatusCode, Json<BusPublished>), ApiError> {
    crate::names::check_channel(&body.topic)
        .map_err(|why| ApiError::bad_request("INVALID_TOPIC", why.replace("channel", "topic")))?;
    let size = body.data.to_string().len();
    if size > MAX_DATA_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "MESSAGE_TOO_LARGE",
            format!("data is {size} bytes; the limit is {MAX_DATA_BYTES}"),
        ));
    }
    let id = app.services.bus_publish(&body.topic, body.data);
    Ok((
        StatusCode::ACCEPTED,
        Json(BusPublished {
            id,
            topic: body.topic,
        }),
    ))
}

fn sse_event(event: &Arc<WebhookEvent>) -> Event {
    let data = serde_json::to_string(&**event).unwrap_or_else(|_| "{}".into());
    Event::default()
        .event(event.name)
        .id(event.id.clone())
        .data(data)
}
