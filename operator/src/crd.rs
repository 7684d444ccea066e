//! The `StreamPipeline` custom resource (`millrace.io/v1alpha1`). Its spec
//! embeds the worker's own pipeline configuration, so the CRD schema, the
//! worker's file format and the docs cannot drift apart.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use millrace_config::PipelineConfig;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A stream-processing pipeline of machine data: MQTT in, narrow records on
/// Kafka, time-series joins, InfluxDB and Grafana out. The operator runs the
/// workers, the Kafka topics, an optional Mosquitto broker and Grafana for it.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "millrace.io",
    version = "v1alpha1",
    kind = "StreamPipeline",
    plural = "streampipelines",
    // Not `pipeline`: Tekton's Pipelines have it, and a cluster with both
    // would answer `kubectl get pipeline` with only one of them.
    shortname = "mrp",
    category = "millrace",
    namespaced,
    status = "StreamPipelineStatus",
    derive = "PartialEq",
    doc = "A stream-processing pipeline of machine data: MQTT in, Kafka topics, time-series joins, InfluxDB and Grafana out.",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Stages","type":"string","description":"ready stage replicas / wanted","jsonPath":".status.stages"}"#,
    printcolumn = r#"{"name":"Topics","type":"string","jsonPath":".status.topicsSummary"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct StreamPipelineSpec {
    /// The pipeline itself, in the worker's configuration format: MQTT source
    /// and payload format, Kafka bootstrap servers and topics, join rules and
    /// the InfluxDB target. With `mosquitto.managed`, `mqtt.url` is set by the
    /// operator. A `kafka` section is required here.
    pub pipeline: PipelineConfig,
    /// The worker Pods: image and per-stage replicas and resources.
    #[serde(default)]
    pub workers: Workers,
    /// A Mosquitto broker run by the operator for this pipeline.
    #[serde(default)]
    pub mosquitto: ManagedMosquitto,
    /// Grafana, provisioned with the InfluxDB datasource and dashboards of
    /// the raw and joined quantities.
    #[serde(default)]
    pub grafana: GrafanaSpec,
    /// What happens to the Kafka topics when the pipeline is deleted:
    /// `Retain` keeps them (the default), `Delete` deletes them.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// Scale every worker to zero while keeping topics, broker and Grafana.
    #[serde(default)]
    pub suspend: bool,
    /// Who sets the user and group ids of the Pods: `Operator` (each
    /// image's own non-root user, the default) or `Platform` (none set, for
    /// platforms such as OpenShift that assign them).
    #[serde(default)]
    pub user_ids: crate::children::pod_security::UserIds,
    /// Image pull Secrets, node selector, tolerations and affinity of every
    /// Pod the operator makes for the pipeline (workers, Mosquitto, Grafana).
    #[serde(default)]
    pub pods: crate::children::placement::PodPlacement,
}

/// Whether topics outlive their pipeline.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DeletionPolicy {
    /// Keep the Kafka topics and their data.
    #[default]
    Retain,
    /// Delete the Kafka topics with the pipeline.
    Delete,
}

/// The worker Pods.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Workers {
    /// Worker image. When unset, the operator's default (the worker of the
    /// operator's own version, or its `--worker-image`), so that upgrading
    /// the operator upgrades the workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Image pull policy: Always, IfNotPresent or Never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["Always", "IfNotPresent", "Never"]))]
    pub image_pull_policy: Option<String>,
    /// The ingest stage (MQTT to the raw topic). Replicas split the MQTT
    /// messages through a shared subscription.
    #[serde(default)]
    pub ingest: StageSpec,
    /// The join stage (raw to joined topic, exactly once). Replicas beyond
    /// the raw topic's partition count are idle.
    #[serde(default)]
    pub join: StageSpec,
    /// The export stage (raw and joined topics to InfluxDB).
    #[serde(default)]
    pub export: StageSpec,
}

/// One stage's Deployment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StageSpec {
    /// Number of Pods.
    #[serde(default = "one")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: i32,
    /// CPU and memory requests and limits of the worker container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

impl Default for StageSpec {
    fn default() -> Self {
        Self { replicas: one(), resources: None }
    }
}

fn one() -> i32 {
    1
}

