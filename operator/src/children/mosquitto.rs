//! The managed Mosquitto broker of a pipeline (pure): its configuration,
//! Deployment and Service, and the URL the workers use to reach it.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, ExecAction, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource, PodSpec, PodTemplateSpec, Probe, SecretVolumeSource,
    Service, TCPSocketAction, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::{labels, login_env, metadata, pod_security, config_hash, template_metadata};
use crate::crd::StreamPipeline;
use millrace_config::TlsFiles;

pub const MQTT_PORT: i32 = 1883;
/// The port of a broker serving TLS (`mosquitto.tls`), which serves nothing else.
pub const MQTTS_PORT: i32 = 8883;
const COMPONENT: &str = "mosquitto";
const DEFAULT_IMAGE: &str = "eclipse-mosquitto:2.0";
/// The Mosquitto image's own non-root user.
const BROKER_USER: i64 = 1883;

pub fn name(p: &StreamPipeline) -> String {
    format!("{}-mosquitto", p.name_any())
}

/// The PersistentVolumeClaim that keeps the broker's sessions and queues.
pub fn data_claim_name(p: &StreamPipeline) -> String {
    format!("{}-data", name(p))
}

/// The broker's PersistentVolumeClaim, when `persistenceSize` asks for one.
pub fn data_claim(p: &StreamPipeline) -> Option<PersistentVolumeClaim> {
    let size = p.spec.mosquitto.persistence_size.clone()?;
    Some(PersistentVolumeClaim {
        metadata: metadata(p, data_claim_name(p), COMPONENT),
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            resources: Some(VolumeResourceRequirements { requests: Some(BTreeMap::from([("storage".into(), Quantity(size))])), ..Default::default() }),
            storage_class_name: p.spec.mosquitto.storage_class.clone(),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// The port the broker serves on.
pub fn port(p: &StreamPipeline) -> i32 {
    if p.spec.mosquitto.tls.is_some() { MQTTS_PORT } else { MQTT_PORT }
}

/// The URL the workers use for the managed broker.
pub fn url(p: &StreamPipeline) -> String {
    let scheme = if p.spec.mosquitto.tls.is_some() { "mqtts" } else { "mqtt" };
    format!("{scheme}://{}:{}", name(p), port(p))
}

/// Where the broker finds its TLS Secret's files.
const TLS_DIR: &str = "/mosquitto/tls";

/// The workers' TLS files for a broker serving TLS: its Secret (whose
/// `ca.crt` they trust) and, when it requires a certificate, the Secret's
/// own certificate to present.
pub fn workers_tls(p: &StreamPipeline) -> Option<TlsFiles> {
    let tls = p.spec.mosquitto.tls.as_ref()?;
    let dir = super::tls_secrets::Connection::Mqtt.dir();
    let client = |file: &str| tls.require_certificate.then(|| format!("{dir}/{file}"));
    Some(TlsFiles {
        secret_name: Some(tls.secret_name.clone()),
        ca_file: None,
        certificate_file: client("tls.crt"),
        key_file: client("tls.key"),
    })
}

/// Whether the broker requires a login: the workers have credentials, or
/// more users are given.
pub fn authenticated(p: &StreamPipeline) -> bool {
    p.spec.pipeline.mqtt.credentials.is_some() || p.spec.mosquitto.auth_secret.is_some()
}

/// Where the broker reads its password file: an in-memory volume the
/// `passwd` init container writes.
const PASSWORD_DIR: &str = "/mosquitto/auth";
/// Where the init container finds the more users' password file.
const MORE_USERS_DIR: &str = "/mosquitto/more-users";

/// The init container's script: the more users' file (if any), then the
/// workers' user hashed by Mosquitto's own `mosquitto_passwd` (its PBKDF2
/// format), readable by the broker's user and group only.
const WRITE_PASSWORD_FILE: &str = r#"set -eu
file=/mosquitto/auth/passwd
: > "$file"
if [ -f /mosquitto/more-users/passwd ]; then cat /mosquitto/more-users/passwd >> "$file"; fi
if [ -n "${MQTT_USERNAME:-}" ]; then mosquitto_passwd -b "$file" "$MQTT_USERNAME" "$MQTT_PASSWORD"; fi
chmod 0440 "$file""#;

/// The readiness probe: a login with the workers' credentials (or an
/// anonymous one) and a subscription the broker acknowledges; over TLS
/// with the Secret's CA (its names are the Service's, not 127.0.0.1's:
/// `--insecure` skips only the name check) and, when required, the
/// Secret's certificate.
fn login_probe(p: &StreamPipeline) -> String {
    let mut tls = String::new();
    if let Some(t) = &p.spec.mosquitto.tls {
        tls.push_str(&format!(" --cafile {TLS_DIR}/ca.crt --insecure"));
        if t.require_certificate {
            tls.push_str(&format!(" --cert {TLS_DIR}/tls.crt --key {TLS_DIR}/tls.key"));
        }
    }
    format!(
        "if [ -n \"${{MQTT_USERNAME:-}}\" ]; then set -- -u \"$MQTT_USERNAME\" -P \"$MQTT_PASSWORD\"; fi\n\
         exec mosquitto_sub -h 127.0.0.1 -p {}{tls} -t millrace/readiness -E \"$@\"",
        port(p)
    )
}

/// `mosquitto.conf`: a listener for the cluster (TLS only, when asked),
/// persistence when asked, the password file when a login is required.
pub fn config_map(p: &StreamPipeline) -> ConfigMap {
    let m = &p.spec.mosquitto;
    let mut conf = format!(
        "listener {}\npersistence {}\npersistence_location /mosquitto/data/\nmax_inflight_messages 0\nmax_queued_messages 1000000\nlog_dest stdout\n",
        port(p),
        m.persistence_size.is_some()
    );
    if let Some(tls) = &m.tls {
        conf.push_str(&format!(
            "cafile {TLS_DIR}/ca.crt\ncertfile {TLS_DIR}/tls.crt\nkeyfile {TLS_DIR}/tls.key\nrequire_certificate {}\n",
            tls.require_certificate
        ));
    }
    if authenticated(p) {
        conf.push_str("allow_anonymous false\npassword_file /mosquitto/auth/passwd\n");
    } else {
        conf.push_str("allow_anonymous true\n");
    }
    ConfigMap { metadata: metadata(p, name(p), COMPONENT), data: Some(BTreeMap::from([("mosquitto.conf".into(), conf)])), ..Default::default() }
}

pub fn deployment(p: &StreamPipeline) -> Deployment {
    let m = &p.spec.mosquitto;
    let selector = labels(p, COMPONENT);
    let mut mounts = vec![
        VolumeMount { name: "config".into(), mount_path: "/mosquitto/config".into(), read_only: Some(true), ..Default::default() },
        VolumeMount { name: "data".into(), mount_path: "/mosquitto/data".into(), ..Default::default() },
    ];
    let mut volumes = vec![
        Volume { name: "config".into(), config_map: Some(ConfigMapVolumeSource { name: name(p), ..Default::default() }), ..Default::default() },
        if m.persistence_size.is_some() {
            Volume {
                name: "data".into(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource { claim_name: data_claim_name(p), ..Default::default() }),
                ..Default::default()
            }
        } else {
            // Without persistence the broker still needs a writable place.
            Volume { name: "data".into(), empty_dir: Some(EmptyDirVolumeSource::default()), ..Default::default() }
        },
    ];
    if let Some(tls) = &m.tls {
        mounts.push(VolumeMount { name: "tls".into(), mount_path: TLS_DIR.into(), read_only: Some(true), ..Default::default() });
        volumes.push(Volume {
            name: "tls".into(),
            // Readable by the broker's group (fsGroup) only.
            secret: Some(SecretVolumeSource { secret_name: Some(tls.secret_name.clone()), default_mode: Some(0o440), ..Default::default() }),
            ..Default::default()
        });
    }
    // The workers' login, for the password file and the readiness probe.
    let login: Vec<EnvVar> = p.spec.pipeline.mqtt.credentials.iter().flat_map(|c| login_env("MQTT", c)).collect();
    let mut init_containers = Vec::new();
    if authenticated(p) {
        let auth = |read_only| VolumeMount { name: "auth".into(), mount_path: PASSWORD_DIR.into(), read_only: Some(read_only), ..Default::default() };
        mounts.push(auth(true));
        volumes.push(Volume {
            name: "auth".into(),
            empty_dir: Some(EmptyDirVolumeSource { medium: Some("Memory".into()), ..Default::default() }),
            ..Default::default()
        });
        // mosquitto_passwd writes a temporary file to /tmp as well.
        let mut init_mounts = vec![auth(false), VolumeMount { name: "passwd-tmp".into(), mount_path: "/tmp".into(), ..Default::default() }];
        volumes.push(Volume {
            name: "passwd-tmp".into(),
            empty_dir: Some(EmptyDirVolumeSource { medium: Some("Memory".into()), ..Default::default() }),
            ..Default::default()
        });
        if let Some(secret) = &m.auth_secret {
            init_mounts.push(VolumeMount { name: "more-users".into(), mount_path: MORE_USERS_DIR.into(), read_only: Some(true), ..Default::default() });
            volumes.push(Volume {
                name: "more-users".into(),
                secret: Some(SecretVolumeSource { secret_name: Some(secret.clone()), ..Default::default() }),
                ..Default::default()
            });
        }
        init_containers.push(Container {
            name: "passwd".into(),
            image: Some(m.image.clone().unwrap_or_else(|| DEFAULT_IMAGE.into())),
            command: Some(vec!["/bin/sh".into(), "-c".into(), WRITE_PASSWORD_FILE.into()]),
            env: (!login.is_empty()).then(|| login.clone()),
            volume_mounts: Some(init_mounts),
            security_context: Some(pod_security::container(true)),
            ..Default::default()
        });
    }
    let alive = Probe { tcp_socket: Some(TCPSocketAction { port: IntOrString::Int(port(p)), ..Default::default() }), period_seconds: Some(10), ..Default::default() };
    // Ready means a client can log in and subscribe, not just that the port is open.
    let logs_in = Probe {
        exec: Some(ExecAction { command: Some(vec!["/bin/sh".into(), "-c".into(), login_probe(p)]) }),
        period_seconds: Some(10),
        timeout_seconds: Some(5),
        ..Default::default()
    };
    Deployment {
        metadata: metadata(p, name(p), COMPONENT),
        spec: Some(DeploymentSpec {
            replicas: Some(1),
            // One broker at a time: sessions and queues live in one place.
            strategy: Some(DeploymentStrategy { type_: Some("Recreate".into()), ..Default::default() }),
            selector: LabelSelector { match_labels: Some(selector.clone()), ..Default::default() },
            template: PodTemplateSpec {
                // mosquitto.conf changed: a new broker Pod reads it.
                metadata: Some(template_metadata(selector, config_hash(&config_map(p)))),
                spec: Some(super::placement::placed(p, PodSpec {
                    containers: vec![Container {
                        name: "mosquitto".into(),
                        image: Some(m.image.clone().unwrap_or_else(|| DEFAULT_IMAGE.into())),
                        ports: Some(vec![ContainerPort { name: Some(port_name(p).into()), container_port: port(p), protocol: Some("TCP".into()), ..Default::default() }]),
                        env: (!login.is_empty()).then_some(login),
                        readiness_probe: Some(logs_in),
                        liveness_probe: Some(alive),
                        volume_mounts: Some(mounts),
                        security_context: Some(pod_security::container(true)),
                        ..Default::default()
                    }],
                    init_containers: (!init_containers.is_empty()).then_some(init_containers),
                    volumes: Some(volumes),
                    // The claim's files belong to the broker's group (fsGroup).
                    security_context: Some(pod_security::pod(p.spec.user_ids, BROKER_USER)),
                    ..Default::default()
                })),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn port_name(p: &StreamPipeline) -> &'static str {
    if p.spec.mosquitto.tls.is_some() { "mqtts" } else { "mqtt" }
}

pub fn service(p: &StreamPipeline) -> Service {
    super::service(p, name(p), COMPONENT, port_name(p), port(p), p.spec.mosquitto.node_port)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipeline(mosquitto: &str) -> StreamPipeline {
        serde_yaml::from_str(&format!(
            "apiVersion: millrace.io/v1alpha1\nkind: StreamPipeline\nmetadata: {{name: l1, namespace: plant, uid: u-1}}\nspec:\n  pipeline: {{}}\n  mosquitto: {mosquitto}\n"
        ))
        .unwrap()
    }

    #[test]
    fn a_changed_broker_configuration_rolls_the_broker() {
        let hash = |p: &StreamPipeline| deployment(p).spec.unwrap().template.metadata.unwrap().annotations.unwrap()[crate::children::CONFIG_HASH_ANNOTATION].clone();
        let (open, closed) = (pipeline("{managed: true}"), pipeline("{managed: true, authSecret: mqtt-users}"));
        assert_eq!(hash(&open), crate::children::config_hash(&config_map(&open)));
        assert_ne!(hash(&open), hash(&closed), "mosquitto.conf differs, so does the template");
    }

    #[test]
    fn an_anonymous_broker_by_default_and_auth_from_a_secret() {
        let open = pipeline("{managed: true}");
        let conf = &config_map(&open).data.unwrap()["mosquitto.conf"];
        assert!(conf.contains("allow_anonymous true") && conf.contains("listener 1883"), "{conf}");
        assert_eq!(url(&open), "mqtt://l1-mosquitto:1883");
        assert!(deployment(&open).spec.unwrap().template.spec.unwrap().init_containers.is_none());
        let closed = pipeline("{managed: true, authSecret: mqtt-users}");
        assert!(config_map(&closed).data.unwrap()["mosquitto.conf"].contains("password_file /mosquitto/auth/passwd"));
        let d = deployment(&closed);
        let volumes = d.spec.unwrap().template.spec.unwrap().volumes.unwrap();
        assert_eq!(volumes.iter().find(|v| v.name == "more-users").unwrap().secret.as_ref().unwrap().secret_name.as_deref(), Some("mqtt-users"));
    }

    #[test]
    fn the_workers_credentials_are_the_brokers_login_from_one_secret() {
        let p: StreamPipeline = serde_yaml::from_str(
            "apiVersion: millrace.io/v1alpha1\nkind: StreamPipeline\nmetadata: {name: l1, namespace: plant, uid: u-1}\nspec:\n  pipeline: {mqtt: {credentials: {secretName: mqtt-login}}}\n  mosquitto: {managed: true}\n",
        )
        .unwrap();
        assert!(config_map(&p).data.unwrap()["mosquitto.conf"].contains("allow_anonymous false\npassword_file /mosquitto/auth/passwd"));
        let pod = deployment(&p).spec.unwrap().template.spec.unwrap();
        let init = &pod.init_containers.as_ref().unwrap()[0];
        let script = &init.command.as_ref().unwrap()[2];
        assert!(script.contains("mosquitto_passwd -b") && script.contains("chmod 0440"), "{script}");
        let env = init.env.as_ref().unwrap();
        assert_eq!(env[1].value_from.as_ref().unwrap().secret_key_ref.as_ref().unwrap().name, "mqtt-login", "from the workers' Secret");
        assert!(env.iter().all(|e| e.value.is_none()), "by reference only");
        let auth = pod.volumes.as_ref().unwrap().iter().find(|v| v.name == "auth").unwrap();
        assert_eq!(auth.empty_dir.as_ref().unwrap().medium.as_deref(), Some("Memory"), "never on disk");
        let broker = &pod.containers[0];
        assert!(broker.volume_mounts.as_ref().unwrap().iter().any(|m| m.name == "auth" && m.read_only == Some(true)));
        let ready = broker.readiness_probe.as_ref().unwrap().exec.as_ref().unwrap().command.as_ref().unwrap();
        assert!(ready[2].contains("mosquitto_sub") && ready[2].contains("-u \"$MQTT_USERNAME\""), "ready means a login works");
    }

    #[test]
    fn the_broker_runs_non_root_one_at_a_time() {
        let d = deployment(&pipeline("{managed: true}"));
        let spec = d.spec.unwrap();
        assert_eq!(spec.strategy.unwrap().type_.as_deref(), Some("Recreate"));
        let c = &spec.template.spec.unwrap().containers[0];
        assert_eq!(c.security_context.as_ref().unwrap().run_as_non_root, Some(true));
        assert_eq!(service(&pipeline("{managed: true}")).spec.unwrap().ports.unwrap()[0].port, 1883);
    }

    #[test]
    fn a_node_port_exposes_the_broker_outside_the_cluster() {
        let inside = service(&pipeline("{managed: true}")).spec.unwrap();
        assert_eq!((inside.type_, inside.ports.unwrap()[0].node_port), (None, None));
        let outside = service(&pipeline("{managed: true, nodePort: 31883}")).spec.unwrap();
        assert_eq!(outside.type_.as_deref(), Some("NodePort"));
        assert_eq!(outside.ports.unwrap()[0].node_port, Some(31883));
    }

    #[test]
    fn a_tls_secret_makes_a_tls_only_broker_the_workers_trust() {
        let p: StreamPipeline = serde_yaml::from_str(
            "apiVersion: millrace.io/v1alpha1\nkind: StreamPipeline\nmetadata: {name: l1, namespace: plant, uid: u-1}\nspec:\n  pipeline: {kafka: {bootstrapServers: 'k:9092'}}\n  mosquitto: {managed: true, tls: {secretName: broker-tls, requireCertificate: true}}\n",
        )
        .unwrap();
        let conf = &config_map(&p).data.unwrap()["mosquitto.conf"];
        assert!(conf.starts_with("listener 8883\n") && !conf.contains("1883"), "{conf}");
        assert!(conf.contains("certfile /mosquitto/tls/tls.crt\nkeyfile /mosquitto/tls/tls.key\nrequire_certificate true"), "{conf}");
        assert_eq!(url(&p), "mqtts://l1-mosquitto:8883");
        let pod = deployment(&p).spec.unwrap().template.spec.unwrap();
        let tls = pod.volumes.as_ref().unwrap().iter().find(|v| v.name == "tls").unwrap().secret.clone().unwrap();
        assert_eq!((tls.secret_name.as_deref(), tls.default_mode), (Some("broker-tls"), Some(0o440)));
        let broker = &pod.containers[0];
        let probe = &broker.readiness_probe.as_ref().unwrap().exec.as_ref().unwrap().command.as_ref().unwrap()[2];
        assert!(probe.contains("-p 8883 --cafile /mosquitto/tls/ca.crt --insecure --cert /mosquitto/tls/tls.crt"), "{probe}");
        assert_eq!(service(&p).spec.unwrap().ports.unwrap()[0].port, 8883);
        // The workers: the managed broker's URL, its CA and, as it requires
        // one, its certificate, from the Secret mounted at mqtt-tls.
        let config = crate::defaults::worker_config(&p);
        assert_eq!(config.mqtt.url, "mqtts://l1-mosquitto:8883");
        let files = config.mqtt.tls.unwrap();
        assert_eq!(files.secret_name.as_deref(), Some("broker-tls"));
        assert_eq!(files.ca_file.as_deref(), Some("/etc/millrace/mqtt-tls/ca.crt"));
        assert_eq!(files.client_certificate(), Some(("/etc/millrace/mqtt-tls/tls.crt", "/etc/millrace/mqtt-tls/tls.key")));
    }

    #[test]
    fn persistence_puts_the_data_on_a_claim_of_the_asked_size() {
        let ephemeral = pipeline("{managed: true}");
        assert!(data_claim(&ephemeral).is_none());
        let volumes = deployment(&ephemeral).spec.unwrap().template.spec.unwrap().volumes.unwrap();
        assert!(volumes[1].empty_dir.is_some());
        assert!(config_map(&ephemeral).data.unwrap()["mosquitto.conf"].contains("persistence false"));

        let kept = pipeline("{managed: true, persistenceSize: 2Gi, storageClass: fast}");
        let claim = data_claim(&kept).unwrap();
        assert_eq!(claim.metadata.name.as_deref(), Some("l1-mosquitto-data"));
        assert_eq!(claim.metadata.owner_references.as_ref().map(|o| o.len()), Some(1), "goes with the pipeline");
        let spec = claim.spec.unwrap();
        assert_eq!(spec.access_modes.unwrap(), ["ReadWriteOnce"]);
        assert_eq!(spec.resources.unwrap().requests.unwrap()["storage"].0, "2Gi");
        assert_eq!(spec.storage_class_name.as_deref(), Some("fast"));
        let pod = deployment(&kept).spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.volumes.unwrap()[1].persistent_volume_claim.as_ref().unwrap().claim_name, "l1-mosquitto-data");
        assert_eq!(pod.security_context.unwrap().fs_group, Some(1883));
        assert!(config_map(&kept).data.unwrap()["mosquitto.conf"].contains("persistence true"));
    }
}
