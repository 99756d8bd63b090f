//! The accept loop: every connection is bounded in time and number, and a stop signal drains
//! the server within a deadline.
//!
//! Without these bounds a client that declares a large body and then stalls holds a socket (and
//! a file descriptor) forever; a thousand of them and `/healthz` stops answering. And a process
//! manager's SIGTERM must neither cut an in-flight token rotation in half (the client would lose
//! its session) nor wait forever for a connection that never finishes.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;

use crate::config::ServerConfig;

/// Serves `app` on `listener` until `stop` completes, then lets in-flight requests finish for at
/// most `shutdown_grace_seconds` before returning (the remaining connections are dropped).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    settings: &ServerConfig,
    stop: impl Future<Output = ()>,
) {
    // HTTP/1.1 only: every bound below applies to it, and neither Envoy nor MCP clients speak
    // cleartext HTTP/2 to this server (an h2c connection would need its own idle and stream
    // bounds).
    let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(TokioTimer::new())
        // hyper starts this timer whenever it waits for a request head, so it also closes a
        // keep-alive connection that sits idle between requests.
        .header_read_timeout(Duration::from_secs(settings.header_read_timeout_seconds));
    let builder = Arc::new(builder);
    let connections = Arc::new(Semaphore::new(settings.max_connections));
    let graceful = GracefulShutdown::new();
    tokio::pin!(stop);
    loop {
        // Past the limit the server stops accepting (new clients wait in the kernel's backlog)
        // rather than running out of file descriptors.
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => permit,
            () = &mut stop => break,
        };
        let Ok(permit) = permit else { break };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            let app = app.clone();
            async move {
                app.oneshot(request)
                    .await
                    .map_err(|never: Infallible| never)
            }
        });
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            if let Err(err) = watcher.watch(connection).await {
                tracing::debug!(error = %err, %peer, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    let grace = Duration::from_secs(settings.shutdown_grace_seconds);
    tracing::info!(
        connections = graceful.count(),
        grace_seconds = grace.as_secs(),
        "stopping: no new connections, letting in-flight requests finish"
    );
    match tokio::time::timeout(grace, graceful.shutdown()).await {
        Ok(()) => tracing::info!("every connection closed"),
        Err(_) => tracing::warn!(
            grace_seconds = grace.as_secs(),
            "connections still open at the shutdown deadline are dropped"
        ),
    }
}

/// Completes on SIGTERM (a process manager stopping the server) or SIGINT (Ctrl-C).
pub async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = terminate.recv() => tracing::info!("SIGTERM received"),
                    _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for SIGTERM; only SIGINT stops the server");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
