//! 100 pipelines created at once against the test API server and a local
//! Apache Kafka broker: time until every one has its children applied and
//! its status written, and the operator's resident memory then. The
//! operator runs as its own process (release build of this workspace).

use std::time::{Duration, Instant};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{conditions, wait::await_condition};
use millrace_operator::crd::StreamPipeline;
use millrace_testkit::{unique_name, KafkaBroker, KubeApi};

const PIPELINES: usize = 100;

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) / 1024.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let kube = KubeApi::shared().map_err(|e| anyhow::anyhow!("{e}"))?;
    let broker = KafkaBroker::start().map_err(|e| anyhow::anyhow!("{e}"))?;
    let client = kube.client().await?;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd: CustomResourceDefinition = serde_yaml::from_str(&millrace_operator::crd::crd_yaml())?;
    crds.patch("streampipelines.millrace.io", &PatchParams::apply("bench").force(), &Patch::Apply(&crd)).await?;
    await_condition(crds, "streampipelines.millrace.io", conditions::is_crd_established()).await?;
    let ns = kube.create_namespace(&unique_name("bench")).await?;

    let operator = std::env::var("MILLRACE_OPERATOR_BIN").unwrap_or_else(|_| "target/release/millrace-operator".into());
    let mut child = std::process::Command::new(&operator)
        .args(["run", "--metrics-addr", "127.0.0.1:0"])
        .env("KUBECONFIG", kube.kubeconfig_path())
        .env("RUST_LOG", "warn")
        .spawn()
        .map_err(|e| anyhow::anyhow!("cannot start {operator}: {e}"))?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = rss_mib(child.id());

    let pipelines: Api<StreamPipeline> = Api::namespaced(client.clone(), &ns);
    let start = Instant::now();
    let creates = (0..PIPELINES).map(|i| {
        let pipelines = pipelines.clone();
        let servers = broker.bootstrap_servers();
        async move {
            let spec = serde_json::json!({
                "apiVersion": "millrace.io/v1alpha1", "kind": "StreamPipeline", "metadata": {"name": format!("p{i:03}")},
                "spec": {"pipeline": {
                    "kafka": {"bootstrapServers": servers, "topics": {
                        "raw": {"name": format!("p{i:03}.raw"), "partitions": 3},
                        "joined": {"name": format!("p{i:03}.joined"), "partitions": 3},
                        "deadLetter": {"name": format!("p{i:03}.dead"), "partitions": 1}}},
                    "joins": [{"name": "power", "left": "actSpeed_(C\\d+)", "right": "vaTorque_(C\\d+)"}],
                    "influxdb": {"url": "http://influxdb:8086"}}}
            });
            pipelines.create(&PostParams::default(), &serde_json::from_value(spec).unwrap()).await
        }
    });
    for r in futures::future::join_all(creates).await {
        if let Err(e) = r {
            let _ = child.kill();
            return Err(e.into());
        }
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let list = pipelines.list(&Default::default()).await?;
        let done = list
            .items
            .iter()
            .filter(|p| {
                p.status.as_ref().is_some_and(|s| {
                    s.observed_generation == p.metadata.generation && s.conditions.iter().any(|c| c.type_ == "TopicsReady" && c.status == "True")
                })
            })
            .count();
        if done == PIPELINES {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            anyhow::bail!("only {done} of {PIPELINES} pipelines reconciled in 300 s");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let elapsed = start.elapsed();
    let busy = rss_mib(child.id());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let settled = rss_mib(child.id());
    let _ = child.kill();
    println!(
        "operator: {PIPELINES} pipelines created at once, all children applied and status written (topics ready) in {:.1} s; resident memory {idle:.1} MiB idle, {busy:.1} MiB right after, {settled:.1} MiB 3 s later",
        elapsed.as_secs_f64()
    );
    Ok(())
}
