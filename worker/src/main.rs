//! `millrace-worker`: the command line of the worker.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use millrace_config::PipelineConfig;

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
        /// Where /metrics, /healthz and /readyz are served.
        #[arg(long, default_value = "[::]:9090", env = "MILLRACE_METRICS_ADDR")]
        metrics_addr: std::net::SocketAddr,
    },
    /// Publish machine messages to MQTT: replay a JSONL file of wide messages
    /// (in time order) or generate them for N machines.
    ///
    /// Example: millrace-worker simulate --file test_events.jsonl --rate 5000 --retime
    Simulate(SimulateArgs),
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
struct SimulateArgs {
    /// Wide messages to replay, one JSON object a line.
    #[arg(long, conflicts_with = "machines")]
    file: Option<PathBuf>,
    /// Generate data for this many machines instead.
    #[arg(long)]
    machines: Option<usize>,
    /// Time between two messages of one generated machine.
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    interval: std::time::Duration,
    /// MQTT broker: mqtt://host:port, or mqtts://host:port over TLS.
    #[arg(long, default_value = "mqtt://127.0.0.1:1883", env = "MILLRACE_MQTT_URL")]
    url: String,
    /// With mqtts://: the CA to trust (PEM); the system's CAs without it.
    #[arg(long, env = "MILLRACE_MQTT_CA_FILE")]
    ca_file: Option<String>,
    /// With mqtts://: a client certificate (PEM), for brokers that require one.
    #[arg(long, env = "MILLRACE_MQTT_CERTIFICATE_FILE", requires = "key_file")]
    certificate_file: Option<String>,
    /// The client certificate's key (PEM).
    #[arg(long, env = "MILLRACE_MQTT_KEY_FILE", requires = "certificate_file")]
    key_file: Option<String>,
    /// Topic; {thing} becomes the machine's name.
    #[arg(long, default_value = "machines/{thing}")]
    topic: String,
    /// MQTT quality of service (0, 1 or 2).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=2))]
    qos: u8,
    /// Messages per second; 0 sends as fast as the broker takes them.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Stop after this many messages.
    #[arg(long)]
    count: Option<u64>,
    /// Stop after this long (e.g. 30s).
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<std::time::Duration>,
    /// Replay the file again and again, times shifted by its span each round.
    #[arg(long = "loop")]
    repeat: bool,
    /// Shift the file's times so that its first message is now.
    #[arg(long)]
    retime: bool,
    /// Replay in file order instead of time order.
    #[arg(long)]
    keep_order: bool,
    /// Send each line of --file exactly as it is (even if it is not JSON), in
    /// file order: for trying the dead letters.
    #[arg(long, requires = "file")]
    verbatim: bool,
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
    /// How far behind its machine's newest record a record is still held or
    /// accepted, and the longest a pair may span (e.g. 30m, 1h; default 1h).
    #[arg(long, value_parser = humantime::parse_duration)]
    state_horizon: Option<std::time::Duration>,
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
        Command::Run { config, stage, metrics_addr } => report(run(config, stage, metrics_addr)),
        Command::Simulate(args) => report(simulate(args)),
    }
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Logs as JSON lines when not on a terminal (in a cluster), readable text
/// otherwise; `RUST_LOG` filters (default `info`).
fn init_logging() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if std::io::stderr().is_terminal() {
        builder.init();
    } else {
        builder.json().init();
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

fn run(config_path: PathBuf, stage: Option<Stage>, metrics_addr: std::net::SocketAddr) -> anyhow::Result<()> {
    use millrace_worker::{dead_letter::DeadLetterSink, embedded, export, health, ingest, kafka};
    use std::sync::Arc;
    init_logging();
    let config = PipelineConfig::from_file(&config_path)?;
    runtime()?.block_on(async move {
        let health = Arc::new(health::Health::default());
        let bound = health::serve(metrics_addr, health.clone())
            .await
            .map_err(|e| anyhow::anyhow!("cannot serve metrics on {metrics_addr}: {e}"))?;
        tracing::info!(metrics = %bound, config = %config_path.display(), "starting");
        let shutdown = tokio_util::sync::CancellationToken::new();
        {
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
                tracing::info!("shutting down: finishing work in flight");
                shutdown.cancel();
            });
        }
        let kafka_config = config.kafka.clone();
        match (stage, kafka_config) {
            (None, None) => embedded::run(&config, health, shutdown).await,
            (None, Some(_)) => anyhow::bail!(
                "{}: has a kafka section, so its stages run apart: give --stage ingest, join or export",
                config_path.display()
            ),
            (Some(_), None) => anyhow::bail!(
                "{}: --stage needs a kafka section (without one, omit --stage to run all stages embedded)",
                config_path.display()
            ),
            (Some(Stage::Ingest), Some(k)) => {
                let producer = kafka::idempotent_producer(&k, &ingest::client_id(config.mqtt.client_id()))?;
                let dead_letters = DeadLetterSink::Kafka { producer: producer.clone(), topic: k.topics.dead_letter_name().to_string() };
                let output = ingest::RecordOutput::Kafka { producer: producer.clone(), topic: k.topics.raw_name().to_string() };
                let result = ingest::run(&config, millrace_worker::credentials::from_env("MQTT")?, output, dead_letters, health, shutdown).await;
                use rdkafka::producer::Producer;
                producer.flush(std::time::Duration::from_secs(30))?;
                result
            }
            (Some(Stage::Export), Some(k)) => {
                let target = config.influxdb.clone().ok_or_else(|| anyhow::anyhow!("influxdb: the export stage needs a target"))?;
                let producer = kafka::idempotent_producer(&k, "millrace-export")?;
                let dead_letters = DeadLetterSink::Kafka { producer, topic: k.topics.dead_letter_name().to_string() };
                let client = millrace_worker::influx::InfluxClient::new(&target, millrace_worker::credentials::from_env("INFLUXDB")?)?;
                export::run_from_kafka(&k, &target, export::Exporter::new(client, health), dead_letters, shutdown).await
            }
            (Some(Stage::Join), Some(k)) => {
                let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
                {
                    let (stop, shutdown) = (stop.clone(), shutdown.clone());
                    tokio::spawn(async move {
                        shutdown.cancelled().await;
                        stop.store(true, std::sync::atomic::Ordering::Relaxed);
                    });
                }
                let rules = config.joins.clone();
                // Transactional calls block: the stage runs on its own thread.
                tokio::task::spawn_blocking(move || millrace_worker::join::stage::run(&k, &rules, health, stop)).await?
            }
        }
    })
}

