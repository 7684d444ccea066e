//! Changed Secrets reach running Pods: each Pod template carries a hash of
//! the Secrets it reads (credentials come into the containers as
//! environment variables, read once at start), so a changed Secret rolls
//! the Pods that use it. The operator reads a Secret only where it may
//! (least privilege: the chart grants it in `rbac.secretNamespaces` or the
//! watched namespace); elsewhere the Secret is not hashed and a change
//! needs a `kubectl rollout restart`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PodTemplateSpec, Secret};
use sha2::{Digest, Sha256};

use crate::crd::StreamPipeline;

/// The Pod template annotation holding [`SecretHashes::of`] the Secrets a
/// Pod reads.
pub const SECRETS_HASH_ANNOTATION: &str = "millrace.io/secrets-hash";

/// What the operator could read of the pipeline's Secrets, by name: a hash
/// of the data, or of nothing for a Secret that is not there (yet).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SecretHashes(BTreeMap<String, String>);

impl SecretHashes {
    /// Records `secret` (`None`: not there) under `name`.
    pub fn insert(&mut self, name: &str, secret: Option<&Secret>) {
        let mut hasher = Sha256::new();
        if let Some(data) = secret.and_then(|s| s.data.as_ref()) {
            for (k, v) in data {
                hasher.update(k.as_bytes());
                hasher.update([0]);
                hasher.update(&v.0);
                hasher.update([0]);
            }
        } else {
            hasher.update(b"absent");
        }
        self.0.insert(name.to_string(), hex::encode(&hasher.finalize()[..8]));
    }

    /// One hash over the readable ones of `names`; `None` when none of them
    /// could be read (then the template carries no annotation).
    pub fn of(&self, names: &[String]) -> Option<String> {
        let mut hasher = Sha256::new();
        let mut any = false;
        for name in names {
            if let Some(hash) = self.0.get(name) {
                any = true;
                hasher.update(name.as_bytes());
                hasher.update([0]);
                hasher.update(hash.as_bytes());
                hasher.update([0]);
            }
        }
        any.then(|| hex::encode(&hasher.finalize()[..8]))
    }
}

/// Puts `hash` (if any) on a Pod template.
pub fn annotate(template: Option<&mut PodTemplateSpec>, hash: Option<String>) {
    if let (Some(template), Some(hash)) = (template, hash) {
        template.metadata.get_or_insert_with(Default::default).annotations.get_or_insert_with(Default::default).insert(SECRETS_HASH_ANNOTATION.to_string(), hash);
    }
}

/// The Secrets the worker Pods read: InfluxDB, MQTT and Kafka credentials
/// and the TLS Secrets of their connections.
pub fn used_by_workers(p: &StreamPipeline) -> Vec<String> {
    let pipeline = &p.spec.pipeline;
    let influx = pipeline.influxdb.as_ref().and_then(|i| i.credentials.as_ref()).map(|c| c.secret_name.clone());
    let mqtt = pipeline.mqtt.credentials.as_ref().map(|c| c.secret_name.clone());
    let kafka = pipeline.kafka.as_ref().and_then(|k| k.security.as_ref());
    let kafka_login = kafka.and_then(|s| s.credentials.as_ref()).map(|c| c.secret_name.clone());
    let tls = super::tls_secrets::secrets(&crate::defaults::worker_config(p)).into_iter().map(|(_, secret)| secret);
    influx.into_iter().chain(mqtt).chain(kafka_login).chain(tls).collect()
}

/// The Secrets the managed Mosquitto reads: the workers' MQTT login, the
/// more users' password file and its TLS certificate.
pub fn used_by_broker(p: &StreamPipeline) -> Vec<String> {
    let mqtt = p.spec.pipeline.mqtt.credentials.as_ref().map(|c| c.secret_name.clone());
    let tls = p.spec.mosquitto.tls.as_ref().map(|t| t.secret_name.clone());
    mqtt.into_iter().chain(p.spec.mosquitto.auth_secret.clone()).chain(tls).collect()
}

/// The Secrets Grafana reads: the admin login a user gave (the generated
/// one is written once and never changed by the operator) and the InfluxDB
/// credentials.
pub fn used_by_grafana(p: &StreamPipeline) -> Vec<String> {
    let influx = p.spec.pipeline.influxdb.as_ref().and_then(|i| i.credentials.as_ref()).map(|c| c.secret_name.clone());
    p.spec.grafana.admin_secret.clone().into_iter().chain(influx).collect()
}

/// Every Secret the pipeline's Pods read, each once.
pub fn used(p: &StreamPipeline) -> Vec<String> {
    let mut names: Vec<String> = used_by_workers(p);
    if p.spec.mosquitto.managed {
        names.extend(used_by_broker(p));
    }
    if p.spec.grafana.enabled {
        names.extend(used_by_grafana(p));
    }
    names.sort();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    fn secret(password: &str) -> Secret {
        Secret { data: Some(BTreeMap::from([("password".to_string(), ByteString(password.as_bytes().to_vec()))])), ..Default::default() }
    }

    #[test]
    fn a_changed_secret_changes_the_hash_of_the_pods_that_read_it_only() {
        let mut before = SecretHashes::default();
        before.insert("influx", Some(&secret("one")));
        before.insert("mqtt", Some(&secret("x")));
        let mut after = before.clone();
        after.insert("influx", Some(&secret("two")));
        let (workers, broker) = (["influx".to_string(), "mqtt".to_string()], ["mqtt".to_string()]);
        assert_ne!(before.of(&workers), after.of(&workers));
        assert_eq!(before.of(&broker), after.of(&broker), "the broker does not read influx");
        assert_eq!(before.of(&["other".to_string()]), None, "not readable: no hash");
        let mut gone = before.clone();
        gone.insert("mqtt", None);
        assert_ne!(before.of(&broker), gone.of(&broker), "a Secret that comes or goes counts");
    }
}
