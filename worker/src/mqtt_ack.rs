//! Acknowledging MQTT messages once their records are safe downstream.
//!
//! rumqttc's own path for acknowledgements (`AsyncClient::ack`) goes through
//! a bounded request channel that its event loop drains ONE request per
//! turn, while one network read hands it up to ten incoming messages. Under
//! a flood acknowledgements fall behind without bound: the broker keeps the
//! messages in flight (Mosquitto 2.0.11 does not hold its send window for a
//! slow acknowledger either) and slows down. So the ingest stage writes its
//! acknowledgements itself, in batches, straight into the event loop's
//! connection between two polls: one flush for the batch, never dropped.
//!
//! An acknowledgement belongs to the connection its message arrived on.
//! After a reconnect the broker redelivers every unacknowledged message
//! (persistent session) and may reuse a packet id for another message once
//! the old one is acknowledged, so an acknowledgement from an earlier
//! connection is skipped: its message comes again and is acknowledged then.

use rumqttc::{EventLoop, PubAck, PubRec, Publish, QoS, Request};

/// Which connection a message arrived on: bumped on every CONNACK.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Connection(u64);

impl Connection {
    pub fn next(self) -> Self {
        Connection(self.0 + 1)
    }
}

/// What acknowledges a message of this quality of service: PUBACK for
/// QoS 1, PUBREC for QoS 2 (rumqttc answers the broker's PUBREL itself),
/// nothing for QoS 0.
pub fn ack_request(publish: &Publish) -> Option<Request> {
    match publish.qos {
        QoS::AtMostOnce => None,
        QoS::AtLeastOnce => Some(Request::PubAck(PubAck::new(publish.pkid))),
        QoS::ExactlyOnce => Some(Request::PubRec(PubRec::new(publish.pkid))),
    }
}

/// Acknowledgements ready to go, in the order their messages arrived.
#[derive(Debug, Default)]
pub struct AckBatch {
    requests: Vec<Request>,
    /// Ready on an earlier connection: the broker redelivers these.
    pub skipped_stale: u64,
}

impl AckBatch {
    /// Adds the acknowledgement of `publish`, which arrived on `arrived_on`,
    /// if it still belongs to the `current` connection.
    pub fn push(&mut self, publish: &Publish, arrived_on: Connection, current: Connection) {
        if arrived_on != current {
            if publish.qos != QoS::AtMostOnce {
                self.skipped_stale += 1;
            }
            return;
        }
        if let Some(request) = ack_request(publish) {
            self.requests.push(request);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.requests.is_empty()
    }

    pub fn len(&self) -> usize {
        self.requests.len()
    }

    /// Writes the batch to the event loop's connection with one flush.
    /// With no connection (it just dropped) the batch is discarded: the
    /// broker redelivers those messages on the next one. On a write error the
    /// connection is closed, so that the next poll reconnects.
    pub async fn write(&mut self, events: &mut EventLoop) -> Result<usize, rumqttc::StateError> {
        let requests = std::mem::take(&mut self.requests);
        let count = requests.len();
        let state = &mut events.state;
        let Some(network) = events.network.as_mut() else {
            self.skipped_stale += count as u64;
            return Ok(0);
        };
        let result = async {
            for request in requests {
                if let Some(packet) = state.handle_outgoing_packet(request)? {
                    network.write(packet).await?;
                }
            }
            network.flush().await
        }
        .await;
        match result {
            Ok(()) => Ok(count),
            Err(e) => {
                events.clean();
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(qos: QoS, pkid: u16) -> Publish {
        let mut p = Publish::new("m/1", qos, "{}");
        p.pkid = pkid;
        p
    }

    #[test]
    fn each_quality_of_service_has_its_acknowledgement() {
        assert_eq!(ack_request(&publish(QoS::AtMostOnce, 0)), None);
        assert_eq!(ack_request(&publish(QoS::AtLeastOnce, 7)), Some(Request::PubAck(PubAck::new(7))));
        assert_eq!(ack_request(&publish(QoS::ExactlyOnce, 8)), Some(Request::PubRec(PubRec::new(8))));
    }

    #[test]
    fn acknowledgements_of_an_earlier_connection_are_skipped() {
        let first = Connection::default();
        let second = first.next();
        let mut batch = AckBatch::default();
        batch.push(&publish(QoS::AtLeastOnce, 1), first, second);
        batch.push(&publish(QoS::AtMostOnce, 0), first, second);
        batch.push(&publish(QoS::AtLeastOnce, 2), second, second);
        batch.push(&publish(QoS::AtMostOnce, 0), second, second);
        assert_eq!(batch.len(), 1);
        assert_eq!(batch.skipped_stale, 1);
    }
}
