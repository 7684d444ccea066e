//! Pod Security's `restricted` level for every Pod the operator makes: all
//! run as non-root with the runtime's default seccomp profile, every
//! container drops all capabilities and cannot escalate privileges. A
//! namespace labelled `pod-security.kubernetes.io/enforce=restricted` admits
//! them (tested against the API server in `operator/tests/pod_security.rs`).

use k8s_openapi::api::core::v1::{Capabilities, PodSecurityContext, SeccompProfile, SecurityContext};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Who picks the user and group ids of the pipeline's Pods.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum UserIds {
    /// The operator: each image's own non-root user (the worker 65532,
    /// Mosquitto 1883, Grafana 472), and that group for volumes.
    #[default]
    Operator,
    /// The platform: no user, group or fsGroup is set, for platforms that
    /// assign them from a range of their own (OpenShift's `restricted-v2`
    /// refuses others).
    Platform,
}

/// The Pod's part: non-root, seccomp `RuntimeDefault`, and with
/// [`UserIds::Operator`] the image's user as user, group and fsGroup.
pub fn pod(ids: UserIds, image_user: i64) -> PodSecurityContext {
    let user = (ids == UserIds::Operator).then_some(image_user);
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: user,
        run_as_group: user,
        fs_group: user,
        seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), ..Default::default() }),
        ..Default::default()
    }
}

/// Each container's part; `read_only_root` as the program allows.
pub fn container(read_only_root: bool) -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), ..Default::default() }),
        read_only_root_filesystem: Some(read_only_root),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_platform_may_pick_the_ids() {
        let own = pod(UserIds::Operator, 472);
        assert_eq!((own.run_as_user, own.run_as_group, own.fs_group), (Some(472), Some(472), Some(472)));
        let assigned = pod(UserIds::Platform, 472);
        assert_eq!((assigned.run_as_user, assigned.run_as_group, assigned.fs_group), (None, None, None));
        assert_eq!(assigned.run_as_non_root, Some(true));
        assert_eq!(assigned.seccomp_profile.unwrap().type_, "RuntimeDefault");
    }
}
