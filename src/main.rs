//! The `serin` command: the controller, the CRDs, the benchmarks and the CLI.
#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};
use serin::controller::leader;

#[derive(Parser)]
#[command(name = "serin", version, about = "Progressive delivery for Kubernetes")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
// Parsed once at start-up: the size of the run arguments does not matter.
#[allow(clippy::large_enum_variant)]
enum Command {
    /// Run the controller.
    Run(RunArgs),
    /// Print the version.
    Version,
    /// Print the CustomResourceDefinitions as one multi-document YAML stream.
    Crds,
    /// Run a benchmark.
    #[command(subcommand)]
    Bench(Bench),
    /// List Canaries with their phase, weight, revision and what they wait for.
    List {
        /// Every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        #[arg(short, long)]
        namespace: Option<String>,
    },
    /// Show a Canary: phase, weight, checks, revision and gates.
    Status {
        name: String,
        #[arg(short, long)]
        namespace: Option<String>,
        /// Follow the Canary as it changes.
        #[arg(short, long)]
        watch: bool,
    },
    /// The last releases of a Canary: revision, images, outcome, when and why.
    History {
        name: String,
        #[arg(short, long)]
        namespace: Option<String>,
    },
    /// Open a gate for the revision under analysis.
    Approve {
        name: String,
        #[arg(short, long)]
        namespace: Option<String>,
        #[arg(long, value_enum, default_value = "promotion")]
        gate: serin::cli::Gate,
        /// Approve only if this is still the revision under analysis.
        #[arg(long)]
        revision: Option<String>,
    },
    /// Roll back the revision under analysis now.
    Abort {
        name: String,
        #[arg(short, long)]
        namespace: Option<String>,
        /// Abort only if this is still the revision under analysis.
        #[arg(long)]
        revision: Option<String>,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// Prometheus used by the builtin metrics and by MetricTemplates without an address.
    #[arg(
        long,
        env = "SERIN_METRICS_SERVER",
        default_value = "http://prometheus:9090"
    )]
    metrics_server: String,
    /// Traffic provider of Canaries that set no `spec.provider` (Flagger's
    /// `-mesh-provider`): istio, linkerd, gatewayapi or kubernetes.
    #[arg(long, visible_alias = "mesh-provider", env = "SERIN_PROVIDER", default_value = "istio", value_parser = parse_provider)]
    provider: serin::api::Provider,
    /// Watch Canaries in this namespace only (default: all namespaces).
    #[arg(long, env = "SERIN_NAMESPACE")]
    namespace: Option<String>,
    /// How many Canaries reconcile at once; the others wait their turn (each Canary
    /// reconciles on its own, so a slow Prometheus or webhook holds only its own slot).
    /// 0 is unbounded.
    #[arg(long, env = "SERIN_CONCURRENCY", default_value_t = 64)]
    concurrency: u16,
    /// Address of the /metrics, /healthz and /readyz endpoints.
    #[arg(long, env = "SERIN_LISTEN", default_value = "0.0.0.0:8080")]
    listen: std::net::SocketAddr,
    /// Log as JSON lines instead of text.
    #[arg(long, env = "SERIN_LOG_JSON")]
    log_json: bool,
    /// AlertProvider (`namespace/name`) that gets every Canary's notifications, in
    /// addition to the Canary's own `analysis.alerts`.
    #[arg(long, env = "SERIN_ALERT_PROVIDER", value_name = "NAMESPACE/NAME")]
    alert_provider: Option<String>,
    /// Lowest severity sent to the default alert provider: info, warn or error.
    #[arg(long, env = "SERIN_ALERT_SEVERITY", default_value = "info", value_parser = ["info", "warn", "error"])]
    alert_severity: String,
    /// Elect a leader among the replicas on a Lease: only the leader acts. Turn it off
    /// only when exactly one replica runs.
    #[arg(long, env = "SERIN_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// Namespace of the leader Lease (default: the Pod's namespace, else the --namespace
    /// scope, else "default").
    #[arg(long, env = "SERIN_LEADER_ELECT_NAMESPACE")]
    leader_elect_namespace: Option<String>,
    /// Name of the leader Lease.
    #[arg(long, env = "SERIN_LEADER_ELECT_NAME", default_value = "serin-leader")]
    leader_elect_name: String,
    /// This replica's identity in the Lease; unique per replica (default: the Pod name
    /// from HOSTNAME, else a random name).
    #[arg(long, env = "SERIN_LEADER_ELECT_IDENTITY")]
    leader_elect_identity: Option<String>,
    /// How long the Lease holds without renewal (a Go duration).
    #[arg(long, env = "SERIN_LEADER_ELECT_LEASE_DURATION", default_value = "15s", value_parser = parse_duration)]
    leader_elect_lease_duration: std::time::Duration,
    /// How long the leader keeps acting without renewing the Lease; shorter than the
    /// lease duration.
    #[arg(long, env = "SERIN_LEADER_ELECT_RENEW_DEADLINE", default_value = "10s", value_parser = parse_duration)]
    leader_elect_renew_deadline: std::time::Duration,
    /// How often candidates try to take the Lease and the leader renews it.
    #[arg(long, env = "SERIN_LEADER_ELECT_RETRY_PERIOD", default_value = "2s", value_parser = parse_duration)]
    leader_elect_retry_period: std::time::Duration,
}

