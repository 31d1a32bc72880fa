//! A fault-injecting proxy in front of the cluster's Prometheus, for the chaos run: serin
//! queries it instead of Prometheus, and the test switches what it answers. Prometheus
//! itself keeps scraping, so the other tests sharing it see nothing.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, Method, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use serde_json::json;

/// What the proxy answers queries with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrometheusFault {
    /// Prometheus' own answers.
    None,
    /// 503, as a Service with no ready Prometheus behind a proxy answers.
    Down,
    /// Prometheus' answers, after this delay (a Prometheus under load).
    Slow(Duration),
    /// Every series with the value NaN (a ratio of two zero rates).
    NaN,
    /// No series at all (a scrape gap, a relabelled metric).
    Empty,
}

impl PrometheusFault {
    pub fn label(self) -> &'static str {
        match self {
            PrometheusFault::None => "none",
            PrometheusFault::Down => "down (503)",
            PrometheusFault::Slow(_) => "slow",
            PrometheusFault::NaN => "NaN",
            PrometheusFault::Empty => "empty",
        }
    }
}

#[derive(Clone)]
struct Shared {
    upstream: String,
    fault: Arc<Mutex<PrometheusFault>>,
    http: reqwest::Client,
}

pub struct PrometheusProxy {
    pub url: String,
    fault: Arc<Mutex<PrometheusFault>>,
}

impl PrometheusProxy {
    /// Starts a proxy to `upstream` on a loopback port; it answers honestly until told
    /// otherwise.
    pub async fn start(upstream: &str) -> PrometheusProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shared = Shared {
            upstream: upstream.trim_end_matches('/').to_string(),
            fault: Arc::new(Mutex::new(PrometheusFault::None)),
            http: reqwest::Client::new(),
        };
        let fault = shared.fault.clone();
        let app = Router::new().fallback(answer).with_state(shared);
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        PrometheusProxy { url, fault }
    }

    pub fn set(&self, fault: PrometheusFault) {
        *self.fault.lock().unwrap() = fault;
    }
}

async fn answer(
    State(shared): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let fault = *shared.fault.lock().unwrap();
    let range = uri.path().ends_with("/query_range");
    let now = jiff::Timestamp::now().as_second();
    let result = |value: Option<&str>| {
        let series = value.map(|v| {
            if range {
                json!({"metric": {}, "values": [[now, v]]})
            } else {
                json!({"metric": {}, "value": [now, v]})
            }
        });
        let kind = if range { "matrix" } else { "vector" };
        let body = json!({"status": "success", "data": {"resultType": kind, "result": series.into_iter().collect::<Vec<_>>()}});
        (
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response()
    };
    match fault {
        PrometheusFault::Down => {
            return (StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream").into_response();
        }
        PrometheusFault::NaN => return result(Some("NaN")),
        PrometheusFault::Empty => return result(None),
        PrometheusFault::Slow(delay) => tokio::time::sleep(delay).await,
        PrometheusFault::None => {}
    }
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let mut request = shared
        .http
        .request(method, format!("{}{path}", shared.upstream))
        .body(body);
    if let Some(kind) = headers.get(header::CONTENT_TYPE) {
        request = request.header(header::CONTENT_TYPE, kind);
    }
    match request.send().await {
        Ok(response) => {
            let status = response.status();
            let kind = response.headers().get(header::CONTENT_TYPE).cloned();
            let bytes = response.bytes().await.unwrap_or_default();
            let mut out = (status, bytes).into_response();
            if let Some(kind) = kind {
                out.headers_mut().insert(header::CONTENT_TYPE, kind);
            }
            out
        }
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}
