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
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use super::{ApiError, ApiQuery, JsonBody, MAX_DATA_BYTES};
use crate::app::App;
use crate::auth::Pattern;
use crate::services::webhooks::WebhookEvent;

/// The stream's filters, from the query.
#[derive(Debug, Default, Deserialize)]
pub(super) struct Filters {
    /// Comma-separated channel patterns (names, `*` globs, `#regex:`).
    channel: Option<String>,
    /// Comma-separated event names.
    #[serde(rename = "type")]
    types: Option<String>,
    /// Comma-separated bus topics.
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

/// The handler: a stream that ends when the server shuts down.
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
                        break Event::default()
                            .event("gap")
                            .data(json!({"missed": missed}).to_string());
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
#[derive(Debug, Deserialize)]
pub(super) struct BusBody {
    topic: String,
    #[serde(default)]
    data: Value,
}

/// `POST /api/bus/publish`: to every node's readers of the topic.
pub(super) async fn bus_publish(
    State(app): State<App>,
    JsonBody(body): JsonBody<BusBody>,
) -> Result<Response, ApiError> {
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
        Json(json!({"topic": body.topic, "id": id})),
    )
        .into_response())
}

fn sse_event(event: &Arc<WebhookEvent>) -> Event {
    let data = serde_json::to_string(&**event).unwrap_or_else(|_| "{}".into());
    Event::default()
        .event(event.name)
        .id(event.id.clone())
        .data(data)
}
