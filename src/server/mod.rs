//! The daemon's HTTP face (axum): `GET /status` (JSON), `/healthz`, `/readyz`, `/metrics`
//! (Prometheus text), `/` (the page) and `POST /reconcile` (bearer token). Handlers read the
//! loop's latest snapshot and never call AWS or Docker themselves, so a slow world or a load
//! on the endpoints cannot stall a pass.

mod page;

use crate::reconcile::{Handle, Scope, readiness, source_line};
use crate::status::{Status, Trigger};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
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

/// How long a rendered `/metrics` or page is served again for the same snapshot (counters
/// move between snapshots; the page's timeline ages). `/status` is served again for as long
/// as its snapshot is the newest.
const RENDER_TTL: Duration = Duration::from_secs(1);

/// The last body each endpoint rendered, and for which snapshot: under a load (a dashboard
/// left open, a scraper gone wild) the daemon serializes once per snapshot instead of once
/// per request, so serving never takes the pass's CPU.
#[derive(Debug, Default)]
struct Rendered {
    status: Mutex<Option<Render>>,
    metrics: Mutex<Option<Render>>,
    page: Mutex<Option<Render>>,
}

/// One rendered body. It keeps its snapshot alive, so that a newer snapshot can never be
/// taken for it (a freed one's address could be reused).
#[derive(Debug)]
struct Render {
    snapshot: Arc<Status>,
    at: Instant,
    body: Bytes,
}

/// The cached body for `snapshot` if still good (`ttl`: `None` means as long as the snapshot
/// is the newest), else renders, keeps and returns a fresh one.
fn cached(
    slot: &Mutex<Option<Render>>,
    snapshot: &Arc<Status>,
    ttl: Option<Duration>,
    render: impl FnOnce() -> String,
) -> Bytes {
    let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(r) = slot.as_ref()
        && Arc::ptr_eq(&r.snapshot, snapshot)
        && ttl.is_none_or(|ttl| r.at.elapsed() < ttl)
    {
        return r.body.clone();
    }
    let body = Bytes::from(render());
    *slot = Some(Render {
        snapshot: snapshot.clone(),
        at: Instant::now(),
        body: body.clone(),
    });
    body
}

/// The routes.
pub fn router(state: AppState) -> Router {
    let rendered = Arc::new(Rendered::default());
    Router::new()
        .route("/", get(index))
        .route("/status", get(status))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/reconcile", post(reconcile))
        .layer(axum::Extension(rendered))
        .with_state(state)
}

async fn status(
    State(s): State<AppState>,
    axum::Extension(rendered): axum::Extension<Arc<Rendered>>,
) -> Response {
    let snapshot = s.handle.status.borrow().clone();
    let body = cached(&rendered.status, &snapshot, None, || {
        serde_json::to_string_pretty(&*snapshot).unwrap_or_else(|_| "{}".to_string())
    });
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
        Ok(()) => {
            let source = source_line(&snapshot)
                .map(|l| format!("{l}\n"))
                .unwrap_or_default();
            (StatusCode::OK, format!("ready\n{source}")).into_response()
        }
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response(),
    }
}

async fn metrics(
    State(s): State<AppState>,
    axum::Extension(rendered): axum::Extension<Arc<Rendered>>,
    headers: HeaderMap,
) -> Response {
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
        {
            let snapshot = s.handle.status.borrow().clone();
            cached(&rendered.metrics, &snapshot, Some(RENDER_TTL), || {
                s.handle.metrics.encode()
            })
        },
    )
        .into_response()
}

async fn index(
    State(s): State<AppState>,
    axum::Extension(rendered): axum::Extension<Arc<Rendered>>,
) -> Html<Bytes> {
    let snapshot = s.handle.status.borrow().clone();
    Html(cached(&rendered.page, &snapshot, Some(RENDER_TTL), || {
        page::render(&snapshot, std::time::SystemTime::now())
    }))
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
    fn a_body_is_rendered_once_per_snapshot_and_again_for_a_new_one() {
        let slot = Mutex::new(None);
        let mut renders = 0;
        let old = Arc::new(Status::default());
        for _ in 0..3 {
            cached(&slot, &old, None, || {
                renders += 1;
                "old".into()
            });
        }
        assert_eq!(renders, 1);
        let new = Arc::new(Status::default());
        let body = cached(&slot, &new, None, || {
            renders += 1;
            "new".into()
        });
        assert_eq!((renders, &body[..]), (2, &b"new"[..]));
        // With a TTL, the same snapshot is rendered again once it runs out.
        cached(&slot, &new, Some(Duration::ZERO), || {
            renders += 1;
            "newer".into()
        });
        assert_eq!(renders, 3);
    }

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
