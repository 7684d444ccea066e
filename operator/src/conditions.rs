//! Status conditions: one per part of the pipeline and `Ready` over them,
//! each with a CamelCase reason and a message a person can act on.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

pub const READY: &str = "Ready";
pub const SPEC_VALID: &str = "SpecValid";
pub const TOPICS_READY: &str = "TopicsReady";
pub const WORKERS_READY: &str = "WorkersReady";
pub const BROKER_READY: &str = "BrokerReady";
pub const GRAFANA_READY: &str = "GrafanaReady";

/// A condition's new value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observation {
    pub kind: &'static str,
    pub ok: bool,
    pub reason: String,
    pub message: String,
}

impl Observation {
    pub fn new(kind: &'static str, ok: bool, reason: &str, message: impl Into<String>) -> Self {
        Self { kind, ok, reason: reason.to_string(), message: message.into() }
    }
}

/// The conditions after `observations`, keeping each one's last transition
/// time while its status stays the same; `Ready` is true when all are.
pub fn merge(previous: &[Condition], observations: &[Observation], generation: Option<i64>, now: Time) -> Vec<Condition> {
    let not_ready: Vec<&Observation> = observations.iter().filter(|o| !o.ok).collect();
    let ready = match not_ready.first() {
        None => Observation::new(READY, true, "PipelineReady", "every part of the pipeline is ready"),
        Some(first) => Observation::new(
            READY,
            false,
            &first.reason,
            not_ready.iter().map(|o| format!("{}: {}", o.kind, o.message)).collect::<Vec<_>>().join("; "),
        ),
    };
    std::iter::once(&ready)
        .chain(observations)
        .map(|o| {
            let status = if o.ok { "True" } else { "False" };
            let last_transition_time = previous
                .iter()
                .find(|c| c.type_ == o.kind && c.status == status)
                .map(|c| c.last_transition_time.clone())
                .unwrap_or_else(|| now.clone());
            Condition {
                type_: o.kind.to_string(),
                status: status.to_string(),
                reason: o.reason.clone(),
                message: o.message.clone(),
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time(s: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(s).unwrap())
    }

    #[test]
    fn ready_names_what_is_not_and_transition_times_stay_while_status_does() {
        let first = merge(
            &[],
            &[Observation::new(SPEC_VALID, true, "Valid", "ok"), Observation::new(TOPICS_READY, false, "KafkaUnreachable", "no broker")],
            Some(1),
            time(100),
        );
        assert_eq!(first[0].type_, READY);
        assert_eq!((first[0].status.as_str(), first[0].reason.as_str()), ("False", "KafkaUnreachable"));
        assert_eq!(first[0].message, "TopicsReady: no broker");
        let second = merge(
            &first,
            &[Observation::new(SPEC_VALID, true, "Valid", "ok"), Observation::new(TOPICS_READY, true, "TopicsInLine", "3 topics")],
            Some(2),
            time(200),
        );
        assert_eq!(second[0].status, "True");
        assert_eq!(second[1].last_transition_time, time(100), "SpecValid did not change");
        assert_eq!(second[2].last_transition_time, time(200), "TopicsReady did");
        assert_eq!(second[2].observed_generation, Some(2));
    }
}
