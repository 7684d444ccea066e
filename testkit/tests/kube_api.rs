//! The test API server: CRDs, custom objects, watches, server-side apply,
//! kubeconfig for kubectl.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{conditions, wait::await_condition, watcher, WatchStreamExt};
use kube::{CustomResource, CustomResourceExt, ResourceExt};
use millrace_testkit::{require, unique_name, KubeApi};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(CustomResource, Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[kube(group = "testkit.millrace.io", version = "v1", kind = "Gadget", namespaced)]
struct GadgetSpec {
    size: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    color: Option<String>,
}

#[tokio::test]
async fn crd_custom_object_watch_and_server_side_apply() {
    let kube = require!(KubeApi::shared());
    let client = kube.client().await.unwrap();

    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let ssa = PatchParams::apply("millrace-testkit").force();
    crds.patch("gadgets.testkit.millrace.io", &ssa, &Patch::Apply(Gadget::crd())).await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), await_condition(crds, "gadgets.testkit.millrace.io", conditions::is_crd_established()))
        .await
        .expect("CRD not established in 30 s")
        .unwrap();

    let ns = kube.create_namespace(&unique_name("testkit")).await.unwrap();
    let gadgets: Api<Gadget> = Api::namespaced(client.clone(), &ns);
    let mut events = watcher(gadgets.clone(), watcher::Config::default()).applied_objects().boxed();

    gadgets.create(&PostParams::default(), &Gadget::new("g1", GadgetSpec { size: 1, color: None })).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(20), events.try_next()).await.expect("no watch event").unwrap().unwrap();
    assert_eq!((first.name_any(), first.spec.size), ("g1".to_string(), 1));

    // Server-side apply of a partial object by a second field manager.
    let patch = serde_json::json!({
        "apiVersion": "testkit.millrace.io/v1", "kind": "Gadget",
        "metadata": {"name": "g1"}, "spec": {"size": 1, "color": "red"}
    });
    gadgets.patch("g1", &PatchParams::apply("painter"), &Patch::Apply(&patch)).await.unwrap();
    let changed = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let g = events.try_next().await.unwrap().unwrap();
            if g.spec.color.is_some() {
                return g;
            }
        }
    })
    .await
    .expect("the applied change was not watched");
    assert_eq!(changed.spec.color.as_deref(), Some("red"));
    let managers: Vec<String> = changed.managed_fields().iter().filter_map(|m| m.manager.clone()).collect();
    assert!(managers.contains(&"painter".to_string()), "{managers:?}");

    // An invalid object is refused by the schema.
    let bad = serde_json::json!({
        "apiVersion": "testkit.millrace.io/v1", "kind": "Gadget",
        "metadata": {"name": "bad"}, "spec": {"size": "huge"}
    });
    let err = gadgets.patch("bad", &PatchParams::apply("x"), &Patch::Apply(&bad)).await.unwrap_err();
    assert!(err.to_string().contains("spec.size"), "{err}");
}

#[tokio::test]
async fn kubectl_works_with_the_kubeconfig() {
    let kube = require!(KubeApi::shared());
    let kubectl = require!(millrace_testkit::find_binary("kubectl"));
    let ns = kube.create_namespace(&unique_name("kubectl")).await.unwrap();
    let out = std::process::Command::new(kubectl)
        .args(["--kubeconfig"])
        .arg(kube.kubeconfig_path())
        .args(["get", "namespace", &ns, "-o", "jsonpath={.metadata.name}"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), ns);
}

#[tokio::test]
async fn service_account_tokens_authenticate_with_their_own_rights() {
    use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
    let kube = require!(KubeApi::shared());
    let client = kube.client().await.unwrap();
    let ns = kube.create_namespace(&unique_name("sa")).await.unwrap();
    let sas: Api<ServiceAccount> = Api::namespaced(client, &ns);
    let sa: ServiceAccount = serde_json::from_value(serde_json::json!({"metadata": {"name": "robot"}})).unwrap();
    sas.create(&PostParams::default(), &sa).await.unwrap();
    let token = kube.service_account_token(&ns, "robot").await.unwrap();
    let config = kube.kubeconfig_for_token("robot", &token).unwrap();
    let robot = KubeApi::client_from(&config).await.unwrap();
    let err = Api::<ConfigMap>::namespaced(robot, &ns).list(&Default::default()).await.unwrap_err();
    assert!(err.to_string().contains("forbidden"), "a fresh ServiceAccount may not list ConfigMaps: {err}");
}
