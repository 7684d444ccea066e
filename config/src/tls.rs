//! TLS settings shared by every connection a pipeline makes (Kafka, MQTT,
//! InfluxDB): which CA to trust and, for servers that require one, a client
//! certificate. Only file names are here; the files themselves come from a
//! Kubernetes Secret mounted into the workers.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// PEM files: a CA and, for mutual TLS, a client certificate and its key.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsFiles {
    /// On Kubernetes: a Secret in the layout cert-manager writes (`ca.crt`,
    /// and `tls.crt` with `tls.key` for a client certificate), mounted into
    /// the workers at `/etc/millrace/<kafka|mqtt|influxdb>-tls`; `caFile`
    /// is then that directory's `ca.crt` unless given, and a client
    /// certificate is `certificateFile: <dir>/tls.crt` with
    /// `keyFile: <dir>/tls.key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// The CA certificates to trust (PEM). Without it: the system's CAs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// The client certificate (PEM), for servers that require one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_file: Option<String>,
    /// The client certificate's private key (PEM, unencrypted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<String>,
}

impl TlsFiles {
    /// What the types cannot say.
    pub fn check(&self) -> Result<(), String> {
        if self.certificate_file.is_some() != self.key_file.is_some() {
            return Err("a client certificate needs both certificateFile and keyFile".into());
        }
        Ok(())
    }

    /// The client certificate and its key, when both are given.
    pub fn client_certificate(&self) -> Option<(&str, &str)> {
        Some((self.certificate_file.as_deref()?, self.key_file.as_deref()?))
    }
}
