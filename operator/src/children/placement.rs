//! Where the pipeline's Pods may run and where their images come from:
//! `spec.pods` passed through to every Pod the operator makes (workers,
//! Mosquitto, Grafana), as a plant's cluster needs (a private registry,
//! dedicated nodes with taints, zones).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, LocalObjectReference, PodSpec, Toleration};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Scheduling and image pulling of every Pod of the pipeline.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodPlacement {
    /// Secrets holding the credentials of the registries the images come from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<LocalObjectReference>,
    /// Node labels a node must have to run the Pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Taints the Pods tolerate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Node and Pod affinity and anti-affinity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
}

impl PodPlacement {
    /// Sets these on `pod` (pure); what is unset stays unset.
    pub fn apply_to(&self, pod: &mut PodSpec) {
        pod.image_pull_secrets = (!self.image_pull_secrets.is_empty()).then(|| self.image_pull_secrets.clone());
        pod.node_selector = (!self.node_selector.is_empty()).then(|| self.node_selector.clone());
        pod.tolerations = (!self.tolerations.is_empty()).then(|| self.tolerations.clone());
        pod.affinity = self.affinity.clone();
    }
}

/// `pod` with the pipeline's `spec.pods` set on it (pure).
pub fn placed(p: &crate::crd::StreamPipeline, mut pod: PodSpec) -> PodSpec {
    p.spec.pods.apply_to(&mut pod);
    pod
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_fields_reach_the_pod_and_unset_ones_stay_unset() {
        let placement: PodPlacement = serde_yaml::from_str(
            "imagePullSecrets: [{name: plant-registry}]\nnodeSelector: {plant.example/line: '1'}\ntolerations: [{key: dedicated, operator: Equal, value: millrace, effect: NoSchedule}]\n",
        )
        .unwrap();
        let mut pod = PodSpec::default();
        placement.apply_to(&mut pod);
        assert_eq!(pod.image_pull_secrets.unwrap()[0].name, "plant-registry");
        assert_eq!(pod.node_selector.unwrap()["plant.example/line"], "1");
        assert_eq!(pod.tolerations.unwrap()[0].key.as_deref(), Some("dedicated"));
        assert!(pod.affinity.is_none());
        let mut untouched = PodSpec::default();
        PodPlacement::default().apply_to(&mut untouched);
        assert_eq!(untouched, PodSpec::default(), "no empty lists or maps the server would drop (no drift)");
    }
}
