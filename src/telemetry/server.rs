//! The controller's HTTP endpoints: `GET /metrics` (OpenMetrics text from the shared
//! registry), `GET /healthz` (the process answers) and `GET /readyz` (the controller has
//! what it needs to act, as set through [`Readiness`]).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;
use thiserror::Error;
use tokio::net::TcpListener;

/// Content type of the OpenMetrics text format that prometheus-client writes.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Body of `/readyz` while not ready.
const NOT_READY: &str =
    "not ready: the controller has not finished the initial sync of its caches\n";

/// Errors of the telemetry server.
#[derive(Debug, Error)]
pub enum Error {
    /// The listen address could not be bound (in use, or not permitted).
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why binding failed.
        #[source]
        source: std::io::Error,
    },
    /// The bound listener failed while serving.
    #[error("the telemetry server stopped")]
    Serve(#[source] std::io::Error),
}

impl Error {
    /// A short label for metrics and events.
    pub fn label(&self) -> &'static str {
        match self {
            Error::Bind { .. } => "bind",
            Error::Serve(_) => "serve",
        }
    }
}

/// `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Whether the controller is ready, shared between the controller (which sets it) and
/// `/readyz` (which reports it). Cloning is cheap and clones share the flag; it starts
/// not ready.
#[derive(Clone, Debug, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// A flag that starts not ready.
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks the controller ready (its caches have synced) or not ready again.
    pub fn set_ready(&self, ready: bool) {
        self.0.store(ready, Ordering::Release);
    }

    /// Whether `/readyz` answers 200.
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

#[derive(Clone)]
struct AppState {
    registry: Arc<Registry>,
    ready: Readiness,
}

/// The router with `/metrics`, `/healthz` and `/readyz`, for embedding in another server.
pub fn router(registry: Arc<Registry>, ready: Readiness) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(AppState { registry, ready })
}

async fn metrics(State(state): State<AppState>) -> Response {
    let mut body = String::new();
    match encode(&mut body, &state.registry) {
        Ok(()) => ([(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)], body).into_response(),
        Err(_) => {
            tracing::error!("encoding the metrics registry failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics\n").into_response()
        }
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<AppState>) -> (StatusCode, &'static str) {
    if state.ready.is_ready() {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, NOT_READY)
    }
}

/// A bound telemetry server that has not started answering yet. Binding first lets the
/// caller learn the port when it asked for port 0, and fail early on a taken port.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    local_addr: SocketAddr,
    router: Router,
}

impl Server {
    /// Binds `addr` and prepares the routes.
    pub async fn bind(addr: SocketAddr, registry: Arc<Registry>, ready: Readiness) -> Result<Self> {
        let bind_error = |source| Error::Bind { addr, source };
        let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
        let local_addr = listener.local_addr().map_err(bind_error)?;
        Ok(Self {
            listener,
            local_addr,
            router: router(registry, ready),
        })
    }

    /// The address actually bound (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until the listener fails.
    pub async fn run(self) -> Result<()> {
        tracing::info!(addr = %self.local_addr, "telemetry server listening");
        axum::serve(self.listener, self.router)
            .await
            .map_err(Error::Serve)
    }

    /// Serves until `shutdown` completes, then finishes the requests in flight.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        tracing::info!(addr = %self.local_addr, "telemetry server listening");
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(Error::Serve)
    }
}

/// Binds `addr` and serves `/metrics`, `/healthz` and `/readyz` until the listener fails.
/// Use [`Server::bind`] to learn the bound port or to stop on a signal.
pub async fn serve(addr: SocketAddr, registry: Arc<Registry>, ready: Readiness) -> Result<()> {
    Server::bind(addr, registry, ready).await?.run().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::metrics::Metrics;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    /// One HTTP/1.1 request over a plain socket; returns the status code, the headers
    /// (lower-cased names) and the body.
    async fn get(addr: SocketAddr, path: &str) -> (u16, Vec<(String, String)>, String) {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();

        let (head, body) = response
            .split_once("\r\n\r\n")
            .expect("a complete response");
        let mut lines = head.lines();
        let status = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        (status, headers, body.to_owned())
    }

    fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    async fn start(ready: Readiness) -> (SocketAddr, Metrics) {
        let mut registry = Registry::default();
        let metrics = Metrics::new(&mut registry);
        let server = Server::bind("127.0.0.1:0".parse().unwrap(), Arc::new(registry), ready)
            .await
            .unwrap();
        let addr = server.local_addr();
        assert_ne!(addr.port(), 0);
        tokio::spawn(server.run());
        (addr, metrics)
    }

    #[tokio::test]
    async fn metrics_answers_openmetrics_text_with_the_recorded_series() {
        let (addr, metrics) = start(Readiness::new()).await;
        metrics.set_weight("podinfo", "test", 90, 10);

        let (status, headers, body) = get(addr, "/metrics").await;

        assert_eq!(status, 200);
        assert_eq!(
            header(&headers, "content-type"),
            Some(OPENMETRICS_CONTENT_TYPE)
        );
        assert!(
            body.lines()
                .any(|l| l == r#"serin_canary_weight{workload="podinfo",namespace="test"} 10"#),
            "{body}"
        );
        assert!(body.ends_with("# EOF\n"), "{body}");
    }

    #[tokio::test]
    async fn healthz_answers_ok_even_when_not_ready() {
        let (addr, _) = start(Readiness::new()).await;
        let (status, _, body) = get(addr, "/healthz").await;
        assert_eq!((status, body.as_str()), (200, "ok\n"));
    }

    #[tokio::test]
    async fn readyz_is_unavailable_until_the_flag_is_set() {
        let ready = Readiness::new();
        let (addr, _) = start(ready.clone()).await;

        let (status, _, body) = get(addr, "/readyz").await;
        assert_eq!(status, 503);
        assert!(body.starts_with("not ready:"), "{body}");

        ready.set_ready(true);
        let (status, _, body) = get(addr, "/readyz").await;
        assert_eq!((status, body.as_str()), (200, "ok\n"));

        ready.set_ready(false);
        assert_eq!(get(addr, "/readyz").await.0, 503);
    }

    #[tokio::test]
    async fn unknown_paths_are_not_found() {
        let (addr, _) = start(Readiness::new()).await;
        assert_eq!(get(addr, "/nope").await.0, 404);
    }

    #[tokio::test]
    async fn run_until_stops_on_shutdown() {
        let server = Server::bind(
            "127.0.0.1:0".parse().unwrap(),
            Arc::new(Registry::default()),
            Readiness::new(),
        )
        .await
        .unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.run_until(async {
            let _ = rx.await;
        }));
        tx.send(()).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), task)
            .await
            .expect("server stopped")
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn binding_a_taken_port_fails_with_the_address() {
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = taken.local_addr().unwrap();
        let err = Server::bind(addr, Arc::new(Registry::default()), Readiness::new())
            .await
            .unwrap_err();
        assert_eq!(err.label(), "bind");
        assert!(err.to_string().contains(&addr.to_string()));
    }
}
