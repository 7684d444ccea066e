//! Whether the workers run the latest spec: a StatefulSet's status says
//! how far its rollout is, and `WorkersReady` is true only once every stage
//! is done (the ready Pods of an older revision do not count).

use k8s_openapi::api::apps::v1::StatefulSet;
use kube::ResourceExt;

use crate::conditions::{self, Observation};
use crate::crd::StreamPipeline;

/// Where a stage's StatefulSet stands, as its status tells.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rollout {
    pub name: String,
    pub wanted: i32,
    pub ready: i32,
    /// The StatefulSet controller has seen the latest spec and every Pod
    /// runs its latest revision.
    pub done: bool,
}

impl Rollout {
    /// Reads a StatefulSet's status (pure).
    pub fn of(set: &StatefulSet) -> Self {
        let wanted = set.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let status = set.status.clone().unwrap_or_default();
        let seen = status.observed_generation.is_some() && status.observed_generation >= set.metadata.generation;
        let updated = status.updated_replicas.unwrap_or(0) >= wanted && status.current_revision == status.update_revision;
        // Pods of an older revision that are still there (going away).
        let no_old_pods = status.replicas <= wanted;
        Rollout {
            name: set.name_any(),
            wanted,
            ready: status.ready_replicas.unwrap_or(0),
            done: seen && (wanted == 0 || updated) && no_old_pods,
        }
    }
}

/// Ready and wanted replicas over all stages.
pub fn replicas(rollouts: &[Rollout]) -> (i32, i32) {
    rollouts.iter().fold((0, 0), |(r, w), s| (r + s.ready, w + s.wanted))
}

/// `WorkersReady`: true only when every stage has rolled out the latest
/// spec and its Pods are ready (pure).
pub fn workers_observation(p: &StreamPipeline, rollouts: &[Rollout]) -> Observation {
    let (ready, wanted) = replicas(rollouts);
    let rolling: Vec<&str> = rollouts.iter().filter(|r| !r.done).map(|r| r.name.as_str()).collect();
    if p.spec.suspend && rolling.is_empty() {
        Observation::new(conditions::WORKERS_READY, true, "Suspended", "suspended: every stage is scaled to zero")
    } else if ready >= wanted && rolling.is_empty() {
        Observation::new(conditions::WORKERS_READY, true, "WorkersAvailable", format!("{ready}/{wanted} worker replicas ready"))
    } else if ready >= wanted {
        Observation::new(
            conditions::WORKERS_READY,
            false,
            "RollingOut",
            format!("{ready}/{wanted} worker replicas ready, rolling out the latest spec in {}", rolling.join(", ")),
        )
    } else {
        Observation::new(
            conditions::WORKERS_READY,
            false,
            "WorkersProgressing",
            format!("{ready}/{wanted} worker replicas ready; see `kubectl get pods -l app.kubernetes.io/instance={}`", p.name_any()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{StatefulSetSpec, StatefulSetStatus};

    fn set(generation: i64, replicas: i32, status: StatefulSetStatus) -> StatefulSet {
        let mut s = StatefulSet { spec: Some(StatefulSetSpec { replicas: Some(replicas), ..Default::default() }), status: Some(status), ..Default::default() };
        s.metadata.name = Some("line-1-join".into());
        s.metadata.generation = Some(generation);
        s
    }

    fn status(observed: i64, replicas: i32, ready: i32, updated: i32, current: &str, update: &str) -> StatefulSetStatus {
        StatefulSetStatus {
            observed_generation: Some(observed),
            replicas,
            ready_replicas: Some(ready),
            updated_replicas: Some(updated),
            current_revision: Some(current.into()),
            update_revision: Some(update.into()),
            ..Default::default()
        }
    }

    fn pipeline(suspend: bool) -> StreamPipeline {
        serde_yaml::from_str(&format!("apiVersion: millrace.io/v1alpha1\nkind: StreamPipeline\nmetadata: {{name: line-1}}\nspec: {{suspend: {suspend}, pipeline: {{}}}}\n")).unwrap()
    }

    fn reason(p: &StreamPipeline, sets: &[StatefulSet]) -> (bool, String) {
        let o = workers_observation(p, &sets.iter().map(Rollout::of).collect::<Vec<_>>());
        (o.ok, o.reason)
    }

    #[test]
    fn ready_pods_of_an_older_revision_are_not_ready_workers() {
        let p = pipeline(false);
        let done = set(2, 2, status(2, 2, 2, 2, "r2", "r2"));
        assert_eq!(reason(&p, &[done.clone()]), (true, "WorkersAvailable".into()));
        // The controller has not seen generation 3 yet.
        assert_eq!(reason(&p, &[set(3, 2, status(2, 2, 2, 2, "r2", "r2"))]), (false, "RollingOut".into()));
        // Seen, one Pod updated, the old revision still current: two ready Pods, one of them old.
        assert_eq!(reason(&p, &[set(3, 2, status(3, 2, 2, 1, "r2", "r3"))]), (false, "RollingOut".into()));
        // Every Pod on r3 but one not ready yet.
        assert_eq!(reason(&p, &[set(3, 2, status(3, 2, 1, 2, "r3", "r3"))]), (false, "WorkersProgressing".into()));
        // Scaled down: a Pod above the wanted replicas is still going.
        assert_eq!(reason(&p, &[set(4, 1, status(4, 2, 2, 1, "r3", "r3"))]), (false, "RollingOut".into()));
        // No status at all (no StatefulSet controller has looked).
        let mut fresh = done.clone();
        fresh.status = None;
        assert_eq!(reason(&p, &[done, fresh]), (false, "WorkersProgressing".into()));
    }

    #[test]
    fn suspended_once_every_pod_is_gone() {
        let p = pipeline(true);
        assert_eq!(reason(&p, &[set(5, 0, status(5, 0, 0, 0, "r3", "r3"))]), (true, "Suspended".into()));
        assert_eq!(reason(&p, &[set(5, 0, status(5, 1, 1, 0, "r3", "r3"))]), (false, "RollingOut".into()), "a Pod still stopping");
    }
}
