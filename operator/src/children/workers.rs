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
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction,
    ObjectFieldSelector, PodSpec, PodTemplateSpec, Probe, Service,
    Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::{labels, login_env, metadata, pod_security, template_metadata};
use crate::crd::{StageSpec, StreamPipeline};
use crate::validate::ValidPipeline;

/// Where the worker reads its configuration inside the Pod.
pub const CONFIG_DIR: &str = "/etc/millrace";
/// The worker image's own non-root user (distroless `nonroot`).
pub const WORKER_USER: i64 = 65532;
pub const CONFIG_FILE: &str = "pipeline.yaml";
/// Port of `/metrics`, `/healthz` and `/readyz`.
pub const METRICS_PORT: i32 = 9090;

/// How long a worker Pod has to finish its work after SIGTERM (it commits
/// what it joined and acknowledges what it forwarded, within seconds).
pub const GRACE_PERIOD_SECONDS: i64 = 30;
/// Ordinal 0 of the ingest stage drains the sessions of Pods scaled away
/// this long after its start: once they are surely gone, past their grace
/// period (`MILLRACE_DRAIN_DELAY_SECONDS`).
pub const DRAIN_DELAY_SECONDS: i64 = GRACE_PERIOD_SECONDS + 5;

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

/// The worker's configuration file: the spec's pipeline section with its
/// defaults resolved, as YAML. Credentials are never in it: only the names
/// of the Secrets.
pub fn config_map(valid: &ValidPipeline<'_>) -> ConfigMap {
    let p = valid.pipeline;
    let yaml = serde_yaml::to_string(&valid.config).expect("a pipeline always serializes");
    ConfigMap {
        metadata: metadata(p, format!("{}-worker", p.name_any()), "worker-config"),
        data: Some(BTreeMap::from([(CONFIG_FILE.to_string(), yaml)])),
        ..Default::default()
    }
}

fn credential_env(p: &StreamPipeline) -> Vec<EnvVar> {
    let mut env = Vec::new();
    if let Some(c) = p.spec.pipeline.influxdb.as_ref().and_then(|i| i.credentials.as_ref()) {
        env.extend(login_env("MILLRACE_INFLUXDB", c));
    }
    if let Some(c) = &p.spec.pipeline.mqtt.credentials {
        env.extend(login_env("MILLRACE_MQTT", c));
    }
    if let Some(c) = kafka_security(p).and_then(|s| s.credentials.as_ref()) {
        env.extend(login_env("MILLRACE_KAFKA", c));
    }
    env
}

