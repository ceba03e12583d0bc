//! The server-side HTTP API. Every route is listed once, in [`api`]: each
//! handler carries its OpenAPI operation (`#[utoipa::path]`: operationId,
//! parameters, typed request and response bodies, every status it
//! answers), and utoipa-axum's `routes!` adds the handler to the router
//! ([`routes`]) and its operation to the document (`GET /api/openapi.json`,
//! [`openapi`]) in one step, so the two cannot disagree.
//!
//! Routes marked "API key" need `Authorization: Bearer <api key>`; client
//! routes authenticate with a connection's id and secret (Hotsock's
//! `connectionId` / `connectionSecret`) in the body. Every error, including
//! unknown routes and wrong methods, is JSON ([`ErrorBody`]):
//!
//! ```json
//! {"error":{"code":"INVALID_CHANNEL_NAME","message":"channel must be 1 to 256 characters"}}
//! ```
//!
//! The response structs declare their fields in the order the wire has
//! always had (sorted, as `serde_json` maps are), so answers stay
//! byte-for-byte what clients saw before the types.

mod admin;
mod channels;
mod events;
mod extract;
mod leases;
pub mod openapi;
mod stats;
mod users;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::Serialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::App;

pub use extract::{ApiPath, ApiQuery, JsonBody};

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// Largest `data` of a message (as for client messages).
pub const MAX_DATA_BYTES: usize = 32 * 1024;

/// The example message id of the document (a valid ULID: the document's
/// test checks every `id` example).
const EXAMPLE_ID: &str = "01JA2Z4K8Q3W7E5R9T1Y6V0H2N";

/// Every route of the API, in one place, grouped by how it is
/// authenticated; `api_key` puts the API-key check on its group (the
/// document is built with no check: it only needs the operations).
///
/// To add a route: write its handler with typed `ToSchema` request and
/// response structs and a `#[utoipa::path(...)]` giving `operation_id`,
/// `tag`, `params`, `request_body`, every status it answers (errors with
/// `body = ErrorBody`, see [`errors`]) and `security` as its group says
/// (`(("apiKey" = []))` for the API-key group); then add
/// `.routes(routes!(module::handler))` to its group below (the methods of
/// one path go in one `routes!`). Patterns to copy: query parameters as
/// an `IntoParams` struct (`channels::PageQuery`, with `next_offset` as a
/// required `Option`), an optional body as `request_body(content =
/// Option<T>)` (`admin::disconnect_user`). Never `.route(...)`: that
/// route would be missing from the document. The `openapi` integration
/// test then validates the document and checks every operation against
/// the router.
fn api(api_key: impl FnOnce(OpenApiRouter<App>) -> OpenApiRouter<App>) -> OpenApiRouter<App> {
    // `Authorization: Bearer <api key>`.
    let with_key = OpenApiRouter::new()
        .routes(routes!(channels::publish))
        .routes(routes!(users::broadcast))
        .routes(routes!(users::send_to_user))
        .routes(routes!(channels::send_to_present))
        .routes(routes!(channels::send_to_content))
        .routes(routes!(channels::send_to_service))
        .routes(routes!(channels::list))
        .routes(routes!(channels::info))
        .routes(routes!(channels::members))
        .routes(routes!(channels::summary))
        .routes(routes!(channels::content_summary))
        .routes(routes!(channels::service_summary))
        .routes(routes!(events::stream))
        .routes(routes!(events::bus_publish))
        .routes(routes!(users::status))
        .routes(routes!(admin::connections))
        .routes(routes!(admin::disconnect_user))
        .routes(routes!(admin::disconnect_connection))
        .routes(routes!(admin::remove_member))
        .routes(routes!(admin::reload_keys))
        .routes(routes!(stats::node_stats))
        .routes(routes!(users::get_privacy, users::put_privacy));
    let mut api = OpenApiRouter::with_openapi(ApiDoc::openapi())
        // Open.
        .routes(routes!(channels::healthz))
        .routes(routes!(openapi::serve))
        // The API key or a connection's id and secret (the handler checks).
        .routes(routes!(leases::refresh))
        // A connection's id and secret in the body.
        .routes(routes!(users::client_privacy))
        .merge(api_key(with_key));
    optional_bodies_may_be_left_out(api.get_openapi_mut());
    api
}

