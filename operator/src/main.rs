//! `millrace-operator`: the command line of the operator.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Millrace operator: reconciles StreamPipeline resources into a running
/// pipeline (workers, Kafka topics, Mosquitto, Grafana) and reports status.
#[derive(Parser)]
#[command(name = "millrace-operator", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller against the cluster of the current kubeconfig.
    Run,
    /// Print the StreamPipeline CustomResourceDefinition as YAML.
    Crd,
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Crd => {
            print!("{}", millrace_operator::crd::crd_yaml());
            ExitCode::SUCCESS
        }
        Command::Run => {
            eprintln!("millrace-operator run: the controller is not built yet (the CRD is: `millrace-operator crd`)");
            ExitCode::from(3)
        }
    }
}
