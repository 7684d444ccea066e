//! The children of a pipeline (worker ConfigMap, StatefulSets and Services,
//! Mosquitto, Grafana), built from its spec alone: no I/O here, so that
//! every field can be checked by plain unit tests.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::core::v1::{ConfigMap, EnvVar, EnvVarSource, PersistentVolumeClaim, SecretKeySelector, Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};
use sha2::{Digest, Sha256};

use crate::crd::StreamPipeline;
use crate::validate::ValidPipeline;
use secret_hashes::SecretHashes;
use workers::Stage;

pub mod workers;
pub mod mosquitto;
pub mod dashboards;
pub mod grafana;
pub mod pod_security;
pub mod placement;
pub mod secret_hashes;
pub mod tls_secrets;

/// Every child a valid pipeline wants, built by [`build`].
pub struct Children {
    /// The worker's configuration file.
    pub worker_config: ConfigMap,
    /// Per stage, in [`Stage::ALL`] order: its metrics Service, its
    /// StatefulSet and its PodDisruptionBudget.
    pub stages: Vec<(Stage, Service, StatefulSet, PodDisruptionBudget)>,
    /// The managed Mosquitto, when the spec asks for one.
    pub broker: Option<Broker>,
    /// Grafana, when enabled.
    pub grafana: Option<Grafana>,
}

/// The managed Mosquitto's children.
pub struct Broker {
    pub config_map: ConfigMap,
    pub service: Service,
    pub deployment: Deployment,
    /// Only with `persistenceSize`.
    pub data_claim: Option<PersistentVolumeClaim>,
}

/// Grafana's children. Its admin Secret is not among them: when none is
/// referenced the reconcile generates one once (a random password is not
/// a function of the spec) with [`grafana::generated_admin_secret`].
pub struct Grafana {
    pub provisioning: ConfigMap,
    pub service: Service,
    pub deployment: Deployment,
}

/// Builds every child of `valid` (pure). `mqtt_sessions` is what the live
/// ingest StatefulSet says (see [`workers::mqtt_sessions`]), `secrets` what
/// the operator could read of the Secrets the Pods use.
pub fn build(valid: &ValidPipeline<'_>, mqtt_sessions: i32, secrets: &SecretHashes) -> Children {
    let p = valid.pipeline;
    let worker_config = workers::config_map(valid);
    let hash = config_hash(&worker_config);
    let stages = Stage::ALL
        .into_iter()
        .map(|stage| {
            let mut stateful_set = workers::stateful_set(valid, stage, &hash, mqtt_sessions);
            secret_hashes::annotate(stateful_set.spec.as_mut().map(|s| &mut s.template), secrets.of(&secret_hashes::used_by_workers(p)));
            (stage, workers::metrics_service(p, stage), stateful_set, workers::disruption_budget(p, stage))
        })
        .collect();
    let with_secrets = |mut deployment: Deployment, used: Vec<String>| {
        secret_hashes::annotate(deployment.spec.as_mut().map(|s| &mut s.template), secrets.of(&used));
        deployment
    };
    let broker = p.spec.mosquitto.managed.then(|| Broker {
        config_map: mosquitto::config_map(p),
        service: mosquitto::service(p),
        deployment: with_secrets(mosquitto::deployment(p), secret_hashes::used_by_broker(p)),
        data_claim: mosquitto::data_claim(p),
    });
    let grafana = p.spec.grafana.enabled.then(|| Grafana {
        provisioning: grafana::provisioning(p),
        service: grafana::service(p),
        deployment: with_secrets(grafana::deployment(p), secret_hashes::used_by_grafana(p)),
    });
    Children { worker_config, stages, broker, grafana }
}

