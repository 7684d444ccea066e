//! The reconcile of one `StreamPipeline`, as the Stackable operators do it:
//! validate the spec into a typed value ([`ValidPipeline`]), look up what the
//! children depend on besides the spec, build every child with one pure
//! function ([`children::build`]), apply each with one generic [`apply`]
//! (server-side, one field manager), delete the orphans (found by the
//! pipeline's labels), then the topics and the status.
//!
//! Children are written only when they drifted from the spec, the status
//! only when it changed, Events only on condition transitions: a resync of
//! an unchanged pipeline is all reads.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::core::{DeserializeGuard, DynamicObject};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::children::workers::{self, Stage};
use crate::children::{self, Children};
use crate::conditions::{self, Observation};
use crate::crd::{StreamPipeline, StreamPipelineStatus};
use crate::topics;

/// The one field manager of everything the operator applies.
pub const FIELD_MANAGER: &str = "millrace-operator";
/// Kafka is not watched: topics are checked again this often.
pub const RESYNC: Duration = Duration::from_secs(60);

/// Guards the deletion policy: the pipeline goes only after its topics
/// are dealt with.
pub const FINALIZER: &str = "millrace.io/topics";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Topics(#[from] topics::TopicsError),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    #[error("waiting for the workers to stop before deleting the topics")]
    WorkersStillRunning,
}

pub struct Context {
    pub client: Client,
    pub admin: topics::AdminClients,
    pub backoff: crate::backoff::ErrorBackoff,
    pub recorder: kube::runtime::events::Recorder,
    pub health: Arc<millrace_health::Health<crate::metrics::OperatorMetrics>>,
    pub defaults: crate::defaults::OperatorDefaults,
}

impl Context {
    pub fn new(
        client: Client,
        health: Arc<millrace_health::Health<crate::metrics::OperatorMetrics>>,
        defaults: crate::defaults::OperatorDefaults,
    ) -> Self {
        let reporter = kube::runtime::events::Reporter {
            controller: FIELD_MANAGER.into(),
            instance: std::env::var("HOSTNAME").ok(),
        };
        let recorder = kube::runtime::events::Recorder::new(client.clone(), reporter);
        Context { client, admin: Default::default(), backoff: Default::default(), recorder, health, defaults }
    }
}

pub use crate::validate::{validate, ValidPipeline};

async fn apply<K>(client: &Client, namespace: &str, object: &K) -> Result<K, kube::Error>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope> + Clone + std::fmt::Debug + Serialize + DeserializeOwned,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let name = object.meta().name.clone().unwrap_or_default();
    // A child already as wanted is not written again: resyncs stay reads.
    if let Some(actual) = api.get_opt(&name).await? {
        let desired = serde_json::to_value(object).map_err(kube::Error::SerdeError)?;
        let current = serde_json::to_value(&actual).map_err(kube::Error::SerdeError)?;
        if !crate::drift::drifted(&desired, &current) {
            return Ok(actual);
        }
    }
    api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(object)).await
}

/// Reconciles a pipeline the operator could read; one it could not (stored
/// under an older schema, or with a value the schema lets through, such as a
/// duration too large) gets a condition and an Event saying what is wrong
/// and where, and affects no other pipeline.
pub async fn reconcile(guard: Arc<DeserializeGuard<StreamPipeline>>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    let key = guard_key(&guard);
    let result = match &guard.0 {
        Ok(p) => {
            let result = reconcile_once(Arc::new(p.clone()), &ctx).await;
            if let Err(e) = &result {
                report_failure(p, e, &ctx).await;
            }
            result
        }
        Err(invalid) => report_unreadable(&invalid.metadata, &ctx).await,
    };
    ctx.health.metrics.observe(result.is_ok(), started.elapsed().as_secs_f64());
    if result.is_ok() {
        ctx.backoff.succeeded(&key);
    }
    result
}

