//! etcd plus kube-apiserver on loopback: a real API server without kubelet
//! or controllers (the shape of controller-runtime's envtest). One per test
//! binary; tests keep apart by namespace. The binaries are kube-apiserver
//! 1.33.13 and etcd 3.5.35 from `scripts/harness/k8s-build.sh` (the same
//! Kubernetes version as `k8s-openapi`'s `v1_33` feature), or those in
//! `KUBEBUILDER_ASSETS`.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::process::{free_port, new_dir, on_keeper_thread, port_open, Server};
use crate::{find_binary, StartError};

async fn config_from(kubeconfig: &Path) -> anyhow::Result<kube::Config> {
    let kc = Kubeconfig::read_from(kubeconfig)?;
    Ok(kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?)
}

/// The method and path of each request a recording client sent.
#[derive(Clone, Default)]
pub struct RequestLog(std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>);

impl RequestLog {
    /// Everything sent so far, and forgets it.
    pub fn take(&self) -> Vec<(String, String)> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }

    /// What was sent so far other than reads (GET, and watches which are GETs).
    pub fn writes(&self) -> Vec<(String, String)> {
        self.0.lock().unwrap().iter().filter(|(method, _)| method != "GET").cloned().collect()
    }
}

/// A running API server with an admin token.
pub struct KubeApi {
    port: u16,
    token: String,
    kubeconfig: PathBuf,
    dir: PathBuf,
    _etcd: Server,
    _apiserver: Server,
}

enum SharedError {
    Missing(String, String),
    Failed(String),
}

