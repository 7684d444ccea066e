//! The InfluxDB 1.x HTTP API: create the database, write line-protocol
//! batches (retrying with backoff while the server is away), and query.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use millrace_config::{InfluxDbTarget, TlsFiles};

use crate::credentials::Credentials;
use crate::line_protocol::PRECISION;

#[derive(Debug, thiserror::Error)]
pub enum InfluxError {
    /// The server could not be reached or answered 5xx: worth retrying.
    #[error("InfluxDB at {url} is unavailable: {detail}")]
    Unavailable { url: String, detail: String },
    /// The server refused the request (4xx): retrying will not help.
    #[error("InfluxDB at {url} refused the request ({status}): {detail}")]
    Refused { url: String, status: u16, detail: String },
    /// The database is not there and this user may not create it (only an
    /// admin may `CREATE DATABASE`): waiting for someone who may.
    #[error(
        "InfluxDB at {url} has no database \"{database}\" and this user may not create it \
         (CREATE DATABASE needs admin privilege): create it as an admin, e.g. influx -execute 'CREATE DATABASE \"{database}\"'"
    )]
    MissingDatabase { url: String, database: String },
    /// The TLS settings cannot be used (a missing or bad file).
    #[error("InfluxDB at {url}: {detail}")]
    Tls { url: String, detail: String },
}

impl InfluxError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, InfluxError::Unavailable { .. })
    }

    /// Refused for a reason only the server's admin can end: a login it
    /// does not know (401), a user without rights (403), no database.
    pub fn needs_an_admin(&self) -> bool {
        matches!(self, InfluxError::MissingDatabase { .. } | InfluxError::Refused { status: 401 | 403, .. })
    }
}

#[derive(Clone)]
pub struct InfluxClient {
    /// Replaced when a connection fails over TLS: the next try reads the
    /// certificate files again (a rotated Secret, a fixed CA).
    http: Arc<Mutex<reqwest::Client>>,
    tls: Option<TlsFiles>,
    url: String,
    database: String,
    credentials: Option<Credentials>,
}

impl InfluxClient {
    /// A client for `target`; with `https://`, its TLS files are read here
    /// (an error names the file and the server).
    pub fn new(target: &InfluxDbTarget, credentials: Option<Credentials>) -> Result<Self, InfluxError> {
        let url = target.url.trim_end_matches('/').to_string();
        let http = http_client(&url, target.tls.as_ref())?;
        Ok(Self { http: Arc::new(Mutex::new(http)), tls: target.tls.clone(), url, database: target.database.clone(), credentials })
    }

    fn http(&self) -> reqwest::Client {
        self.http.lock().expect("never poisoned").clone()
    }

    /// After a failed connection: a client with the TLS files as they are
    /// now (for plain HTTP the same client again).
    fn reload_tls(&self) {
        match http_client(&self.url, self.tls.as_ref()) {
            Ok(http) => *self.http.lock().expect("never poisoned") = http,
            Err(e) => tracing::warn!(error = %e, "cannot read the InfluxDB TLS files; trying the old ones"),
        }
    }

    pub fn database(&self) -> &str {
        &self.database
    }

    fn auth(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.credentials {
            Some(c) => req.basic_auth(&c.username, Some(&c.password)),
            None => req,
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<String, InfluxError> {
        let response = self.auth(req).send().await.map_err(|e| {
            if e.is_connect() {
                self.reload_tls();
            }
            InfluxError::Unavailable { url: self.url.clone(), detail: without_url(&e) }
        })?;
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        if status.is_success() {
            Ok(body)
        } else if status.is_server_error() {
            Err(InfluxError::Unavailable { url: self.url.clone(), detail: format!("{status}: {}", body.trim()) })
        } else {
            Err(InfluxError::Refused { url: self.url.clone(), status: status.as_u16(), detail: body.trim().to_string() })
        }
    }

    /// `CREATE DATABASE` is idempotent in InfluxDB 1.x. A user that may
    /// only write is refused it (403); then the database must exist already,
    /// which an empty write tells (204 when it does, 404 when not).
    pub async fn ensure_database(&self) -> Result<(), InfluxError> {
        let q = format!("CREATE DATABASE \"{}\"", self.database.replace('"', "\\\""));
        match self.send(self.http().post(format!("{}/query", self.url)).form(&[("q", q.as_str())])).await {
            Ok(_) => Ok(()),
            Err(InfluxError::Refused { status: 403, .. }) => match self.write(String::new()).await {
                Err(InfluxError::Refused { status: 404, .. }) => {
                    Err(InfluxError::MissingDatabase { url: self.url.clone(), database: self.database.clone() })
                }
                other => other,
            },
            Err(e) => Err(e),
        }
    }

    /// Writes one batch of line protocol (nanosecond timestamps).
    pub async fn write(&self, body: String) -> Result<(), InfluxError> {
        let req = self
            .http()
            .post(format!("{}/write", self.url))
            .query(&[("db", self.database.as_str()), ("precision", PRECISION)])
            .body(body);
        self.send(req).await.map(drop)
    }

    /// Writes a batch, retrying unavailability with exponential backoff (up
    /// to `max_backoff` between tries) until it succeeds, the server refuses
    /// it, or `give_up` says so. `on_retry` is told of every failed try.
    pub async fn write_with_retry(
        &self,
        body: String,
        max_backoff: Duration,
        mut on_retry: impl FnMut(&InfluxError),
        give_up: impl Fn() -> bool,
    ) -> Result<(), InfluxError> {
        let mut backoff = Duration::from_millis(100);
        let mut database_checked = false;
        loop {
            match self.write(body.clone()).await {
                Ok(()) => return Ok(()),
                // A database dropped or never created: create it and go on;
                // where only an admin may create it, wait for them.
                Err(InfluxError::Refused { status: 404, .. }) if !give_up() => {
                    match self.ensure_database().await {
                        Ok(()) if !database_checked => {
                            database_checked = true;
                            continue;
                        }
                        Ok(()) => {}
                        Err(e) => on_retry(&e),
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(max_backoff);
                }
                Err(e) if e.is_retryable() && !give_up() => {
                    on_retry(&e);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(max_backoff);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Runs an InfluxQL query and returns the JSON answer.
    pub async fn query(&self, q: &str) -> Result<serde_json::Value, InfluxError> {
        let req = self.http().get(format!("{}/query", self.url)).query(&[("db", self.database.as_str()), ("q", q)]);
        let body = self.send(req).await?;
        serde_json::from_str(&body).map_err(|e| InfluxError::Unavailable { url: self.url.clone(), detail: format!("bad JSON answer: {e}") })
    }
}

/// A client for `url`: with `https://`, trusting `tls`'s CA (the system's
/// without one) and presenting its client certificate.
fn http_client(url: &str, tls: Option<&TlsFiles>) -> Result<reqwest::Client, InfluxError> {
    let config = if url.starts_with("https://") {
        crate::tls::client_config(tls).map_err(|e| InfluxError::Tls { url: url.into(), detail: e.to_string() })?
    } else {
        crate::tls::unused_config()
    };
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .tls_backend_preconfigured(config)
        .build()
        .map_err(|e| InfluxError::Tls { url: url.into(), detail: e.to_string() })
}

/// reqwest errors can carry the URL with credentials in it; keep the kind.
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_connect() {
        "cannot connect"
    } else if e.is_timeout() {
        "timed out"
    } else if e.is_body() || e.is_decode() {
        "bad response"
    } else {
        "request failed"
    };
    match std::error::Error::source(e) {
        Some(source) => format!("{kind}: {source}"),
        None => kind.to_string(),
    }
}
