//! The `serin` command: the controller, the CRDs, the benchmarks and the CLI.
#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "serin", version, about = "Progressive delivery for Kubernetes")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the version.
    Version,
    /// Print the CustomResourceDefinitions as one multi-document YAML stream.
    Crds,
    /// Run a benchmark.
    #[command(subcommand)]
    Bench(Bench),
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
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
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
    }
    Ok(())
}
