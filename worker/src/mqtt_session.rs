//! Which persistent MQTT sessions the ingest stage owns.
//!
//! Each ingest instance has a persistent session named after the instance,
//! so that a restart resumes it: what arrived meanwhile, and what was in
//! flight, is delivered then. Mosquitto keeps a session that is offline in
//! the shared subscription and hands it its share of the messages, so a
//! session whose instance is gone for good (the stage was scaled down) must
//! be emptied and removed, or that share waits there for nobody. On
//! Kubernetes instances are the ordinals of a StatefulSet; the operator
//! tells each Pod the replicas and how many sessions the stage ever had,
//! and ordinal 0 drains the retired ones beside its own, once the Pods
//! scaled away have had time to stop.

use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet};

/// The instance name: the Pod name on Kubernetes.
pub fn instance() -> Option<String> {
    std::env::var("MILLRACE_INSTANCE").or_else(|_| std::env::var("HOSTNAME")).ok()
}

/// The client id of an instance's session.
pub fn client_id_of(prefix: &str, instance: &str) -> String {
    format!("{prefix}-ingest-{instance}")
}

/// This instance's client id: stable across restarts, so that the broker
/// keeps its persistent session (random without an instance name).
pub fn client_id(prefix: &str) -> String {
    let instance = instance().unwrap_or_else(|| format!("{:08x}", rand::random::<u32>()));
    client_id_of(prefix, &instance)
}

/// The client ids of the retired sessions this instance must drain: only
/// ordinal 0 (`NAME-0`) drains, the sessions of `NAME-replicas` up to
/// `NAME-(sessions-1)`. None with no replicas (a suspended stage keeps its
/// sessions: messages wait there for it).
pub fn retired_client_ids(prefix: &str, instance: &str, replicas: u32, sessions: u32) -> Vec<String> {
    let Some(base) = instance.strip_suffix("-0") else {
        return Vec::new();
    };
    if replicas == 0 {
        return Vec::new();
    }
    (replicas..sessions).map(|ordinal| client_id_of(prefix, &format!("{base}-{ordinal}"))).collect()
}

/// The retired sessions of this instance, from `MILLRACE_REPLICAS` and
/// `MILLRACE_MQTT_SESSIONS` (set by the operator).
pub fn retired_from_env(prefix: &str) -> Vec<String> {
    let number = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u32>().ok());
    match (instance(), number("MILLRACE_REPLICAS"), number("MILLRACE_MQTT_SESSIONS")) {
        (Some(instance), Some(replicas), Some(sessions)) => retired_client_ids(prefix, &instance, replicas, sessions),
        _ => Vec::new(),
    }
}

/// How long after its start ordinal 0 drains the retired sessions: longer
/// than a Pod's termination grace period (30 s unless changed), so that
/// the Pods scaled away have stopped. `MILLRACE_DRAIN_DELAY_SECONDS` sets it.
pub fn drain_delay() -> Duration {
    let seconds = std::env::var("MILLRACE_DRAIN_DELAY_SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(35);
    Duration::from_secs(seconds)
}

/// Sends DISCONNECT and waits until the broker closes the connection. The
/// broker reads one packet per turn: what was written just before (the
/// last acknowledgements) may still be unread, and closing first (a reset)
/// makes Mosquitto drop it.
pub async fn disconnect(client: &AsyncClient, events: &mut EventLoop) {
    let _ = client.try_disconnect();
    while events.poll().await.is_ok() {}
}

/// Removes an (emptied) session: connecting with a clean session discards
/// it and its subscriptions.
pub async fn forget(mut options: MqttOptions) -> Result<(), String> {
    options.set_clean_session(true);
    let (client, mut events) = AsyncClient::new(options, 10);
    let removed = async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => break,
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        disconnect(&client, &mut events).await;
        Ok(())
    };
    tokio::time::timeout(Duration::from_secs(10), removed).await.map_err(|_| "no answer within 10 s".to_string())?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinal_zero_drains_the_sessions_above_the_replicas() {
        assert_eq!(
            retired_client_ids("millrace", "line-1-ingest-0", 1, 3),
            ["millrace-ingest-line-1-ingest-1", "millrace-ingest-line-1-ingest-2"]
        );
        assert!(retired_client_ids("millrace", "line-1-ingest-1", 1, 3).is_empty(), "only ordinal 0");
        assert!(retired_client_ids("millrace", "line-1-ingest-0", 3, 3).is_empty(), "none retired");
        assert!(retired_client_ids("millrace", "line-1-ingest-0", 0, 3).is_empty(), "suspended: kept");
        assert!(retired_client_ids("millrace", "line-1-ingest-10", 1, 3).is_empty(), "10 is not 0");
    }
}
