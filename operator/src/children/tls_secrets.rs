//! The TLS Secrets of a pipeline's connections (Kafka, MQTT, InfluxDB),
//! each mounted read-only into the workers at `/etc/millrace/<name>-tls`,
//! and the file names the workers' configuration gets for them (pure).

use k8s_openapi::api::core::v1::{SecretVolumeSource, Volume, VolumeMount};
use millrace_config::{PipelineConfig, TlsFiles};

/// A connection of the workers that may use TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Connection {
    Kafka,
    Mqtt,
    InfluxDb,
}

/// Where the Secret of `kafka.security.tls.secretName` is mounted.
pub const KAFKA_TLS_DIR: &str = "/etc/millrace/kafka-tls";
const MQTT_TLS_DIR: &str = "/etc/millrace/mqtt-tls";
const INFLUXDB_TLS_DIR: &str = "/etc/millrace/influxdb-tls";

impl Connection {
    pub const ALL: [Connection; 3] = [Connection::Kafka, Connection::Mqtt, Connection::InfluxDb];

    /// The directory its Secret is mounted at.
    pub fn dir(self) -> &'static str {
        match self {
            Connection::Kafka => KAFKA_TLS_DIR,
            Connection::Mqtt => MQTT_TLS_DIR,
            Connection::InfluxDb => INFLUXDB_TLS_DIR,
        }
    }

    fn volume(self) -> &'static str {
        match self {
            Connection::Kafka => "kafka-tls",
            Connection::Mqtt => "mqtt-tls",
            Connection::InfluxDb => "influxdb-tls",
        }
    }

    fn files(self, config: &PipelineConfig) -> Option<&TlsFiles> {
        match self {
            Connection::Kafka => config.kafka.as_ref()?.security.as_ref()?.tls.as_ref(),
            Connection::Mqtt => config.mqtt.tls.as_ref(),
            Connection::InfluxDb => config.influxdb.as_ref()?.tls.as_ref(),
        }
    }

    fn files_mut(self, config: &mut PipelineConfig) -> Option<&mut TlsFiles> {
        match self {
            Connection::Kafka => config.kafka.as_mut()?.security.as_mut()?.tls.as_mut(),
            Connection::Mqtt => config.mqtt.tls.as_mut(),
            Connection::InfluxDb => config.influxdb.as_mut()?.tls.as_mut(),
        }
    }
}

/// A Secret's CA by default: a connection whose TLS names a Secret trusts
/// the `ca.crt` in it unless the spec gives another `caFile`.
pub fn default_ca_files(config: &mut PipelineConfig) {
    for connection in Connection::ALL {
        if let Some(tls) = connection.files_mut(config).filter(|t| t.secret_name.is_some()) {
            tls.ca_file.get_or_insert_with(|| format!("{}/ca.crt", connection.dir()));
        }
    }
}

/// The Secret each connection's TLS names, if any.
pub fn secrets(config: &PipelineConfig) -> Vec<(Connection, String)> {
    Connection::ALL.into_iter().filter_map(|c| Some((c, c.files(config)?.secret_name.clone()?))).collect()
}

/// The workers' mounts of [`secrets`].
pub fn volume_mounts(config: &PipelineConfig) -> Vec<VolumeMount> {
    secrets(config)
        .into_iter()
        .map(|(c, _)| VolumeMount { name: c.volume().into(), mount_path: c.dir().into(), read_only: Some(true), ..Default::default() })
        .collect()
}

/// The workers' volumes of [`secrets`].
pub fn volumes(config: &PipelineConfig) -> Vec<Volume> {
    secrets(config)
        .into_iter()
        .map(|(c, secret)| Volume {
            name: c.volume().into(),
            secret: Some(SecretVolumeSource { secret_name: Some(secret), ..Default::default() }),
            ..Default::default()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_named_secret_is_mounted_in_its_own_directory_with_its_ca_by_default() {
        let mut config = PipelineConfig::from_yaml(
            "mqtt: {url: 'mqtts://broker:8883', tls: {secretName: mqtt-ca}}\n\
             kafka: {bootstrapServers: 'k:9093', security: {protocol: SSL, tls: {secretName: kafka-tls, caFile: /etc/ssl/plant.pem}}}\n\
             influxdb: {url: 'https://influx:8086', tls: {caFile: /etc/ssl/certs/ca-certificates.crt}}\n",
        )
        .unwrap();
        default_ca_files(&mut config);
        assert_eq!(config.mqtt.tls.as_ref().unwrap().ca_file.as_deref(), Some("/etc/millrace/mqtt-tls/ca.crt"));
        let kafka_tls = config.kafka.as_ref().unwrap().security.as_ref().unwrap().tls.as_ref().unwrap();
        assert_eq!(kafka_tls.ca_file.as_deref(), Some("/etc/ssl/plant.pem"), "a caFile given is kept");
        assert_eq!(secrets(&config), [(Connection::Kafka, "kafka-tls".to_string()), (Connection::Mqtt, "mqtt-ca".to_string())]);
        let mounts = volume_mounts(&config);
        assert_eq!(mounts.iter().map(|m| m.mount_path.as_str()).collect::<Vec<_>>(), ["/etc/millrace/kafka-tls", "/etc/millrace/mqtt-tls"]);
        assert!(mounts.iter().all(|m| m.read_only == Some(true)));
        let volumes = volumes(&config);
        assert_eq!(volumes[1].secret.as_ref().unwrap().secret_name.as_deref(), Some("mqtt-ca"));
        assert_eq!(volumes.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(), mounts.iter().map(|m| m.name.as_str()).collect::<Vec<_>>());
    }
}
