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
    /// Join narrow records from a JSONL file (or standard input) and write
    /// the joined records as JSONL to standard output. Late and unreadable
    /// records go to standard error (or --rejects FILE) with their reason.
    ///
    /// Example: millrace-worker join-file narrow.jsonl --left 'actSpeed_(C\d+)'
    /// --right 'vaTorque_(C\d+)' --output 'vaPower_$1' --expression '2*pi/60*left*right'
    JoinFile(JoinFileArgs),
    /// Check a pipeline configuration and print what is wrong, with the path
    /// of the bad field.
    CheckConfig {
        /// Pipeline configuration (YAML).
        config: PathBuf,
    },
}

#[derive(clap::Args)]
struct JoinFileArgs {
    /// Narrow records, one JSON object a line; `-` or nothing: standard input.
    input: Option<PathBuf>,
    /// Take the rule from this pipeline configuration.
    #[arg(long, conflicts_with_all = ["left", "right"])]
    config: Option<PathBuf>,
    /// Which rule of --config (needed when it has several).
    #[arg(long, requires = "config")]
    rule: Option<String>,
    /// Left quantity: an exact name or a regular expression.
    #[arg(long, requires = "right")]
    left: Option<String>,
    /// Right quantity: an exact name or a regular expression.
    #[arg(long, requires = "left")]
    right: Option<String>,
    /// Output quantity name; may use capture groups ($1). Default: "joined"
    /// (with the groups appended).
    #[arg(long)]
    output: Option<String>,
    /// Expression over left and right. Default: left*right.
    #[arg(long)]
    expression: Option<String>,
    /// Drop pairs further apart than this (e.g. 500ms, 2s).
    #[arg(long, value_parser = humantime::parse_duration)]
    max_delta: Option<std::time::Duration>,
    /// Time of a joined record: mean, earlier or later of its partners.
    #[arg(long, value_enum, default_value = "mean")]
    time: TimeArg,
    /// The input holds the whole series: also emit the pairs that would wait
    /// for a record that will never come.
    #[arg(long)]
    complete: bool,
    /// Write late and unreadable records here instead of standard error.
    #[arg(long)]
    rejects: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
enum TimeArg {
    Mean,
    Earlier,
    Later,
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
        Command::JoinFile(args) => match join_file(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(2)
            }
        },
        Command::Run { .. } => {
            eprintln!("millrace-worker run: the pipeline stages are not built yet");
            ExitCode::from(3)
        }
    }
}

fn join_file(args: JoinFileArgs) -> anyhow::Result<()> {
    use millrace_worker::config::{JoinRuleConfig, TimePolicy};
    use millrace_worker::join::{file, joiner::Joiner};
    use std::io::{BufRead, BufReader, BufWriter, IsTerminal, Write};

    let rule = match (&args.config, &args.left, &args.right) {
        (Some(path), _, _) => {
            let config = PipelineConfig::from_file(path)?;
            match (&args.rule, config.joins.len()) {
                (Some(name), _) => config
                    .joins
                    .iter()
                    .find(|r| &r.name == name)
                    .cloned()
                    .ok_or_else(|| anyhow::anyhow!("{}: no join rule named {name:?}", path.display()))?,
                (None, 1) => config.joins[0].clone(),
                (None, 0) => anyhow::bail!("{}: has no join rules", path.display()),
                (None, _) => anyhow::bail!(
                    "{}: has several join rules ({}); choose one with --rule",
                    path.display(),
                    config.joins.iter().map(|r| r.name.as_str()).collect::<Vec<_>>().join(", ")
                ),
            }
        }
        (None, Some(left), Some(right)) => JoinRuleConfig {
            name: "joined".into(),
            left: left.clone(),
            right: right.clone(),
            output: args.output.clone(),
            expression: args.expression.clone(),
            time: match args.time {
                TimeArg::Mean => TimePolicy::Mean,
                TimeArg::Earlier => TimePolicy::Earlier,
                TimeArg::Later => TimePolicy::Later,
            },
            max_delta: args.max_delta,
            max_latency: None,
            reorder_window: None,
        },
        _ => anyhow::bail!("give the rule with --config FILE, or with --left and --right"),
    };
    let mut joiner = Joiner::new(std::slice::from_ref(&rule))?;

    let (input, size): (Box<dyn BufRead>, Option<u64>) = match &args.input {
        Some(p) if p.as_os_str() != "-" => {
            let f = std::fs::File::open(p).map_err(|e| anyhow::anyhow!("cannot open {}: {e}", p.display()))?;
            let size = f.metadata().ok().map(|m| m.len());
            (Box::new(BufReader::with_capacity(1 << 20, f)), size)
        }
        _ => (Box::new(BufReader::with_capacity(1 << 20, std::io::stdin().lock())), None),
    };
    let progress = match size {
        Some(n) if n > 16 << 20 && std::io::stderr().is_terminal() => {
            let bar = indicatif::ProgressBar::new(n);
            bar.set_style(
                indicatif::ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
                    .expect("a valid template"),
            );
            Some(bar)
        }
        _ => None,
    };
    let mut out = BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
    let mut rejects: Box<dyn Write> = match &args.rejects {
        Some(p) => Box::new(BufWriter::new(
            std::fs::File::create(p).map_err(|e| anyhow::anyhow!("cannot create {}: {e}", p.display()))?,
        )),
        None => Box::new(std::io::stderr().lock()),
    };
    let summary = file::run(&mut joiner, input, &mut out, &mut rejects, args.complete, |bytes| {
        if let Some(bar) = &progress {
            bar.set_position(bytes);
        }
    })?;
    rejects.flush()?;
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    if std::io::stderr().is_terminal() || args.rejects.is_some() {
        eprintln!(
            "{} records, {} joined, {} late, {} unreadable, {} not a number",
            summary.lines, summary.joined, summary.late, summary.unreadable, summary.not_a_number
        );
    }
    Ok(())
}
