//! Pod Security `restricted`, on the real API server (Kubernetes 1.33, its
//! built-in PodSecurity admission): every Pod the operator makes (the three
//! worker stages, the managed Mosquitto with persistence and a password
//! file, Grafana) is admitted in a namespace labelled
//! `pod-security.kubernetes.io/enforce=restricted`, with the images' own
//! user ids and with the platform's. A Pod without our security settings is
//! refused there, so the namespace does enforce.

mod fixtures;

use k8s_openapi::api::core::v1::{Namespace, Pod, PodSpec, ServiceAccount};
use kube::api::{Api, PostParams};
use millrace_operator::children::{grafana, mosquitto, workers};
use millrace_operator::crd::StreamPipeline;
use millrace_testkit::{require, unique_name, KubeApi};

fn pipeline(user_ids: &str) -> StreamPipeline {
    serde_yaml::from_str(&format!(
        "apiVersion: millrace.io/v1alpha1\nkind: StreamPipeline\nmetadata: {{name: l1, namespace: plant}}\nspec:\n  userIds: {user_ids}\n  pipeline:\n    kafka: {{bootstrapServers: 'k:9092'}}\n    influxdb: {{url: 'http://influx:8086', credentials: {{secretName: influx}}}}\n    joins: [{{name: power, left: 'actSpeed_(C\\d+)', right: 'vaTorque_(C\\d+)'}}]\n  mosquitto: {{managed: true, persistenceSize: 1Gi, authSecret: mqtt-passwd, tls: {{secretName: broker-tls, requireCertificate: true}}}}\n  grafana: {{enabled: true}}\n  pods: {{imagePullSecrets: [{{name: plant-registry}}], nodeSelector: {{plant.example/line: '1'}}, tolerations: [{{key: dedicated, operator: Equal, value: millrace, effect: NoSchedule}}], affinity: {{nodeAffinity: {{requiredDuringSchedulingIgnoredDuringExecution: {{nodeSelectorTerms: [{{matchExpressions: [{{key: plant.example/zone, operator: In, values: [a, b]}}]}}]}}}}}}}}\n"
    ))
    .unwrap()
}

/// Every Pod template of `p`, by the name of its workload.
fn pod_specs(p: &StreamPipeline) -> Vec<(String, PodSpec)> {
    let mut specs: Vec<(String, PodSpec)> = workers::Stage::ALL
        .into_iter()
        .map(|stage| {
            let valid = millrace_operator::reconcile::validate(p, &Default::default()).unwrap();
            (stage.name().to_string(), workers::stateful_set(&valid, stage, "hash", 1).spec.unwrap().template.spec.unwrap())
        })
        .collect();
    specs.push(("mosquitto".into(), mosquitto::deployment(p).spec.unwrap().template.spec.unwrap()));
    specs.push(("grafana".into(), grafana::deployment(p).spec.unwrap().template.spec.unwrap()));
    specs
}

/// Creates a Pod of `spec` in `ns` with `dryRun=All`: admission runs, nothing is stored.
async fn admitted(pods: &Api<Pod>, name: &str, spec: PodSpec) -> Result<(), String> {
    let pod = Pod { metadata: kube::api::ObjectMeta { name: Some(name.into()), ..Default::default() }, spec: Some(spec), ..Default::default() };
    pods.create(&PostParams { dry_run: true, ..Default::default() }, &pod).await.map(|_| ()).map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_pod_is_admitted_under_the_restricted_pod_security_standard() {
    let kube = require!(KubeApi::shared());
    let client = kube.client().await.unwrap();
    let ns = unique_name("restricted");
    let namespace: Namespace = serde_json::from_value(serde_json::json!({
        "metadata": {"name": ns, "labels": {"pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/enforce-version": "latest"}}
    }))
    .unwrap();
    Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &namespace).await.unwrap();
    // What the controller manager (not run here) would make in a new namespace.
    let account: ServiceAccount = serde_json::from_value(serde_json::json!({"metadata": {"name": "default"}})).unwrap();
    Api::<ServiceAccount>::namespaced(client.clone(), &ns).create(&PostParams::default(), &account).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client, &ns);

    for user_ids in ["Operator", "Platform"] {
        for (name, spec) in pod_specs(&pipeline(user_ids)) {
            // spec.pods reaches every Pod, and the API server takes it.
            assert_eq!(spec.image_pull_secrets.as_ref().map(|s| s[0].name.as_str()), Some("plant-registry"), "{name}");
            assert!(spec.tolerations.is_some() && spec.node_selector.is_some() && spec.affinity.is_some(), "{name}");
            if let Err(e) = admitted(&pods, &format!("{}-{}", name, user_ids.to_lowercase()), spec).await {
                panic!("{name} ({user_ids} user ids) refused under restricted: {e}");
            }
        }
    }

    // The control: the same worker Pod without our security settings.
    let (_, mut bare) = pod_specs(&pipeline("Operator")).remove(0);
    bare.security_context = None;
    for c in &mut bare.containers {
        c.security_context = None;
    }
    let refused = admitted(&pods, "bare", bare).await.expect_err("a Pod without security settings must be refused here");
    assert!(refused.contains("violates PodSecurity \"restricted"), "{refused}");
}
