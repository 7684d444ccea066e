//! What is wrong with a spec that the schema could not say (pure), and the
//! typed value a valid spec becomes: what the reconcile needs beyond the
//! schema is there, so nothing after validation expects it.

use millrace_config::{InfluxDbTarget, KafkaConfig, PipelineConfig};

use crate::crd::StreamPipeline;
use crate::defaults::{self, OperatorDefaults};

/// A `StreamPipeline` whose spec passed [`validate`], with its defaults
/// resolved.
#[derive(Clone, Debug)]
pub struct ValidPipeline<'a> {
    pub pipeline: &'a StreamPipeline,
    /// The configuration the workers get ([`defaults::worker_config`]): it
    /// has a Kafka and an InfluxDB section.
    pub config: PipelineConfig,
    pub worker_image: String,
}

impl ValidPipeline<'_> {
    /// The Kafka the stages run on (a `StreamPipeline` has no embedded mode).
    pub fn kafka(&self) -> &KafkaConfig {
        self.config.kafka.as_ref().expect("validated: a StreamPipeline has a Kafka")
    }

    /// Where the export stage writes.
    pub fn influxdb(&self) -> &InfluxDbTarget {
        self.config.influxdb.as_ref().expect("validated: a StreamPipeline has an InfluxDB")
    }
}

/// Checks `p`'s spec with its defaults resolved; the message names the
/// field that is wrong.
pub fn validate<'a>(p: &'a StreamPipeline, operator: &OperatorDefaults) -> Result<ValidPipeline<'a>, String> {
    let config = defaults::worker_config(p);
    config.validate().map_err(|e| format!("spec.pipeline.{e}"))?;
    if config.kafka.is_none() {
        return Err("spec.pipeline.kafka: a StreamPipeline runs its stages on Kafka; give bootstrapServers".into());
    }
    if config.influxdb.is_none() {
        return Err("spec.pipeline.influxdb: the export stage needs an InfluxDB target".into());
    }
    if let Some(prometheus) = &p.spec.grafana.prometheus {
        millrace_config::check_url(&prometheus.url, &["http", "https"]).map_err(|m| format!("spec.grafana.prometheus.url: {m}"))?;
    }
    let m = &p.spec.mosquitto;
    if m.managed && m.node_port.is_some() && !crate::children::mosquitto::authenticated(p) {
        return Err("spec.mosquitto.nodePort: a NodePort opens the broker on every node, and this one takes anyone's messages; \
                    give spec.pipeline.mqtt.credentials (the broker then requires that login) or spec.mosquitto.authSecret"
            .into());
    }
    check_child_names(p)?;
    Ok(ValidPipeline { pipeline: p, config, worker_image: defaults::worker_image(p, operator) })
}

/// A StatefulSet's name is limited by its Pods' `controller-revision-hash`
/// label, `NAME-HASH` with a hash of up to 10 characters, to 63 - 11.
pub const MAX_STATEFUL_SET_NAME: usize = 63 - 11;
/// A Service's name is a DNS label.
pub const MAX_SERVICE_NAME: usize = 63;
/// Grafana refuses a dashboard uid longer than this.
pub const MAX_DASHBOARD_UID: usize = 40;

