//! The daemon's HTTP face (axum): `GET /status` (JSON), `/healthz`, `/readyz`, `/metrics`
//! (Prometheus text), `/` (the page) and `POST /reconcile` (bearer token). Handlers read the
//! loop's latest snapshot and never call AWS or Docker themselves, so a slow world or a load
//! on the endpoints cannot stall a pass.

mod page;

use crate::reconcile::{Handle, Scope, readiness};
use crate::status::Trigger;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// What every handler reads.
#[derive(Debug, Clone)]
pub struct AppState {
    /// Snapshots and the wake channel.
    pub handle: Handle,
    /// Worlds in scope (for readiness).
    pub scope: Scope,
    /// The bearer token `POST /reconcile` needs; `None` turns the endpoint off.
    pub token: Option<Arc<str>>,
}

/// The routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/status", get(status))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/reconcile", post(reconcile))
        .with_state(state)
}

async fn status(State(s): State<AppState>) -> Response {
    let snapshot = s.handle.status.borrow().clone();
    let body = serde_json::to_string_pretty(&*snapshot).unwrap_or_else(|_| "{}".to_string());
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(s): State<AppState>) -> Response {
    let snapshot = s.handle.status.borrow().clone();
    match readiness(&snapshot, s.scope) {
        Ok(()) => (StatusCode::OK, "ready\n".to_string()).into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response(),
    }
}

async fn metrics(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let wants_openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    if wants_openmetrics {
        return (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            )],
            s.handle.metrics.encode_openmetrics(),
        )
            .into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        s.handle.metrics.encode(),
    )
        .into_response()
}

async fn index(State(s): State<AppState>) -> Html<String> {
    let snapshot = s.handle.status.borrow().clone();
    Html(page::render(&snapshot, std::time::SystemTime::now()))
}

/// True when `headers` carry `Authorization: Bearer <token>`, compared in constant time.
fn authorized(headers: &HeaderMap, token: &str) -> bool {
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    given.as_bytes().ct_eq(token.as_bytes()).into()
}

async fn reconcile(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let Some(token) = &s.token else {
        return (
            StatusCode::NOT_FOUND,
            "POST /reconcile is off: start the daemon with a token (--token-file or STACKWARDEN_TOKEN)\n",
        )
            .into_response();
    };
    if !authorized(&headers, token) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))],
            "a valid bearer token is required\n",
        )
            .into_response();
    }
    match s.handle.wake.try_send(Trigger::Http) {
        // A full queue already holds a pending pass, which covers this request.
        Ok(()) | Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {
            (StatusCode::ACCEPTED, "reconcile queued\n").into_response()
        }
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_bearer_token_is_authorized() {
        let mut h = HeaderMap::new();
        assert!(!authorized(&h, "s3cret-token"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer s3cret-token"),
        );
        assert!(authorized(&h, "s3cret-token"));
        assert!(!authorized(&h, "s3cret-tokenX"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic s3cret-token"),
        );
        assert!(!authorized(&h, "s3cret-token"));
    }
}
