//! Bounded fuzzing of what serin reads from users and from Prometheus: the PromQL template
//! renderer, the duration parser and the handling of Prometheus' answers. Any input must
//! give a value or a clear error, never a panic.
//!
//! Inputs are drawn from a seeded generator biased towards the tokens each parser cares
//! about. `make test` runs a bounded number of cases; `SERIN_FUZZ_SECONDS` runs for that
//! long instead, and `SERIN_FUZZ_SEED` replays a run.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::analysis::prometheus::{PrometheusProvider, QueryError};
use crate::analysis::template::{QueryVars, TemplateError, render};
use crate::api::duration;
use crate::sim::Rng;

/// How long, or how many cases, a property runs: `SERIN_FUZZ_SECONDS` if set, else
/// `cases`.
struct Budget {
    cases: u64,
    until: Option<Instant>,
    seed: u64,
}

impl Budget {
    fn new(cases: u64) -> Budget {
        let seconds = std::env::var("SERIN_FUZZ_SECONDS")
            .ok()
            .and_then(|s| s.parse::<u64>().ok());
        let seed = std::env::var("SERIN_FUZZ_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0x5e41);
        Budget {
            cases,
            until: seconds.map(|s| Instant::now() + Duration::from_secs(s)),
            seed,
        }
    }

    fn more(&self, done: u64) -> bool {
        match self.until {
            Some(until) => Instant::now() < until,
            None => done < self.cases,
        }
    }
}

fn pick<'a>(rng: &mut Rng, items: &[&'a str]) -> &'a str {
    items[(rng.next_u64() % items.len() as u64) as usize]
}

/// A string of `max` tokens at most, drawn from `tokens`.
fn text(rng: &mut Rng, tokens: &[&str], max: u64) -> String {
    let n = rng.next_u64() % (max + 1);
    (0..n).map(|_| pick(rng, tokens)).collect()
}

const TEMPLATE_TOKENS: &[&str] = &[
    "{{",
    "}}",
    "{",
    "}",
    " ",
    "name",
    "namespace",
    "target",
    "service",
    "interval",
    "variables.",
    "variables.app",
    "app",
    "rate(",
    ")",
    "[",
    "]",
    "sum by (le)",
    "\"",
    "é",
    "{{ name }}",
    "{{interval}}",
    "{{ variables.app }}",
    "}}{{",
    "\n",
    "\u{0}",
    "🙂",
    "=~",
    "5..",
    "histogram_quantile(0.99,",
];

#[test]
fn the_template_renderer_never_panics_and_names_what_is_wrong() {
    let budget = Budget::new(50_000);
    let mut rng = Rng::new(budget.seed);
    let vars = QueryVars {
        name: "podinfo".into(),
        namespace: "test".into(),
        target: "podinfo".into(),
        service: "podinfo".into(),
        interval: "1m".into(),
        variables: BTreeMap::from([("app".to_string(), "podinfo".to_string())]),
    };
    let mut cases = 0;
    let (mut rendered, mut refused) = (0, 0);
    while budget.more(cases) {
        let query = text(&mut rng, TEMPLATE_TOKENS, 24);
        match render(&query, &vars) {
            Ok(out) => {
                rendered += 1;
                if !query.contains("{{") {
                    assert_eq!(out, query, "a query without variables is unchanged");
                }
            }
            Err(e) => {
                refused += 1;
                let message = e.to_string();
                match &e {
                    TemplateError::UnknownVariable(v) => {
                        assert!(message.contains(v.as_str()), "{message}")
                    }
                    TemplateError::Unclosed(at) => {
                        assert!(query[*at..].starts_with("{{"), "{query:?} at {at}")
                    }
                }
            }
        }
        cases += 1;
    }
    println!("template renderer: {cases} cases, {rendered} rendered, {refused} refused");
}

const DURATION_TOKENS: &[&str] = &[
    "0",
    "1",
    "5",
    "10",
    "30",
    "1.5",
    ".",
    "..",
    "-",
    "+",
    "ns",
    "us",
    "µs",
    "ms",
    "s",
    "m",
    "h",
    "d",
    "y",
    " ",
    "99999999999999999999",
    "e3",
    "1e",
    "µ",
    "🙂",
    "\t",
    "",
    "m30s",
];

