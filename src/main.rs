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
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Version => println!("serin {}", env!("CARGO_PKG_VERSION")),
        Command::Crds => print!("{}", serin::api::crds_yaml()),
    }
    Ok(())
}
