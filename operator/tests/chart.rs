//! The Helm chart in `charts/millrace`: lint, rendered objects valid for
//! several value sets, bad values refused, and installed into the real API
//! server where the operator, running with the chart's own ServiceAccount,
//! reconciles pipelines: its RBAC is enough, and no more than needed.

mod fixtures;

use std::path::PathBuf;
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::authorization::v1::SelfSubjectAccessReview;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use millrace_operator::crd::StreamPipeline;
use serde::Deserialize;
use millrace_testkit::{find_binary, require, unique_name, KafkaBroker, KubeApi};

fn chart() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../charts/millrace")
}

fn helm(args: &[&str]) -> Output {
    let helm = find_binary("helm").unwrap_or_else(|e| panic!("{e}"));
    Command::new(helm).args(args).output().expect("helm runs")
}

fn ok(output: &Output, what: &str) -> String {
    assert!(output.status.success(), "{what} failed:\n{}\n{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `helm template` with `--set` pairs, as (kind, name, namespace) plus the YAML.
fn render(sets: &[&str]) -> (Vec<(String, String, String)>, String) {
    let chart = chart();
    let mut args = vec!["template", "rel", chart.to_str().unwrap(), "--namespace", "ops", "--include-crds", "--kube-version", "1.33.0"];
    for s in sets {
        args.extend(["--set", s]);
    }
    let yaml = ok(&helm(&args), &format!("helm template {sets:?}"));
    let objects = serde_yaml::Deserializer::from_str(&yaml)
        .filter_map(|doc| serde_yaml::Value::deserialize(doc).ok())
        .filter(|v| !v.is_null())
        .map(|v| {
            let field = |path: &[&str]| path.iter().try_fold(&v, |v, k| v.get(k)).and_then(|v| v.as_str()).unwrap_or("").to_string();
            (field(&["kind"]), field(&["metadata", "name"]), field(&["metadata", "namespace"]))
        })
        .collect();
    (objects, yaml)
}

/// Every rendered object checked against the Kubernetes 1.33 schemas;
/// kinds it has no schema for are named.
fn validate(yaml: &str) -> Vec<String> {
    let validator = find_binary("kubernetes-validate").unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rendered.yaml");
    std::fs::write(&file, yaml).unwrap();
    let out = Command::new(validator).args(["-k", "1.33.0", "--strict", file.to_str().unwrap()]).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && !text.contains("ERROR"), "invalid objects:\n{text}");
    text.lines().filter(|l| l.contains("Couldn't find schema for kind")).map(|l| l.split("kind ").nth(1).unwrap_or(l).to_string()).collect()
}

fn kinds(objects: &[(String, String, String)]) -> Vec<&str> {
    let mut k: Vec<&str> = objects.iter().map(|(kind, ..)| kind.as_str()).collect();
    k.sort();
    k
}

#[test]
fn the_chart_lints_strictly_and_renders_valid_objects_for_each_value_set() {
    require!(find_binary("helm"));
    require!(find_binary("kubernetes-validate"));
    let chart = chart();
    let value_sets: [&[&str]; 6] = [
        &[],
        &["replicas=2"],
        &["watchNamespace=plant"],
        &["rbac.secretNamespaces={plant-a,plant-b}"],
        &["metrics.serviceMonitor.enabled=true", "metrics.serviceMonitor.labels.release=prom"],
        &["rbac.create=false", "serviceAccount.create=false", "serviceAccount.name=ops-operator", "leaderElection.enabled=false", "replicas=3"],
    ];
    for sets in value_sets {
        let mut lint = vec!["lint", "--strict", chart.to_str().unwrap()];
        for s in sets {
            lint.extend(["--set", s]);
        }
        ok(&helm(&lint), &format!("helm lint --strict {sets:?}"));
        let (objects, yaml) = render(sets);
        let unknown = validate(&yaml);
        let expect_monitor = sets.iter().any(|s| s.starts_with("metrics.serviceMonitor.enabled"));
        assert_eq!(unknown.len(), usize::from(expect_monitor), "only the ServiceMonitor lacks a schema: {unknown:?}");
        assert!(objects.iter().any(|(k, n, ns)| k == "Deployment" && n == "rel-millrace" && ns == "ops"), "{objects:?}");
        assert!(objects.iter().any(|(k, n, _)| k == "CustomResourceDefinition" && n == "streampipelines.millrace.io"), "{objects:?}");
    }

    // One namespace watched: nothing cluster-wide at all.
    let (objects, yaml) = render(&["watchNamespace=plant"]);
    assert!(!kinds(&objects).iter().any(|k| k.starts_with("Cluster")), "{objects:?}");
    assert!(objects.iter().any(|(k, _, ns)| k == "Role" && ns == "plant"));
    assert!(yaml.contains("--watch-namespace=plant"));

    // All namespaces: the ClusterRole has no Secrets; they come only per listed namespace.
    let (objects, yaml) = render(&[]);
    assert_eq!(kinds(&objects), ["ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "Deployment", "Service", "ServiceAccount"]);
    assert!(!yaml.contains("secrets"), "no Secret access unless asked for:\n{yaml}");
    assert!(!yaml.contains("--leader-election"), "one replica needs no Lease");
    let (objects, _) = render(&["rbac.secretNamespaces={plant-a,plant-b}"]);
    let bindings: Vec<&str> = objects.iter().filter(|(k, n, _)| k == "RoleBinding" && n.ends_with("-secrets")).map(|(.., ns)| ns.as_str()).collect();
    assert_eq!(bindings, ["plant-a", "plant-b"]);

    // Two replicas: leader election with its own Lease and a Role for it.
    let (objects, yaml) = render(&["replicas=2"]);
    assert!(yaml.contains("--leader-election") && yaml.contains("--lease-name=rel-millrace"));
    assert!(objects.iter().any(|(k, n, ns)| k == "Role" && n == "rel-millrace-leader-election" && ns == "ops"));

    // Without RBAC or a ServiceAccount of its own, the chart makes neither.
    let (objects, yaml) = render(&["rbac.create=false", "serviceAccount.create=false", "serviceAccount.name=ops-operator"]);
    assert_eq!(kinds(&objects), ["CustomResourceDefinition", "Deployment", "Service"]);
    assert!(yaml.contains("serviceAccountName: ops-operator"));
}

#[test]
fn bad_values_are_refused_with_the_path_of_the_value() {
    require!(find_binary("helm"));
    let chart = chart();
    for (set, says) in [
        ("replicas=-1", "/replicas"),
        ("watchNamespace=Not_A_Namespace", "/watchNamespace"),
        ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
        ("metrics.port=70000", "/metrics/port"),
        ("replica=2", "replica"),
    ] {
        let out = helm(&["template", "rel", chart.to_str().unwrap(), "--set", set]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{set} was taken");
        assert!(err.contains(says), "{set}: {err}");
    }
}

#[test]
fn the_charts_crd_is_the_one_the_operator_prints() {
    let in_chart = std::fs::read_to_string(chart().join("crds/streampipeline.yaml")).unwrap();
    assert!(in_chart == millrace_operator::crd::crd_yaml(), "charts/millrace/crds/ is stale: cp crds/streampipeline.yaml charts/millrace/crds/");
    assert_eq!(in_chart, fixtures::CHECKED_IN);
}

struct Operator(Child);

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn condition(p: &StreamPipeline, kind: &str) -> Option<(String, String)> {
    p.status.as_ref()?.conditions.iter().find(|c| c.type_ == kind).map(|c| (c.status.clone(), c.reason.clone()))
}

async fn wait_for(api: &Api<StreamPipeline>, name: &str, what: &str, test: impl Fn(&StreamPipeline) -> bool) -> StreamPipeline {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(p) = api.get_opt(name).await.unwrap() {
            if test(&p) {
                return p;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}; status: {:#?}", p.status);
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}: {name} is gone");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Whether the operator's ServiceAccount may do something, as the API server's authorizer says.
async fn may(client: &kube::Client, verb: &str, resource: &str, group: &str, namespace: Option<&str>) -> bool {
    let review: SelfSubjectAccessReview = serde_json::from_value(serde_json::json!({
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": {"verb": verb, "resource": resource, "group": group, "namespace": namespace.unwrap_or("")}}
    }))
    .unwrap();
    let answer = Api::<SelfSubjectAccessReview>::all(client.clone()).create(&PostParams::default(), &review).await.unwrap();
    answer.status.unwrap().allowed
}

fn pipeline(name: &str, servers: &str) -> StreamPipeline {
    let mut spec = fixtures::example(name);
    spec["spec"]["mosquitto"] = serde_json::json!({"managed": true, "persistenceSize": "1Gi"});
    spec["spec"]["grafana"] = serde_json::json!({"enabled": true});
    fixtures::on_broker(&mut spec, servers);
    serde_json::from_value(spec).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_installed_charts_rbac_is_enough_for_the_operator_and_no_more() {
    let kube = require!(KubeApi::shared());
    let broker = require!(KafkaBroker::start());
    require!(find_binary("helm"));
    let admin = kube.client().await.unwrap();
    let ops = kube.create_namespace(&unique_name("ops")).await.unwrap();
    let granted = kube.create_namespace(&unique_name("plant")).await.unwrap();
    let other = kube.create_namespace(&unique_name("plant")).await.unwrap();
    let release = unique_name("mr");
    let chart = chart();
    let kubeconfig = kube.kubeconfig_path().to_str().unwrap().to_string();
    let secret_namespaces = format!("rbac.secretNamespaces={{{granted}}}");
    ok(
        &helm(&[
            "install", &release, chart.to_str().unwrap(), "--namespace", &ops, "--kubeconfig", &kubeconfig,
            "--set", "replicas=2", "--set", &secret_namespaces,
        ]),
        "helm install",
    );
    let deployment = Api::<Deployment>::namespaced(admin.clone(), &ops).get(&format!("{release}-millrace")).await.unwrap();
    assert_eq!(deployment.spec.unwrap().template.spec.unwrap().service_account_name.as_deref(), Some(format!("{release}-millrace").as_str()));

    // The operator, as a process, with nothing but the chart's ServiceAccount.
    let token = kube.service_account_token(&ops, &format!("{release}-millrace")).await.unwrap();
    let sa_kubeconfig = kube.kubeconfig_for_token(&release, &token).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let _operator = Operator(
        Command::new(env!("CARGO_BIN_EXE_millrace-operator"))
            .args(["run", "--leader-election", &format!("--lease-name={release}-millrace"), "--metrics-addr", &format!("127.0.0.1:{port}")])
            .env("KUBECONFIG", &sa_kubeconfig)
            .env("POD_NAMESPACE", &ops)
            .env("RUST_LOG", "warn")
            .spawn()
            .unwrap(),
    );

    // Where Secrets were granted: every child, Grafana's admin Secret too.
    let pipelines: Api<StreamPipeline> = Api::namespaced(admin.clone(), &granted);
    pipelines.create(&PostParams::default(), &pipeline("line-1", &broker.bootstrap_servers())).await.unwrap();
    let p = wait_for(&pipelines, "line-1", "TopicsReady and GrafanaReady", |p| {
        condition(p, "TopicsReady").is_some_and(|c| c.0 == "True") && condition(p, "GrafanaReady").is_some()
    })
    .await;
    assert_eq!(condition(&p, "SpecValid").unwrap().0, "True");
    assert_eq!(condition(&p, "GrafanaReady").unwrap().1, "GrafanaProgressing", "no Pods run here, but every object was made");
    assert_eq!(condition(&p, "BrokerReady").unwrap().1, "BrokerProgressing");
    Api::<Secret>::namespaced(admin.clone(), &granted).get("line-1-grafana-admin").await.unwrap();
    for stage in ["line-1-ingest", "line-1-join", "line-1-export"] {
        Api::<StatefulSet>::namespaced(admin.clone(), &granted).get(stage).await.unwrap();
    }
    for child in ["line-1-mosquitto", "line-1-grafana"] {
        Api::<Deployment>::namespaced(admin.clone(), &granted).get(child).await.unwrap();
    }

    let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(admin.clone(), &granted).list(&Default::default()).await.unwrap().items;
    assert!(events.iter().any(|e| e.reporting_controller.as_deref() == Some("millrace-operator")), "the operator may publish Events: {events:?}");

    // Elsewhere: everything but the Secret, and a condition that says why.
    let elsewhere: Api<StreamPipeline> = Api::namespaced(admin.clone(), &other);
    elsewhere.create(&PostParams::default(), &pipeline("line-2", &broker.bootstrap_servers())).await.unwrap();
    // Topics are ready once the broker has them: under load a first try may
    // time out and the next reconcile makes them (seen in a CI run), so it is
    // waited for, as for line-1.
    let p = wait_for(&elsewhere, "line-2", "TopicsReady and GrafanaReady", |p| {
        condition(p, "TopicsReady").is_some_and(|c| c.0 == "True") && condition(p, "GrafanaReady").is_some()
    })
    .await;
    assert_eq!(condition(&p, "GrafanaReady").unwrap(), ("False".into(), "AdminSecretForbidden".into()));
    Api::<StatefulSet>::namespaced(admin.clone(), &other).get("line-2-join").await.unwrap();

    // Deletion runs the finalizer with the same rights.
    pipelines.delete("line-1", &Default::default()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while pipelines.get_opt("line-1").await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "the finalizer did not release line-1");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // And no more than needed.
    let sa = KubeApi::client_from(&sa_kubeconfig).await.unwrap();
    assert!(may(&sa, "create", "secrets", "", Some(&granted)).await);
    for (verb, resource, group, namespace) in [
        ("create", "secrets", "", Some(other.as_str())),
        ("get", "secrets", "", Some("kube-system")),
        ("list", "secrets", "", None),
        ("watch", "secrets", "", None),
        ("update", "secrets", "", Some(granted.as_str())),
        ("create", "pods", "", Some(granted.as_str())),
        ("create", "pods/exec", "", Some(granted.as_str())),
        ("delete", "namespaces", "", None),
        ("create", "clusterroles", "rbac.authorization.k8s.io", None),
        ("create", "rolebindings", "rbac.authorization.k8s.io", Some(granted.as_str())),
        ("delete", "customresourcedefinitions", "apiextensions.k8s.io", None),
        ("delete", "streampipelines", "millrace.io", Some(granted.as_str())),
        ("create", "leases", "coordination.k8s.io", Some(granted.as_str())),
        ("*", "*", "*", None),
    ] {
        assert!(!may(&sa, verb, resource, group, namespace).await, "the operator may {verb} {resource} in {namespace:?}: more than it needs");
    }
    ok(&helm(&["uninstall", &release, "--namespace", &ops, "--kubeconfig", &kubeconfig]), "helm uninstall");
}

/// The README's cluster quick start makes each namespace of
/// `rbac.secretNamespaces` before the `helm install` that binds rights in
/// it (else the install fails on the missing namespace).
#[test]
fn the_readme_creates_the_secret_namespaces_before_helm_install() {
    let readme = include_str!("../../README.md");
    let lines: Vec<&str> = readme.lines().collect();
    let install = lines.iter().position(|l| l.starts_with("helm install millrace charts/millrace")).expect("a helm install in the README");
    let set = lines[install..=install + 1].join(" ").replace('\'', "");
    let list = set.split("rbac.secretNamespaces={").nth(1).and_then(|r| r.split('}').next()).expect("rbac.secretNamespaces set");
    for ns in list.split(',') {
        let created = lines[..install].iter().any(|l| l.trim() == format!("kubectl create namespace {ns}"));
        assert!(created, "the README's helm install needs namespace {ns}, which it does not create before");
    }
}
