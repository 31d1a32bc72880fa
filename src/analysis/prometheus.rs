//! The Prometheus metric provider: runs an instant query and returns one number, with
//! "no data", NaN and an unreachable server kept apart so that none of them can pass a
//! check by accident.

use std::time::Duration;

use prometheus_http_query::{Client, Error as PromError, response::Data};
use thiserror::Error;

#[derive(Debug, Error)]
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

impl PrometheusProvider {
    pub fn new(
        address: &str,
        headers: Vec<(String, String)>,
        insecure_skip_verify: bool,
    ) -> Result<Self, QueryError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .tls_danger_accept_invalid_certs(insecure_skip_verify)
            .build()
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

    /// Runs `query` now and returns the value of its single (or first) sample.
    pub async fn query_value(&self, query: &str) -> Result<f64, QueryError> {
        let mut builder = self.client.query(query);
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
    /// first series, one per time slice (NaN where the query has no value).
    pub async fn query_slices(
        &self,
        query: &str,
        range: Duration,
        step: Duration,
    ) -> Result<Vec<f64>, QueryError> {
        let end = jiff::Timestamp::now().as_second();
        let start = end - i64::try_from(range.as_secs()).unwrap_or(i64::MAX).max(1);
        let mut builder = self
            .client
            .query_range(query, start, end, step.as_secs_f64().max(1.0));
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