impl Children {
    /// Kind and name of every wanted child: a child of the pipeline that is
    /// not among them is an orphan.
    pub fn wanted(&self) -> BTreeSet<(&'static str, String)> {
        fn id<K: k8s_openapi::Resource + kube::Resource>(object: &K) -> (&'static str, String) {
            (<K as k8s_openapi::Resource>::KIND, object.name_any())
        }
        let mut wanted = BTreeSet::from([id(&self.worker_config)]);
        for (_, service, workers, budget) in &self.stages {
            wanted.extend([id(service), id(workers), id(budget)]);
        }
        if let Some(b) = &self.broker {
            wanted.extend([id(&b.config_map), id(&b.service), id(&b.deployment)]);
            wanted.extend(b.data_claim.as_ref().map(id));
        }
        if let Some(g) = &self.grafana {
            wanted.extend([id(&g.provisioning), id(&g.service), id(&g.deployment)]);
        }
        wanted
    }
}

/// The Pod template annotation holding [`config_hash`] of the ConfigMaps a
/// Pod mounts: a changed ConfigMap changes the template, which rolls the Pods
/// (a mounted ConfigMap's new content reaches a running program only if it
/// rereads it).
pub const CONFIG_HASH_ANNOTATION: &str = "millrace.io/config-hash";

/// A short, stable hash of a ConfigMap's data, for the Pod template.
pub fn config_hash(config: &ConfigMap) -> String {
    let mut hasher = Sha256::new();
    for (k, v) in config.data.iter().flatten() {
        hasher.update(k.as_bytes());
        hasher.update([0]);
        hasher.update(v.as_bytes());
        hasher.update([0]);
    }
    hex::encode(&hasher.finalize()[..8])
}

/// A Pod template's metadata: its selector labels and the [`config_hash`]
/// of the ConfigMap it mounts.
pub fn template_metadata(labels: BTreeMap<String, String>, config_hash: String) -> ObjectMeta {
    ObjectMeta {
        labels: Some(labels),
        annotations: Some(BTreeMap::from([(CONFIG_HASH_ANNOTATION.to_string(), config_hash)])),
        ..Default::default()
    }
}

/// Labels every child of a pipeline carries (and selects by): the reconcile
/// finds a pipeline's orphans by them, too.
pub fn labels(p: &StreamPipeline, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "millrace".to_string()),
        ("app.kubernetes.io/instance".to_string(), p.name_any()),
        ("app.kubernetes.io/component".to_string(), component.to_string()),
        ("app.kubernetes.io/managed-by".to_string(), "millrace-operator".to_string()),
    ])
}

/// A child's metadata: its name, the pipeline's namespace, the labels of
/// `component`, and the pipeline as controlling owner.
pub fn metadata(p: &StreamPipeline, name: String, component: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: p.namespace(),
        labels: Some(labels(p, component)),
        owner_references: p.controller_owner_ref(&()).map(|o| vec![o]),
        ..Default::default()
    }
}

/// An environment variable read from key `key` of Secret `secret` (which
/// must exist).
pub fn secret_env(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector { name: secret.to_string(), key: key.to_string(), optional: Some(false) }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// `<PREFIX>_USERNAME` and `<PREFIX>_PASSWORD` from the Secret of
/// `credentials`, by reference.
pub fn login_env(prefix: &str, credentials: &millrace_config::SecretCredentials) -> [EnvVar; 2] {
    [
        secret_env(&format!("{prefix}_USERNAME"), &credentials.secret_name, &credentials.username_key),
        secret_env(&format!("{prefix}_PASSWORD"), &credentials.secret_name, &credentials.password_key),
    ]
}

/// A Service in front of `component`'s Pods with one TCP port `port_name`
/// on `port`, the container port of that name; `node_port` also exposes it
/// on every node.
pub fn service(p: &StreamPipeline, name: String, component: &str, port_name: &str, port: i32, node_port: Option<i32>) -> Service {
    Service {
        metadata: metadata(p, name, component),
        spec: Some(ServiceSpec {
            type_: node_port.map(|_| "NodePort".to_string()),
            selector: Some(labels(p, component)),
            ports: Some(vec![ServicePort {
                node_port,
                name: Some(port_name.into()),
                // Explicit: server-side apply on older API servers needs the
                // list key even where it has a default.
                protocol: Some("TCP".into()),
                port,
                target_port: Some(IntOrString::String(port_name.into())),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}
