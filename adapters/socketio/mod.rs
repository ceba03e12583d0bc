//! Socket.IO channel protocol (Avaya Spaces style) front end (work in progress).

use axum::Router;

use crate::app::App;

/// The adapter's routes.
pub fn routes(_app: &App) -> Router<App> {
    Router::new()
}
