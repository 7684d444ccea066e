//! The operator as a process: health and metrics endpoints, and leader
//! election on a Lease so that two replicas are safe.

mod fixtures;

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use millrace_testkit::{require, unique_name, KubeApi};

struct Operator(Child, u16);

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(kube: &KubeApi, lease_namespace: &str, identity: &str) -> Operator {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new(env!("CARGO_BIN_EXE_millrace-operator"))
        .args(["run", "--leader-election", "--metrics-addr", &format!("127.0.0.1:{port}")])
        .env("KUBECONFIG", kube.kubeconfig_path())
        .env("POD_NAMESPACE", lease_namespace)
        .env("HOSTNAME", identity)
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
    Operator(child, port)
}

fn get(port: u16, path: &str) -> Option<String> {
    ureq::get(&format!("http://127.0.0.1:{port}{path}")).call().ok()?.body_mut().read_to_string().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_elect_one_leader_and_serve_health() {
    let kube = require!(KubeApi::shared());
    let client = fixtures::install_crd(kube).await;
    let ns = kube.create_namespace(&unique_name("lease")).await.unwrap();
    let a = start(kube, &ns, "operator-a");
    let b = start(kube, &ns, "operator-b");
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(a.1, "/healthz").is_none() || get(b.1, "/healthz").is_none() {
        assert!(Instant::now() < deadline, "the operators did not serve /healthz");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let leases: Api<Lease> = Api::namespaced(client, &ns);
    let holder = loop {
        if let Some(l) = leases.get_opt("millrace-operator").await.unwrap() {
            if let Some(h) = l.spec.and_then(|s| s.holder_identity) {
                break h;
            }
        }
        assert!(Instant::now() < deadline, "nobody took the Lease");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(holder == "operator-a" || holder == "operator-b", "{holder}");
    let metrics = get(a.1, "/metrics").unwrap();
    assert!(metrics.contains("millrace_operator_reconcile_seconds"), "{metrics}");

    // The leader goes away: the other takes over.
    let (leader, follower) = if holder == "operator-a" { (a, "operator-b") } else { (b, "operator-a") };
    drop(leader);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let h = leases.get("millrace-operator").await.unwrap().spec.and_then(|s| s.holder_identity);
        if h.as_deref() == Some(follower) {
            break;
        }
        assert!(Instant::now() < deadline, "the follower did not take over (holder {h:?})");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
