//! Certificates for tests against TLS servers, made here with rcgen: a CA,
//! a server certificate for `localhost`/`127.0.0.1` and client
//! certificates it signs, written as PEM files a test can hand to a server
//! and a client.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};

use crate::StartError;

/// A certificate and its key, as PEM text and as files.
#[derive(Clone, Debug)]
pub struct Pem {
    pub certificate: String,
    pub key: String,
    pub certificate_file: PathBuf,
    pub key_file: PathBuf,
}

/// A test CA that signs server and client certificates.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate (PEM) and its file.
    pub certificate: String,
    pub certificate_file: PathBuf,
    dir: PathBuf,
}

fn failed(e: impl std::fmt::Display) -> StartError {
    StartError::Failed(format!("cannot make a test certificate: {e}"))
}

impl TestCa {
    /// A new CA named `name`, its files in `dir`.
    pub fn new(dir: &Path, name: &str) -> Result<Self, StartError> {
        let key = KeyPair::generate().map_err(failed)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(failed)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // Not the name of a certificate it signs: one whose issuer equals
        // its subject reads as self-signed.
        params.distinguished_name.push(DnType::CommonName, format!("{name} test CA"));
        let certificate = params.self_signed(&key).map_err(failed)?.pem();
        let certificate_file = dir.join(format!("{name}-ca.crt"));
        std::fs::write(&certificate_file, &certificate)?;
        Ok(Self { issuer: Issuer::new(params, key), certificate, certificate_file, dir: dir.to_path_buf() })
    }

    /// A server certificate for `localhost` and 127.0.0.1.
    pub fn server(&self, name: &str) -> Result<Pem, StartError> {
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).map_err(failed)?;
        params.subject_alt_names.push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        params.distinguished_name.push(DnType::CommonName, name);
        self.issue(name, params)
    }

    /// A client certificate whose subject is `CN=<name>`.
    pub fn client(&self, name: &str) -> Result<Pem, StartError> {
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(failed)?;
        params.distinguished_name.push(DnType::CommonName, name);
        self.issue(name, params)
    }

    fn issue(&self, name: &str, params: CertificateParams) -> Result<Pem, StartError> {
        let key = KeyPair::generate().map_err(failed)?;
        let certificate = params.signed_by(&key, &self.issuer).map_err(failed)?.pem();
        let (certificate_file, key_file) = (self.dir.join(format!("{name}.crt")), self.dir.join(format!("{name}.key")));
        std::fs::write(&certificate_file, &certificate)?;
        std::fs::write(&key_file, key.serialize_pem())?;
        Ok(Pem { certificate, key: key.serialize_pem(), certificate_file, key_file })
    }
}
