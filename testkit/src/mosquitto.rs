//! Mosquitto 2.x on a loopback port.

use std::time::Duration;

use crate::process::{free_port, new_dir, port_open, Dir, Server};
use crate::{find_binary, StartError};

/// A Mosquitto broker; persistence is kept across [`Mosquitto::restart`].
pub struct Mosquitto {
    port: u16,
    server: Server,
    /// With TLS: the test CA of its certificate and of the clients' it accepts.
    tls: Option<crate::tls::TestCa>,
    _dir: Dir,
}

impl Mosquitto {
    /// An anonymous broker.
    pub fn start() -> Result<Self, StartError> {
        Self::launch(None, false)
    }

    /// A broker that accepts only `username` with `password`.
    pub fn start_with_password(username: &str, password: &str) -> Result<Self, StartError> {
        Self::launch(Some((username, password)), false)
    }

    /// A broker on TLS only (`mqtts://`), its certificate for
    /// `localhost`/127.0.0.1 signed by a CA made here ([`Mosquitto::ca`]),
    /// that requires a client certificate signed by that CA
    /// (`require_certificate`) and the login `username` with `password`.
    pub fn start_tls(username: &str, password: &str) -> Result<Self, StartError> {
        Self::launch(Some((username, password)), true)
    }

    /// The CA of a TLS broker.
    pub fn ca(&self) -> &crate::tls::TestCa {
        self.tls.as_ref().expect("a Mosquitto from start_tls")
    }

    fn launch(auth: Option<(&str, &str)>, tls: bool) -> Result<Self, StartError> {
        let program = find_binary("mosquitto")?;
        let dir = new_dir("mosquitto")?;
        let port = free_port();
        let (ca, tls_conf) = if tls {
            let ca = crate::tls::TestCa::new(&dir, "mosquitto")?;
            let server = ca.server("mosquitto")?;
            let conf = format!(
                "cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n",
                ca.certificate_file.display(),
                server.certificate_file.display(),
                server.key_file.display()
            );
            (Some(ca), conf)
        } else {
            (None, String::new())
        };
        let mut conf = format!(
            "listener {port} 127.0.0.1\n\
             {tls_conf}\
             persistence true\n\
             persistence_location {dir}/\n\
             autosave_interval 1\n\
             user root\n\
             max_inflight_messages 0\n\
             max_queued_messages 1000000\n\
             max_queued_bytes 0\n\
             log_dest stderr\n\
             log_type error\n\
             log_type warning\n",
            dir = dir.display()
        );
        match auth {
            None => conf.push_str("allow_anonymous true\n"),
            Some((user, pass)) => {
                let passwd = find_binary("mosquitto_passwd")?;
                let file = dir.join("passwd");
                let status = std::process::Command::new(passwd)
                    .arg("-b")
                    .arg("-c")
                    .arg(&file)
                    .arg(user)
                    .arg(pass)
                    .output()?;
                if !status.status.success() {
                    return Err(StartError::Failed(format!("mosquitto_passwd failed: {}", String::from_utf8_lossy(&status.stderr))));
                }
                conf.push_str(&format!("allow_anonymous false\npassword_file {}\n", file.display()));
            }
        }
        let conf_path = dir.join("mosquitto.conf");
        std::fs::write(&conf_path, conf)?;
        let server = Server::spawn("mosquitto", &program, &["-c".into(), conf_path.display().to_string()], dir.join("log"))?;
        let mut broker = Self { port, server, tls: ca, _dir: Dir(dir) };
        broker.wait_ready()?;
        Ok(broker)
    }

    fn wait_ready(&mut self) -> Result<(), StartError> {
        let port = self.port;
        self.server.wait_until(Duration::from_secs(20), || port_open(port))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `mqtt://127.0.0.1:PORT` (`mqtts://` with TLS).
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "mqtts" } else { "mqtt" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Stops the broker (it saves its persistent state first on SIGTERM;
    /// a kill keeps what autosave wrote).
    /// Stops it gracefully (SIGTERM), as a restart by an operator would.
    pub fn stop(&mut self) {
        self.server.stop();
    }

    /// Kills it at once, as a crash would.
    pub fn kill(&mut self) {
        self.server.kill();
    }

    /// Starts it again on the same port with the same state.
    pub fn restart(&mut self) -> Result<(), StartError> {
        self.server.stop();
        self.server.start()?;
        self.wait_ready()
    }
}
