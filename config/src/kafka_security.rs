//! How the pipeline's Kafka clients authenticate and encrypt: TLS with a CA
//! of the plant's own, client certificates (mutual TLS), SASL PLAIN and
//! SCRAM over TLS, as MSK, Confluent Cloud or a Strimzi TLS listener ask.
//! Nothing secret is here: the password comes from the environment
//! (`MILLRACE_KAFKA_USERNAME`/`_PASSWORD`, or `..._FILE`), and keys and
//! certificates from files (on Kubernetes, a mounted Secret).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{SecretCredentials, TlsFiles};

/// `kafka.security`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KafkaSecurity {
    /// `PLAINTEXT` (the default), `SSL`, `SASL_PLAINTEXT` or `SASL_SSL`.
    #[serde(default)]
    pub protocol: SecurityProtocol,
    /// With `SASL_*`: `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sasl_mechanism: Option<SaslMechanism>,
    /// With `SASL_*`: the Kubernetes Secret the operator maps into
    /// `MILLRACE_KAFKA_USERNAME` and `MILLRACE_KAFKA_PASSWORD` (a worker
    /// run by hand reads those variables, or `..._FILE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<SecretCredentials>,
    /// With `SSL` or `SASL_SSL`: the CA to trust and an optional client
    /// certificate. Without it the system's CA bundle is used. A Secret
    /// named here is mounted into the workers at `/etc/millrace/kafka-tls`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsFiles>,
}

/// Kafka's `security.protocol`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SecurityProtocol {
    #[default]
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    /// As librdkafka spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "plaintext",
            SecurityProtocol::Ssl => "ssl",
            SecurityProtocol::SaslPlaintext => "sasl_plaintext",
            SecurityProtocol::SaslSsl => "sasl_ssl",
        }
    }

    pub fn uses_tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    pub fn uses_sasl(self) -> bool {
        matches!(self, SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl)
    }
}

/// Kafka's `sasl.mechanism` (those that need no Kerberos or OAuth server).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SaslMechanism {
    #[serde(rename = "PLAIN")]
    Plain,
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    pub fn as_str(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// librdkafka properties that hold secrets: refused in `kafka.properties`
/// (a ConfigMap), with where to put them instead.
pub const SECRET_PROPERTIES: &[(&str, &str)] = &[
    ("sasl.password", "kafka.security.credentials (a Secret) or MILLRACE_KAFKA_PASSWORD"),
    ("sasl.username", "kafka.security.credentials (a Secret) or MILLRACE_KAFKA_USERNAME"),
    ("ssl.key.password", "an unencrypted key in kafka.security.tls (a Secret)"),
    ("ssl.key.pem", "kafka.security.tls.keyFile (a Secret)"),
    ("ssl.keystore.password", "kafka.security.tls (PEM files from a Secret)"),
    ("sasl.oauthbearer.client.secret", "a mechanism this pipeline supports: PLAIN or SCRAM with kafka.security.credentials"),
    ("sasl.jaas.config", "kafka.security.credentials (a Secret)"),
];

impl KafkaSecurity {
    /// The librdkafka properties these settings make (no secrets: those
    /// are added by the client from the environment).
    pub fn properties(&self) -> Vec<(String, String)> {
        let mut p = vec![("security.protocol".to_string(), self.protocol.as_str().to_string())];
        if let Some(m) = self.sasl_mechanism {
            p.push(("sasl.mechanism".into(), m.as_str().into()));
        }
        if self.protocol.uses_tls() {
            let tls = self.tls.clone().unwrap_or_default();
            // `probe`: the system's CA bundle, wherever this system keeps it
            // (the statically linked OpenSSL's compiled-in path is not it).
            p.push(("ssl.ca.location".into(), tls.ca_file.unwrap_or_else(|| "probe".into())));
            p.extend(tls.certificate_file.map(|f| ("ssl.certificate.location".to_string(), f)));
            p.extend(tls.key_file.map(|f| ("ssl.key.location".to_string(), f)));
        }
        p
    }

    /// What the types cannot say; the message names the field under
    /// `kafka.security`.
    pub fn check(&self) -> Result<(), (String, String)> {
        let protocol = self.protocol;
        if protocol.uses_sasl() && self.sasl_mechanism.is_none() {
            return Err(("saslMechanism".into(), format!("{protocol:?} needs one: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512")));
        }
        if !protocol.uses_sasl() && (self.sasl_mechanism.is_some() || self.credentials.is_some()) {
            return Err(("protocol".into(), "saslMechanism and credentials need SASL_SSL (or SASL_PLAINTEXT)".into()));
        }
        if let Some(tls) = &self.tls {
            if !protocol.uses_tls() {
                return Err(("protocol".into(), "tls needs SSL or SASL_SSL".into()));
            }
            tls.check().map_err(|m| ("tls".to_string(), m))?;
        }
        Ok(())
    }
}

/// The first of `properties` that holds a secret, with where it belongs.
pub fn secret_property<'a>(properties: impl IntoIterator<Item = &'a String>) -> Option<(&'a str, &'static str)> {
    properties
        .into_iter()
        .find_map(|k| SECRET_PROPERTIES.iter().find(|(secret, _)| k.eq_ignore_ascii_case(secret)).map(|(_, instead)| (k.as_str(), *instead)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn security(yaml: &str) -> KafkaSecurity {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn scram_over_tls_with_a_ca_becomes_librdkafka_properties() {
        let s = security("{protocol: SASL_SSL, saslMechanism: SCRAM-SHA-512, tls: {caFile: /tls/ca.crt}}");
        assert!(s.check().is_ok());
        let p = s.properties();
        assert!(p.contains(&("security.protocol".into(), "sasl_ssl".into())));
        assert!(p.contains(&("sasl.mechanism".into(), "SCRAM-SHA-512".into())));
        assert!(p.contains(&("ssl.ca.location".into(), "/tls/ca.crt".into())));
        let system = security("{protocol: SSL}").properties();
        assert!(system.contains(&("ssl.ca.location".into(), "probe".into())), "the system's CAs without a caFile");
        assert_eq!(KafkaSecurity::default().properties(), [("security.protocol".to_string(), "plaintext".to_string())]);
    }

    #[test]
    fn mistakes_name_the_field() {
        assert_eq!(security("{protocol: SASL_SSL}").check().unwrap_err().0, "saslMechanism");
        assert_eq!(security("{saslMechanism: PLAIN}").check().unwrap_err().0, "protocol");
        assert_eq!(security("{protocol: SSL, tls: {certificateFile: c.pem}}").check().unwrap_err().0, "tls");
        assert_eq!(security("{tls: {caFile: ca.pem}}").check().unwrap_err().0, "protocol");
        assert!(serde_yaml::from_str::<KafkaSecurity>("{protocol: TLS}").is_err(), "the schema's enum");
    }

    #[test]
    fn secrets_in_properties_are_found_with_where_they_belong() {
        let keys = ["client.id".to_string(), "SASL.PASSWORD".to_string()];
        let (key, instead) = secret_property(&keys).unwrap();
        assert_eq!(key, "SASL.PASSWORD");
        assert!(instead.contains("kafka.security.credentials"));
        assert!(secret_property(&["linger.ms".to_string()]).is_none());
    }
}
