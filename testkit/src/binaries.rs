//! Finding the servers' binaries.

use std::path::PathBuf;

#[derive(Debug)]
pub enum StartError {
    /// The server's binary is not installed.
    Missing { tool: String, hint: String },
    /// It is installed but did not come up; the message has its log tail.
    Failed(String),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Missing { tool, hint } => write!(f, "{tool} is not installed ({hint})"),
            StartError::Failed(msg) => f.write_str(msg),
        }
    }
}

impl std::error::Error for StartError {}

impl From<anyhow::Error> for StartError {
    fn from(e: anyhow::Error) -> Self {
        StartError::Failed(format!("{e:#}"))
    }
}

impl From<std::io::Error> for StartError {
    fn from(e: std::io::Error) -> Self {
        StartError::Failed(e.to_string())
    }
}

/// Locates `name`. `KUBEBUILDER_ASSETS` is consulted for the envtest pair
/// (etcd, kube-apiserver) only, as controller-runtime does.
pub fn find_binary(name: &str) -> Result<PathBuf, StartError> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if matches!(name, "etcd" | "kube-apiserver") {
        if let Some(assets) = std::env::var_os("KUBEBUILDER_ASSETS") {
            dirs.push(assets.into());
        }
    }
    let cache = std::env::var_os("MILLRACE_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/millrace")));
    if let Some(cache) = cache {
        dirs.push(cache.join("bin"));
    }
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    dirs.push("/usr/sbin".into());
    for dir in dirs {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(StartError::Missing { tool: name.to_string(), hint: "run scripts/deps.sh".to_string() })
}
