//! `millrace-worker`: the command line of the worker.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use millrace_worker::config::PipelineConfig;

/// Millrace worker: MQTT ingest, the deterministic time-series join and
/// InfluxDB export, as separate stages on Kafka or embedded in one process.
#[derive(Parser)]
#[command(name = "millrace-worker", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a pipeline stage, or every stage embedded in one process when the
    /// configuration has no `kafka` section.
    Run {
        /// Pipeline configuration (YAML).
        #[arg(long, short)]
        config: PathBuf,
        /// The stage to run; omit it to run all stages embedded.
        #[arg(long, value_enum)]
        stage: Option<Stage>,
    },
    /// Check a pipeline configuration and print what is wrong, with the path
    /// of the bad field.
    CheckConfig {
        /// Pipeline configuration (YAML).
        config: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Stage {
    Ingest,
    Join,
    Export,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { config } => match PipelineConfig::from_file(&config) {
            Ok(c) => {
                println!("{}: valid ({} join rule(s), {})", config.display(), c.joins.len(),
                    if c.kafka.is_some() { "stages on Kafka" } else { "embedded mode" });
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        Command::Run { .. } => {
            eprintln!("millrace-worker run: the pipeline stages are not built yet");
            ExitCode::from(3)
        }
    }
}
