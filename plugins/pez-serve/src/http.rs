//! The connection loop: HTTP/1.1 on hyper with a header timeout (which also closes idle keep-alive
//! connections), a bound on open connections, and a graceful shutdown with a deadline. The listener is bound
//! before the models load; until the router is set every request gets a 503 (`/health`: "loading").

use crate::config::Limits;
use crate::error::ApiError;
use crate::openai::Health;
use crate::pool::ClassifierPool;
use axum::body::Body;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tower::ServiceExt;

/// The router once the models are loaded.
pub type AppSlot = Arc<OnceLock<Router>>;

fn loading(path: &str) -> Response {
    if path == "/health" {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Health {
                status: "loading",
                problems: vec![],
            }),
        )
            .into_response();
    }
    if path == "/health/live" {
        return Json(Health {
            status: "ok",
            problems: vec![],
        })
        .into_response();
    }
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "the server is still loading its models",
        "server_unavailable",
    )
    .into_response()
}

/// Serves `app` on `listener` until `shutdown` resolves; then lets requests in flight finish for at most
/// `limits.shutdown_timeout_s`.
pub async fn serve(listener: TcpListener, app: AppSlot, limits: Limits, shutdown: impl Future<Output = ()>) {
    let open = Arc::new(Semaphore::new(limits.max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    // Out of file descriptors and the like: wait a moment rather than spin.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        while conns.try_join_next().is_some() {}
        let Ok(permit) = open.clone().try_acquire_owned() else {
            continue; // over max_connections: closed at once
        };
        let _ = stream.set_nodelay(true);
        let header_timeout = Duration::from_secs(limits.header_timeout_s);
        conns.spawn(connection(stream, app.clone(), header_timeout, stop_rx.clone(), permit));
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let grace = Duration::from_secs(limits.shutdown_timeout_s);
    if tokio::time::timeout(grace, async { while conns.join_next().await.is_some() {} })
        .await
        .is_err()
    {
        tracing::warn!(
            "{} connection(s) still open {} s after the shutdown signal; exiting anyway",
            conns.len(),
            grace.as_secs()
        );
    }
}

/// One connection: HTTP/1.1 with the header timeout, served by the router once loaded; closed gracefully when
/// `stop` changes. `_permit` is its place among the open connections.
async fn connection(
    stream: tokio::net::TcpStream,
    app: AppSlot,
    header_timeout: Duration,
    mut stop: watch::Receiver<bool>,
    _permit: tokio::sync::OwnedSemaphorePermit,
) {
    let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let app = app.clone();
        async move {
            let req = req.map(Body::new);
            Ok::<_, Infallible>(match app.get() {
                Some(r) => r.clone().oneshot(req).await.unwrap_or_else(|e| match e {}),
                None => loading(req.uri().path()),
            })
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down: finishing requests in flight");
}

/// A classifier worker that has died cannot come back: exit non-zero (70) so that a supervisor restarts the
/// server rather than keep a process that answers 500s.
pub async fn exit_when_a_worker_dies(pool: Arc<ClassifierPool>) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let dead = pool.dead_workers();
        if !dead.is_empty() {
            tracing::error!("the classifier worker of {dead:?} has stopped; exiting");
            std::process::exit(70);
        }
    }
}