/// A finalizer only where it protects something: with `deletionPolicy:
/// Delete` it holds the pipeline until its topics are deleted; with `Retain`
/// there is nothing to do on deletion, so a pipeline has none (one left by an
/// earlier operator or a policy changed since is removed).
async fn reconcile_once(p: Arc<StreamPipeline>, ctx: &Arc<Context>) -> Result<Action, Error> {
    use kube::runtime::finalizer::{finalizer, Event};
    let namespace = p.namespace().unwrap_or_else(|| "default".into());
    let api: Api<StreamPipeline> = Api::namespaced(ctx.client.clone(), &namespace);
    if p.spec.deletion_policy == crate::crd::DeletionPolicy::Retain {
        if let Some(patch) = without_our_finalizer(&p.metadata) {
            api.patch(&p.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
            return Ok(Action::await_change());
        }
        if p.metadata.deletion_timestamp.is_some() {
            return Ok(Action::await_change());
        }
        return apply_pipeline(p, ctx).await;
    }
    finalizer(&api, FINALIZER, p, |event| async {
        match event {
            Event::Apply(p) => apply_pipeline(p, ctx).await,
            Event::Cleanup(p) => cleanup(p, ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

/// The merge patch that removes the operator's finalizer (at the object's
/// resourceVersion, so a concurrent change is not overwritten), when it has
/// it.
fn without_our_finalizer(meta: &ObjectMeta) -> Option<serde_json::Value> {
    let finalizers = meta.finalizers.as_ref()?;
    if !finalizers.iter().any(|f| f == FINALIZER) {
        return None;
    }
    let kept: Vec<&String> = finalizers.iter().filter(|f| *f != FINALIZER).collect();
    Some(serde_json::json!({"metadata": {"finalizers": kept, "resourceVersion": meta.resource_version}}))
}

/// How long a deleted pipeline waits for Kafka to delete its topics before
/// it gives up (a Warning Event names them), so that neither it nor its
/// namespace hangs in Terminating when Kafka is gone for good.
pub const TOPIC_DELETION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Set to `"true"` on a pipeline to delete it without deleting its topics,
/// at once.
pub const SKIP_TOPIC_DELETION_ANNOTATION: &str = "millrace.io/skip-topic-deletion";

/// The pipeline is being deleted with `deletionPolicy: Delete`: its
/// children go with it (owner references), and its topics once its workers
/// are gone (a running producer would create them again on brokers that
/// auto-create topics).
async fn cleanup(p: Arc<StreamPipeline>, ctx: &Context) -> Result<Action, Error> {
    // The topics as the pipeline's reconciles named them.
    let Some(kafka) = crate::defaults::worker_config(&p).kafka else { return Ok(Action::await_change()) };
    let kafka = &kafka;
    let names = topics::wanted(kafka).map(|t| t.name).join(", ");
    if p.annotations().get(SKIP_TOPIC_DELETION_ANNOTATION).is_some_and(|v| v == "true") {
        publish(ctx, &p.metadata, "Warning", "TopicsKept", &format!("{SKIP_TOPIC_DELETION_ANNOTATION} is set: the topics {names} are kept")).await;
        return Ok(Action::await_change());
    }
    let waited = p
        .metadata
        .deletion_timestamp
        .as_ref()
        .map(|t| k8s_openapi::jiff::Timestamp::now().duration_since(t.0).unsigned_abs())
        .unwrap_or_default();
    let given_up = |error: &dyn std::fmt::Display| {
        format!("gave up deleting the topics {names} after {}s: {error}; delete them by hand", waited.as_secs())
    };
    if !workers_stopped(&p, ctx).await? {
        if waited >= TOPIC_DELETION_TIMEOUT {
            publish(ctx, &p.metadata, "Warning", "TopicsKept", &given_up(&"the workers did not stop")).await;
            return Ok(Action::await_change());
        }
        return Err(Error::WorkersStillRunning);
    }
    let namespace = p.namespace().unwrap_or_else(|| "default".into());
    let deleted = match crate::kafka_auth::read(kafka, &ctx.client, &namespace).await {
        Ok(auth) => topics::delete(&ctx.admin, kafka, &auth).await,
        Err(e) => Err(topics::TopicsError::NoLogin(e.to_string())),
    };
    match deleted {
        Ok(()) => {
            tracing::info!(pipeline = %p.name_any(), "deleted the pipeline's topics (deletionPolicy: Delete)");
            Ok(Action::await_change())
        }
        Err(e) if waited >= TOPIC_DELETION_TIMEOUT => {
            publish(ctx, &p.metadata, "Warning", "TopicsKept", &given_up(&e)).await;
            Ok(Action::await_change())
        }
        Err(e) => Err(e.into()),
    }
}

/// Scales the pipeline's worker StatefulSets to zero; true once none has a
/// Pod left (or none is there).
async fn workers_stopped(p: &StreamPipeline, ctx: &Context) -> Result<bool, Error> {
    let namespace = p.namespace().unwrap_or_else(|| "default".into());
    let api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &namespace);
    let mut stopped = true;
    for stage in Stage::ALL {
        let name = workers::stage_name(p, stage);
        let Some(set) = api.get_opt(&name).await? else { continue };
        if set.spec.as_ref().and_then(|s| s.replicas) != Some(0) {
            let zero = serde_json::json!({"spec": {"replicas": 0}});
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&zero)).await?;
        }
        stopped &= set.status.as_ref().map_or(0, |s| s.replicas) == 0;
    }
    Ok(stopped)
}

/// Look up, validate, build, apply, delete orphans, topics, status.
async fn apply_pipeline(p: Arc<StreamPipeline>, ctx: &Context) -> Result<Action, Error> {
    let mut outcome = Outcome {
        topics: p.status.as_ref().map(|s| s.topics.clone()).unwrap_or_default(),
        ..Default::default()
    };
    match validate(&p, &ctx.defaults) {
        // An invalid spec changes nothing: the last good children stay.
        Err(message) => outcome.observations.push(Observation::new(conditions::SPEC_VALID, false, "InvalidSpec", message)),
        Ok(valid) => {
            outcome.observations.push(Observation::new(conditions::SPEC_VALID, true, "Valid", "the spec is valid"));
            reconcile_valid(&valid, ctx, &mut outcome).await?;
        }
    }
    write_status(&p, outcome, ctx).await
}

/// What a reconcile found, for the status.
#[derive(Default)]
struct Outcome {
    observations: Vec<Observation>,
    /// `ready/wanted` worker replicas.
    stages: Option<String>,
    topics: Vec<crate::crd::TopicStatus>,
    endpoints: std::collections::BTreeMap<String, String>,
}

async fn reconcile_valid(valid: &ValidPipeline<'_>, ctx: &Context, outcome: &mut Outcome) -> Result<(), Error> {
    let p = valid.pipeline;
    let namespace = p.namespace().unwrap_or_else(|| "default".into());
    let client = &ctx.client;
    // Look up what the children depend on besides the spec.
    let ingest_name = workers::stage_name(p, Stage::Ingest);
    let live_ingest = Api::<StatefulSet>::namespaced(client.clone(), &namespace).get_opt(&ingest_name).await?;
    let secrets = read_secrets(p, client, &namespace).await?;
    let children = children::build(valid, workers::mqtt_sessions(p, live_ingest.as_ref()), &secrets);

    outcome.observations.push(apply_broker(p, children.broker.as_ref(), client, &namespace).await?);
    if children.broker.is_some() {
        outcome.endpoints.insert("mqtt".to_string(), children::mosquitto::url(p));
    }
    let (grafana, grafana_url) = apply_grafana(p, children.grafana.as_ref(), client, &namespace).await?;
    outcome.observations.push(grafana);
    if let Some(url) = grafana_url {
        outcome.endpoints.insert("grafana".to_string(), url);
    }
    apply(client, &namespace, &children.worker_config).await?;
    if live_ingest.is_none() {
        // Before StatefulSets, each stage was a Deployment of the same name
        // (and without labels, so no orphan by label): removed once, before
        // the StatefulSets are made (so a resync does not look for them again).
        for stage in Stage::ALL {
            delete_if_owned::<Deployment>(client, &namespace, &workers::stage_name(p, stage), p).await?;
        }
    }
    let mut rollouts = Vec::new();
    for (_, service, stateful_set, budget) in &children.stages {
        apply(client, &namespace, service).await?;
        apply(client, &namespace, budget).await?;
        rollouts.push(crate::rollout::Rollout::of(&apply(client, &namespace, stateful_set).await?));
    }
    let (ready, wanted) = crate::rollout::replicas(&rollouts);
    outcome.stages = Some(format!("{ready}/{wanted}"));
    outcome.observations.push(crate::rollout::workers_observation(p, &rollouts));
    delete_orphans(p, &children, client, &namespace).await?;
    let ensured = match crate::kafka_auth::read(valid.kafka(), client, &namespace).await {
        Ok(auth) => topics::ensure(&ctx.admin, valid.kafka(), &auth).await,
        Err(crate::kafka_auth::KafkaAuthError::Kube(e)) => return Err(e.into()),
        Err(e) => Err(topics::TopicsError::NoLogin(e.to_string())),
    };
    outcome.observations.push(match ensured {
        Ok(statuses) => {
            outcome.topics = statuses;
            Observation::new(conditions::TOPICS_READY, true, "TopicsInLine", format!("{} topics as the spec says", outcome.topics.len()))
        }
        Err(e) => Observation::new(conditions::TOPICS_READY, false, e.reason(), e.to_string()),
    });
    Ok(())
}

/// Conditions merged, Events for their transitions, and the status written
/// only when it changed: an unchanged pipeline's resync does not touch it.
async fn write_status(p: &StreamPipeline, outcome: Outcome, ctx: &Context) -> Result<Action, Error> {
    let previous = p.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default();
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let conditions = conditions::merge(&previous, &outcome.observations, p.metadata.generation, now);
    let topics_ready = outcome.observations.iter().any(|o| o.kind == conditions::TOPICS_READY && o.ok);
    publish_transitions(p, &previous, &conditions, ctx).await;
    let status = StreamPipelineStatus {
        observed_generation: p.metadata.generation,
        conditions,
        stages: outcome.stages,
        topics_summary: Some(format!("{}/{} {}", outcome.topics.len(), crate::topics::PER_PIPELINE, if topics_ready { "ready" } else { "not ready" })),
        topics: outcome.topics,
        endpoints: outcome.endpoints,
    };
    if p.status.as_ref().map(|s| same_ignoring_times(s, &status)) != Some(true) {
        let namespace = p.namespace().unwrap_or_else(|| "default".into());
        let api: Api<StreamPipeline> = Api::namespaced(ctx.client.clone(), &namespace);
        let patch = serde_json::json!({"apiVersion": "millrace.io/v1alpha1", "kind": "StreamPipeline", "status": status});
        api.patch_status(&p.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await?;
    }
    // Kafka is not watched: look again soon while its topics are not right.
    Ok(Action::requeue(if topics_ready { RESYNC } else { Duration::from_secs(10) }))
}

/// An Event for each condition that changed status: what a person reading
/// `kubectl describe` needs to know.
async fn publish_transitions(
    p: &StreamPipeline,
    previous: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    now: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    ctx: &Context,
) {
    use kube::runtime::events::{Event, EventType};
    use kube::Resource;
    for c in now {
        let before = previous.iter().find(|b| b.type_ == c.type_);
        if before.map(|b| (&b.status, &b.reason)) == Some((&c.status, &c.reason)) {
            continue;
        }
        let event = Event {
            type_: if c.status == "True" { EventType::Normal } else { EventType::Warning },
            reason: c.reason.clone(),
            note: Some(format!("{} is {}: {}", c.type_, c.status, c.message).chars().take(1000).collect()),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = ctx.recorder.publish(&event, &p.object_ref(&())).await {
            tracing::warn!(error = %e, "cannot publish an Event");
        }
    }
}

/// The managed Mosquitto: applied when asked for (what an earlier spec
/// made and this one does not want goes with the orphans).
async fn apply_broker(p: &StreamPipeline, broker: Option<&children::Broker>, client: &Client, namespace: &str) -> Result<Observation, Error> {
    use crate::children::mosquitto;
    // The claim goes when persistence or the whole broker is dropped (by
    // name: the operator may not list claims).
    match broker.and_then(|b| b.data_claim.as_ref()) {
        Some(claim) => drop(apply(client, namespace, claim).await?),
        None => delete_if_owned::<PersistentVolumeClaim>(client, namespace, &mosquitto::data_claim_name(p), p).await?,
    }
    let Some(broker) = broker else {
        return Ok(Observation::new(conditions::BROKER_READY, true, "External", format!("using the MQTT broker at {}", p.spec.pipeline.mqtt.url)));
    };
    apply(client, namespace, &broker.config_map).await?;
    apply(client, namespace, &broker.service).await?;
    let applied = apply(client, namespace, &broker.deployment).await?;
    // The broker Pod is ready when a login (the workers') and a
    // subscription work: its readiness probe does both.
    let ready = applied.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0);
    Ok(if ready > 0 {
        let login = if mosquitto::authenticated(p) { "the workers' login" } else { "an anonymous login" };
        Observation::new(conditions::BROKER_READY, true, "BrokerAvailable", format!("Mosquitto at {} accepts {login}", mosquitto::url(p)))
    } else {
        Observation::new(
            conditions::BROKER_READY,
            false,
            "BrokerProgressing",
            format!("the Mosquitto Pod is not ready yet; see `kubectl get pods -l app.kubernetes.io/instance={},app.kubernetes.io/component=mosquitto`", p.name_any()),
        )
    })
}

/// Grafana: applied when enabled (with a generated admin Secret unless one
/// is referenced); its admin Secret removed when not (the rest goes with
/// the orphans).
async fn apply_grafana(
    p: &StreamPipeline,
    wanted: Option<&children::Grafana>,
    client: &Client,
    namespace: &str,
) -> Result<(Observation, Option<String>), Error> {
    use crate::children::grafana;
    use k8s_openapi::api::core::v1::Secret;
    let name = grafana::name(p);
    let Some(wanted) = wanted else {
        // By name: the operator may not list Secrets (that would read them all).
        delete_if_owned::<Secret>(client, namespace, &grafana::admin_secret_name(p), p).await?;
        return Ok((Observation::new(conditions::GRAFANA_READY, true, "Disabled", "Grafana is not enabled for this pipeline"), None));
    };
    if p.spec.grafana.admin_secret.is_none() {
        let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
        let secret_name = grafana::admin_secret_name(p);
        let made = async {
            if secrets.get_opt(&secret_name).await?.is_none() {
                // Made once and never rewritten: the password stays what it was.
                use rand::distr::{Alphanumeric, SampleString};
                let password = Alphanumeric.sample_string(&mut rand::rng(), 24);
                secrets.create(&Default::default(), &grafana::generated_admin_secret(p, &password)).await?;
            }
            Ok::<(), kube::Error>(())
        };
        match made.await {
            Ok(()) => {}
            // Least privilege: the operator may write Secrets only where it was granted.
            Err(e) if is_forbidden(&e) => {
                return Ok((
                    Observation::new(
                        conditions::GRAFANA_READY,
                        false,
                        "AdminSecretForbidden",
                        format!(
                            "the operator may not create the Grafana admin Secret {secret_name} in namespace {namespace}: reference your own in spec.grafana.adminSecret, or add {namespace} to the chart's rbac.secretNamespaces"
                        ),
                    ),
                    None,
                ))
            }
            Err(e) => return Err(e.into()),
        }
    }
    apply(client, namespace, &wanted.provisioning).await?;
    apply(client, namespace, &wanted.service).await?;
    let applied = apply(client, namespace, &wanted.deployment).await?;
    let url = format!("http://{name}.{namespace}.svc:{}", grafana::PORT);
    let ready = applied.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0) > 0;
    Ok((
        if ready {
            Observation::new(conditions::GRAFANA_READY, true, "GrafanaAvailable", format!("Grafana is up at {url}"))
        } else {
            Observation::new(
                conditions::GRAFANA_READY,
                false,
                "GrafanaProgressing",
                format!("the Grafana Pod is not ready yet; see `kubectl get pods -l app.kubernetes.io/instance={},app.kubernetes.io/component=grafana`", p.name_any()),
            )
        },
        Some(url),
    ))
}

/// What the operator may read of the Secrets the pipeline's Pods use (by
/// name: it may not list Secrets); those it may not read are left out.
async fn read_secrets(p: &StreamPipeline, client: &Client, namespace: &str) -> Result<children::secret_hashes::SecretHashes, Error> {
    use k8s_openapi::api::core::v1::Secret;
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let mut hashes = children::secret_hashes::SecretHashes::default();
    for name in children::secret_hashes::used(p) {
        match api.get_opt(&name).await {
            Ok(secret) => hashes.insert(&name, secret.as_ref()),
            Err(e) if is_forbidden(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(hashes)
}

/// Deletes the children of kinds the operator may list that carry this
/// pipeline's labels and owner but that `children` does not want (what an
/// earlier spec made: a managed broker or Grafana dropped from the spec).
async fn delete_orphans(p: &StreamPipeline, children: &Children, client: &Client, namespace: &str) -> Result<(), Error> {
    let wanted = children.wanted();
    delete_orphans_of::<Deployment>(p, &wanted, client, namespace).await?;
    delete_orphans_of::<StatefulSet>(p, &wanted, client, namespace).await?;
    delete_orphans_of::<Service>(p, &wanted, client, namespace).await?;
    delete_orphans_of::<PodDisruptionBudget>(p, &wanted, client, namespace).await?;
    delete_orphans_of::<ConfigMap>(p, &wanted, client, namespace).await
}

async fn delete_orphans_of<K>(p: &StreamPipeline, wanted: &BTreeSet<(&'static str, String)>, client: &Client, namespace: &str) -> Result<(), Error>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope> + k8s_openapi::Resource + Clone + std::fmt::Debug + DeserializeOwned,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let selector = format!("app.kubernetes.io/instance={},app.kubernetes.io/managed-by={FIELD_MANAGER}", p.name_any());
    let found = match api.list_metadata(&ListParams::default().labels(&selector)).await {
        // What the operator may not even read, it cannot have made.
        Err(e) if is_forbidden(&e) => return Ok(()),
        other => other?,
    };
    for object in found {
        let name = object.name_any();
        if owned_by(&object.metadata, p) && !wanted.contains(&(<K as k8s_openapi::Resource>::KIND, name.clone())) {
            api.delete(&name, &Default::default()).await?;
        }
    }
    Ok(())
}

fn owned_by(meta: &ObjectMeta, p: &StreamPipeline) -> bool {
    meta.owner_references.iter().flatten().any(|r| Some(&r.uid) == p.metadata.uid.as_ref())
}

/// Deletes a child this pipeline made (and nothing a person made).
async fn delete_if_owned<K>(client: &Client, namespace: &str, name: &str, p: &StreamPipeline) -> Result<(), Error>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope> + Clone + std::fmt::Debug + DeserializeOwned,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let found = match api.get_opt(name).await {
        // What the operator may not even read, it cannot have made.
        Err(e) if is_forbidden(&e) => None,
        other => other?,
    };
    if let Some(object) = found {
        if owned_by(object.meta(), p) {
            api.delete(name, &Default::default()).await?;
        }
    }
    Ok(())
}

fn is_forbidden(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(status) if status.code == 403)
}

fn same_ignoring_times(a: &StreamPipelineStatus, b: &StreamPipelineStatus) -> bool {
    let strip = |s: &StreamPipelineStatus| {
        let mut s = s.clone();
        for c in &mut s.conditions {
            c.last_transition_time = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        }
        s
    };
    strip(a) == strip(b)
}

fn guard_key(g: &DeserializeGuard<StreamPipeline>) -> String {
    use kube::Resource;
    format!("{}/{}", g.meta().namespace.clone().unwrap_or_default(), g.meta().name.clone().unwrap_or_default())
}

/// Where and what is wrong in a stored pipeline the operator cannot read:
/// `spec.pipeline.joins[0].maxDelta: number is too large` (pure).
pub fn unreadable_reason(object: &serde_json::Value) -> String {
    let spec = object.get("spec").cloned().unwrap_or(serde_json::Value::Null);
    match serde_path_to_error::deserialize::<_, crate::crd::StreamPipelineSpec>(spec) {
        Ok(_) => "the object cannot be read as a StreamPipeline".to_string(),
        Err(e) => {
            let path = e.path().to_string();
            let path = if path == "." { "spec".to_string() } else { format!("spec.{path}") };
            format!("{path}: {}", e.inner())
        }
    }
}

/// The API of pipelines as raw objects: what the operator writes to one it
/// cannot read (a typed answer would not deserialize either).
fn raw_pipelines(client: &Client, namespace: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), namespace, &kube::api::ApiResource::erase::<StreamPipeline>(&()))
}

/// A pipeline the operator cannot read: `SpecValid` and `Ready` say why,
/// with the field's path, and a Warning Event tells a person; nothing else
/// is touched. Being deleted, its finalizer is removed (its topics are kept:
/// the operator cannot tell which they are).
async fn report_unreadable(meta: &ObjectMeta, ctx: &Context) -> Result<Action, Error> {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
    let namespace = meta.namespace.clone().unwrap_or_else(|| "default".into());
    let name = meta.name.clone().unwrap_or_default();
    let api = raw_pipelines(&ctx.client, &namespace);
    let Some(raw) = api.get_opt(&name).await? else { return Ok(Action::await_change()) };
    let object = serde_json::to_value(&raw).map_err(kube::Error::SerdeError)?;
    let message = format!("the operator cannot read this pipeline: {}", unreadable_reason(&object));
    if meta.deletion_timestamp.is_some() {
        if let Some(patch) = without_our_finalizer(meta) {
            publish(ctx, meta, "Warning", "TopicsKept", &format!("deleted while unreadable, so its Kafka topics are kept whatever its deletionPolicy; {message}")).await;
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
        }
        return Ok(Action::await_change());
    }
    let previous: Vec<Condition> = object
        .pointer("/status/conditions")
        .and_then(|c| serde_json::from_value(c.clone()).ok())
        .unwrap_or_default();
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let observation = Observation::new(conditions::SPEC_VALID, false, "UnreadableSpec", message.clone());
    // The other conditions stay what they were: the children stay, too.
    let merged = conditions::merge(&previous, std::slice::from_ref(&observation), meta.generation, now);
    let unchanged = |kind: &str| {
        let before = previous.iter().find(|c| c.type_ == kind);
        let after = merged.iter().find(|c| c.type_ == kind);
        before.map(|b| (&b.status, &b.reason, &b.message, b.observed_generation)) == after.map(|a| (&a.status, &a.reason, &a.message, a.observed_generation))
    };
    if unchanged(conditions::SPEC_VALID) && unchanged(conditions::READY) {
        return Ok(Action::await_change());
    }
    if !unchanged(conditions::SPEC_VALID) {
        publish(ctx, meta, "Warning", "UnreadableSpec", &message).await;
    }
    let mut status = object.get("status").cloned().unwrap_or_else(|| serde_json::json!({}));
    status["conditions"] = serde_json::to_value(&merged).map_err(kube::Error::SerdeError)?;
    status["observedGeneration"] = serde_json::json!(meta.generation);
    let patch = serde_json::json!({"apiVersion": "millrace.io/v1alpha1", "kind": "StreamPipeline", "status": status});
    api.patch_status(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await?;
    // Nothing to do until the object changes.
    Ok(Action::await_change())
}

/// A reconcile that failed (the API server refused a child, Kafka could not
/// delete topics, ...) is told on the pipeline, not only in the log: `Ready`
/// is False with reason `ReconcileFailed` and the error, the other
/// conditions stay, and a Warning Event goes out when the message is new.
async fn report_failure(p: &StreamPipeline, error: &Error, ctx: &Context) {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
    let message = format!("the last reconcile failed, retried with backoff: {error}");
    let mut status = p.status.clone().unwrap_or_default();
    let before = status.conditions.iter().find(|c| c.type_ == conditions::READY);
    if before.is_some_and(|c| c.reason == "ReconcileFailed" && c.message == message) {
        return;
    }
    publish(ctx, &p.metadata, "Warning", "ReconcileFailed", &message).await;
    let ready = Condition {
        type_: conditions::READY.to_string(),
        status: "False".to_string(),
        reason: "ReconcileFailed".to_string(),
        message,
        observed_generation: p.metadata.generation,
        last_transition_time: before
            .filter(|c| c.status == "False")
            .map(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| Time(k8s_openapi::jiff::Timestamp::now())),
    };
    status.conditions.retain(|c| c.type_ != conditions::READY);
    status.conditions.insert(0, ready);
    let namespace = p.namespace().unwrap_or_else(|| "default".into());
    let api: Api<StreamPipeline> = Api::namespaced(ctx.client.clone(), &namespace);
    let patch = serde_json::json!({"apiVersion": "millrace.io/v1alpha1", "kind": "StreamPipeline", "status": status});
    if let Err(e) = api.patch_status(&p.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await {
        tracing::warn!(pipeline = %p.name_any(), error = %e, "cannot write the failed reconcile into the status");
    }
}

/// An Event about the pipeline of `meta` (also one the operator cannot read).
async fn publish(ctx: &Context, meta: &ObjectMeta, type_: &str, reason: &str, note: &str) {
    use kube::runtime::events::{Event, EventType};
    let reference = k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some("millrace.io/v1alpha1".into()),
        kind: Some("StreamPipeline".into()),
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
        ..Default::default()
    };
    let event = Event {
        type_: if type_ == "Normal" { EventType::Normal } else { EventType::Warning },
        reason: reason.into(),
        note: Some(note.chars().take(1000).collect()),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &reference).await {
        tracing::warn!(error = %e, "cannot publish an Event");
    }
}

pub fn error_policy(p: Arc<DeserializeGuard<StreamPipeline>>, error: &Error, ctx: Arc<Context>) -> Action {
    let key = guard_key(&p);
    let mut wait = ctx.backoff.failed(&key);
    // A deleted pipeline waiting on Kafka or its workers retries often, so
    // that it gives up close to TOPIC_DELETION_TIMEOUT, not a backoff later.
    let deleting = p.0.as_ref().ok().and_then(|p| p.metadata.deletion_timestamp.as_ref()).is_some();
    if deleting {
        wait = wait.min(DELETION_RETRY);
    }
    tracing::warn!(pipeline = %key, %error, retry_in_s = wait.as_secs(), "reconcile failed");
    Action::requeue(wait)
}

/// The longest a deleted pipeline waits between two tries.
const DELETION_RETRY: Duration = Duration::from_secs(5);

/// Runs the controller until the process is stopped.
pub async fn run(client: Client) {
    run_with(client, None, Arc::new(Default::default()), Default::default()).await
}

/// `run`, counting reconciles in `health`'s metrics, with the operator's
/// own defaults.
pub async fn run_with(
    client: Client,
    namespace: Option<&str>,
    health: Arc<millrace_health::Health<crate::metrics::OperatorMetrics>>,
    defaults: crate::defaults::OperatorDefaults,
) {
    fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        match namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let context = Arc::new(Context::new(client.clone(), health, defaults));
    // Guarded: a pipeline that does not deserialize is reported on its own
    // instead of failing the whole list (and with it every other pipeline).
    Controller::new(scoped::<DeserializeGuard<StreamPipeline>>(&client, namespace), watcher::Config::default())
        .owns(scoped::<StatefulSet>(&client, namespace), watcher::Config::default())
        .owns(scoped::<Deployment>(&client, namespace), watcher::Config::default())
        .owns(scoped::<ConfigMap>(&client, namespace), watcher::Config::default())
        .owns(scoped::<Service>(&client, namespace), watcher::Config::default())
        .owns(scoped::<PodDisruptionBudget>(&client, namespace), watcher::Config::default())
        .shutdown_on_signal()
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            match result {
                Ok(_) => {}
                // Each failed reconcile is logged (and reported) by error_policy.
                Err(kube::runtime::controller::Error::ReconcilerFailed(..)) => {}
                Err(e) => tracing::warn!(error = %e, "controller"),
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::unreadable_reason;

    #[test]
    fn an_unreadable_pipeline_is_told_where_and_what() {
        let object = serde_json::json!({"spec": {"pipeline": {
            "kafka": {"bootstrapServers": "k:9092"},
            "joins": [{"name": "p", "left": "a", "right": "b", "maxDelta": "99999999999999999999999s"}]
        }}});
        let reason = unreadable_reason(&object);
        assert!(reason.starts_with("spec.pipeline.joins[0].maxDelta: "), "{reason}");
        assert!(reason.contains("\"99999999999999999999999s\", expected a duration"), "{reason}");
        let reason = unreadable_reason(&serde_json::json!({"spec": {"workers": {"join": {"replicas": "two"}}, "pipeline": {}}}));
        assert!(reason.starts_with("spec.workers.join.replicas: "), "{reason}");
    }
}