/// A Mosquitto broker run by the operator.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManagedMosquitto {
    /// Run a broker for this pipeline (and point `pipeline.mqtt.url` at it).
    #[serde(default)]
    pub managed: bool,
    /// Mosquitto image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Keep Mosquitto's sessions and queued messages on a
    /// PersistentVolumeClaim of this size (e.g. `1Gi`), so a restarted broker
    /// still holds what it had not delivered. Without it the data lives as
    /// long as the broker's Pod. Removing it deletes the claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$"))]
    pub persistence_size: Option<String>,
    /// StorageClass of the broker's claim; the cluster's default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
    /// More users besides the workers' (machines, bridges): a Secret holding
    /// a Mosquitto password file under the key `passwd` (made with
    /// `mosquitto_passwd`). The broker requires a login as soon as
    /// `pipeline.mqtt.credentials` or this is set; the workers' user is
    /// written into the broker's password file from
    /// `pipeline.mqtt.credentials` itself, so there is no second copy of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_secret: Option<String>,
    /// Expose the broker on this port of every node (a NodePort Service), so
    /// machines outside the cluster can publish; in-cluster only when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 30000, max = 32767))]
    pub node_port: Option<i32>,
    /// Serve MQTT over TLS only (port 8883) with the certificate of a
    /// Secret in the `kubernetes.io/tls` layout cert-manager writes
    /// (`tls.crt`, `tls.key`, `ca.crt`). The workers trust its `ca.crt`
    /// unless `pipeline.mqtt.tls` says otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<MosquittoTls>,
}

/// TLS for the managed Mosquitto.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MosquittoTls {
    /// The Secret holding `tls.crt`, `tls.key` and `ca.crt`.
    pub secret_name: String,
    /// Clients must present a certificate signed by the Secret's CA. The
    /// workers then present the Secret's own certificate unless
    /// `pipeline.mqtt.tls` gives theirs.
    #[serde(default)]
    pub require_certificate: bool,
}

/// Grafana for the pipeline.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GrafanaSpec {
    /// Run Grafana for this pipeline.
    #[serde(default)]
    pub enabled: bool,
    /// Grafana image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Secret with the admin credentials (keys `admin-user`, `admin-password`);
    /// without it the operator generates one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_secret: Option<String>,
    /// Expose Grafana on this port of every node (a NodePort Service, e.g.
    /// for kind or a plant network without a load balancer); in-cluster only
    /// when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 30000, max = 32767))]
    pub node_port: Option<i32>,
    /// A Prometheus that scrapes this pipeline's workers: Grafana gets it as
    /// a second datasource and a dashboard of the pipeline's health (ingest
    /// and export rates, join lag and state, transactions, dead letters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusSource>,
}

/// Where Grafana reads the workers' metrics.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusSource {
    /// Prometheus's HTTP API, e.g. `http://prometheus.monitoring:9090`. Its
    /// queries select the workers by the `namespace` and `pod` labels, as a
    /// ServiceMonitor or the usual Pod discovery relabelling sets them.
    #[schemars(regex(pattern = r"^https?://"))]
    pub url: String,
}

/// What the operator observed and did.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StreamPipelineStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `SpecValid`, `TopicsReady`, `BrokerReady`, `WorkersReady`,
    /// `GrafanaReady`, each with a reason and a message.
    // Empty collections are left out rather than sent empty: server-side
    // apply may store an emptied map or list as null, which the schema
    // (without defaults to turn it back) refuses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Ready worker replicas over wanted ones, e.g. `3/3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stages: Option<String>,
    /// The topics in one line, e.g. `4/4 ready`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topics_summary: Option<String>,
    /// The Kafka topics as found in the broker.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topics: Vec<TopicStatus>,
    /// Where to reach the pipeline's services (MQTT, Grafana, metrics).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub endpoints: BTreeMap<String, String>,
}

/// A Kafka topic of the pipeline.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TopicStatus {
    /// Topic name.
    pub name: String,
    /// Partitions in the broker.
    pub partitions: i32,
}

/// The CRD. Its schema carries no defaults: the API server would store
/// them into every object, where a later operator could not tell them from
/// what the user wrote (see `defaults`); the operator resolves them at
/// each reconcile instead.
pub fn crd() -> CustomResourceDefinition {
    use kube::CustomResourceExt;
    let mut crd = serde_json::to_value(StreamPipeline::crd()).expect("the CRD always serializes");
    for version in crd["spec"]["versions"].as_array_mut().into_iter().flatten() {
        without_defaults(&mut version["schema"]["openAPIV3Schema"]);
    }
    serde_json::from_value(crd).expect("the CRD reads back")
}

/// Removes `default` from a schema and every schema inside it (not a
/// property that happens to be named `default`).
fn without_defaults(schema: &mut serde_json::Value) {
    let Some(object) = schema.as_object_mut() else { return };
    object.remove("default");
    for (key, value) in object.iter_mut() {
        match key.as_str() {
            "properties" | "patternProperties" | "definitions" => value.as_object_mut().into_iter().flat_map(|m| m.values_mut()).for_each(without_defaults),
            "items" | "additionalProperties" | "not" => without_defaults(value),
            "allOf" | "anyOf" | "oneOf" => value.as_array_mut().into_iter().flatten().for_each(without_defaults),
            _ => {}
        }
    }
}

/// The CRD as YAML, exactly what `millrace-operator crd` prints and
/// `crds/streampipeline.yaml` holds.
pub fn crd_yaml() -> String {
    serde_yaml::to_string(&crd()).expect("the CRD always serializes")
}
