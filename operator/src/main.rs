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
    /// Run the controller against the cluster of the current kubeconfig (or
    /// the in-cluster ServiceAccount).
    Run(RunArgs),
    /// Print the StreamPipeline CustomResourceDefinition as YAML.
    Crd,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Where /metrics, /healthz and /readyz are served.
    #[arg(long, default_value = "[::]:8080", env = "MILLRACE_OPERATOR_METRICS_ADDR")]
    metrics_addr: std::net::SocketAddr,
    /// Reconcile only while holding a Lease, so that several replicas are safe.
    #[arg(long, env = "MILLRACE_LEADER_ELECTION")]
    leader_election: bool,
    /// Name of the Lease.
    #[arg(long, default_value = "millrace-operator")]
    lease_name: String,
    /// Namespace of the Lease (the operator's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// Reconcile the pipelines of this namespace only (then a Role there is
    /// all the operator needs); all namespaces when unset.
    #[arg(long, env = "MILLRACE_WATCH_NAMESPACE")]
    watch_namespace: Option<String>,
    /// The worker image of pipelines that name none (`spec.workers.image`):
    /// the worker of this operator's version unless set.
    #[arg(long, env = "MILLRACE_WORKER_IMAGE", default_value_t = millrace_operator::defaults::default_worker_image())]
    worker_image: String,
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Crd => {
            print!("{}", millrace_operator::crd::crd_yaml());
            ExitCode::SUCCESS
        }
        Command::Run(args) => {
            limit_malloc_arenas();
            tracing_subscriber::fmt()
                .json()
                .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
                .init();
            let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
            match runtime.block_on(run(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    use millrace_operator::metrics::OperatorMetrics;
    use millrace_health::{self as health, Health};
    use std::sync::Arc;
    let client = kube::Client::try_default().await.map_err(|e| anyhow::anyhow!("cannot reach the cluster: {e}"))?;
    let health = Arc::new(Health::new(OperatorMetrics::default()));
    let bound = health::serve(args.metrics_addr, health.clone()).await?;
    let defaults = millrace_operator::defaults::OperatorDefaults { worker_image: args.worker_image };
    tracing::info!(metrics = %bound, worker_image = %defaults.worker_image, "operator starting");
    if args.leader_election {
        let identity = std::env::var("HOSTNAME").unwrap_or_else(|_| format!("millrace-operator-{}", std::process::id()));
        let manager = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), &args.lease_name)
            .with_namespace(&args.lease_namespace)
            .with_identity(&identity)
            // A dead leader is replaced within about 15 s.
            .with_duration(15)
            .with_grace(5)
            .build()
            .await?;
        let (mut leader, _task) = manager.watch().await;
        health.set_ready(true);
        loop {
            tracing::info!(lease = %args.lease_name, %identity, "waiting to lead");
            // A follower stops at once on SIGTERM (the controller below
            // handles it itself once leading).
            let wait = async {
                while !*leader.borrow_and_update() {
                    leader.changed().await?;
                }
                anyhow::Ok(())
            };
            tokio::select! {
                waited = wait => waited.map_err(|_| anyhow::anyhow!("the Lease manager stopped"))?,
                signal = termination() => {
                    tracing::info!(%signal, "stopping while waiting to lead");
                    return Ok(());
                }
            }
            tracing::info!("leading: reconciling");
            let controller = millrace_operator::reconcile::run_with(client.clone(), args.watch_namespace.as_deref(), health.clone(), defaults.clone());
            tokio::select! {
                // Stopped by SIGTERM.
                _ = controller => return Ok(()),
                _ = async { while *leader.borrow_and_update() { if leader.changed().await.is_err() { break } } } => {
                    // Another replica leads now (this one was cut off from
                    // the API server past its lease, say): the controller is
                    // dropped, and this replica follows until it leads again.
                    // No exit, so no restart count and no crash-loop backoff.
                    tracing::warn!("lost the leader lease: reconciling stops until this replica leads again");
                }
            }
        }
    } else {
        health.set_ready(true);
        millrace_operator::reconcile::run_with(client, args.watch_namespace.as_deref(), health, defaults).await;
        Ok(())
    }
}

/// Resolves with the signal's name on SIGTERM (what the kubelet sends) or
/// SIGINT.
async fn termination() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        // Without handlers the default disposition still ends the process.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

/// glibc gives each thread that allocates its own heap arena; the watch
/// caches of a hundred pipelines then hold 64 MiB where two arenas hold 40.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: called before any other thread exists; mallopt only sets a tunable.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}
