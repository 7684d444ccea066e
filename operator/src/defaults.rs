//! Defaults resolved at reconcile time, never stored by the CRD schema: an
//! object holds only what its user wrote, so that an operator upgrade
//! reaches every pipeline (the worker image follows the operator's) and two
//! pipelines never share a topic, a consumer group, a transactional id or
//! an MQTT session unless their specs name it.

use millrace_config::PipelineConfig;
use kube::ResourceExt;

use crate::crd::StreamPipeline;

/// What the operator fills into every pipeline that leaves it out; set by
/// its command line (and the chart's values).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperatorDefaults {
    /// The worker image of pipelines without `spec.workers.image`.
    pub worker_image: String,
}

impl Default for OperatorDefaults {
    fn default() -> Self {
        Self { worker_image: default_worker_image() }
    }
}

/// The worker image of the operator's own version.
pub fn default_worker_image() -> String {
    format!("millrace/worker:{}", env!("CARGO_PKG_VERSION"))
}

/// `millrace.<namespace>.<name>`: what the names of a pipeline's topics,
/// consumer groups and MQTT sessions are made from. A namespace holds no
/// dot, so no two pipelines have the same scope.
pub fn scope(p: &StreamPipeline) -> String {
    format!("millrace.{}.{}", p.namespace().unwrap_or_else(|| "default".into()), p.name_any())
}

/// The pipeline's configuration as its workers get it (pure): every name
/// left out made from [`scope`], and the managed broker's URL when the
/// operator runs one.
pub fn worker_config(p: &StreamPipeline) -> PipelineConfig {
    let mut config = p.spec.pipeline.clone();
    config.fill_names(&scope(p));
    if p.spec.mosquitto.managed {
        config.mqtt.url = crate::children::mosquitto::url(p);
        // A broker serving TLS: the workers trust its Secret's CA unless
        // the spec says otherwise.
        if config.mqtt.tls.is_none() {
            config.mqtt.tls = crate::children::mosquitto::workers_tls(p);
        }
    }
    crate::children::tls_secrets::default_ca_files(&mut config);
    config
}

/// The pipeline's worker image: its own, or the operator's default.
pub fn worker_image(p: &StreamPipeline, defaults: &OperatorDefaults) -> String {
    p.spec.workers.image.clone().unwrap_or_else(|| defaults.worker_image.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipeline(namespace: &str, name: &str, pipeline: &str) -> StreamPipeline {
        serde_yaml::from_str(&format!(
            "apiVersion: millrace.io/v1alpha1\nkind: StreamPipeline\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n  pipeline: {pipeline}\n"
        ))
        .unwrap()
    }

    #[test]
    fn pipelines_that_keep_the_defaults_share_nothing() {
        let kafka = "{kafka: {bootstrapServers: 'k:9092'}}";
        let configs = [pipeline("plant", "line-1", kafka), pipeline("plant", "line-2", kafka), pipeline("lab", "line-1", kafka)]
            .map(|p| worker_config(&p));
        let names = configs.each_ref().map(|config| {
            let kafka = config.kafka.as_ref().unwrap();
            let mut names: std::collections::BTreeSet<String> = kafka.wanted_topics().into_iter().map(|(_, t)| t.name).collect();
            names.extend([kafka.group_id(), config.mqtt.client_id(), config.mqtt.share_group()].map(String::from));
            names
        });
        for (i, j) in [(0, 1), (0, 2), (1, 2)] {
            assert!(names[i].is_disjoint(&names[j]), "{:?} and {:?}", names[i], names[j]);
        }
        let first = configs[0].kafka.as_ref().unwrap();
        assert_eq!(first.topics.raw_name(), "millrace.plant.line-1.raw");
        assert_eq!(first.group_id(), "millrace.plant.line-1");
        assert_eq!(configs[0].mqtt.share_group(), "millrace.plant.line-1");
    }

    #[test]
    fn names_a_spec_gives_are_kept() {
        let p = pipeline("plant", "line-1", "{mqtt: {clientId: m, shareGroup: ''}, kafka: {bootstrapServers: 'k:9092', groupId: g, topics: {raw: {name: r}}}}");
        let config = worker_config(&p);
        let kafka = config.kafka.as_ref().unwrap();
        assert_eq!((kafka.group_id(), kafka.topics.raw_name(), config.mqtt.client_id(), config.mqtt.share_group()), ("g", "r", "m", ""));
        assert_eq!(kafka.topics.joined_name(), "millrace.plant.line-1.joined", "the others still follow the scope");
    }

    #[test]
    fn the_worker_image_follows_the_operator_unless_the_spec_names_one() {
        let mut p = pipeline("plant", "line-1", "{}");
        let defaults = OperatorDefaults { worker_image: "registry.plant/millrace/worker:9.9".into() };
        assert_eq!(worker_image(&p, &defaults), "registry.plant/millrace/worker:9.9");
        assert_eq!(worker_image(&p, &OperatorDefaults::default()), concat!("millrace/worker:", env!("CARGO_PKG_VERSION")));
        p.spec.workers.image = Some("mine:1".into());
        assert_eq!(worker_image(&p, &defaults), "mine:1");
    }
}
