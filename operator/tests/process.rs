//! The operator as a process: health and metrics endpoints, and leader
//! election on a Lease so that two replicas are safe.

mod fixtures;

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use millrace_testkit::{require, unique_name, KubeApi};

/// The process, its metrics port and the file its log goes to.
struct Operator(Child, u16, std::path::PathBuf);

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_file(&self.2);
    }
}

fn start(kube: &KubeApi, lease_namespace: &str, identity: &str) -> Operator {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let log = std::env::temp_dir().join(format!("{}.log", unique_name(identity)));
    let child = Command::new(env!("CARGO_BIN_EXE_millrace-operator"))
        .args(["run", "--leader-election", "--metrics-addr", &format!("127.0.0.1:{port}")])
        .env("KUBECONFIG", kube.kubeconfig_path())
        .env("POD_NAMESPACE", lease_namespace)
        .env("HOSTNAME", identity)
        .env("RUST_LOG", "warn")
        .stdout(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    Operator(child, port, log)
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

/// A leader that loses its Lease (cut off from the API server past its
/// term, or another replica took it) stops reconciling and follows, without
/// exiting: a restart would count towards a crash-loop backoff.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_loses_its_lease_follows_without_exiting() {
    use kube::api::{Patch, PatchParams};
    let kube = require!(KubeApi::shared());
    let client = fixtures::install_crd(kube).await;
    let ns = kube.create_namespace(&unique_name("lost")).await.unwrap();
    let mut a = start(kube, &ns, "operator-a");
    let leases: Api<Lease> = Api::namespaced(client, &ns);
    let holder = |leases: Api<Lease>| async move { leases.get_opt("millrace-operator").await.unwrap().and_then(|l| l.spec).and_then(|s| s.holder_identity) };
    let deadline = Instant::now() + Duration::from_secs(30);
    while holder(leases.clone()).await.as_deref() != Some("operator-a") {
        assert!(Instant::now() < deadline, "operator-a did not take the Lease");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Someone else holds it now, renewed just now for 15 s.
    let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(k8s_openapi::jiff::Timestamp::now());
    let taken_at = Instant::now();
    let taken = serde_json::json!({"spec": {"holderIdentity": "operator-z", "renewTime": now, "acquireTime": now, "leaseDurationSeconds": 15}});
    leases.patch("millrace-operator", &PatchParams::default(), &Patch::Merge(&taken)).await.unwrap();
    // operator-a notices, leaves operator-z its term, keeps running and
    // serving, and leads again once that term has run out unrenewed.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(a.0.try_wait().unwrap().is_none(), "operator-a exited after losing its lease");
        assert!(get(a.1, "/healthz").is_some(), "operator-a stopped serving /healthz");
        let now_held_by = holder(leases.clone()).await;
        if taken_at.elapsed() < Duration::from_secs(12) {
            assert_eq!(now_held_by.as_deref(), Some("operator-z"), "operator-a took the Lease within operator-z's term");
        } else if now_held_by.as_deref() == Some("operator-a") {
            break;
        }
        assert!(Instant::now() < deadline, "operator-a did not lead again (holder {now_held_by:?})");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let log = std::fs::read_to_string(&a.2).unwrap();
    assert!(log.contains("lost the leader lease: reconciling stops until this replica leads again"), "{log}");
    assert!(a.0.try_wait().unwrap().is_none(), "operator-a exited");
}

/// SIGTERM, as the kubelet sends on a rollout or a drain: both the leader
/// (reconciling) and a follower (waiting for the Lease) exit within seconds,
/// well inside the default 30 s grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_and_a_follower_stop_within_seconds_of_sigterm() {
    let kube = require!(KubeApi::shared());
    let client = fixtures::install_crd(kube).await;
    let ns = kube.create_namespace(&unique_name("sigterm")).await.unwrap();
    let mut a = start(kube, &ns, "operator-a");
    let mut b = start(kube, &ns, "operator-b");
    let leases: Api<Lease> = Api::namespaced(client, &ns);
    let deadline = Instant::now() + Duration::from_secs(30);
    let holder = loop {
        if let Some(h) = leases.get_opt("millrace-operator").await.unwrap().and_then(|l| l.spec).and_then(|s| s.holder_identity) {
            break h;
        }
        assert!(Instant::now() < deadline, "nobody took the Lease");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    while get(a.1, "/healthz").is_none() || get(b.1, "/healthz").is_none() {
        assert!(Instant::now() < deadline, "the operators did not serve /healthz");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (leader, follower) = if holder == "operator-a" { (&mut a, &mut b) } else { (&mut b, &mut a) };
    for (role, operator) in [("follower", follower), ("leader", leader)] {
        let sent = Instant::now();
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(operator.0.id() as i32, libc::SIGTERM) }, 0);
        let status = loop {
            if let Some(status) = operator.0.try_wait().unwrap() {
                break status;
            }
            assert!(sent.elapsed() < Duration::from_secs(10), "the {role} did not stop within 10 s of SIGTERM");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        eprintln!("the {role} stopped {:.1?} after SIGTERM ({status})", sent.elapsed());
        assert!(status.success(), "the {role} exited with {status} on SIGTERM");
    }
}
