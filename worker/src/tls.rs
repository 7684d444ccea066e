//! TLS for the worker's MQTT and InfluxDB connections: one rustls client
//! configuration built from a pipeline's [`TlsFiles`], trusting its CA (or
//! the system's CAs) and presenting its client certificate when given.
//! (Kafka's TLS is librdkafka's own, set from the same files.)
//!
//! The files are read each time a configuration is built, so a connection
//! made after a Secret was rotated uses the new certificates.

use std::sync::Arc;

use millrace_config::TlsFiles;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{what} {path}: {detail}")]
    File { what: &'static str, path: String, detail: String },
    #[error("no CA certificates found on this system (give a caFile): {0}")]
    NoSystemRoots(String),
    #[error("the client certificate {certificate} and key {key} do not make a TLS identity: {detail}")]
    Identity { certificate: String, key: String, detail: String },
}

/// A rustls client configuration for `files` (the system's CAs without
/// a CA file).
pub fn client_config(files: Option<&TlsFiles>) -> Result<ClientConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(roots(files.and_then(|f| f.ca_file.as_deref()))?);
    match files.and_then(TlsFiles::client_certificate) {
        Some((certificate, key)) => {
            let chain = certificates(certificate, "client certificate")?;
            let private = PrivateKeyDer::from_pem_file(key).map_err(|e| file_error("client key", key, e))?;
            builder.with_client_auth_cert(chain, private).map_err(|e| TlsError::Identity {
                certificate: certificate.into(),
                key: key.into(),
                detail: e.to_string(),
            })
        }
        None => Ok(builder.with_no_client_auth()),
    }
}

/// A configuration for plain connections that will never use it: built
/// without reading the system's CAs, which a host may not have.
pub fn unused_config() -> ClientConfig {
    ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth()
}

fn roots(ca_file: Option<&str>) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in certificates(path, "CA file")? {
                store.add(cert).map_err(|e| TlsError::File { what: "CA file", path: path.into(), detail: e.to_string() })?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let errors = found.errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
            let (added, _) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(TlsError::NoSystemRoots(if errors.is_empty() { "none installed".into() } else { errors }));
            }
        }
    }
    Ok(store)
}

/// Every certificate of a PEM file; a file without one is an error.
fn certificates(path: &str, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(what, path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(what, path, e))?;
    if certs.is_empty() {
        return Err(TlsError::File { what, path: path.into(), detail: "holds no PEM certificate".into() });
    }
    Ok(certs)
}

fn file_error(what: &'static str, path: &str, e: rustls::pki_types::pem::Error) -> TlsError {
    let detail = match e {
        rustls::pki_types::pem::Error::Io(io) => io.to_string(),
        rustls::pki_types::pem::Error::NoItemsFound => "holds no PEM item of that kind".into(),
        other => format!("not valid PEM: {other:?}"),
    };
    TlsError::File { what, path: path.into(), detail }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &std::path::Path, ca: &str) -> TlsFiles {
        let path = dir.join("ca.crt");
        std::fs::write(&path, ca).unwrap();
        TlsFiles { ca_file: Some(path.display().to_string()), ..Default::default() }
    }

    #[test]
    fn a_ca_file_that_is_missing_or_empty_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = TlsFiles { ca_file: Some("/nonexistent/ca.crt".into()), ..Default::default() };
        let e = client_config(Some(&missing)).unwrap_err().to_string();
        assert!(e.starts_with("CA file /nonexistent/ca.crt: "), "{e}");
        let e = client_config(Some(&files(dir.path(), "not a certificate\n"))).unwrap_err().to_string();
        assert!(e.contains("ca.crt: holds no PEM certificate"), "{e}");
    }

    #[test]
    fn a_client_certificate_needs_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let ca = millrace_testkit::tls::TestCa::new(dir.path(), "unit").unwrap();
        let client = ca.client("ingest").unwrap();
        let mut tls = TlsFiles { ca_file: Some(ca.certificate_file.display().to_string()), ..Default::default() };
        assert!(client_config(Some(&tls)).is_ok());
        tls.certificate_file = Some(client.certificate_file.display().to_string());
        tls.key_file = Some(dir.path().join("missing.key").display().to_string());
        let e = client_config(Some(&tls)).unwrap_err().to_string();
        assert!(e.starts_with("client key ") && e.contains("missing.key"), "{e}");
        tls.key_file = Some(client.key_file.display().to_string());
        assert!(client_config(Some(&tls)).is_ok());
    }
}
