//! The Prometheus metric provider: runs an instant query and returns one number, with
//! "no data", NaN and an unreachable server kept apart so that none of them can pass a
//! check by accident.
//!
//! Queries are evaluated at whole seconds, and the same query (expression, server,
//! headers, time) is sent once: every check asking for it in that second, whichever
//! Canary it belongs to, awaits the one answer. All queries share one HTTP client per
//! TLS setting, so connections to Prometheus are kept alive and reused.

use std::{
    collections::HashMap,
    future::Future,
    sync::{LazyLock, Mutex},
    time::{Duration, Instant},
};

use futures::{
    FutureExt,
    future::{BoxFuture, Shared},
};
use prometheus_http_query::{Client, Error as PromError, response::Data};
use thiserror::Error;

#[derive(Clone, Debug, Error)]
pub enum QueryError {
    #[error("Prometheus at {address} is unreachable: {reason}")]
    Unreachable { address: String, reason: String },
    #[error("Prometheus rejected the query: {0}")]
    Rejected(String),
    #[error("Prometheus at {address} answered something that is not a query result: {reason}")]
    Malformed { address: String, reason: String },
    #[error("no data: the query returned no series")]
    NoData,
    #[error("no data: the query returned NaN")]
    NaN,
    #[error("invalid Prometheus address {0:?}")]
    BadAddress(String),
}

impl QueryError {
    /// The server could not answer the query (down, overloaded, or a proxy's error page
    /// in its place), as opposed to answering it: says nothing about the release.
    pub fn is_outage(&self) -> bool {
        matches!(
            self,
            QueryError::Unreachable { .. } | QueryError::Malformed { .. }
        )
    }

    /// A short label for metrics and events.
    pub fn label(&self) -> &'static str {
        match self {
            QueryError::Unreachable { .. } => "unreachable",
            QueryError::Rejected(_) => "rejected",
            QueryError::Malformed { .. } => "malformed",
            QueryError::NoData | QueryError::NaN => "no_data",
            QueryError::BadAddress(_) => "bad_address",
        }
    }
}

/// Where and how to reach one Prometheus server.
#[derive(Clone)]
pub struct PrometheusProvider {
    address: String,
    client: Client,
    headers: Vec<(String, String)>,
}

/// The HTTP clients every query uses, one per TLS setting (`insecure_skip_verify`): a
/// client holds a pool of kept-alive connections, so a check does not open its own.
fn http(insecure_skip_verify: bool) -> Result<reqwest::Client, reqwest::Error> {
    static CLIENTS: LazyLock<Mutex<HashMap<bool, reqwest::Client>>> =
        LazyLock::new(Default::default);
    let mut clients = CLIENTS.lock().expect("lock");
    if let Some(client) = clients.get(&insecure_skip_verify) {
        return Ok(client.clone());
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .tls_danger_accept_invalid_certs(insecure_skip_verify)
        .build()?;
    clients.insert(insecure_skip_verify, client.clone());
    Ok(client)
}

type Answer<T> = Shared<BoxFuture<'static, Result<T, QueryError>>>;

/// The answers to the queries of the last few seconds, by query and time: a query
/// already asked (or being asked) is not sent again.
struct Answers<T> {
    by_query: Mutex<HashMap<String, (Instant, Answer<T>)>>,
}

/// How long an answer is kept after it was asked for: queries are evaluated at whole
/// seconds, so a later one asks for another second.
const KEPT: Duration = Duration::from_secs(2);

impl<T: Clone + Send + Sync + 'static> Answers<T> {
    fn new() -> Self {
        Answers {
            by_query: Mutex::default(),
        }
    }

    /// The answer to `key` (a query and its time): the one already asked for, else
    /// `ask`'s.
    async fn get(
        &self,
        key: String,
        ask: impl Future<Output = Result<T, QueryError>> + Send + 'static,
    ) -> Result<T, QueryError> {
        let answer = {
            let mut by_query = self.by_query.lock().expect("lock");
            by_query.retain(|_, (asked, _)| asked.elapsed() < KEPT);
            by_query
                .entry(key)
                .or_insert_with(|| (Instant::now(), ask.boxed().shared()))
                .1
                .clone()
        };
        answer.await
    }
}

