//! `serin-trafficsim`: the test traffic simulator (see `serin::sim`). It serves its
//! metrics on loopback and, given `--targets-dir`, registers itself as a Prometheus
//! file_sd target there (and removes the file when it stops).
#![forbid(unsafe_code)]

use std::path::PathBuf;

use axum::{Router, routing::get};
use clap::Parser;
use serin::sim::{Metrics, UserConfig, run_traffic};

#[derive(Parser)]
#[command(about = "Simulated mesh traffic through the live route weights, as Prometheus metrics")]
struct Args {
    /// Only simulate routes in this namespace (default: all namespaces).
    #[arg(long)]
    namespace: Option<String>,
    /// Address to serve /metrics on.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// Requests per second sent through each route.
    #[arg(long, default_value_t = 100)]
    rps: u64,
    /// Seed of the simulated errors and latencies.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The header a tagged user sends, `name=value` (A/B tests match on it).
    #[arg(long, value_parser = pair)]
    user_header: Option<(String, String)>,
    /// The cookie a tagged user sends, `name=value`.
    #[arg(long, value_parser = pair)]
    user_cookie: Option<(String, String)>,
    /// The share of the users that are tagged, between 0 and 1.
    #[arg(long, default_value_t = 0.0)]
    tagged_share: f64,
    /// While this file exists, no request is sent (tests pause the users with it).
    #[arg(long)]
    pause_file: Option<PathBuf>,
    /// A Prometheus file_sd directory to register this endpoint in.
    #[arg(long, env = "SERIN_PROMETHEUS_TARGETS")]
    targets_dir: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let client = kube::Client::try_default().await?;
    let metrics = Metrics::default();

    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    let addr = listener.local_addr()?;
    let served = metrics.clone();
    let app = Router::new().route("/metrics", get(move || async move { served.render() }));

    let target_file = args.targets_dir.map(|dir| {
        let file = dir.join(format!("trafficsim-{}.json", addr.port()));
        let labels =
            serde_json::json!({"namespace_scope": args.namespace.clone().unwrap_or_default()});
        let body = serde_json::json!([{"targets": [addr.to_string()], "labels": labels}]);
        std::fs::write(&file, body.to_string()).map(|_| file)
    });
    let target_file = target_file.transpose()?;
    println!("serving metrics on http://{addr}/metrics");

    let users = UserConfig {
        header: args.user_header,
        cookie: args.user_cookie,
        tagged_share: args.tagged_share,
    };
    let traffic = run_traffic(
        client,
        args.namespace,
        args.rps,
        metrics,
        args.seed,
        users,
        args.pause_file,
    );
    let server = axum::serve(listener, app);
    tokio::select! {
        _ = traffic => {}
        r = server => r?,
        _ = tokio::signal::ctrl_c() => {}
        _ = sigterm() => {}
    }
    if let Some(file) = target_file {
        let _ = std::fs::remove_file(file);
    }
    Ok(())
}

fn pair(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("{s}: expected name=value"))
}

async fn sigterm() {
    let mut s = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    s.recv().await;
}
