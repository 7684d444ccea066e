//! The worker objects of a pipeline, built from its spec alone (pure): the
//! ConfigMap holding the worker's configuration, and per stage a StatefulSet
//! and a metrics Service.
//!
//! StatefulSets, not Deployments, because a worker's name is its identity
//! outside Kubernetes: the ingest's MQTT client id (a persistent session)
//! and the join's transactional id. A Pod that comes back under the same
//! name resumes its session and fences its predecessor. Under a new name,
//! Mosquitto would keep the old session in the shared subscription, handing
//! it its share of the messages for nobody to read.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction,
    ObjectFieldSelector, PodSpec, PodTemplateSpec, Probe, Service,
    Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::{labels, metadata, pod_security, secret_env, template_metadata};
use crate::crd::{StageSpec, StreamPipeline};

/// Where the worker reads its configuration inside the Pod.
pub const CONFIG_DIR: &str = "/etc/millrace";
/// The worker image's own non-root user (distroless `nonroot`).
pub const WORKER_USER: i64 = 65532;
pub const CONFIG_FILE: &str = "pipeline.yaml";
/// Port of `/metrics`, `/healthz` and `/readyz`.
pub const METRICS_PORT: i32 = 9090;

/// StatefulSet annotation: how many ingest Pods have ever had an MQTT
/// session (the most replicas the stage had). Sessions of ordinals at or
/// above the current replicas are retired: ordinal 0 drains and removes them.
pub const MQTT_SESSIONS_ANNOTATION: &str = "millrace.io/mqtt-sessions";

/// The three stages, each its own StatefulSet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    Ingest,
    Join,
    Export,
}

impl Stage {
    pub const ALL: [Stage; 3] = [Stage::Ingest, Stage::Join, Stage::Export];

    pub fn name(self) -> &'static str {
        match self {
            Stage::Ingest => "ingest",
            Stage::Join => "join",
            Stage::Export => "export",
        }
    }

    fn spec(self, p: &StreamPipeline) -> &StageSpec {
        match self {
            Stage::Ingest => &p.spec.workers.ingest,
            Stage::Join => &p.spec.workers.join,
            Stage::Export => &p.spec.workers.export,
        }
    }
}

/// The worker's configuration file: the spec's pipeline section, as YAML.
/// Credentials are never in it: only the names of the Secrets.
pub fn config_map(p: &StreamPipeline) -> ConfigMap {
    let mut pipeline = p.spec.pipeline.clone();
    if p.spec.mosquitto.managed {
        pipeline.mqtt.url = super::mosquitto::url(p);
    }
    let yaml = serde_yaml::to_string(&pipeline).expect("a pipeline always serializes");
    ConfigMap {
        metadata: metadata(p, format!("{}-worker", p.name_any()), "worker-config"),
        data: Some(BTreeMap::from([(CONFIG_FILE.to_string(), yaml)])),
        ..Default::default()
    }
}

fn credential_env(p: &StreamPipeline) -> Vec<EnvVar> {
    let mut env = Vec::new();
    if let Some(c) = p.spec.pipeline.influxdb.as_ref().and_then(|i| i.credentials.as_ref()) {
        env.push(secret_env("MILLRACE_INFLUXDB_USERNAME", &c.secret_name, &c.username_key));
        env.push(secret_env("MILLRACE_INFLUXDB_PASSWORD", &c.secret_name, &c.password_key));
    }
    if let Some(c) = &p.spec.pipeline.mqtt.credentials {
        env.push(secret_env("MILLRACE_MQTT_USERNAME", &c.secret_name, &c.username_key));
        env.push(secret_env("MILLRACE_MQTT_PASSWORD", &c.secret_name, &c.password_key));
    }
    env
}

fn http_probe(path: &str, period: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction { path: Some(path.to_string()), port: IntOrString::Int(METRICS_PORT), ..Default::default() }),
        period_seconds: Some(period),
        failure_threshold: Some(3),
        ..Default::default()
    }
}

/// How many MQTT sessions the ingest stage has had, from its live
/// StatefulSet (if any) and the spec: never fewer than before.
pub fn mqtt_sessions(p: &StreamPipeline, live: Option<&StatefulSet>) -> i32 {
    let recorded = live
        .and_then(|s| s.metadata.annotations.as_ref())
        .and_then(|a| a.get(MQTT_SESSIONS_ANNOTATION))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let live_replicas = live.and_then(|s| s.spec.as_ref()).and_then(|s| s.replicas).unwrap_or(0);
    recorded.max(live_replicas).max(p.spec.workers.ingest.replicas)
}

/// The name of a stage's StatefulSet (and, before StatefulSets, of its
/// Deployment).
pub fn stage_name(p: &StreamPipeline, stage: Stage) -> String {
    format!("{}-{}", p.name_any(), stage.name())
}