#[test]
fn the_duration_parser_never_panics_and_reads_what_it_accepts_exactly() {
    let budget = Budget::new(50_000);
    let mut rng = Rng::new(budget.seed ^ 1);
    let mut cases = 0;
    let mut accepted = 0;
    while budget.more(cases) {
        let input = text(&mut rng, DURATION_TOKENS, 8);
        match duration::parse(&input) {
            Ok(_) => accepted += 1,
            Err(e) => assert!(!e.to_string().is_empty()),
        }
        // A duration written from known parts reads back as their sum.
        let (h, m, s, ms) = (
            rng.next_u64() % 48,
            rng.next_u64() % 60,
            rng.next_u64() % 60,
            rng.next_u64() % 1000,
        );
        let written = format!("{h}h{m}m{s}s{ms}ms");
        let expected = Duration::from_millis(((h * 60 + m) * 60 + s) * 1000 + ms);
        assert_eq!(duration::parse(&written), Ok(expected), "{written}");
        cases += 1;
    }
    println!("duration parser: {cases} random inputs, {accepted} accepted");
}

/// Bodies a broken or hostile Prometheus (or a proxy in front of it) might answer with.
fn answer(rng: &mut Rng) -> (u16, String) {
    let status = *[200u16, 200, 200, 400, 422, 500, 503]
        .get((rng.next_u64() % 7) as usize)
        .unwrap();
    let value = pick(
        rng,
        &[
            "\"1\"",
            "\"NaN\"",
            "\"+Inf\"",
            "\"-Inf\"",
            "\"abc\"",
            "1",
            "null",
            "\"\"",
            "\"1e309\"",
            "\"0.5\"",
        ],
    );
    let result_type = pick(rng, &["vector", "matrix", "scalar", "string", "bogus", ""]);
    let body = match rng.next_u64() % 8 {
        0 => format!(
            r#"{{"status":"success","data":{{"resultType":"vector","result":[{{"metric":{{}},"value":[1700000000,{value}]}}]}}}}"#
        ),
        1 => format!(
            r#"{{"status":"success","data":{{"resultType":"matrix","result":[{{"metric":{{}},"values":[[1700000000,{value}],[1700000001,{value}]]}}]}}}}"#
        ),
        2 => format!(
            r#"{{"status":"success","data":{{"resultType":"scalar","result":[1700000000,{value}]}}}}"#
        ),
        3 => {
            format!(r#"{{"status":"success","data":{{"resultType":"{result_type}","result":[]}}}}"#)
        }
        4 => r#"{"status":"error","errorType":"bad_data","error":"parse error at char 5"}"#
            .to_string(),
        5 => "<html>502 Bad Gateway</html>".to_string(),
        6 => String::new(),
        _ => {
            // A valid answer cut short.
            let full = format!(
                r#"{{"status":"success","data":{{"resultType":"vector","result":[{{"metric":{{}},"value":[1700000000,{value}]}}]}}}}"#
            );
            let cut = (rng.next_u64() as usize) % full.len();
            full[..cut].to_string()
        }
    };
    (status, body)
}

#[tokio::test]
async fn prometheus_answers_of_any_shape_give_a_number_or_a_clear_error() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let budget = Budget::new(300);
    let mut rng = Rng::new(budget.seed ^ 2);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let provider = PrometheusProvider::new(&address, Vec::new(), false).unwrap();
    let mut cases = 0;
    let mut outcomes: BTreeMap<&'static str, u64> = BTreeMap::new();
    while budget.more(cases) {
        let (status, body) = answer(&mut rng);
        let serve = async {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = vec![0u8; 8192];
            let _ = socket.read(&mut request).await;
            let reply = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(reply.as_bytes()).await;
            let _ = socket.shutdown().await;
        };
        // A query of its own per case: the same query in the same second is answered
        // once (see `analysis::prometheus`), and every case needs its own answer.
        let query = format!("up{{case=\"{cases}\"}}");
        let ask = async {
            if rng.uniform() < 0.5 {
                provider.query_value(&query).await.map(|_| ())
            } else {
                provider
                    .query_slices(&query, Duration::from_secs(60), Duration::from_secs(10))
                    .await
                    .map(|_| ())
            }
        };
        let ((), result) = tokio::join!(serve, ask);
        let label = match &result {
            Ok(()) => "value",
            Err(e) => {
                assert!(!e.to_string().is_empty());
                if let QueryError::Unreachable { reason, .. }
                | QueryError::Malformed { reason, .. } = e
                {
                    assert!(!reason.is_empty(), "{body:?}");
                }
                // The server always answered: none of these is "unreachable".
                assert!(
                    !matches!(e, QueryError::Unreachable { .. }),
                    "{status} {body:?}: {e}"
                );
                e.label()
            }
        };
        *outcomes.entry(label).or_default() += 1;
        cases += 1;
    }
    println!("Prometheus answers: {cases} cases, outcomes {outcomes:?}");
    for outcome in ["value", "malformed", "rejected", "no_data"] {
        assert!(outcomes.contains_key(outcome), "{outcomes:?}");
    }
}