/// The children's names the pipeline's name makes must fit their limits
/// (pure); the message says which and how long the name may be.
pub fn check_child_names(p: &StreamPipeline) -> Result<(), String> {
    use crate::children::{dashboards, grafana, mosquitto, workers};
    use kube::ResourceExt;
    let name = p.name_any();
    let too_long = |child: &str, kind: &str, made: String, limit: usize| {
        (made.len() > limit).then(|| {
            let room = limit - (made.len() - name.len());
            format!(
                "metadata.name: {name:?} ({} characters) makes the {child} {kind} {made:?}, longer than the {limit} characters a {kind} name may have here; use a name of at most {room} characters",
                name.len()
            )
        })
    };
    let mut checks = Vec::new();
    for stage in workers::Stage::ALL {
        checks.push(too_long(stage.name(), "StatefulSet", workers::stage_name(p, stage), MAX_STATEFUL_SET_NAME));
        checks.push(too_long(stage.name(), "Service", workers::metrics_service_name(p, stage), MAX_SERVICE_NAME));
    }
    if p.spec.mosquitto.managed {
        checks.push(too_long("Mosquitto", "Service", mosquitto::name(p), MAX_SERVICE_NAME));
    }
    if p.spec.grafana.enabled {
        checks.push(too_long("Grafana", "Service", grafana::name(p), MAX_SERVICE_NAME));
        checks.push(too_long("Grafana", "dashboard uid", dashboards::data_uid(p), MAX_DASHBOARD_UID));
    }
    match checks.into_iter().flatten().next() {
        Some(message) => Err(message),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipeline(name: &str, extra: &str) -> StreamPipeline {
        serde_yaml::from_str(&format!(
            "apiVersion: millrace.io/v1alpha1\nkind: StreamPipeline\nmetadata: {{name: {name}, namespace: plant}}\nspec:\n  pipeline:\n    kafka: {{bootstrapServers: 'k:9092'}}\n    influxdb: {{url: 'http://influxdb:8086'}}\n{extra}"
        ))
        .unwrap()
    }

    fn validate_(p: &StreamPipeline) -> Result<ValidPipeline<'_>, String> {
        validate(p, &OperatorDefaults::default())
    }

    #[test]
    fn a_name_whose_stateful_set_name_is_too_long_is_refused_with_the_room_left() {
        assert!(validate_(&pipeline(&"a".repeat(45), "")).is_ok(), "a-...-ingest is 52");
        let e = validate_(&pipeline(&"a".repeat(46), "")).unwrap_err();
        assert!(e.starts_with("metadata.name: "), "{e}");
        assert!(e.contains("ingest StatefulSet") && e.contains("at most 45 characters"), "{e}");
    }

    #[test]
    fn a_grafana_dashboard_uid_fits_in_40_characters() {
        let grafana = "  grafana: {enabled: true}\n";
        assert!(validate_(&pipeline(&"g".repeat(31), grafana)).is_ok());
        assert!(validate_(&pipeline(&"g".repeat(32), "")).is_ok(), "no Grafana, no uid");
        let e = validate_(&pipeline(&"g".repeat(32), grafana)).unwrap_err();
        assert!(e.contains("dashboard uid") && e.contains("at most 31 characters"), "{e}");
    }

    #[test]
    fn an_anonymous_broker_is_never_opened_on_a_node_port() {
        let e = validate_(&pipeline("l1", "  mosquitto: {managed: true, nodePort: 31883}\n")).unwrap_err();
        assert!(e.starts_with("spec.mosquitto.nodePort: ") && e.contains("spec.pipeline.mqtt.credentials"), "{e}");
        assert!(validate_(&pipeline("l1", "  mosquitto: {managed: true, nodePort: 31883, authSecret: mqtt-users}\n")).is_ok());
        assert!(validate_(&pipeline("l1", "  mosquitto: {managed: true}\n")).is_ok(), "in the cluster only");
    }

    #[test]
    fn pipeline_config_mistakes_carry_the_specs_path() {
        let mut p = pipeline("l1", "");
        p.spec.pipeline.mqtt.url = "mqtt://broker:port".into();
        let e = validate_(&p).unwrap_err();
        assert!(e.starts_with("spec.pipeline.mqtt.url: "), "{e}");
        let mut p = pipeline("l1", "");
        p.spec.pipeline.kafka.as_mut().unwrap().topics.joined.name = Some("millrace.plant.l1.raw".into());
        let e = validate_(&p).unwrap_err();
        assert!(e.starts_with("spec.pipeline.kafka.topics.joined.name: "), "{e}");
        let e = validate_(&pipeline("l1", "  grafana: {enabled: true, prometheus: {url: 'http://user:pw@prometheus:9090'}}\n")).unwrap_err();
        assert!(e.starts_with("spec.grafana.prometheus.url: ") && e.contains("credentials"), "{e}");
        assert!(validate_(&pipeline("l1", "  grafana: {enabled: true, prometheus: {url: 'http://prometheus.monitoring:9090'}}\n")).is_ok());
    }
}