/// The StatefulSet of one stage. `config_hash` rolls it when the
/// configuration changes; `suspend` scales it to zero. `mqtt_sessions`
/// (see [`mqtt_sessions`]) matters to the ingest stage only.
pub fn stateful_set(p: &StreamPipeline, stage: Stage, config_hash: &str, mqtt_sessions: i32) -> StatefulSet {
    let name = stage_name(p, stage);
    let selector = labels(p, stage.name());
    let replicas = if p.spec.suspend { 0 } else { stage.spec(p).replicas };
    let mqtt_sessions = mqtt_sessions.max(replicas);
    let mut env = vec![EnvVar {
        // A stable, unique instance name: the join stage's transactional id.
        name: "MILLRACE_INSTANCE".into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector { field_path: "metadata.name".into(), ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    }];
    let plain = |name: &str, value: String| EnvVar { name: name.into(), value: Some(value), ..Default::default() };
    match stage {
        Stage::Ingest => {
            // Ordinal 0 drains the sessions of ordinals in [replicas, sessions).
            env.push(plain("MILLRACE_REPLICAS", replicas.to_string()));
            env.push(plain("MILLRACE_MQTT_SESSIONS", mqtt_sessions.to_string()));
        }
        // Stable names: a restarted Pod takes its partitions back at once.
        Stage::Join => env.push(plain("MILLRACE_STATIC_MEMBERSHIP", "1".into())),
        Stage::Export => {}
    }
    env.extend(credential_env(p));
    let container = Container {
        name: "worker".into(),
        image: Some(p.spec.workers.image.clone()),
        image_pull_policy: p.spec.workers.image_pull_policy.clone(),
        args: Some(
            ["run", "--config", &format!("{CONFIG_DIR}/{CONFIG_FILE}"), "--stage", stage.name()].iter().map(|s| s.to_string()).collect(),
        ),
        env: Some(env),
        ports: Some(vec![ContainerPort { name: Some("metrics".into()), container_port: METRICS_PORT, protocol: Some("TCP".into()), ..Default::default() }]),
        liveness_probe: Some(http_probe("/healthz", 10)),
        readiness_probe: Some(http_probe("/readyz", 5)),
        resources: stage.spec(p).resources.clone(),
        security_context: Some(pod_security::container(true)),
        volume_mounts: Some(vec![VolumeMount { name: "config".into(), mount_path: CONFIG_DIR.into(), read_only: Some(true), ..Default::default() }]),
        ..Default::default()
    };
    let mut meta = metadata(p, name, stage.name());
    if stage == Stage::Ingest {
        meta.annotations = Some(BTreeMap::from([(MQTT_SESSIONS_ANNOTATION.to_string(), mqtt_sessions.to_string())]));
    }
    StatefulSet {
        metadata: meta,
        spec: Some(StatefulSetSpec {
            replicas: Some(replicas),
            service_name: Some(metrics_service_name(p, stage)),
            // Workers do not wait for each other to start or stop.
            pod_management_policy: Some("Parallel".into()),
            selector: LabelSelector { match_labels: Some(selector.clone()), ..Default::default() },
            template: PodTemplateSpec {
                metadata: Some(template_metadata(selector, config_hash.to_string())),
                spec: Some(PodSpec {
                    containers: vec![container],
                    security_context: Some(pod_security::pod(p.spec.user_ids, WORKER_USER)),
                    volumes: Some(vec![Volume {
                        name: "config".into(),
                        config_map: Some(ConfigMapVolumeSource { name: format!("{}-worker", p.name_any()), ..Default::default() }),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The metrics Service of a stage, also its StatefulSet's governing Service.
pub fn metrics_service_name(p: &StreamPipeline, stage: Stage) -> String {
    format!("{}-{}-metrics", p.name_any(), stage.name())
}

/// The metrics Service of one stage. Headless: scrapers want every Pod,
/// and a pipeline's three take no cluster IPs.
pub fn metrics_service(p: &StreamPipeline, stage: Stage) -> Service {
    let mut service = super::service(p, metrics_service_name(p, stage), stage.name(), "metrics", METRICS_PORT, None);
    if let Some(spec) = service.spec.as_mut() {
        spec.cluster_ip = Some("None".into());
    }
    service
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::children::{config_hash, CONFIG_HASH_ANNOTATION};

    fn pipeline(yaml: &str) -> StreamPipeline {
        let mut p: StreamPipeline = serde_yaml::from_str(yaml).unwrap();
        p.metadata.namespace = Some("plant".into());
        p.metadata.uid = Some("0000-uid".into());
        p
    }

    const SPEC: &str = r#"
apiVersion: millrace.io/v1alpha1
kind: StreamPipeline
metadata: {name: line-1}
spec:
  pipeline:
    kafka: {bootstrapServers: "kafka:9092"}
    joins: [{name: power, left: 'actSpeed_(C\d+)', right: 'vaTorque_(C\d+)'}]
    influxdb: {url: "http://influxdb:8086", credentials: {secretName: influx}}
  workers:
    join: {replicas: 3, resources: {limits: {memory: 256Mi}}}
"#;

    #[test]
    fn a_stateful_set_per_stage_runs_the_worker_safely() {
        let p = pipeline(SPEC);
        let hash = config_hash(&config_map(&p));
        let d = stateful_set(&p, Stage::Join, &hash, 1);
        assert_eq!(d.metadata.name.as_deref(), Some("line-1-join"));
        assert_eq!(d.metadata.namespace.as_deref(), Some("plant"));
        assert_eq!(d.metadata.owner_references.as_ref().unwrap()[0].uid, "0000-uid");
        let spec = d.spec.unwrap();
        assert_eq!(spec.replicas, Some(3));
        assert_eq!(spec.service_name.as_deref(), Some("line-1-join-metrics"));
        assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
        let template = spec.template;
        assert_eq!(template.metadata.as_ref().unwrap().annotations.as_ref().unwrap()[CONFIG_HASH_ANNOTATION], hash);
        let pod = template.spec.unwrap();
        let c = &pod.containers[0];
        assert_eq!(c.image.as_deref(), Some(concat!("millrace/worker:", env!("CARGO_PKG_VERSION"))));
        assert_eq!(c.args.as_ref().unwrap(), &["run", "--config", "/etc/millrace/pipeline.yaml", "--stage", "join"]);
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!((sc.run_as_non_root, sc.read_only_root_filesystem, sc.allow_privilege_escalation), (Some(true), Some(true), Some(false)));
        assert_eq!(c.readiness_probe.as_ref().unwrap().http_get.as_ref().unwrap().path.as_deref(), Some("/readyz"));
        assert!(c.resources.as_ref().unwrap().limits.as_ref().unwrap().contains_key("memory"));
        let env: Vec<&str> = c.env.as_ref().unwrap().iter().map(|e| e.name.as_str()).collect();
        assert_eq!(env, ["MILLRACE_INSTANCE", "MILLRACE_STATIC_MEMBERSHIP", "MILLRACE_INFLUXDB_USERNAME", "MILLRACE_INFLUXDB_PASSWORD"]);
        let password = &c.env.as_ref().unwrap()[3];
        assert!(password.value.is_none(), "secrets come by reference only");
        assert_eq!(password.value_from.as_ref().unwrap().secret_key_ref.as_ref().unwrap().name, "influx");
    }

    #[test]
    fn suspend_scales_every_stage_to_zero() {
        let p = pipeline(&format!("{SPEC}  suspend: true\n"));
        for stage in Stage::ALL {
            assert_eq!(stateful_set(&p, stage, "h", 1).spec.unwrap().replicas, Some(0), "{stage:?}");
        }
    }

    fn env_of(s: &StatefulSet, name: &str) -> Option<String> {
        let c = &s.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0];
        c.env.iter().flatten().find(|e| e.name == name).and_then(|e| e.value.clone())
    }

    #[test]
    fn ingest_sessions_are_never_forgotten_when_the_stage_shrinks() {
        let p = pipeline(&format!("{SPEC}    ingest: {{replicas: 3}}\n"));
        assert_eq!(mqtt_sessions(&p, None), 3, "a new pipeline: its replicas");
        let live = stateful_set(&p, Stage::Ingest, "h", mqtt_sessions(&p, None));
        assert_eq!(live.metadata.annotations.as_ref().unwrap()[MQTT_SESSIONS_ANNOTATION], "3");
        // Scaled down to 1: three sessions existed, two are retired.
        let smaller = pipeline(&format!("{SPEC}    ingest: {{replicas: 1}}\n"));
        let sessions = mqtt_sessions(&smaller, Some(&live));
        assert_eq!(sessions, 3);
        let shrunk = stateful_set(&smaller, Stage::Ingest, "h", sessions);
        assert_eq!(env_of(&shrunk, "MILLRACE_REPLICAS").as_deref(), Some("1"));
        assert_eq!(env_of(&shrunk, "MILLRACE_MQTT_SESSIONS").as_deref(), Some("3"));
        // And remembered from the annotation once the replicas went down.
        assert_eq!(mqtt_sessions(&smaller, Some(&shrunk)), 3);
        assert_eq!(env_of(&stateful_set(&p, Stage::Export, "h", 3), "MILLRACE_MQTT_SESSIONS"), None);
    }

    #[test]
    fn the_config_map_holds_the_pipeline_and_a_change_changes_the_hash() {
        let p = pipeline(SPEC);
        let cm = config_map(&p);
        let yaml = &cm.data.as_ref().unwrap()[CONFIG_FILE];
        let back = millrace_config::PipelineConfig::from_yaml(yaml).unwrap();
        assert_eq!(back, p.spec.pipeline, "the worker reads what the spec says");
        let mut changed = p.clone();
        changed.spec.pipeline.joins[0].expression = Some("left+right".into());
        assert_ne!(config_hash(&cm), config_hash(&config_map(&changed)));
        assert_eq!(config_hash(&cm), config_hash(&config_map(&p)), "stable");
    }

    #[test]
    fn metrics_services_select_their_stage() {
        let p = pipeline(SPEC);
        let s = metrics_service(&p, Stage::Export);
        assert_eq!(s.metadata.name.as_deref(), Some("line-1-export-metrics"));
        assert_eq!(s.spec.unwrap().selector.unwrap()["app.kubernetes.io/component"], "export");
    }
}