static VALUES: LazyLock<Answers<f64>> = LazyLock::new(Answers::new);
static SLICES: LazyLock<Answers<Vec<f64>>> = LazyLock::new(Answers::new);

impl PrometheusProvider {
    pub fn new(
        address: &str,
        headers: Vec<(String, String)>,
        insecure_skip_verify: bool,
    ) -> Result<Self, QueryError> {
        let http = http(insecure_skip_verify)
            .map_err(|e| QueryError::BadAddress(format!("{address}: {e}")))?;
        let client =
            Client::from(http, address).map_err(|_| QueryError::BadAddress(address.to_string()))?;
        Ok(PrometheusProvider {
            address: address.to_string(),
            client,
            headers,
        })
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    /// The configured headers, valid ones only.
    fn headers(&self) -> Vec<(reqwest::header::HeaderName, reqwest::header::HeaderValue)> {
        self.headers
            .iter()
            .filter_map(|(k, v)| {
                Some((
                    reqwest::header::HeaderName::from_bytes(k.as_bytes()).ok()?,
                    reqwest::header::HeaderValue::from_str(v).ok()?,
                ))
            })
            .collect()
    }

    fn failed(&self, e: PromError) -> QueryError {
        match e {
            // Prometheus' own 503s: the query timed out, was cancelled, or the server is
            // not ready (starting, replaying its WAL).
            PromError::Prometheus(p) if p.is_timeout() || p.is_canceled() || p.is_unavailable() => {
                QueryError::Unreachable {
                    address: self.address.clone(),
                    reason: p.to_string(),
                }
            }
            PromError::Prometheus(e) => QueryError::Rejected(e.to_string()),
            // Reached, but the body is not Prometheus' JSON (a proxy's error page, a cut
            // answer, an unknown result type).
            PromError::Client(ref c) if c.inner().is_some_and(|r| r.is_decode()) => {
                QueryError::Malformed {
                    address: self.address.clone(),
                    reason: describe(&e),
                }
            }
            other => QueryError::Unreachable {
                address: self.address.clone(),
                reason: describe(&other),
            },
        }
    }

    /// What tells this server's queries apart from another's with the same text.
    fn key(&self, query: &str, time: &str) -> String {
        format!("{}\n{:?}\n{time}\n{query}", self.address, self.headers)
    }

    /// Runs `query` now (at the current whole second) and returns the value of its
    /// single (or first) sample.
    pub async fn query_value(&self, query: &str) -> Result<f64, QueryError> {
        self.value_at(query, jiff::Timestamp::now().as_second())
            .await
    }

    /// Runs `query` at `second` (Unix time), once for every caller asking in that second.
    async fn value_at(&self, query: &str, second: i64) -> Result<f64, QueryError> {
        let key = self.key(query, &second.to_string());
        let (server, query) = (self.clone(), query.to_string());
        VALUES
            .get(key, async move { server.ask_value(&query, second).await })
            .await
    }

    async fn ask_value(&self, query: &str, second: i64) -> Result<f64, QueryError> {
        let mut builder = self.client.query(query).at(second);
        for (name, value) in self.headers() {
            builder = builder.header(name, value);
        }
        let result = builder.get().await.map_err(|e| self.failed(e))?;
        let value = match result.data() {
            Data::Vector(v) => v.first().map(|s| s.sample().value()),
            Data::Scalar(s) => Some(s.value()),
            Data::Matrix(m) => m
                .first()
                .and_then(|r| r.samples().last())
                .map(|s| s.value()),
        }
        .ok_or(QueryError::NoData)?;
        if value.is_nan() {
            return Err(QueryError::NaN);
        }
        Ok(value)
    }

    /// Runs `query` over `[end - range, end]` at `step` and returns the values of its
    /// first series, one per time slice (NaN where the query has no value); `end` is the
    /// current whole second.
    pub async fn query_slices(
        &self,
        query: &str,
        range: Duration,
        step: Duration,
    ) -> Result<Vec<f64>, QueryError> {
        let end = jiff::Timestamp::now().as_second();
        let start = end - i64::try_from(range.as_secs()).unwrap_or(i64::MAX).max(1);
        let step = step.as_secs_f64().max(1.0);
        let key = self.key(query, &format!("{start}..{end}/{step}"));
        let (server, query) = (self.clone(), query.to_string());
        SLICES
            .get(key, async move {
                server.ask_slices(&query, start, end, step).await
            })
            .await
    }

    async fn ask_slices(
        &self,
        query: &str,
        start: i64,
        end: i64,
        step: f64,
    ) -> Result<Vec<f64>, QueryError> {
        let mut builder = self.client.query_range(query, start, end, step);
        for (name, value) in self.headers() {
            builder = builder.header(name, value);
        }
        let result = builder.get().await.map_err(|e| self.failed(e))?;
        let values = match result.data() {
            Data::Matrix(m) => m
                .first()
                .map(|r| r.samples().iter().map(|s| s.value()).collect()),
            Data::Vector(v) => v.first().map(|s| vec![s.sample().value()]),
            Data::Scalar(s) => Some(vec![s.value()]),
        };
        values
            .filter(|v: &Vec<f64>| !v.is_empty())
            .ok_or(QueryError::NoData)
    }
}

/// The innermost cause of a client error ("connection refused" rather than "error
/// sending request").
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A server answering every query with the value 1 after 100 ms, counting them.
    async fn counting_server() -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        let asked = Arc::new(AtomicUsize::new(0));
        let counter = asked.clone();
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                let counter = counter.clone();
                tokio::spawn(async move {
                    let mut request = vec![0u8; 8192];
                    let _ = socket.read(&mut request).await;
                    counter.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let body = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1700000000,"1"]}]}}"#;
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = socket.write_all(reply.as_bytes()).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        (address, asked)
    }

    #[tokio::test]
    async fn the_same_query_at_the_same_second_is_sent_once_for_every_check_asking() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (address, asked) = counting_server().await;
        let server = PrometheusProvider::new(&address, Vec::new(), false).unwrap();
        let second = 1_700_000_000;
        let same = futures::future::join_all(
            (0..5).map(|_| server.value_at("sum(rate(errors[1m]))", second)),
        )
        .await;
        assert!(same.iter().all(|v| *v.as_ref().unwrap() == 1.0), "{same:?}");
        assert_eq!(asked.load(Ordering::SeqCst), 1, "five checks, one query");
        // Asked again in the same second, after the answer came: still the one answer.
        server
            .value_at("sum(rate(errors[1m]))", second)
            .await
            .unwrap();
        assert_eq!(asked.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn another_expression_time_server_or_header_is_another_query() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (address, asked) = counting_server().await;
        let (other_address, asked_elsewhere) = counting_server().await;
        let second = 1_700_000_100;
        let plain = PrometheusProvider::new(&address, Vec::new(), false).unwrap();
        let with_token = PrometheusProvider::new(
            &address,
            vec![("Authorization".into(), "Bearer t".into())],
            false,
        )
        .unwrap();
        let elsewhere = PrometheusProvider::new(&other_address, Vec::new(), false).unwrap();
        plain.value_at("a", second).await.unwrap();
        plain.value_at("b", second).await.unwrap();
        plain.value_at("a", second + 1).await.unwrap();
        with_token.value_at("a", second).await.unwrap();
        elsewhere.value_at("a", second).await.unwrap();
        assert_eq!(asked.load(Ordering::SeqCst), 4);
        assert_eq!(asked_elsewhere.load(Ordering::SeqCst), 1);
    }
}