fn parse_provider(text: &str) -> Result<serin::api::Provider, String> {
    let provider: serin::api::Provider =
        serde_json::from_value(serde_json::Value::String(text.to_string()))
            .map_err(|_| format!("unknown provider {text:?}"))?;
    match serin::router::for_provider(provider) {
        Some(_) => Ok(provider),
        None => Err(format!(
            "serin does not route {text}; use istio, linkerd, gatewayapi or kubernetes"
        )),
    }
}

fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    serin::api::duration::parse(text).map_err(|e| e.to_string())
}

/// The namespace this process runs in, when it runs in a Pod.
fn pod_namespace() -> Option<String> {
    std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

#[derive(Subcommand)]
enum Bench {
    /// Compare Flagger's and serin's rollout decisions on simulated releases.
    Decisions {
        /// Seed of the simulation; the same seed gives the same table.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Healthy releases per policy (regressions run a fifth, at least 20).
        #[arg(long, default_value_t = 1000)]
        releases: usize,
        /// Print a markdown table instead of aligned text.
        #[arg(long)]
        markdown: bool,
    },
    /// N Deployments and Canaries on the local control plane (kwok), each released
    /// once: the controller's memory, CPU and API requests, Prometheus queries,
    /// detection and step lateness. Needs the environment of
    /// `SERIN_E2E_AUDIT_LOG=1 tests/e2e/cluster.sh up`.
    Scale {
        /// How many Canaries.
        #[arg(long, default_value_t = 100)]
        canaries: usize,
        /// The analysis interval of every Canary.
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        interval: std::time::Duration,
        /// How long the idle window after the releases lasts.
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        idle: std::time::Duration,
        /// Start the releases one after another, evenly over this window, instead of
        /// all at once (`0s`, the default): a rate of releases rather than a burst.
        #[arg(long, default_value = "0s", value_parser = parse_duration)]
        spread: std::time::Duration,
        /// Requests per second the simulator sends through each route.
        #[arg(long, default_value_t = 20)]
        rps: u64,
        /// Print the markdown row of docs/benchmarks.md too.
        #[arg(long)]
        markdown: bool,
        /// Run the controller under this command, split at spaces (a profiler, e.g.
        /// `heaptrack -o /tmp/serin-heap`); RSS and CPU are then read from the serin
        /// process it starts.
        #[arg(long)]
        wrap: Option<String>,
    },
}

fn init_logging(json: bool) {
    use tracing_subscriber::{EnvFilter, fmt};
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,kube=warn"));
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    init_logging(args.log_json);
    // One TLS provider for the Kubernetes client and the HTTP clients.
    rustls::crypto::ring::default_provider()
        .install_default()
        .map_err(|_| anyhow::anyhow!("a TLS crypto provider was already installed"))?;
    let client = serin::controller::client::client().await?;
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = serin::telemetry::Metrics::new(&mut registry);
    let notify_metrics = serin::notify::NotifyMetrics::new(
        registry.sub_registry_with_prefix(serin::telemetry::metrics::PREFIX),
    );
    let leader_metrics = leader::LeaderMetrics::default();
    leader_metrics.register(registry.sub_registry_with_prefix("serin"));
    metrics.set_info(env!("CARGO_PKG_VERSION"), "istio");
    let ready = serin::telemetry::Readiness::new();
    let server =
        serin::telemetry::Server::bind(args.listen, std::sync::Arc::new(registry), ready.clone())
            .await?;
    tracing::info!(address = %server.local_addr(), "serving /metrics, /healthz and /readyz");
    tokio::spawn(async move {
        if let Err(e) = server.run().await {
            tracing::error!(error = %e, "the metrics server stopped");
        }
    });
    let severity = match args.alert_severity.as_str() {
        "warn" => serin::api::AlertSeverity::Warn,
        "error" => serin::api::AlertSeverity::Error,
        _ => serin::api::AlertSeverity::Info,
    };
    let default_provider = match &args.alert_provider {
        Some(r) => Some(
            serin::notify::DefaultProvider::parse(r, severity)
                .ok_or_else(|| anyhow::anyhow!("--alert-provider takes namespace/name"))?,
        ),
        None => None,
    };
    let notify = serin::notify::Settings {
        default: default_provider,
        metrics: notify_metrics,
        ..Default::default()
    };
    let config = serin::controller::Config {
        metrics_server: args.metrics_server,
        default_provider: args.provider,
        namespace: args.namespace,
        notify,
        concurrency: args.concurrency,
    };
    // The controller stops taking work on SIGTERM, but kube's graceful shutdown also
    // waits for every scheduled requeue (up to an interval away). Every step is
    // idempotent and state is in status, so in-flight work gets a short grace, then exit.
    let leading: std::sync::Arc<std::sync::Mutex<Option<leader::Settings>>> =
        std::sync::Arc::default();
    let (shutdown_client, shutdown_leading) = (client.clone(), leading.clone());
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        let held = shutdown_leading.lock().expect("lock").clone();
        if let Some(settings) = held {
            leader::release(shutdown_client, &settings).await;
        }
        tracing::info!("stopped");
        std::process::exit(0);
    });
    if !args.leader_elect {
        serin::controller::run(client, config, metrics, ready).await;
        return Ok(());
    }
    let settings = leader::Settings {
        namespace: args
            .leader_elect_namespace
            .or_else(pod_namespace)
            .or(config.namespace.clone())
            .unwrap_or_else(|| "default".to_string()),
        name: args.leader_elect_name,
        // The Pod name: a restarted container takes its own Lease back at once.
        identity: args
            .leader_elect_identity
            .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
            .unwrap_or_else(|| format!("serin_{:08x}", rand::random::<u32>())),
        lease_duration: args.leader_elect_lease_duration,
        renew_deadline: args.leader_elect_renew_deadline,
        retry_period: args.leader_elect_retry_period,
    };
    settings.check().map_err(|e| anyhow::anyhow!(e))?;
    let mut elector = leader::Elector::new(client.clone(), settings.clone(), leader_metrics);
    // A standby replica is ready (it serves /metrics and can take over); see
    // docs/operations.md.
    let standby = ready.clone();
    elector.acquire(move || standby.set_ready(true)).await;
    ready.set_ready(false);
    tracing::info!(identity = %settings.identity, "leading: starting the controller");
    *leading.lock().expect("lock") = Some(settings.clone());
    let releasing = client.clone();
    tokio::select! {
        _ = serin::controller::run(client, config, metrics, ready) => {
            // The controller stopped on SIGTERM: hand the Lease over at once.
            leader::release(releasing, &settings).await;
            Ok(())
        }
        _ = elector.hold() => {
            // Another replica may take over after the lease duration; this one stops
            // acting now, and exits so that its Pod restarts as a candidate.
            tracing::error!("lost the leader Lease: stopping");
            std::process::exit(1);
        }
    }
}