impl KubeApi {
    /// The API server of this test binary, started on first use. It stops
    /// when the test process exits.
    pub fn shared() -> Result<&'static KubeApi, StartError> {
        static SHARED: OnceLock<Result<KubeApi, SharedError>> = OnceLock::new();
        // Started on the keeper thread: its processes must outlive the
        // test thread that happened to ask first.
        let result = SHARED.get_or_init(|| {
            on_keeper_thread(|| {
                KubeApi::launch().map_err(|e| match e {
                    StartError::Missing { tool, hint } => SharedError::Missing(tool, hint),
                    StartError::Failed(m) => SharedError::Failed(m),
                })
            })
        });
        match result {
            Ok(api) => Ok(api),
            Err(SharedError::Missing(tool, hint)) => Err(StartError::Missing { tool: tool.clone(), hint: hint.clone() }),
            Err(SharedError::Failed(m)) => Err(StartError::Failed(m.clone())),
        }
    }

    fn launch() -> Result<KubeApi, StartError> {
        let etcd_bin = find_binary("etcd")?;
        let apiserver_bin = find_binary("kube-apiserver")?;
        let dir = new_dir("kube")?;

        let (etcd_port, peer_port) = (free_port(), free_port());
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let etcd_args: Vec<String> = [
            "--data-dir", &dir.join("etcd").display().to_string(),
            "--listen-client-urls", &etcd_url,
            "--advertise-client-urls", &etcd_url,
            "--listen-peer-urls", &peer_url,
            "--initial-advertise-peer-urls", &peer_url,
            "--initial-cluster", &format!("default={peer_url}"),
            "--log-level", "error",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut etcd = Server::spawn("etcd", &etcd_bin, &etcd_args, dir.join("etcd.log"))?;
        let health = format!("{etcd_url}/health");
        etcd.wait_until(Duration::from_secs(30), || port_open(etcd_port) && ureq::get(&health).call().is_ok())?;

        // Service-account tokens need a signing key; ECDSA P-256 is accepted.
        let key = rcgen::KeyPair::generate().map_err(|e| StartError::Failed(format!("cannot generate a key: {e}")))?;
        std::fs::write(dir.join("sa.key"), key.serialize_pem())?;
        std::fs::write(dir.join("sa.pub"), key.public_key_pem())?;
        let token = format!("{:032x}", rand::random::<u128>());
        std::fs::write(dir.join("tokens.csv"), format!("{token},admin,admin,\"system:masters\"\n"))?;

        let port = free_port();
        let p = |name: &str| dir.join(name).display().to_string();
        let apiserver_args: Vec<String> = vec![
            format!("--etcd-servers={etcd_url}"),
            format!("--cert-dir={}", p("certs")),
            format!("--secure-port={port}"),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            "--service-account-issuer=https://kubernetes.default.svc".into(),
            format!("--service-account-key-file={}", p("sa.pub")),
            format!("--service-account-signing-key-file={}", p("sa.key")),
            format!("--token-auth-file={}", p("tokens.csv")),
            "--authorization-mode=RBAC".into(),
            "--service-cluster-ip-range=10.96.0.0/16".into(),
            "--allow-privileged=true".into(),
            "--v=0".into(),
        ];
        let mut apiserver = Server::spawn("kube-apiserver", &apiserver_bin, &apiserver_args, dir.join("apiserver.log"))?;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .tls_config(ureq::tls::TlsConfig::builder().disable_verification(true).build())
            .timeout_global(Some(Duration::from_secs(2)))
            .build()
            .into();
        let readyz = format!("https://127.0.0.1:{port}/readyz");
        let auth = format!("Bearer {token}");
        apiserver.wait_until(Duration::from_secs(90), || {
            port_open(port) && matches!(agent.get(&readyz).header("Authorization", &auth).call(), Ok(r) if r.status().as_u16() == 200)
        })?;

        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(&kubeconfig, kubeconfig_yaml(port, "admin", &token))?;
        Ok(KubeApi { port, token, kubeconfig, dir, _etcd: etcd, _apiserver: apiserver })
    }

    /// `https://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// A kubeconfig file for kubectl and helm, with the admin token.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// The admin bearer token (member of `system:masters`).
    pub fn admin_token(&self) -> &str {
        &self.token
    }

    /// Writes a kubeconfig that authenticates with `token` (e.g. a
    /// ServiceAccount's) and returns its path.
    pub fn kubeconfig_for_token(&self, name: &str, token: &str) -> std::io::Result<PathBuf> {
        let path = self.dir.join(format!("kubeconfig-{name}"));
        std::fs::write(&path, kubeconfig_yaml(self.port, name, token))?;
        Ok(path)
    }

    /// An admin client for the calling test's runtime.
    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        Self::client_from(&self.kubeconfig).await
    }

    /// A client from any kubeconfig file (e.g. one from [`Self::kubeconfig_for_token`]).
    pub async fn client_from(kubeconfig: &Path) -> anyhow::Result<kube::Client> {
        Ok(kube::Client::try_from(config_from(kubeconfig).await?)?)
    }

    /// An admin client that records every request it sends, for tests of
    /// what a controller writes (and does not).
    pub async fn recording_client(&self) -> anyhow::Result<(kube::Client, RequestLog)> {
        let config = config_from(&self.kubeconfig).await?;
        let log = RequestLog::default();
        let sink = log.clone();
        let layer = tower::util::MapRequestLayer::new(move |request: http::Request<kube::client::Body>| {
            sink.0.lock().unwrap().push((request.method().to_string(), request.uri().path().to_string()));
            request
        });
        let client = kube::client::ClientBuilder::try_from(config)?.with_layer(&layer).build();
        Ok((client, log))
    }

    /// Creates a namespace and returns its name.
    pub async fn create_namespace(&self, name: &str) -> anyhow::Result<String> {
        let api: Api<Namespace> = Api::all(self.client().await?);
        let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))?;
        api.create(&PostParams::default(), &ns).await?;
        Ok(name.to_string())
    }

    /// A token of the ServiceAccount `namespace/name` (TokenRequest API),
    /// valid for an hour.
    pub async fn service_account_token(&self, namespace: &str, name: &str) -> anyhow::Result<String> {
        use k8s_openapi::api::authentication::v1::TokenRequest;
        use k8s_openapi::api::core::v1::ServiceAccount;
        let api: Api<ServiceAccount> = Api::namespaced(self.client().await?, namespace);
        let request: TokenRequest = serde_json::from_value(serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"audiences": ["https://kubernetes.default.svc"], "expirationSeconds": 3600}
        }))?;
        let answer: TokenRequest = api.create_token_request(name, &PostParams::default(), &request).await?;
        answer.status.map(|s| s.token).ok_or_else(|| anyhow::anyhow!("the API server returned no token for {namespace}/{name}"))
    }
}

fn kubeconfig_yaml(port: u16, user: &str, token: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: https://127.0.0.1:{port}\n    insecure-skip-tls-verify: true\n\
         users:\n- name: {user}\n  user:\n    token: {token}\n\
         contexts:\n- name: test\n  context:\n    cluster: test\n    user: {user}\n    namespace: default\n\
         current-context: test\n"
    )
}
