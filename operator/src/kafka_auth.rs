//! How the operator's own Kafka admin client logs in to a secured Kafka:
//! the same `kafka.security` as the workers, with the login and the
//! certificates read from the pipeline's Secrets (the workers get them as
//! mounted files and environment variables, which the operator's Pod does
//! not have). Read by name, and only where the operator may read Secrets.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::Client;
use millrace_config::KafkaConfig;

use crate::children::tls_secrets::KAFKA_TLS_DIR;

/// Why the admin client has no login.
#[derive(Debug, thiserror::Error)]
pub enum KafkaAuthError {
    #[error("Secret {secret}: {detail}")]
    Unusable { secret: String, detail: String },
    #[error("the operator may not read Secret {secret} in namespace {namespace}, which holds the Kafka login or certificates: add {namespace} to the chart's rbac.secretNamespaces (or watch that namespace only)")]
    Forbidden { secret: String, namespace: String },
    #[error(transparent)]
    Kube(#[from] kube::Error),
}

/// The admin client's properties beyond `kafka.client_properties()`: the
/// SASL login, and the mounted TLS files as PEM text (pure).
pub fn admin_properties(kafka: &KafkaConfig, login: Option<(String, String)>, tls: Option<&BTreeMap<String, Vec<u8>>>) -> Vec<(String, String)> {
    let Some(security) = &kafka.security else { return Vec::new() };
    let mut p = Vec::new();
    if let Some((username, password)) = login.filter(|_| security.protocol.uses_sasl()) {
        p.push(("sasl.username".to_string(), username));
        p.push(("sasl.password".to_string(), password));
    }
    let files = security.tls.as_ref();
    // A file the workers find in the mounted Secret, as the PEM text.
    let mounted = |file: Option<&String>, property: &str| -> Option<(String, String)> {
        let in_secret = file.and_then(|f| f.strip_prefix(&format!("{KAFKA_TLS_DIR}/")))?;
        let data = tls?.get(in_secret)?;
        Some((property.to_string(), String::from_utf8_lossy(data).into_owned()))
    };
    if let Some(files) = files {
        p.extend(mounted(files.ca_file.as_ref(), "ssl.ca.pem"));
        p.extend(mounted(files.certificate_file.as_ref(), "ssl.certificate.pem"));
        p.extend(mounted(files.key_file.as_ref(), "ssl.key.pem"));
    }
    p
}

/// Reads the pipeline's Kafka Secrets and makes [`admin_properties`].
pub async fn read(kafka: &KafkaConfig, client: &Client, namespace: &str) -> Result<Vec<(String, String)>, KafkaAuthError> {
    let Some(security) = &kafka.security else { return Ok(Vec::new()) };
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let get = |name: String| {
        let api = api.clone();
        async move {
            match api.get_opt(&name).await {
                Ok(Some(secret)) => Ok(secret.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect::<BTreeMap<_, _>>()),
                Ok(None) => Err(KafkaAuthError::Unusable { secret: name, detail: "not found".into() }),
                Err(kube::Error::Api(s)) if s.code == 403 => Err(KafkaAuthError::Forbidden { secret: name, namespace: namespace.to_string() }),
                Err(e) => Err(e.into()),
            }
        }
    };
    let login = match &security.credentials {
        Some(c) => {
            let data = get(c.secret_name.clone()).await?;
            let field = |key: &str| {
                data.get(key).map(|v| String::from_utf8_lossy(v).into_owned()).ok_or_else(|| KafkaAuthError::Unusable {
                    secret: c.secret_name.clone(),
                    detail: format!("has no key {key:?}"),
                })
            };
            Some((field(&c.username_key)?, field(&c.password_key)?))
        }
        None => None,
    };
    let tls = match security.tls.as_ref().and_then(|t| t.secret_name.clone()) {
        Some(name) => Some(get(name).await?),
        None => None,
    };
    Ok(admin_properties(kafka, login, tls.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_login_and_the_mounted_files_become_admin_properties() {
        let kafka: KafkaConfig = serde_yaml::from_str(
            "{bootstrapServers: k, security: {protocol: SASL_SSL, saslMechanism: SCRAM-SHA-512, tls: {secretName: t, caFile: /etc/millrace/kafka-tls/ca.crt, certificateFile: /etc/millrace/kafka-tls/tls.crt, keyFile: /own/key.pem}}}",
        )
        .unwrap();
        let tls = BTreeMap::from([("ca.crt".to_string(), b"CA".to_vec()), ("tls.crt".to_string(), b"CERT".to_vec())]);
        let p = admin_properties(&kafka, Some(("u".into(), "pw".into())), Some(&tls));
        assert_eq!(
            p,
            [
                ("sasl.username".to_string(), "u".to_string()),
                ("sasl.password".to_string(), "pw".to_string()),
                ("ssl.ca.pem".to_string(), "CA".to_string()),
                ("ssl.certificate.pem".to_string(), "CERT".to_string()),
            ],
            "a file outside the mounted Secret is left to its location"
        );
        let plain: KafkaConfig = serde_yaml::from_str("{bootstrapServers: k}").unwrap();
        assert!(admin_properties(&plain, Some(("u".into(), "pw".into())), None).is_empty());
    }
}
