//! The Kafka-protocol broker (noida-db) on a loopback port.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

use crate::process::{free_port, new_dir, port_open, Dir, Server};
use crate::{find_binary, StartError};

/// A single-node broker with a fresh data dir (noida-db slows down as its
/// state file grows, so every instance starts empty).
pub struct KafkaBroker {
    port: u16,
    server: Server,
    _dir: Dir,
}

impl KafkaBroker {
    pub fn start() -> Result<Self, StartError> {
        let program = find_binary("noida-db")?;
        let dir = new_dir("kafka")?;
        let port = free_port();
        let data = dir.join("data");
        std::fs::create_dir_all(&data)?;
        let args = [
            "start".to_string(),
            "--only".into(),
            "kafka".into(),
            "--kafka-port".into(),
            port.to_string(),
            "--data-dir".into(),
            data.display().to_string(),
        ];
        let server = Server::spawn("noida-db", &program, &args, dir.join("log"))?;
        let mut broker = Self { port, server, _dir: Dir(dir) };
        broker.wait_ready()?;
        Ok(broker)
    }

    fn wait_ready(&mut self) -> Result<(), StartError> {
        let port = self.port;
        let servers = self.bootstrap_servers();
        self.server.wait_until(Duration::from_secs(30), || {
            port_open(port)
                && ClientConfig::new()
                    .set("bootstrap.servers", &servers)
                    .create::<BaseConsumer>()
                    .and_then(|c| c.fetch_metadata(None, Duration::from_secs(2)))
                    .is_ok()
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`
    pub fn bootstrap_servers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Creates a topic and waits until the broker reports it.
    pub fn create_topic(&self, name: &str, partitions: i32) -> anyhow::Result<()> {
        let admin: AdminClient<DefaultClientContext> =
            ClientConfig::new().set("bootstrap.servers", self.bootstrap_servers()).create()?;
        let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        // Admin futures complete on librdkafka's thread: no runtime needed.
        let runtime = futures::executor::block_on(admin.create_topics([&topic], &AdminOptions::new()));
        for result in runtime? {
            if let Err((topic, code)) = result {
                anyhow::bail!("cannot create topic {topic}: {code}");
            }
        }
        Ok(())
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
