//! The StreamPipeline CRD: `crds/` holds exactly what the operator prints,
//! and the real API server takes it, explains it, and refuses what its
//! schema can tell is wrong.

mod fixtures;

use std::time::Duration;

use fixtures::{example, install_crd, CHECKED_IN};
use kube::api::{Api, Patch, PatchParams, PostParams};
use millrace_operator::crd::{crd_yaml, StreamPipeline};
use millrace_testkit::{require, unique_name, KubeApi};

#[test]
fn crds_directory_holds_exactly_what_the_operator_prints() {
    assert!(
        CHECKED_IN == crd_yaml(),
        "crds/streampipeline.yaml differs from the CRD the code defines; regenerate it with\n  cargo run -p millrace-operator -- crd > crds/streampipeline.yaml"
    );
}

#[tokio::test]
async fn the_api_server_takes_a_pipeline_and_explains_its_fields() {
    let kube = require!(KubeApi::shared());
    let client = install_crd(kube).await;
    let ns = kube.create_namespace(&unique_name("crd")).await.unwrap();
    let pipelines: Api<StreamPipeline> = Api::namespaced(client, &ns);
    let created = pipelines.create(&PostParams::default(), &serde_json::from_value(example("plant-1")).unwrap()).await.unwrap();
    assert_eq!(created.spec.workers.join.replicas, 2);
    assert_eq!(created.spec.workers.ingest.replicas, 1, "defaults filled in");
    assert_eq!(created.spec.pipeline.joins[0].max_delta, Some(Duration::from_millis(500)));

    let kubectl = require!(millrace_testkit::find_binary("kubectl"));
    // The 1.20 server publishes OpenAPI v2 only, and a new CRD's schema
    // reaches it a few seconds after the CRD is established.
    let explain = || {
        std::process::Command::new(&kubectl)
            .arg("--kubeconfig")
            .arg(kube.kubeconfig_path())
            .args(["explain", "streampipelines.spec.pipeline.joins", "--output=plaintext-openapiv2"])
            .output()
            .unwrap()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut out = explain();
    while !out.status.success() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        out = explain();
    }
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("Join rules"), "{text}");
    assert!(text.contains("expression"), "{text}");

    // The short name (not Tekton's `pipeline`) finds it.
    let out = std::process::Command::new(&kubectl)
        .arg("--kubeconfig")
        .arg(kube.kubeconfig_path())
        .args(["-n", &ns, "get", "mrp", "-o", "name"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "streampipeline.millrace.io/plant-1", "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test]
async fn the_api_server_refuses_what_the_schema_can_tell_is_wrong() {
    let kube = require!(KubeApi::shared());
    let client = install_crd(kube).await;
    let ns = kube.create_namespace(&unique_name("crd")).await.unwrap();
    // Raw objects: some of these values the Rust types would refuse first.
    let resource = kube::api::ApiResource::erase::<StreamPipeline>(&());
    let pipelines: Api<kube::api::DynamicObject> = Api::namespaced_with(client, &ns, &resource);
    let cases = [
        ("/spec/workers/join/replicas", serde_json::json!(-1), "spec.workers.join.replicas"),
        ("/spec/deletionPolicy", serde_json::json!("Maybe"), "spec.deletionPolicy"),
        ("/spec/pipeline/mqtt/qos", serde_json::json!(7), "spec.pipeline.mqtt.qos"),
        ("/spec/pipeline/joins/0/maxDelta", serde_json::json!("soon"), "spec.pipeline.joins[0].maxDelta"),
        ("/spec/pipeline/mqtt/url", serde_json::json!("http://broker:1883"), "spec.pipeline.mqtt.url"),
        ("/spec/pipeline/influxdb/url", serde_json::json!("influxdb:8086"), "spec.pipeline.influxdb.url"),
        ("/spec/workers", serde_json::json!({"imagePullPolicy": "Sometimes"}), "spec.workers.imagePullPolicy"),
        ("/spec/pipeline/kafka", serde_json::json!({"bootstrapServers": "kafka:9092", "transactionInterval": "later"}), "spec.pipeline.kafka.transactionInterval"),
    ];
    for (i, (pointer, value, field)) in cases.into_iter().enumerate() {
        let mut bad = example(&format!("bad-{i}"));
        *bad.pointer_mut(pointer).unwrap_or_else(|| panic!("{pointer}")) = value;
        let err = pipelines.create(&PostParams::default(), &serde_json::from_value(bad).unwrap()).await;
        let err = match err {
            Err(e) => e.to_string(),
            Ok(_) => panic!("{pointer} was accepted"),
        };
        assert!(err.contains(field), "{pointer}: {err}");
    }
}

#[tokio::test]
async fn the_built_worker_objects_are_accepted_by_the_api_server() {
    use k8s_openapi::api::apps::v1::StatefulSet;
    use k8s_openapi::api::core::v1::{ConfigMap, Service};
    use millrace_operator::children::config_hash;
    use millrace_operator::children::workers::{config_map, metrics_service, stateful_set, Stage};
    let kube = require!(KubeApi::shared());
    let client = install_crd(kube).await;
    let ns = kube.create_namespace(&unique_name("build")).await.unwrap();
    let pipelines: Api<StreamPipeline> = Api::namespaced(client.clone(), &ns);
    let p = pipelines.create(&PostParams::default(), &serde_json::from_value(example("line-1")).unwrap()).await.unwrap();

    let ssa = PatchParams::apply("millrace-operator").force();
    let valid = millrace_operator::reconcile::validate(&p, &Default::default()).unwrap();
    let cm = config_map(&valid);
    let hash = config_hash(&cm);
    Api::<ConfigMap>::namespaced(client.clone(), &ns).patch("line-1-worker", &ssa, &Patch::Apply(&cm)).await.unwrap();
    for stage in Stage::ALL {
        let d = stateful_set(&valid, stage, &hash, 3);
        let name = d.metadata.name.clone().unwrap();
        let applied = Api::<StatefulSet>::namespaced(client.clone(), &ns).patch(&name, &ssa, &Patch::Apply(&d)).await.unwrap();
        let want = if stage == Stage::Join { 2 } else { 1 };
        assert_eq!(applied.spec.unwrap().replicas, Some(want), "{name}");
        let s = metrics_service(&p, stage);
        Api::<Service>::namespaced(client.clone(), &ns).patch(s.metadata.name.as_deref().unwrap(), &ssa, &Patch::Apply(&s)).await.unwrap();
    }
}

#[tokio::test]
async fn the_example_pipelines_are_valid() {
    let kube = require!(KubeApi::shared());
    let client = install_crd(kube).await;
    let ns = kube.create_namespace(&unique_name("ex")).await.unwrap();
    // The README's first pipeline, and the kind end-to-end test's.
    for (i, (file, yaml)) in [
        ("examples/streampipeline.yaml", include_str!("../../examples/streampipeline.yaml")),
        ("scripts/kind/pipeline.yaml", include_str!("../../scripts/kind/pipeline.yaml")),
    ]
    .into_iter()
    .enumerate()
    {
        let mut example: StreamPipeline = serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("{file}: {e}"));
        millrace_operator::reconcile::validate(&example, &Default::default()).unwrap_or_else(|e| panic!("{file}: {e}"));
        example.metadata.namespace = None;
        example.metadata.name = Some(format!("example-{i}"));
        Api::<StreamPipeline>::namespaced(client.clone(), &ns).create(&PostParams::default(), &example).await.unwrap_or_else(|e| panic!("{file}: {e}"));
    }
}