async fn client() -> anyhow::Result<kube::Client> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Ok(serin::controller::client::client().await?)
}

async fn steer(command: Command) -> anyhow::Result<()> {
    use serin::cli::commands;
    match command {
        Command::List {
            all_namespaces,
            namespace,
        } => commands::list(client().await?, namespace.as_deref(), all_namespaces).await?,
        Command::Status {
            name,
            namespace,
            watch,
        } => commands::status(client().await?, namespace.as_deref(), &name, watch).await?,
        Command::History { name, namespace } => {
            commands::history(client().await?, namespace.as_deref(), &name).await?
        }
        Command::Approve {
            name,
            namespace,
            gate,
            revision,
        } => {
            commands::approve(
                client().await?,
                namespace.as_deref(),
                &name,
                gate,
                revision.as_deref(),
            )
            .await?
        }
        Command::Abort {
            name,
            namespace,
            revision,
        } => {
            commands::abort(
                client().await?,
                namespace.as_deref(),
                &name,
                revision.as_deref(),
            )
            .await?
        }
        _ => {}
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    // Installed as `kubectl-serin`, kubectl runs it as `kubectl serin ...`.
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            runtime.block_on(run(args))?;
        }
        Command::Version => println!("serin {}", env!("CARGO_PKG_VERSION")),
        Command::Crds => print!("{}", serin::api::crds_yaml()),
        Command::Bench(Bench::Decisions {
            seed,
            releases,
            markdown,
        }) => {
            use serin::bench::decisions;
            let rows = decisions::run(&decisions::BenchConfig { seed, releases });
            if markdown {
                print!("{}", decisions::render_markdown(&rows));
            } else {
                print!("{}", decisions::render_text(&rows));
            }
        }
        Command::Bench(Bench::Scale {
            canaries,
            interval,
            idle,
            spread,
            rps,
            markdown,
            wrap,
        }) => {
            use serin::bench::scale;
            let config = scale::ScaleConfig {
                canaries,
                interval,
                idle,
                spread,
                rps,
                wrap,
            };
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            let _ = rustls::crypto::ring::default_provider().install_default();
            let report = runtime.block_on(scale::run(&config))?;
            print!("{}", report.render_text());
            if markdown {
                println!("{}\n{}", scale::TABLE_HEADER, report.render_row());
            }
        }
        command => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(steer(command))?,
    }
    Ok(())
}