fn kafka_security(p: &StreamPipeline) -> Option<&millrace_config::KafkaSecurity> {
    p.spec.pipeline.kafka.as_ref().and_then(|k| k.security.as_ref())
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
pub fn stateful_set(valid: &ValidPipeline<'_>, stage: Stage, config_hash: &str, mqtt_sessions: i32) -> StatefulSet {
    let p = valid.pipeline;
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
            env.push(plain("MILLRACE_DRAIN_DELAY_SECONDS", DRAIN_DELAY_SECONDS.to_string()));
        }
        // Stable names: a restarted Pod takes its partitions back at once.
        Stage::Join => env.push(plain("MILLRACE_STATIC_MEMBERSHIP", "1".into())),
        Stage::Export => {}
    }
    env.extend(credential_env(p));
    let container = Container {
        name: "worker".into(),
        image: Some(valid.worker_image.clone()),
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
        volume_mounts: Some(
            std::iter::once(VolumeMount { name: "config".into(), mount_path: CONFIG_DIR.into(), read_only: Some(true), ..Default::default() })
                .chain(super::tls_secrets::volume_mounts(&valid.config))
                .collect(),
        ),
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
                spec: Some(super::placement::placed(p, PodSpec {
                    containers: vec![container],
                    termination_grace_period_seconds: Some(GRACE_PERIOD_SECONDS),
                    security_context: Some(pod_security::pod(p.spec.user_ids, WORKER_USER)),
                    volumes: Some(
                        std::iter::once(Volume {
                            name: "config".into(),
                            config_map: Some(ConfigMapVolumeSource { name: format!("{}-worker", p.name_any()), ..Default::default() }),
                            ..Default::default()
                        })
                        .chain(super::tls_secrets::volumes(&valid.config))
                        .collect(),
                    ),
                    ..Default::default()
                })),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// At most one Pod of a stage is evicted at a time (a node drain, a cluster
/// upgrade): the stage goes on with the others while it moves, and a single
/// Pod may still be moved (a budget of zero would block drains).
pub fn disruption_budget(p: &StreamPipeline, stage: Stage) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: metadata(p, stage_name(p, stage), stage.name()),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector { match_labels: Some(labels(p, stage.name())), ..Default::default() }),
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

    fn valid(p: &StreamPipeline) -> ValidPipeline<'_> {
        crate::validate::validate(p, &crate::defaults::OperatorDefaults::default()).unwrap()
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
        let hash = config_hash(&config_map(&valid(&p)));
        let d = stateful_set(&valid(&p), Stage::Join, &hash, 1);
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
            assert_eq!(stateful_set(&valid(&p), stage, "h", 1).spec.unwrap().replicas, Some(0), "{stage:?}");
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
        let live = stateful_set(&valid(&p), Stage::Ingest, "h", mqtt_sessions(&p, None));
        assert_eq!(live.metadata.annotations.as_ref().unwrap()[MQTT_SESSIONS_ANNOTATION], "3");
        // Scaled down to 1: three sessions existed, two are retired.
        let smaller = pipeline(&format!("{SPEC}    ingest: {{replicas: 1}}\n"));
        let sessions = mqtt_sessions(&smaller, Some(&live));
        assert_eq!(sessions, 3);
        let shrunk = stateful_set(&valid(&smaller), Stage::Ingest, "h", sessions);
        assert_eq!(env_of(&shrunk, "MILLRACE_REPLICAS").as_deref(), Some("1"));
        assert_eq!(env_of(&shrunk, "MILLRACE_MQTT_SESSIONS").as_deref(), Some("3"));
        // Retired sessions are drained only once their Pods are past their grace period.
        let grace = shrunk.spec.as_ref().unwrap().template.spec.as_ref().unwrap().termination_grace_period_seconds.unwrap();
        let delay: i64 = env_of(&shrunk, "MILLRACE_DRAIN_DELAY_SECONDS").unwrap().parse().unwrap();
        assert!(delay > grace, "drain after {delay} s, grace period {grace} s");
        // And remembered from the annotation once the replicas went down.
        assert_eq!(mqtt_sessions(&smaller, Some(&shrunk)), 3);
        assert_eq!(env_of(&stateful_set(&valid(&p), Stage::Export, "h", 3), "MILLRACE_MQTT_SESSIONS"), None);
    }

    #[test]
    fn the_config_map_holds_the_pipeline_and_a_change_changes_the_hash() {
        let p = pipeline(SPEC);
        let cm = config_map(&valid(&p));
        let yaml = &cm.data.as_ref().unwrap()[CONFIG_FILE];
        let back = millrace_config::PipelineConfig::from_yaml(yaml).unwrap();
        assert_eq!(back, crate::defaults::worker_config(&p), "the worker reads what the spec says, defaults resolved");
        assert_eq!(back.kafka.as_ref().unwrap().group_id.as_deref(), Some("millrace.plant.line-1"), "written out, not left to the worker");
        let mut changed = p.clone();
        changed.spec.pipeline.joins[0].expression = Some("left+right".into());
        assert_ne!(config_hash(&cm), config_hash(&config_map(&valid(&changed))));
        assert_eq!(config_hash(&cm), config_hash(&config_map(&valid(&p))), "stable");
    }

    #[test]
    fn a_secured_kafka_gets_its_login_by_reference_and_its_ca_mounted() {
        let p = pipeline(&SPEC.replace(
            r#"kafka: {bootstrapServers: "kafka:9092"}"#,
            r#"kafka: {bootstrapServers: "kafka:9093", security: {protocol: SASL_SSL, saslMechanism: SCRAM-SHA-512, credentials: {secretName: kafka-user}, tls: {secretName: kafka-tls}}}"#,
        ));
        let valid = valid(&p);
        let security = valid.kafka().security.as_ref().unwrap();
        assert_eq!(security.tls.as_ref().unwrap().ca_file.as_deref(), Some("/etc/millrace/kafka-tls/ca.crt"), "the mounted CA");
        let set = stateful_set(&valid, Stage::Join, "h", 1);
        let pod = set.spec.unwrap().template.spec.unwrap();
        let c = &pod.containers[0];
        let password = c.env.as_ref().unwrap().iter().find(|e| e.name == "MILLRACE_KAFKA_PASSWORD").unwrap();
        assert_eq!(password.value_from.as_ref().unwrap().secret_key_ref.as_ref().unwrap().name, "kafka-user");
        assert!(c.volume_mounts.as_ref().unwrap().iter().any(|m| m.mount_path == super::super::tls_secrets::KAFKA_TLS_DIR && m.read_only == Some(true)));
        let tls = pod.volumes.unwrap().into_iter().find(|v| v.name == "kafka-tls").unwrap();
        assert_eq!(tls.secret.unwrap().secret_name.as_deref(), Some("kafka-tls"));
        let yaml = &config_map(&valid).data.unwrap()[CONFIG_FILE];
        assert!(!yaml.contains("sasl.password") && yaml.contains("secretName: kafka-user"), "only the Secret's name in the ConfigMap: {yaml}");
    }

    #[test]
    fn one_pod_of_a_stage_at_a_time_may_be_evicted() {
        let p = pipeline(SPEC);
        let budget = disruption_budget(&p, Stage::Join);
        assert_eq!(budget.metadata.name.as_deref(), Some("line-1-join"));
        let spec = budget.spec.unwrap();
        assert_eq!(spec.max_unavailable, Some(IntOrString::Int(1)));
        let set = stateful_set(&valid(&p), Stage::Join, "h", 1);
        assert_eq!(spec.selector.unwrap().match_labels, set.spec.unwrap().selector.match_labels, "the budget covers the stage's Pods");
    }

    #[test]
    fn metrics_services_select_their_stage() {
        let p = pipeline(SPEC);
        let s = metrics_service(&p, Stage::Export);
        assert_eq!(s.metadata.name.as_deref(), Some("line-1-export-metrics"));
        assert_eq!(s.spec.unwrap().selector.unwrap()["app.kubernetes.io/component"], "export");
    }
}
