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
            tracing_subscriber::fmt().json().with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
            ).init();
            let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
            match runtime.block_on(async {
                let client = kube::Client::try_default().await?;
                millrace_operator::reconcile::run(client).await;
                Ok::<(), kube::Error>(())
            }) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: cannot reach the cluster: {e}");
                    ExitCode::from(1)
                }
            }
        }
    }
}
