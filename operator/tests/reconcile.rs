//! The controller against the real API server and a real Apache Kafka
//! broker: a pipeline gets its worker objects, its topics and honest
//! conditions; changes, deleted children and an invalid spec are handled.

mod fixtures;

use std::time::{Duration, Instant};

use fixtures::{example, install_crd};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use millrace_operator::crd::StreamPipeline;
use millrace_testkit::{require, unique_name, KafkaBroker, KubeApi};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

fn condition(p: &StreamPipeline, kind: &str) -> Option<(String, String, String)> {
    p.status.as_ref()?.conditions.iter().find(|c| c.type_ == kind).map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

async fn wait_for(api: &Api<StreamPipeline>, name: &str, what: &str, test: impl Fn(&StreamPipeline) -> bool) -> StreamPipeline {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let p = api.get(name).await.unwrap();
        if test(&p) {
            return p;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}; status: {:#?}", p.status);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn topic_config(servers: &str, topic: &str, key: &str) -> Option<String> {
    use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new().set("bootstrap.servers", servers).create().unwrap();
    let mut described = admin.describe_configs([&ResourceSpecifier::Topic(topic)], &AdminOptions::new()).await.unwrap();
    let resource = described.pop().unwrap().unwrap();
    resource.entries.into_iter().find(|e| e.name == key).and_then(|e| e.value)
}

/// A controller for one test's namespace only: the tests run side by side
/// against one API server, and controllers watching everything would
/// reconcile each other's pipelines (one re-creating the topics another's
/// finalizer had just deleted).
fn controller_for(client: &kube::Client, ns: &str) -> tokio::task::JoinHandle<()> {
    controller_with(client, ns, Default::default())
}

/// [`controller_for`] with the operator's defaults (its command line) given.
fn controller_with(client: &kube::Client, ns: &str, defaults: millrace_operator::defaults::OperatorDefaults) -> tokio::task::JoinHandle<()> {
    let (client, ns) = (client.clone(), ns.to_string());
    tokio::spawn(async move { millrace_operator::reconcile::run_with(client, Some(&ns), Default::default(), defaults).await })
}

fn partitions(servers: &str, topic: &str) -> usize {
    let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", servers).create().unwrap();
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
    metadata.topics().first().map(|t| t.partitions().len()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_gets_its_workers_topics_and_conditions() {
    let kube = require!(KubeApi::shared());
    let broker = require!(KafkaBroker::start());
    let client = install_crd(kube).await;
    let ns = kube.create_namespace(&unique_name("rec")).await.unwrap();
    let controller = controller_for(&client, &ns);

    let (raw, group) = (unique_name("raw"), unique_name("g"));
    let mut spec = example("line-1");
    spec["spec"]["pipeline"]["kafka"] = serde_json::json!({
        "bootstrapServers": broker.bootstrap_servers(),
        "groupId": group,
        "topics": {"raw": {"name": raw, "partitions": 3}, "joined": {"name": unique_name("joined")}, "deadLetter": {"name": unique_name("dead"), "partitions": 1}}
    });
    let pipelines: Api<StreamPipeline> = Api::namespaced(client.clone(), &ns);
    pipelines.create(&PostParams::default(), &serde_json::from_value(spec).unwrap()).await.unwrap();

    let p = wait_for(&pipelines, "line-1", "topics ready", |p| condition(p, "TopicsReady").is_some_and(|c| c.0 == "True")).await;
    assert_eq!(condition(&p, "SpecValid").unwrap().0, "True");
    let workers = condition(&p, "WorkersReady").unwrap();
    assert_eq!((workers.0.as_str(), workers.1.as_str()), ("False", "WorkersProgressing"), "no Pods run on the test API server");
    let ready = condition(&p, "Ready").unwrap();
    assert_eq!((ready.0.as_str(), ready.1.as_str()), ("False", "WorkersProgressing"));
    assert_eq!(p.status.as_ref().unwrap().observed_generation, p.metadata.generation);
    assert_eq!(p.status.as_ref().unwrap().stages.as_deref(), Some("0/4"));
    assert_eq!(partitions(&broker.bootstrap_servers(), &raw), 3);
    // The join state topic: named after the group, raw's partitions, compacted.
    let state = format!("{raw}.{group}.join-state");
    // Created just now: the broker's metadata may show it a moment later.
    let deadline = Instant::now() + Duration::from_secs(10);
    while partitions(&broker.bootstrap_servers(), &state) != 3 {
        assert!(Instant::now() < deadline, "the join state topic has {} partitions, not 3", partitions(&broker.bootstrap_servers(), &state));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(topic_config(&broker.bootstrap_servers(), &state, "cleanup.policy").await.as_deref(), Some("compact"));
    assert_eq!(p.status.as_ref().unwrap().topics_summary.as_deref(), Some("4/4 ready"));
    let workers: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    for stage in ["ingest", "join", "export"] {
        workers.get(&format!("line-1-{stage}")).await.unwrap();
        Api::<Service>::namespaced(client.clone(), &ns).get(&format!("line-1-{stage}-metrics")).await.unwrap();
    }
    let config = Api::<ConfigMap>::namespaced(client.clone(), &ns).get("line-1-worker").await.unwrap();
    assert!(config.data.unwrap()["pipeline.yaml"].contains(&raw));

    // A deleted child comes back.
    workers.delete("line-1-join", &DeleteParams::default()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while workers.get_opt("line-1-join").await.unwrap().is_none() {
        assert!(Instant::now() < deadline, "the deleted StatefulSet was not restored");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // More partitions: increased; fewer: reported, not done.
    let more = serde_json::json!({"spec": {"pipeline": {"kafka": {"topics": {"raw": {"name": raw, "partitions": 5}}}}}});
    pipelines.patch("line-1", &PatchParams::default(), &Patch::Merge(&more)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while partitions(&broker.bootstrap_servers(), &raw) != 5 || partitions(&broker.bootstrap_servers(), &state) != 5 {
        assert!(Instant::now() < deadline, "partitions were not increased (raw and join state)");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let fewer = serde_json::json!({"spec": {"pipeline": {"kafka": {"topics": {"raw": {"name": raw, "partitions": 2}}}}}});
    pipelines.patch("line-1", &PatchParams::default(), &Patch::Merge(&fewer)).await.unwrap();
    let p = wait_for(&pipelines, "line-1", "a refused decrease", |p| {
        condition(p, "TopicsReady").is_some_and(|c| c.1 == "PartitionDecreaseNotSupported")
    })
    .await;
    assert!(condition(&p, "TopicsReady").unwrap().2.contains("cannot decrease partitions"));
    assert_eq!(partitions(&broker.bootstrap_servers(), &raw), 5);

    // Ingest scaled from 3 to 1: ordinal 0 is told to drain two retired
    // MQTT sessions, and the operator keeps remembering there were three.
    let ingest_env = |s: &StatefulSet, name: &str| {
        let c = &s.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0];
        c.env.iter().flatten().find(|e| e.name == name).and_then(|e| e.value.clone()).unwrap_or_default()
    };
    for (replicas, want) in [(3, ("3", "3")), (1, ("1", "3"))] {
        let scale = serde_json::json!({"spec": {"workers": {"ingest": {"replicas": replicas}}}});
        pipelines.patch("line-1", &PatchParams::default(), &Patch::Merge(&scale)).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let s = workers.get("line-1-ingest").await.unwrap();
            let got = (ingest_env(&s, "MILLRACE_REPLICAS"), ingest_env(&s, "MILLRACE_MQTT_SESSIONS"));
            if (got.0.as_str(), got.1.as_str()) == want {
                assert_eq!(s.metadata.annotations.unwrap()["millrace.io/mqtt-sessions"], want.1);
                break;
            }
            assert!(Instant::now() < deadline, "ingest at {replicas} replicas: {got:?}, want {want:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    // Suspend scales every stage to zero.
    let suspend = serde_json::json!({"spec": {"suspend": true}});
    pipelines.patch("line-1", &PatchParams::default(), &Patch::Merge(&suspend)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut replicas = Vec::new();
        for stage in ["ingest", "join", "export"] {
            replicas.push(workers.get(&format!("line-1-{stage}")).await.unwrap().spec.unwrap().replicas.unwrap());
        }
        if replicas == [0, 0, 0] {
            break;
        }
        assert!(Instant::now() < deadline, "not scaled to zero: {replicas:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    controller.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defaults_are_resolved_at_reconcile_time_and_pipelines_share_nothing() {
    use kube::api::DynamicObject;
    let kube = require!(KubeApi::shared());
    let broker = require!(KafkaBroker::start());
    let client = install_crd(kube).await;
    let ns = kube.create_namespace(&unique_name("dflt")).await.unwrap();
    let image = "registry.plant.example/millrace/worker:9.9.9";
    let controller = controller_with(&client, &ns, millrace_operator::defaults::OperatorDefaults { worker_image: image.into() });
    let pipelines: Api<StreamPipeline> = Api::namespaced(client.clone(), &ns);
    // Two pipelines that name nothing but their servers.
    let minimal = |name: &str| {
        serde_json::json!({
            "apiVersion": "millrace.io/v1alpha1", "kind": "StreamPipeline", "metadata": {"name": name},
            "spec": {"pipeline": {"kafka": {"bootstrapServers": broker.bootstrap_servers()}, "influxdb": {"url": "http://influxdb:8086"}}}
        })
    };
    // Created as kubectl would, from the JSON (a typed client would send
    // every field its types default).
    let raw = kube::discovery::ApiResource::erase::<StreamPipeline>(&());
    let untyped = Api::<DynamicObject>::namespaced_with(client.clone(), &ns, &raw);
    for name in ["line-1", "line-2"] {
        untyped.create(&PostParams::default(), &serde_json::from_value(minimal(name)).unwrap()).await.unwrap();
    }
    let stored = untyped.get("line-1").await.unwrap();
    assert_eq!(stored.data["spec"], minimal("line-1")["spec"], "the API server stores what was written, no schema defaults");

    let mut groups = Vec::new();
    for name in ["line-1", "line-2"] {
        let p = wait_for(&pipelines, name, "topics ready", |p| condition(p, "TopicsReady").is_some_and(|c| c.0 == "True")).await;
        let scope = format!("millrace.{ns}.{name}");
        let topics: Vec<String> = p.status.as_ref().unwrap().topics.iter().map(|t| t.name.clone()).collect();
        assert_eq!(topics, [format!("{scope}.raw"), format!("{scope}.joined"), format!("{scope}.dead-letter"), format!("{scope}.raw.{scope}.join-state")]);
        assert_eq!(partitions(&broker.bootstrap_servers(), &format!("{scope}.raw")), 6, "made in Kafka");
        let set = Api::<StatefulSet>::namespaced(client.clone(), &ns).get(&format!("{name}-join")).await.unwrap();
        let container = &set.spec.unwrap().template.spec.unwrap().containers[0];
        assert_eq!(container.image.as_deref(), Some(image), "the operator's worker image");
        let config = Api::<ConfigMap>::namespaced(client.clone(), &ns).get(&format!("{name}-worker")).await.unwrap();
        let config = millrace_config::PipelineConfig::from_yaml(&config.data.unwrap()["pipeline.yaml"]).unwrap();
        let kafka = config.kafka.unwrap();
        assert_eq!(kafka.group_id.as_deref(), Some(scope.as_str()), "the worker gets the names resolved");
        assert_eq!((config.mqtt.client_id.as_deref(), config.mqtt.share_group.as_deref()), (Some(scope.as_str()), Some(scope.as_str())));
        groups.push(kafka.group_id);
    }
    assert_ne!(groups[0], groups[1]);
    controller.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_spec_is_reported_and_changes_nothing() {
    let kube = require!(KubeApi::shared());
    let client = install_crd(kube).await;
    let ns = kube.create_namespace(&unique_name("inv")).await.unwrap();
    let controller = controller_for(&client, &ns);
    let mut spec = example("broken");
    // The schema allows it; the worker's checks do not.
    spec["spec"]["pipeline"]["joins"][0]["expression"] = serde_json::json!("2*pi/60*(left*right");
    let pipelines: Api<StreamPipeline> = Api::namespaced(client.clone(), &ns);
    pipelines.create(&PostParams::default(), &serde_json::from_value(spec).unwrap()).await.unwrap();
    let p = wait_for(&pipelines, "broken", "SpecValid", |p| condition(p, "SpecValid").is_some()).await;
    let (status, reason, message) = condition(&p, "SpecValid").unwrap();
    assert_eq!((status.as_str(), reason.as_str()), ("False", "InvalidSpec"));
    assert!(message.contains("joins[0] (power).expression: expected `)` at column 20"), "{message}");
    assert!(Api::<StatefulSet>::namespaced(client, &ns).get_opt("broken-join").await.unwrap().is_none());
    controller.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_keeps_or_deletes_the_topics_per_policy() {
    let kube = require!(KubeApi::shared());
    let broker = require!(KafkaBroker::start());
    let client = install_crd(kube).await;
    let ns = kube.create_namespace(&unique_name("del")).await.unwrap();
    let controller = controller_for(&client, &ns);
    let pipelines: Api<StreamPipeline> = Api::namespaced(client.clone(), &ns);
    let servers = broker.bootstrap_servers();
    for (name, policy, kept) in [("keep", "Retain", true), ("drop", "Delete", false)] {
        let (raw, group) = (unique_name("raw"), unique_name("g"));
        let mut spec = example(name);
        spec["spec"]["deletionPolicy"] = serde_json::json!(policy);
        spec["spec"]["pipeline"]["kafka"] = serde_json::json!({
            "bootstrapServers": servers,
            "groupId": group,
            "topics": {"raw": {"name": raw, "partitions": 2}, "joined": {"name": unique_name("joined")}, "deadLetter": {"name": unique_name("dead")}}
        });
        pipelines.create(&PostParams::default(), &serde_json::from_value(spec).unwrap()).await.unwrap();
        let p = wait_for(&pipelines, name, "topics ready", |p| condition(p, "TopicsReady").is_some_and(|c| c.0 == "True")).await;
        // A finalizer only where deletion has work to do.
        assert_eq!(p.metadata.finalizers.unwrap_or_default().contains(&"millrace.io/topics".to_string()), !kept, "{name} ({policy})");
        assert_eq!(partitions(&servers, &raw), 2);
        pipelines.delete(name, &DeleteParams::default()).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while pipelines.get_opt(name).await.unwrap().is_some() {
            assert!(Instant::now() < deadline, "{name}: the pipeline was not released by its finalizer");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        let state = format!("{raw}.{group}.join-state");
        while (partitions(&servers, &raw) > 0) != kept || (partitions(&servers, &state) > 0) != kept {
            assert!(Instant::now() < deadline, "{name} ({policy}): topics kept = {} (raw and join state)", !kept);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    controller.abort();
}

/// Deletion never hangs: with Kafka gone, a pipeline with `deletionPolicy:
/// Delete` is deleted after the bounded wait with a Warning Event naming the
/// topics it kept; with the skip annotation at once; and its namespace then
/// goes too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_with_kafka_unreachable_gives_up_in_bounded_time() {
    use millrace_operator::reconcile::{SKIP_TOPIC_DELETION_ANNOTATION, TOPIC_DELETION_TIMEOUT};
    let kube = require!(KubeApi::shared());
    let client = install_crd(kube).await;
    let ns = kube.create_namespace(&unique_name("gone")).await.unwrap();
    let controller = controller_for(&client, &ns);
    let pipelines: Api<StreamPipeline> = Api::namespaced(client.clone(), &ns);
    // A port nothing listens on.
    let nowhere = format!("127.0.0.1:{}", std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port());
    for name in ["waits", "skips"] {
        let mut spec = example(name);
        spec["spec"]["pipeline"]["kafka"] = serde_json::json!({"bootstrapServers": nowhere, "groupId": unique_name("g")});
        if name == "skips" {
            spec["metadata"]["annotations"] = serde_json::json!({SKIP_TOPIC_DELETION_ANNOTATION: "true"});
        }
        pipelines.create(&PostParams::default(), &serde_json::from_value(spec).unwrap()).await.unwrap();
        wait_for(&pipelines, name, "the finalizer", |p| p.metadata.finalizers.as_ref().is_some_and(|f| f.contains(&"millrace.io/topics".to_string()))).await;
    }
    let started = Instant::now();
    pipelines.delete("skips", &DeleteParams::default()).await.unwrap();
    pipelines.delete("waits", &DeleteParams::default()).await.unwrap();
    let gone = |name: &'static str, within: Duration| {
        let pipelines = pipelines.clone();
        async move {
            let deadline = Instant::now() + within;
            while let Some(p) = pipelines.get_opt(name).await.unwrap() {
                assert!(Instant::now() < deadline, "{name} is still there after {within:?}: {:?} {:#?}", p.metadata.finalizers, p.status);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    // At once: after the reconcile that may be in flight when the deletion
    // comes, which waits up to the Kafka timeout on the unreachable Kafka.
    gone("skips", millrace_operator::topics::TIMEOUT + Duration::from_secs(10)).await;
    let skipped = started.elapsed();
    gone("waits", TOPIC_DELETION_TIMEOUT + Duration::from_secs(30)).await;
    let waited = started.elapsed();
    assert!(waited >= TOPIC_DELETION_TIMEOUT, "gave up after {waited:?}, before the bound");
    let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(client.clone(), &ns).list(&Default::default()).await.unwrap().items;
    let kept: Vec<&str> = events.iter().filter(|e| e.reason.as_deref() == Some("TopicsKept")).filter_map(|e| e.note.as_deref()).collect();
    // Named after the pipeline (the spec leaves the names out).
    let topics = format!("millrace.{ns}.waits.raw, millrace.{ns}.waits.joined, millrace.{ns}.waits.dead-letter");
    assert!(kept.iter().any(|n| n.contains(&format!("gave up deleting the topics {topics}")) && n.contains("delete them by hand")), "{kept:?}");
    assert!(kept.iter().any(|n| n.contains(SKIP_TOPIC_DELETION_ANNOTATION)), "{kept:?}");
    eprintln!("skip annotation: deleted in {skipped:.1?}; unreachable Kafka: deleted in {waited:.1?}");
    controller.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_managed_broker_comes_and_goes_with_the_spec() {
    let kube = require!(KubeApi::shared());
    let broker = require!(KafkaBroker::start());
    let client = install_crd(kube).await;
    let ns = kube.create_namespace(&unique_name("mq")).await.unwrap();
    let controller = controller_for(&client, &ns);
    let mut spec = example("line-2");
    spec["spec"]["mosquitto"] = serde_json::json!({"managed": true});
    fixtures::on_broker(&mut spec, &broker.bootstrap_servers());
    let pipelines: Api<StreamPipeline> = Api::namespaced(client.clone(), &ns);
    pipelines.create(&PostParams::default(), &serde_json::from_value(spec).unwrap()).await.unwrap();
    let p = wait_for(&pipelines, "line-2", "BrokerReady", |p| condition(p, "BrokerReady").is_some()).await;
    let broker_condition = condition(&p, "BrokerReady").unwrap();
    assert_eq!((broker_condition.0.as_str(), broker_condition.1.as_str()), ("False", "BrokerProgressing"));
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    deployments.get("line-2-mosquitto").await.unwrap();
    Api::<Service>::namespaced(client.clone(), &ns).get("line-2-mosquitto").await.unwrap();
    let config = Api::<ConfigMap>::namespaced(client.clone(), &ns).get("line-2-worker").await.unwrap();
    assert!(config.data.unwrap()["pipeline.yaml"].contains("mqtt://line-2-mosquitto:1883"), "workers use the managed broker");

    let unmanaged = serde_json::json!({"spec": {"mosquitto": {"managed": false}}});
    pipelines.patch("line-2", &PatchParams::default(), &Patch::Merge(&unmanaged)).await.unwrap();
    let p = wait_for(&pipelines, "line-2", "an external broker", |p| condition(p, "BrokerReady").is_some_and(|c| c.1 == "External")).await;
    assert_eq!(condition(&p, "BrokerReady").unwrap().0, "True");
    assert!(deployments.get_opt("line-2-mosquitto").await.unwrap().is_none(), "the broker dropped from the spec is removed");
    controller.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grafana_is_provisioned_with_a_generated_admin_secret_and_removed_when_disabled() {
    use k8s_openapi::api::core::v1::Secret;
    let kube = require!(KubeApi::shared());
    let broker = require!(KafkaBroker::start());
    let client = install_crd(kube).await;
    let ns = kube.create_namespace(&unique_name("gf")).await.unwrap();
    let controller = controller_for(&client, &ns);
    let mut spec = example("line-3");
    spec["spec"]["grafana"] = serde_json::json!({"enabled": true});
    fixtures::on_broker(&mut spec, &broker.bootstrap_servers());
    let pipelines: Api<StreamPipeline> = Api::namespaced(client.clone(), &ns);
    pipelines.create(&PostParams::default(), &serde_json::from_value(spec).unwrap()).await.unwrap();
    let p = wait_for(&pipelines, "line-3", "GrafanaReady", |p| condition(p, "GrafanaReady").is_some()).await;
    assert_eq!(condition(&p, "GrafanaReady").unwrap().1, "GrafanaProgressing");
    assert_eq!(p.status.unwrap().endpoints["grafana"], format!("http://line-3-grafana.{ns}.svc:3000"));
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let admin = secrets.get("line-3-grafana-admin").await.unwrap();
    let password = admin.data.unwrap()["admin-password"].0.clone();
    assert_eq!(password.len(), 24);
    let provisioning = Api::<ConfigMap>::namespaced(client.clone(), &ns).get("line-3-grafana-provisioning").await.unwrap();
    assert!(provisioning.data.unwrap()["datasource.yaml"].contains("http://influxdb:8086"));
    assert!(!format!("{:?}", Api::<Deployment>::namespaced(client.clone(), &ns).get("line-3-grafana").await.unwrap()).contains(&String::from_utf8_lossy(&password).to_string()),
        "the password is only in the Secret");

    let off = serde_json::json!({"spec": {"grafana": {"enabled": false}}});
    pipelines.patch("line-3", &PatchParams::default(), &Patch::Merge(&off)).await.unwrap();
    wait_for(&pipelines, "line-3", "Grafana disabled", |p| condition(p, "GrafanaReady").is_some_and(|c| c.1 == "Disabled")).await;
    assert!(Api::<Deployment>::namespaced(client.clone(), &ns).get_opt("line-3-grafana").await.unwrap().is_none());
    assert!(secrets.get_opt("line-3-grafana-admin").await.unwrap().is_none());
    controller.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_broker_is_reported_and_recovers() {
    use k8s_openapi::api::events::v1::Event;
    let kube = require!(KubeApi::shared());
    let mut broker = require!(KafkaBroker::start());
    let client = install_crd(kube).await;
    let ns = kube.create_namespace(&unique_name("down")).await.unwrap();
    let controller = controller_for(&client, &ns);
    broker.stop();
    let mut spec = example("line-4");
    fixtures::on_broker(&mut spec, &broker.bootstrap_servers());
    let pipelines: Api<StreamPipeline> = Api::namespaced(client.clone(), &ns);
    pipelines.create(&PostParams::default(), &serde_json::from_value(spec).unwrap()).await.unwrap();
    let p = wait_for(&pipelines, "line-4", "TopicsReady", |p| condition(p, "TopicsReady").is_some()).await;
    let (status, reason, message) = condition(&p, "TopicsReady").unwrap();
    assert_eq!((status.as_str(), reason.as_str()), ("False", "KafkaUnreachable"));
    assert!(message.contains(&broker.bootstrap_servers()), "{message}");
    let events: Vec<Event> = Api::<Event>::namespaced(client.clone(), &ns).list(&Default::default()).await.unwrap().items;
    assert!(events.iter().any(|e| e.reason.as_deref() == Some("KafkaUnreachable")), "an Event tells a person: {events:?}");

    broker.restart().unwrap();
    wait_for(&pipelines, "line-4", "recovery", |p| condition(p, "TopicsReady").is_some_and(|c| c.0 == "True")).await;
    controller.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resync_of_an_unchanged_pipeline_only_reads() {
    use k8s_openapi::api::core::v1::PersistentVolumeClaim;
    use kube::core::DeserializeGuard;
    use millrace_operator::reconcile::{reconcile, Context};
    use std::sync::Arc;
    let kube = require!(KubeApi::shared());
    let broker = require!(KafkaBroker::start());
    let client = install_crd(kube).await;
    let ns = kube.create_namespace(&unique_name("resync")).await.unwrap();
    let controller = controller_for(&client, &ns);
    // Every kind of child: workers, a managed broker with a claim, Grafana.
    let raw = unique_name("raw");
    let mut spec = example("steady");
    spec["spec"]["mosquitto"] = serde_json::json!({"managed": true, "persistenceSize": "1Gi", "nodePort": 31883, "authSecret": "mqtt-users"});
    spec["spec"]["grafana"] = serde_json::json!({"enabled": true});
    // Quantities the server stores in another form (0.5 -> 500m).
    spec["spec"]["workers"]["join"]["resources"] = serde_json::json!({"limits": {"cpu": "0.5", "memory": "256Mi"}, "requests": {"cpu": "0.25"}});
    spec["spec"]["pipeline"]["kafka"] = serde_json::json!({
        "bootstrapServers": broker.bootstrap_servers(),
        "groupId": unique_name("g"),
        "topics": {"raw": {"name": raw, "partitions": 2, "config": {"retention.ms": "3600000"}}, "joined": {"name": unique_name("joined")}, "deadLetter": {"name": unique_name("dead")}}
    });
    let pipelines: Api<StreamPipeline> = Api::namespaced(client.clone(), &ns);
    pipelines.create(&PostParams::default(), &serde_json::from_value(spec).unwrap()).await.unwrap();
    wait_for(&pipelines, "steady", "topics ready", |p| condition(p, "TopicsReady").is_some_and(|c| c.0 == "True")).await;
    assert_eq!(topic_config(&broker.bootstrap_servers(), &raw, "retention.ms").await.as_deref(), Some("3600000"));
    let claim = Api::<PersistentVolumeClaim>::namespaced(client.clone(), &ns).get("steady-mosquitto-data").await.unwrap();
    assert_eq!(claim.spec.unwrap().resources.unwrap().requests.unwrap()["storage"].0, "1Gi");
    // Stopped for good, with its reconciles (spawned tasks, aborted when the
    // controller is dropped): from here only the recording client writes.
    controller.abort();
    let _ = controller.await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let (recording, log) = kube.recording_client().await.unwrap();
    let ctx = Arc::new(Context::new(recording, Default::default(), Default::default()));
    // The first pass settles whatever the stopped controller left midway.
    reconcile(Arc::new(DeserializeGuard(Ok(pipelines.get("steady").await.unwrap()))), ctx.clone()).await.unwrap();
    log.take();
    reconcile(Arc::new(DeserializeGuard(Ok(pipelines.get("steady").await.unwrap()))), ctx.clone()).await.unwrap();
    assert_eq!(log.writes(), Vec::<(String, String)>::new(), "a resync of an unchanged pipeline writes nothing");
    let reads = log.take();
    assert!(reads.iter().any(|(_, path)| path.ends_with("/statefulsets/steady-join")), "it did look at the children: {reads:?}");

    // A child edited by hand has drifted: the next resync puts it back.
    let workers: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    let scale = serde_json::json!({"spec": {"replicas": 7}});
    workers.patch("steady-join", &PatchParams::default(), &Patch::Merge(&scale)).await.unwrap();
    reconcile(Arc::new(DeserializeGuard(Ok(pipelines.get("steady").await.unwrap()))), ctx.clone()).await.unwrap();
    let writes = log.writes();
    assert!(writes.iter().all(|(m, _)| m == "PATCH"), "{writes:?}");
    assert!(writes.iter().any(|(_, path)| path.ends_with("/statefulsets/steady-join")), "{writes:?}");
    assert_eq!(workers.get("steady-join").await.unwrap().spec.unwrap().replicas, Some(2));

    // A field removed from the spec leaves the child: no node port any more.
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    assert_eq!(services.get("steady-mosquitto").await.unwrap().spec.unwrap().ports.unwrap()[0].node_port, Some(31883));
    let closed = serde_json::json!({"spec": {"mosquitto": {"nodePort": null}}});
    pipelines.patch("steady", &PatchParams::default(), &Patch::Merge(&closed)).await.unwrap();
    reconcile(Arc::new(DeserializeGuard(Ok(pipelines.get("steady").await.unwrap()))), ctx.clone()).await.unwrap();
    let service = services.get("steady-mosquitto").await.unwrap().spec.unwrap();
    assert_eq!(service.type_.as_deref(), Some("ClusterIP"));
    assert_eq!(service.ports.unwrap()[0].node_port, None, "the broker is no longer exposed on every node");
    log.take();
    reconcile(Arc::new(DeserializeGuard(Ok(pipelines.get("steady").await.unwrap()))), ctx.clone()).await.unwrap();
    assert_eq!(log.writes(), Vec::<(String, String)>::new(), "and then a resync writes nothing again");
}

/// A changed Secret reaches the Pods that read it: their templates carry
/// a hash of it (the operator reads it at each reconcile).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_secret_rolls_the_pods_that_read_it() {
    use k8s_openapi::api::core::v1::Secret;
    use kube::core::DeserializeGuard;
    use millrace_operator::children::secret_hashes::SECRETS_HASH_ANNOTATION;
    use millrace_operator::reconcile::{reconcile, Context};
    use std::sync::Arc;
    let kube = require!(KubeApi::shared());
    let broker = require!(KafkaBroker::start());
    let client = install_crd(kube).await;
    let ns = kube.create_namespace(&unique_name("sec")).await.unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let influx = |password: &str| -> Secret {
        serde_json::from_value(serde_json::json!({"metadata": {"name": "influx"}, "stringData": {"username": "millrace", "password": password}})).unwrap()
    };
    secrets.create(&PostParams::default(), &influx("first")).await.unwrap();
    let mut spec = example("line-1");
    fixtures::on_broker(&mut spec, &broker.bootstrap_servers());
    spec["spec"]["mosquitto"] = serde_json::json!({"managed": true});
    let pipelines: Api<StreamPipeline> = Api::namespaced(client.clone(), &ns);
    pipelines.create(&PostParams::default(), &serde_json::from_value(spec).unwrap()).await.unwrap();
    let ctx = Arc::new(Context::new(client.clone(), Default::default(), Default::default()));
    let pass = || async { reconcile(Arc::new(DeserializeGuard(Ok(pipelines.get("line-1").await.unwrap()))), ctx.clone()).await.unwrap() };
    let annotations = |template: Option<k8s_openapi::api::core::v1::PodTemplateSpec>| template.and_then(|t| t.metadata).and_then(|m| m.annotations).unwrap_or_default();
    let join_hash = || async {
        let set = Api::<StatefulSet>::namespaced(client.clone(), &ns).get("line-1-join").await.unwrap();
        annotations(set.spec.map(|s| s.template)).get(SECRETS_HASH_ANNOTATION).cloned()
    };
    let broker_annotations = || async {
        let d = Api::<Deployment>::namespaced(client.clone(), &ns).get("line-1-mosquitto").await.unwrap();
        annotations(d.spec.map(|s| s.template))
    };
    // The first pass only adds the finalizer (deletionPolicy: Delete).
    pass().await;
    pass().await;
    let before = join_hash().await.expect("the workers read the influx Secret: their template has its hash");
    assert!(!broker_annotations().await.contains_key(SECRETS_HASH_ANNOTATION), "the anonymous broker reads no Secret");
    pass().await;
    assert_eq!(join_hash().await.as_deref(), Some(before.as_str()), "unchanged Secret, unchanged template");
    secrets.replace("influx", &PostParams::default(), &influx("rotated")).await.unwrap();
    pass().await;
    let after = join_hash().await.unwrap();
    assert_ne!(after, before, "a rotated password rolls the workers");
}

/// A secured Kafka: the operator's admin client logs in with the login and
/// certificates of the pipeline's Secrets (SCRAM over TLS, and mutual TLS),
/// and makes the topics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_are_made_on_a_secured_kafka_with_the_pipelines_secrets() {
    use k8s_openapi::api::core::v1::Secret;
    let kube = require!(KubeApi::shared());
    let broker = require!(KafkaBroker::start_secured());
    let s = broker.secure().clone();
    let client = install_crd(kube).await;
    let ns = kube.create_namespace(&unique_name("tls")).await.unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let ca = std::fs::read_to_string(&s.ca_file).unwrap();
    for secret in [
        serde_json::json!({"metadata": {"name": "kafka-user"}, "stringData": {"username": s.username, "password": s.password}}),
        serde_json::json!({"metadata": {"name": "kafka-tls"}, "stringData": {"ca.crt": ca, "tls.crt": s.client.certificate, "tls.key": s.client.key}}),
    ] {
        secrets.create(&PostParams::default(), &serde_json::from_value(secret).unwrap()).await.unwrap();
    }
    let controller = controller_for(&client, &ns);
    let pipelines: Api<StreamPipeline> = Api::namespaced(client.clone(), &ns);
    let raws = [unique_name("raw"), unique_name("raw")];
    for ((name, security), raw) in [
        ("scram", serde_json::json!({"protocol": "SASL_SSL", "saslMechanism": "SCRAM-SHA-512", "credentials": {"secretName": "kafka-user"}, "tls": {"secretName": "kafka-tls"}})),
        ("mtls", serde_json::json!({"protocol": "SSL", "tls": {"secretName": "kafka-tls", "certificateFile": "/etc/millrace/kafka-tls/tls.crt", "keyFile": "/etc/millrace/kafka-tls/tls.key"}})),
    ]
    .into_iter()
    .zip(&raws)
    {
        let servers = if name == "scram" { &s.sasl_ssl } else { &s.mtls };
        let mut spec = example(name);
        spec["spec"]["pipeline"]["kafka"] = serde_json::json!({"bootstrapServers": servers, "security": security, "topics": {"raw": {"name": raw, "partitions": 2}}});
        pipelines.create(&PostParams::default(), &serde_json::from_value(spec).unwrap()).await.unwrap();
    }
    for ((name, raw), servers) in ["scram", "mtls"].into_iter().zip(&raws).zip([&s.sasl_ssl, &s.mtls]) {
        wait_for(&pipelines, name, "topics ready over the secured listener", |p| condition(p, "TopicsReady").is_some_and(|c| c.0 == "True")).await;
        assert_eq!(partitions(&broker.bootstrap_servers(), raw), 2, "{name}: made through {servers}");
    }
    controller.abort();
}

/// IncrementalAlterConfigs: a config the spec changes is set, one an
/// administrator set beside it stays (AlterConfigs would reset it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_topic_config_leaves_the_others_alone() {
    use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, ResourceSpecifier};
    use rdkafka::client::DefaultClientContext;
    let kube = require!(KubeApi::shared());
    let broker = require!(KafkaBroker::start());
    let client = install_crd(kube).await;
    let ns = kube.create_namespace(&unique_name("cfg")).await.unwrap();
    let controller = controller_for(&client, &ns);
    let servers = broker.bootstrap_servers();
    let raw = unique_name("raw");
    let mut spec = example("line-1");
    spec["spec"]["pipeline"]["kafka"] = serde_json::json!({
        "bootstrapServers": servers,
        "groupId": unique_name("g"),
        "topics": {"raw": {"name": raw, "partitions": 2, "config": {"retention.ms": "3600000"}}}
    });
    let pipelines: Api<StreamPipeline> = Api::namespaced(client.clone(), &ns);
    pipelines.create(&PostParams::default(), &serde_json::from_value(spec).unwrap()).await.unwrap();
    wait_for(&pipelines, "line-1", "topics ready", |p| condition(p, "TopicsReady").is_some_and(|c| c.0 == "True")).await;
    // An administrator sets max.message.bytes (and, with the whole-config
    // call an administrator's tool may use, retention.ms as it is).
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new().set("bootstrap.servers", &servers).create().unwrap();
    let by_hand = AlterConfig::new(ResourceSpecifier::Topic(&raw)).set("retention.ms", "3600000").set("max.message.bytes", "2000000");
    for r in admin.alter_configs([&by_hand], &AdminOptions::new()).await.unwrap() {
        r.unwrap();
    }
    let change = serde_json::json!({"spec": {"pipeline": {"kafka": {"topics": {"raw": {"config": {"retention.ms": "7200000"}}}}}}});
    pipelines.patch("line-1", &PatchParams::default(), &Patch::Merge(&change)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(40);
    while topic_config(&servers, &raw, "retention.ms").await.as_deref() != Some("7200000") {
        assert!(Instant::now() < deadline, "the changed retention.ms did not reach the topic");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(topic_config(&servers, &raw, "max.message.bytes").await.as_deref(), Some("2000000"), "the administrator's config was reset");
    controller.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stage_deployments_of_an_earlier_operator_give_way_to_stateful_sets() {
    use kube::Resource;
    let kube = require!(KubeApi::shared());
    let broker = require!(KafkaBroker::start());
    let client = install_crd(kube).await;
    let ns = kube.create_namespace(&unique_name("old")).await.unwrap();
    let mut spec = example("line-4");
    fixtures::on_broker(&mut spec, &broker.bootstrap_servers());
    let pipelines: Api<StreamPipeline> = Api::namespaced(client.clone(), &ns);
    let p = pipelines.create(&PostParams::default(), &serde_json::from_value(spec).unwrap()).await.unwrap();
    // What an operator before StatefulSets made: a Deployment per stage.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    for stage in ["ingest", "join", "export"] {
        let old: Deployment = serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("line-4-{stage}"), "ownerReferences": [p.controller_owner_ref(&()).unwrap()]},
            "spec": {
                "selector": {"matchLabels": {"old": stage}},
                "template": {"metadata": {"labels": {"old": stage}}, "spec": {"containers": [{"name": "worker", "image": "millrace/worker:old"}]}}
            }
        }))
        .unwrap();
        deployments.create(&PostParams::default(), &old).await.unwrap();
    }
    let controller = controller_for(&client, &ns);
    wait_for(&pipelines, "line-4", "workers applied", |p| p.status.as_ref().is_some_and(|s| s.stages.is_some())).await;
    let workers: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    for stage in ["ingest", "join", "export"] {
        workers.get(&format!("line-4-{stage}")).await.unwrap();
        assert!(deployments.get_opt(&format!("line-4-{stage}")).await.unwrap().is_none(), "the old {stage} Deployment is still there");
    }
    controller.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_pipeline_is_reported_and_affects_no_other_also_after_a_restart() {
    use k8s_openapi::api::events::v1::Event;
    let kube = require!(KubeApi::shared());
    let broker = require!(KafkaBroker::start());
    let client = install_crd(kube).await;
    let ns = kube.create_namespace(&unique_name("iso")).await.unwrap();
    // Stored as raw JSON: the schema lets the duration through (it matches
    // the pattern), the operator's types cannot hold it.
    let resource = kube::api::ApiResource::erase::<StreamPipeline>(&());
    let raw: Api<kube::api::DynamicObject> = Api::namespaced_with(client.clone(), &ns, &resource);
    let mut bad = example("unreadable");
    bad["spec"]["pipeline"]["joins"][0]["maxDelta"] = serde_json::json!("99999999999999999999999s");
    raw.create(&PostParams::default(), &serde_json::from_value(bad).unwrap()).await.unwrap();
    let pipelines: Api<StreamPipeline> = Api::namespaced(client.clone(), &ns);
    let create_good = |name: &str| {
        let mut spec = example(name);
        fixtures::on_broker(&mut spec, &broker.bootstrap_servers());
        let pipelines = pipelines.clone();
        async move { pipelines.create(&PostParams::default(), &serde_json::from_value(spec).unwrap()).await.unwrap() }
    };
    create_good("good-1").await;

    let controller = controller_for(&client, &ns);
    wait_for(&pipelines, "good-1", "the readable pipeline reconciled", |p| condition(p, "SpecValid").is_some_and(|c| c.0 == "True")).await;
    let deadline = Instant::now() + Duration::from_secs(40);
    let conditions = loop {
        let object = raw.get("unreadable").await.unwrap();
        if let Some(c) = object.data.pointer("/status/conditions").and_then(|c| c.as_array()).filter(|c| !c.is_empty()) {
            break c.clone();
        }
        assert!(Instant::now() < deadline, "the unreadable pipeline got no status");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let spec_valid = conditions.iter().find(|c| c["type"] == "SpecValid").expect("a SpecValid condition");
    assert_eq!((spec_valid["status"].as_str(), spec_valid["reason"].as_str()), (Some("False"), Some("UnreadableSpec")));
    let message = spec_valid["message"].as_str().unwrap();
    assert!(message.contains("spec.pipeline.joins[0].maxDelta"), "says where: {message}");
    assert!(message.contains("expected a duration"), "says what: {message}");
    let ready = conditions.iter().find(|c| c["type"] == "Ready").expect("a Ready condition");
    assert_eq!(ready["status"].as_str(), Some("False"));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let events: Vec<Event> = Api::<Event>::namespaced(client.clone(), &ns).list(&Default::default()).await.unwrap().items;
        let warned = events.iter().any(|e| {
            e.reason.as_deref() == Some("UnreadableSpec")
                && e.type_.as_deref() == Some("Warning")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("unreadable")
                && e.note.as_deref().is_some_and(|n| n.contains("spec.pipeline.joins[0].maxDelta"))
        });
        if warned {
            break;
        }
        assert!(Instant::now() < deadline, "no Warning Event for the unreadable pipeline: {events:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A restarted operator lists the unreadable object with the rest, and
    // still reconciles the others, old and new.
    controller.abort();
    let _ = controller.await;
    create_good("good-2").await;
    let controller = controller_for(&client, &ns);
    wait_for(&pipelines, "good-2", "a new pipeline after the restart", |p| condition(p, "SpecValid").is_some_and(|c| c.0 == "True")).await;
    Api::<StatefulSet>::namespaced(client.clone(), &ns).get("good-2-join").await.unwrap();
    let scale = serde_json::json!({"spec": {"workers": {"join": {"replicas": 3}}}});
    pipelines.patch("good-1", &PatchParams::default(), &Patch::Merge(&scale)).await.unwrap();
    let workers: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    let deadline = Instant::now() + Duration::from_secs(30);
    while workers.get("good-1-join").await.unwrap().spec.unwrap().replicas != Some(3) {
        assert!(Instant::now() < deadline, "good-1 is no longer reconciled after the restart");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Deleted while unreadable: released, not stuck on its finalizer.
    raw.delete("unreadable", &DeleteParams::default()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while raw.get_opt("unreadable").await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "the unreadable pipeline hangs in deletion");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    controller.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_the_api_server_refuses_is_reported_on_the_pipeline() {
    use k8s_openapi::api::events::v1::Event;
    let kube = require!(KubeApi::shared());
    let broker = require!(KafkaBroker::start());
    let client = install_crd(kube).await;
    let ns = kube.create_namespace(&unique_name("refused")).await.unwrap();
    let controller = controller_for(&client, &ns);
    // Valid as far as the operator can tell; the API server answers 422:
    // a node port another pipeline's broker already has.
    let node_port = 30000 + (std::process::id() % 2700) as i32;
    let pipelines: Api<StreamPipeline> = Api::namespaced(client.clone(), &ns);
    for name in ["line-5a", "line-5"] {
        let mut spec = example(name);
        fixtures::on_broker(&mut spec, &broker.bootstrap_servers());
        spec["spec"]["mosquitto"] = serde_json::json!({"managed": true, "nodePort": node_port, "authSecret": "mqtt-users"});
        pipelines.create(&PostParams::default(), &serde_json::from_value(spec).unwrap()).await.unwrap();
        if name == "line-5a" {
            wait_for(&pipelines, name, "the first broker", |p| condition(p, "BrokerReady").is_some()).await;
        }
    }
    let p = wait_for(&pipelines, "line-5", "Ready=False ReconcileFailed", |p| condition(p, "Ready").is_some_and(|c| c.1 == "ReconcileFailed")).await;
    let (status, _, message) = condition(&p, "Ready").unwrap();
    assert_eq!(status, "False");
    assert!(message.contains("line-5-mosquitto") && message.contains("already allocated"), "says what and where: {message}");
    let events: Vec<Event> = Api::<Event>::namespaced(client.clone(), &ns).list(&Default::default()).await.unwrap().items;
    assert!(
        events.iter().any(|e| e.reason.as_deref() == Some("ReconcileFailed") && e.type_.as_deref() == Some("Warning")),
        "an Event tells a person: {events:?}"
    );
    controller.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mistakes_the_schema_cannot_see_are_invalid_specs_with_their_path() {
    let kube = require!(KubeApi::shared());
    let client = install_crd(kube).await;
    let ns = kube.create_namespace(&unique_name("val")).await.unwrap();
    let controller = controller_for(&client, &ns);
    let pipelines: Api<StreamPipeline> = Api::namespaced(client.clone(), &ns);
    let long = "l".repeat(46);
    let cases = [
        ("mqtt", "/spec/pipeline/mqtt/url", serde_json::json!("mqtt://broker:188300"), "spec.pipeline.mqtt.url: "),
        ("same", "/spec/pipeline/kafka", serde_json::json!({"bootstrapServers": "kafka:9092", "topics": {"raw": {"name": "t"}, "joined": {"name": "t"}}}), "spec.pipeline.kafka.topics.joined.name: "),
        (long.as_str(), "/spec/deletionPolicy", serde_json::json!("Retain"), "metadata.name: "),
    ];
    for (name, pointer, value, _) in &cases {
        let mut spec = example(name);
        *spec.pointer_mut(pointer).unwrap() = value.clone();
        pipelines.create(&PostParams::default(), &serde_json::from_value(spec).unwrap()).await.unwrap();
    }
    for (name, _, _, says) in cases {
        let p = wait_for(&pipelines, name, "SpecValid", |p| condition(p, "SpecValid").is_some()).await;
        let (status, reason, message) = condition(&p, "SpecValid").unwrap();
        assert_eq!((status.as_str(), reason.as_str()), ("False", "InvalidSpec"), "{name}");
        assert!(message.starts_with(says), "{name}: {message}");
        assert!(Api::<StatefulSet>::namespaced(client.clone(), &ns).get_opt(&format!("{name}-join")).await.unwrap().is_none());
    }
    controller.abort();
}
