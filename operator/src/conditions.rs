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
/// time while its status stays the same; `Ready` is true when all are. A
/// condition not observed this time (an invalid spec stops a reconcile
/// before the children, which stay as they were) keeps what it said, and
/// the generation it said it of.
pub fn merge(previous: &[Condition], observations: &[Observation], generation: Option<i64>, now: Time) -> Vec<Condition> {
    let kept: Vec<&Condition> = previous.iter().filter(|c| c.type_ != READY && !observations.iter().any(|o| o.kind == c.type_)).collect();
    let not_ready: Vec<(&str, &str, &str)> = observations
        .iter()
        .filter(|o| !o.ok)
        .map(|o| (o.kind, o.reason.as_str(), o.message.as_str()))
        .chain(kept.iter().filter(|c| c.status != "True").map(|c| (c.type_.as_str(), c.reason.as_str(), c.message.as_str())))
        .collect();
    let ready = match not_ready.first() {
        None => Observation::new(READY, true, "PipelineReady", "every part of the pipeline is ready"),
        Some((_, reason, _)) => Observation::new(
            READY,
            false,
            reason,
            not_ready.iter().map(|(kind, _, message)| format!("{kind}: {message}")).collect::<Vec<_>>().join("; "),
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
        .chain(kept.into_iter().cloned())
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

    #[test]
    fn an_invalid_spec_keeps_what_the_other_conditions_said() {
        let valid = merge(
            &[],
            &[
                Observation::new(SPEC_VALID, true, "Valid", "ok"),
                Observation::new(WORKERS_READY, true, "WorkersAvailable", "3/3"),
                Observation::new(TOPICS_READY, false, "KafkaUnreachable", "no broker"),
            ],
            Some(1),
            time(100),
        );
        let invalid = merge(&valid, &[Observation::new(SPEC_VALID, false, "InvalidSpec", "spec.pipeline.mqtt.url: no host")], Some(2), time(200));
        let kinds: Vec<&str> = invalid.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(kinds, [READY, SPEC_VALID, WORKERS_READY, TOPICS_READY]);
        assert_eq!(invalid[2], valid[2], "WorkersReady as it was, of generation 1");
        assert_eq!(invalid[0].reason, "InvalidSpec");
        assert_eq!(invalid[0].message, "SpecValid: spec.pipeline.mqtt.url: no host; TopicsReady: no broker");
    }
}