fn simulate(args: SimulateArgs) -> anyhow::Result<()> {
    use millrace_worker::simulate::{self, Options, Source};
    use std::io::IsTerminal;
    let source = match (args.file, args.machines) {
        (Some(path), None) if args.verbatim => Source::Verbatim { path },
        (Some(path), None) => Source::File { path, keep_order: args.keep_order },
        (None, Some(machines)) if machines > 0 => Source::Generate { machines, interval: args.interval },
        (None, Some(_)) => anyhow::bail!("--machines must be at least 1"),
        _ => anyhow::bail!("give --file FILE to replay, or --machines N to generate"),
    };
    if matches!(source, Source::Generate { .. }) && args.count.is_none() && args.duration.is_none() {
        anyhow::bail!("generated data never ends: give --count or --duration");
    }
    let tls = millrace_config::TlsFiles {
        secret_name: None,
        ca_file: args.ca_file,
        certificate_file: args.certificate_file,
        key_file: args.key_file,
    };
    let options = Options {
        url: args.url,
        tls: Some(tls),
        topic: args.topic,
        qos: args.qos,
        rate: args.rate,
        count: args.count,
        duration: args.duration,
        repeat: args.repeat,
        retime: args.retime,
        format: Default::default(),
        progress: std::io::stderr().is_terminal(),
    };
    let summary = runtime()?.block_on(simulate::run(source, options))?;
    eprintln!("{summary}");
    Ok(())
}

fn join_file(args: JoinFileArgs) -> anyhow::Result<()> {
    use millrace_config::{JoinRuleConfig, TimePolicy};
    use millrace_join::joiner::Joiner;
    use millrace_worker::join::file;
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
            state_horizon: args.state_horizon,
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
    // Progress only for a person watching: a large file (a bar to its size)
    // or a pipe (bytes so far).
    let progress = match size {
        _ if !std::io::stderr().is_terminal() => None,
        Some(n) if n > 16 << 20 => Some(indicatif::ProgressBar::new(n).with_style(
            indicatif::ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}").expect("a valid template"),
        )),
        Some(_) => None,
        None => Some(indicatif::ProgressBar::new_spinner().with_style(
            indicatif::ProgressStyle::with_template("{spinner} {bytes} read, {bytes_per_sec}, {elapsed}").expect("a valid template"),
        )),
    };
    let started = std::time::Instant::now();
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
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "{} records in {secs:.1} s ({:.0} records/s): {} joined, {} late, {} beyond the horizon, {} unreadable, {} not a number; {} held records expired ({} pairs emitted on expiry)",
            summary.lines,
            summary.lines as f64 / secs.max(1e-9),
            summary.joined,
            summary.late,
            summary.beyond_horizon,
            summary.unreadable,
            summary.not_a_number,
            summary.expired_records,
            summary.expired_pairs
        );
    }
    Ok(())
}
