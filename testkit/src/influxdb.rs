//! InfluxDB 1.x on a loopback port.

use std::time::Duration;

use crate::process::{free_port, new_dir, Dir, Server};
use crate::{find_binary, StartError};

/// An InfluxDB 1.x server; its data is kept across [`InfluxDb::restart`].
pub struct InfluxDb {
    port: u16,
    server: Server,
    /// With HTTPS: the test CA its certificate is signed by, and a client
    /// that trusts it.
    tls: Option<crate::tls::TestCa>,
    http: ureq::Agent,
    /// With authentication on: the admin's name and password, which
    /// [`InfluxDb::query`] and [`InfluxDb::write`] use.
    admin: Option<(String, String)>,
    _dir: Dir,
}

/// The admin that [`InfluxDb::start_with_auth`] creates.
pub const INFLUX_ADMIN: &str = "admin";

impl InfluxDb {
    pub fn start() -> Result<Self, StartError> {
        Self::launch(false, false)
    }

    /// With `auth-enabled`: an admin user is created first (InfluxDB allows
    /// that one statement without credentials); everything else needs a login.
    pub fn start_with_auth() -> Result<Self, StartError> {
        Self::launch(true, false)
    }

    /// With `auth-enabled` and HTTPS only (`https-enabled`), its certificate
    /// for `localhost`/127.0.0.1 signed by a CA made here ([`InfluxDb::ca`]).
    pub fn start_https_with_auth() -> Result<Self, StartError> {
        Self::launch(true, true)
    }

    /// The CA of an HTTPS server.
    pub fn ca(&self) -> &crate::tls::TestCa {
        self.tls.as_ref().expect("an InfluxDb from start_https_with_auth")
    }

    fn launch(auth: bool, https: bool) -> Result<Self, StartError> {
        let program = find_binary("influxd")?;
        let dir = new_dir("influxdb")?;
        let (port, rpc_port) = (free_port(), free_port());
        let (tls, http, https_conf) = if https {
            let ca = crate::tls::TestCa::new(&dir, "influxdb")?;
            let server = ca.server("influxdb")?;
            let conf = format!(
                "  https-enabled = true\n  https-certificate = \"{}\"\n  https-private-key = \"{}\"\n",
                server.certificate_file.display(),
                server.key_file.display()
            );
            let root = ureq::tls::Certificate::from_pem(ca.certificate.as_bytes())
                .map_err(|e| StartError::Failed(format!("influxd: the test CA: {e}")))?;
            let tls_config = ureq::tls::TlsConfig::builder().root_certs(ureq::tls::RootCerts::new_with_certs(&[root])).build();
            let agent: ureq::Agent = ureq::Agent::config_builder().tls_config(tls_config).build().into();
            (Some(ca), agent, conf)
        } else {
            (None, ureq::Agent::new_with_defaults(), String::new())
        };
        let d = dir.display();
        // Only what differs from influxd's defaults: private dirs and ports,
        // no phoning home, no internal monitoring database, quiet logs.
        let conf = format!(
            "reporting-enabled = false\n\
             bind-address = \"127.0.0.1:{rpc_port}\"\n\
             [meta]\n  dir = \"{d}/meta\"\n  logging-enabled = false\n\
             [data]\n  dir = \"{d}/data\"\n  wal-dir = \"{d}/wal\"\n  query-log-enabled = false\n\
             [monitor]\n  store-enabled = false\n\
             [subscriber]\n  enabled = false\n\
             [continuous_queries]\n  enabled = false\n\
             [http]\n  bind-address = \"127.0.0.1:{port}\"\n  log-enabled = false\n  auth-enabled = {auth}\n{https_conf}\
             [logging]\n  level = \"warn\"\n"
        );
        let conf_path = dir.join("influxdb.conf");
        std::fs::write(&conf_path, conf)?;
        let server = Server::spawn("influxd", &program, &["-config".into(), conf_path.display().to_string()], dir.join("log"))?;
        let mut db = Self { port, server, tls, http, admin: None, _dir: Dir(dir) };
        db.wait_ready()?;
        if auth {
            let password = format!("admin-{}", rand::random::<u64>());
            db.query("", &format!("CREATE USER {INFLUX_ADMIN} WITH PASSWORD '{password}' WITH ALL PRIVILEGES"))
                .map_err(|e| StartError::Failed(format!("influxd: cannot create the admin user: {e}")))?;
            db.admin = Some((INFLUX_ADMIN.to_string(), password));
        }
        Ok(db)
    }

    /// The admin's password, with authentication on.
    pub fn admin_password(&self) -> Option<&str> {
        self.admin.as_ref().map(|(_, p)| p.as_str())
    }

    /// Credentials as InfluxDB's `u` and `p` parameters (none without auth).
    fn login(&self) -> Vec<(&str, &str)> {
        self.admin.as_ref().map(|(u, p)| vec![("u", u.as_str()), ("p", p.as_str())]).unwrap_or_default()
    }

    fn wait_ready(&mut self) -> Result<(), StartError> {
        let (url, http) = (format!("{}/ping", self.url()), self.http.clone());
        self.server.wait_until(Duration::from_secs(30), || {
            matches!(http.get(&url).call(), Ok(r) if r.status().as_u16() == 204)
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT` (`https://` with HTTPS on).
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Runs InfluxQL against `db` and returns the JSON answer.
    pub fn query(&self, db: &str, q: &str) -> anyhow::Result<serde_json::Value> {
        // InfluxDB reads `u` and `p` from the URL only, not from a form body.
        let mut request = self.http.post(&format!("{}/query", self.url()));
        for (k, v) in self.login() {
            request = request.query(k, v);
        }
        let mut response = request.send_form([("db", db), ("q", q)])?;
        Ok(response.body_mut().read_json()?)
    }

    /// Writes line protocol (nanosecond precision) into `db`.
    pub fn write(&self, db: &str, lines: &str) -> anyhow::Result<()> {
        let mut request = self.http.post(&format!("{}/write", self.url())).query("db", db).query("precision", "ns");
        for (k, v) in self.login() {
            request = request.query(k, v);
        }
        request.send(lines)?;
        Ok(())
    }

    /// The single number a `SELECT count(..)` (or similar) query returns;
    /// 0 when there are no rows.
    pub fn query_number(&self, db: &str, q: &str) -> anyhow::Result<f64> {
        let answer = self.query(db, q)?;
        if let Some(err) = answer.pointer("/results/0/error") {
            anyhow::bail!("query {q:?} failed: {err}");
        }
        Ok(answer.pointer("/results/0/series/0/values/0/1").and_then(|v| v.as_f64()).unwrap_or(0.0))
    }

    /// Stops it gracefully (SIGTERM), as a restart by an operator would.
    pub fn stop(&mut self) {
        self.server.stop();
    }

    /// Kills it at once, as a crash would.
    pub fn kill(&mut self) {
        self.server.kill();
    }

    /// Starts it again on the same port with the same data.
    pub fn restart(&mut self) -> Result<(), StartError> {
        self.server.stop();
        self.server.start()?;
        self.wait_ready()
    }
}