/// utoipa writes an `Option<T>` request body as "T or null", not
/// required; ours mean the body may be left out, and a JSON `null` is
/// refused like any other non-object. So the schema is just T.
fn optional_bodies_may_be_left_out(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{RefOr, Required, schema::Schema};
    for item in doc.paths.paths.values_mut() {
        for op in [&mut item.post, &mut item.put].into_iter().flatten() {
            let Some(body) = &mut op.request_body else {
                continue;
            };
            if body.required == Some(Required::True) {
                continue;
            }
            for content in body.content.values_mut() {
                if let Some(RefOr::T(Schema::OneOf(one))) = &content.schema
                    && let Some(t) = one.items.iter().find(|s| matches!(s, RefOr::Ref(_)))
                {
                    content.schema = Some(t.clone());
                }
            }
        }
    }
}

/// The document's frame: what no single route says.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "rollcall HTTP API",
        description = "Server-side API of rollcall: publish and send messages, channel members and counts, user presence, presence leases and privacy. Every error is `{\"error\":{\"code\",\"message\"}}` (`ErrorBody`), unknown routes (404 `NOT_FOUND`) and wrong methods (405 `METHOD_NOT_ALLOWED`) included. A request body over 256 KiB is refused with 413 `MESSAGE_TOO_LARGE`, one that does not arrive within `--header-timeout` with 408 `REQUEST_TIMEOUT`, on any route."
    ),
    modifiers(&BearerApiKey),
    components(schemas(ErrorBody)),
    tags(
        (name = "health", description = "Liveness"),
        (name = "meta", description = "This document"),
        (name = "messages", description = "Publish and send messages"),
        (name = "channels", description = "Channels, members and counts"),
        (name = "events", description = "The event stream for backends and the bus between them"),
        (name = "presence", description = "Presence leases"),
        (name = "users", description = "User presence"),
        (name = "admin", description = "Operator actions"),
        (name = "privacy", description = "Users' privacy")
    )
)]
struct ApiDoc;

/// The `apiKey` security scheme the API-key routes name.
struct BearerApiKey;

impl utoipa::Modify for BearerApiKey {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "apiKey",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("the server's --api-key"))
                    .build(),
            ),
        );
    }
}

/// Descriptions of the error statuses the routes share, for their
/// `#[utoipa::path]` responses.
mod errors {
    pub const UNAUTHORIZED: &str = "`MISSING_API_KEY`: no `Authorization: Bearer <api key>`; `INVALID_API_KEY`: not the server's `--api-key`";
    pub const REQUEST_TIMEOUT: &str =
        "`REQUEST_TIMEOUT`: the body did not arrive within `--header-timeout`";
    pub const BODY_TOO_LARGE: &str = "`MESSAGE_TOO_LARGE`: the body is over 256 KiB";
}

/// The API routes, built from [`api`], with the API-key check on its
/// group.
pub fn routes(app: App) -> Router<App> {
    let keyed = middleware::from_fn_with_state(app.clone(), require_api_key);
    let (router, _) = api(|group| group.route_layer(keyed)).split_for_parts();
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
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
            },
        };
        let response = (self.status, Json(body)).into_response();
        crate::access::with_reason(response, self.code)
    }
}

/// The body of every error.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"error": {"code": "INVALID_CHANNEL_NAME", "message": "channel must be 1 to 256 characters"}}))]
pub struct ErrorBody {
    error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable, e.g. `INVALID_CHANNEL_NAME`.
    code: &'static str,
    /// For people: what to fix.
    message: String,
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
}
