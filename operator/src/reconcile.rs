//! The reconcile of one `StreamPipeline`: look up, validate (pure), build
//! the desired objects (pure), apply them (server-side, one field manager),
//! derive the status.
//!
//! Children are written only when they drifted from the spec, the status
//! only when it changed, Events only on condition transitions: a resync of
//! an unchanged pipeline is all reads.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::build::workers::{self, Stage};
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
}

pub struct Context {
    pub client: Client,
    pub admin: topics::AdminClients,
    pub backoff: crate::backoff::ErrorBackoff,
    pub recorder: kube::runtime::events::Recorder,
    pub health: Arc<millrace_worker::health::Health<crate::metrics::OperatorMetrics>>,
}

impl Context {
    pub fn new(client: Client, health: Arc<millrace_worker::health::Health<crate::metrics::OperatorMetrics>>) -> Self {
        let reporter = kube::runtime::events::Reporter {
            controller: FIELD_MANAGER.into(),
            instance: std::env::var("HOSTNAME").ok(),
        };
        let recorder = kube::runtime::events::Recorder::new(client.clone(), reporter);
        Context { client, admin: Default::default(), backoff: Default::default(), recorder, health }
    }
}

/// What is wrong with a spec that the schema could not say (pure).
pub fn validate(p: &StreamPipeline) -> Result<(), String> {
    p.spec.pipeline.validate().map_err(|e| format!("spec.pipeline.{e}"))?;
    if p.spec.pipeline.kafka.is_none() {
        return Err("spec.pipeline.kafka: a StreamPipeline runs its stages on Kafka; give bootstrapServers".into());
    }
    if p.spec.pipeline.influxdb.is_none() {
        return Err("spec.pipeline.influxdb: the export stage needs an InfluxDB target".into());
    }
    Ok(())
}

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

pub async fn reconcile(p: Arc<StreamPipeline>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    let key = pipeline_key(&p);
    let result = reconcile_once(p, &ctx).await;
    ctx.health.metrics.observe(result.is_ok(), started.elapsed().as_secs_f64());
    if result.is_ok() {
        ctx.backoff.succeeded(&key);
    }
    result
}

async fn reconcile_once(p: Arc<StreamPipeline>, ctx: &Arc<Context>) -> Result<Action, Error> {
    use kube::runtime::finalizer::{finalizer, Event};
    let namespace = p.namespace().unwrap_or_else(|| "default".into());
    let api: Api<StreamPipeline> = Api::namespaced(ctx.client.clone(), &namespace);
    finalizer(&api, FINALIZER, p, |event| async {
        match event {
            Event::Apply(p) => apply_pipeline(p, ctx).await,
            Event::Cleanup(p) => cleanup(p, ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

/// The pipeline is being deleted: its children go with it (owner
/// references); its topics only with `deletionPolicy: Delete`.
async fn cleanup(p: Arc<StreamPipeline>, ctx: &Context) -> Result<Action, Error> {
    if p.spec.deletion_policy == crate::crd::DeletionPolicy::Delete {
        if let Some(kafka) = &p.spec.pipeline.kafka {
            topics::delete(&ctx.admin, kafka).await?;
            tracing::info!(pipeline = %p.name_any(), "deleted the pipeline's topics (deletionPolicy: Delete)");
        }
    }
    Ok(Action::await_change())
}

async fn apply_pipeline(p: Arc<StreamPipeline>, ctx: &Context) -> Result<Action, Error> {
    let namespace = p.namespace().unwrap_or_else(|| "default".into());
    let client = &ctx.client;
    let mut observations = Vec::new();
    let mut stages = None;
    let mut topic_statuses = p.status.as_ref().map(|s| s.topics.clone()).unwrap_or_default();
    let mut endpoints = std::collections::BTreeMap::new();
    match validate(&p) {
        // An invalid spec changes nothing: the last good children stay.
        Err(message) => observations.push(Observation::new(conditions::SPEC_VALID, false, "InvalidSpec", message)),
        Ok(()) => {
            observations.push(Observation::new(conditions::SPEC_VALID, true, "Valid", "the spec is valid"));
            observations.push(reconcile_broker(&p, client, &namespace).await?);
            let (grafana, grafana_url) = reconcile_grafana(&p, client, &namespace).await?;
            observations.push(grafana);
            if let Some(url) = grafana_url {
                endpoints.insert("grafana".to_string(), url);
            }
            if p.spec.mosquitto.managed {
                endpoints.insert("mqtt".to_string(), crate::build::mosquitto::url(&p));
            }
            let config = workers::config_map(&p);
            let hash = workers::config_hash(&config);
            apply(client, &namespace, &config).await?;
            let (mut ready, mut wanted) = (0, 0);
            let ingest_name = workers::stage_name(&p, Stage::Ingest);
            let live_ingest = Api::<StatefulSet>::namespaced(client.clone(), &namespace).get_opt(&ingest_name).await?;
            if live_ingest.is_none() {
                // Before StatefulSets, each stage was a Deployment of the same
                // name: removed once, before the StatefulSets are made (so a
                // resync does not look for them again).
                for stage in Stage::ALL {
                    delete_if_owned::<Deployment>(client, &namespace, &workers::stage_name(&p, stage), &p).await?;
                }
            }
            let sessions = workers::mqtt_sessions(&p, live_ingest.as_ref());
            for stage in Stage::ALL {
                apply(client, &namespace, &workers::metrics_service(&p, stage)).await?;
                let applied = apply(client, &namespace, &workers::stateful_set(&p, stage, &hash, sessions)).await?;
                wanted += applied.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
                ready += applied.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0);
            }
            stages = Some(format!("{ready}/{wanted}"));
            observations.push(if p.spec.suspend {
                Observation::new(conditions::WORKERS_READY, true, "Suspended", "suspended: every stage is scaled to zero")
            } else if ready >= wanted {
                Observation::new(conditions::WORKERS_READY, true, "WorkersAvailable", format!("{ready}/{wanted} worker replicas ready"))
            } else {
                Observation::new(
                    conditions::WORKERS_READY,
                    false,
                    "WorkersProgressing",
                    format!("{ready}/{wanted} worker replicas ready; see `kubectl get pods -l app.kubernetes.io/instance={}`", p.name_any()),
                )
            });
            let kafka = p.spec.pipeline.kafka.as_ref().expect("validated");
            observations.push(match topics::ensure(&ctx.admin, kafka).await {
                Ok(statuses) => {
                    topic_statuses = statuses;
                    Observation::new(conditions::TOPICS_READY, true, "TopicsInLine", format!("{} topics as the spec says", topic_statuses.len()))
                }
                Err(e) => Observation::new(conditions::TOPICS_READY, false, e.reason(), e.to_string()),
            });
        }
    }
    let previous = p.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default();
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let conditions = conditions::merge(&previous, &observations, p.metadata.generation, now);
    let topics_ready = observations.iter().any(|o| o.kind == conditions::TOPICS_READY && o.ok);
    publish_transitions(&p, &previous, &conditions, ctx).await;
    let status = StreamPipelineStatus {
        observed_generation: p.metadata.generation,
        conditions,
        stages,
        topics_summary: Some(format!("{}/3 {}", topic_statuses.len(), if topics_ready { "ready" } else { "not ready" })),
        topics: topic_statuses,
        endpoints,
    };
    // Writes only what changed: an unchanged pipeline's resync does not
    // touch its status.
    if p.status.as_ref().map(|s| same_ignoring_times(s, &status)) != Some(true) {
        let api: Api<StreamPipeline> = Api::namespaced(client.clone(), &namespace);
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

/// The managed Mosquitto: applied when asked for, removed when not.
async fn reconcile_broker(p: &StreamPipeline, client: &Client, namespace: &str) -> Result<Observation, Error> {
    use crate::build::mosquitto;
    let name = mosquitto::name(p);
    // The claim goes when persistence or the whole broker is dropped.
    match mosquitto::data_claim(p).filter(|_| p.spec.mosquitto.managed) {
        Some(claim) => drop(apply(client, namespace, &claim).await?),
        None => delete_if_owned::<PersistentVolumeClaim>(client, namespace, &mosquitto::data_claim_name(p), p).await?,
    }
    if !p.spec.mosquitto.managed {
        // Dropped from the spec: remove what an earlier spec made.
        delete_if_owned::<Deployment>(client, namespace, &name, p).await?;
        delete_if_owned::<Service>(client, namespace, &name, p).await?;
        delete_if_owned::<ConfigMap>(client, namespace, &name, p).await?;
        return Ok(Observation::new(conditions::BROKER_READY, true, "External", format!("using the MQTT broker at {}", p.spec.pipeline.mqtt.url)));
    }
    apply(client, namespace, &mosquitto::config_map(p)).await?;
    apply(client, namespace, &mosquitto::service(p)).await?;
    let applied = apply(client, namespace, &mosquitto::deployment(p)).await?;
    let ready = applied.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0);
    Ok(if ready > 0 {
        Observation::new(conditions::BROKER_READY, true, "BrokerAvailable", format!("Mosquitto is up at {}", mosquitto::url(p)))
    } else {
        Observation::new(
            conditions::BROKER_READY,
            false,
            "BrokerProgressing",
            format!("the Mosquitto Pod is not ready yet; see `kubectl get pods -l app.kubernetes.io/instance={},app.kubernetes.io/component=mosquitto`", p.name_any()),
        )
    })
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
        let owned = object.meta().owner_references.iter().flatten().any(|r| Some(&r.uid) == p.metadata.uid.as_ref());
        if owned {
            api.delete(name, &Default::default()).await?;
        }
    }
    Ok(())
}

/// Grafana: applied when enabled (with a generated admin Secret unless one
/// is referenced), removed when not.
async fn reconcile_grafana(p: &StreamPipeline, client: &Client, namespace: &str) -> Result<(Observation, Option<String>), Error> {
    use crate::build::grafana;
    use k8s_openapi::api::core::v1::Secret;
    let name = grafana::name(p);
    if !p.spec.grafana.enabled {
        delete_if_owned::<Deployment>(client, namespace, &name, p).await?;
        delete_if_owned::<Service>(client, namespace, &name, p).await?;
        delete_if_owned::<ConfigMap>(client, namespace, &format!("{name}-provisioning"), p).await?;
        delete_if_owned::<Secret>(client, namespace, &grafana::admin_secret_name(p), p).await?;
        return Ok((Observation::new(conditions::GRAFANA_READY, true, "Disabled", "Grafana is not enabled for this pipeline"), None));
    }
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
    apply(client, namespace, &grafana::provisioning(p)).await?;
    apply(client, namespace, &grafana::service(p)).await?;
    let applied = apply(client, namespace, &grafana::deployment(p)).await?;
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

fn pipeline_key(p: &StreamPipeline) -> String {
    format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any())
}

pub fn error_policy(p: Arc<StreamPipeline>, error: &Error, ctx: Arc<Context>) -> Action {
    let key = pipeline_key(&p);
    let wait = ctx.backoff.failed(&key);
    tracing::warn!(pipeline = %key, %error, retry_in_s = wait.as_secs(), "reconcile failed");
    Action::requeue(wait)
}

/// Runs the controller until the process is stopped.
pub async fn run(client: Client) {
    run_with(client, None, Arc::new(Default::default())).await
}

/// `run`, counting reconciles in `health`'s metrics.
pub async fn run_with(
    client: Client,
    namespace: Option<&str>,
    health: Arc<millrace_worker::health::Health<crate::metrics::OperatorMetrics>>,
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
    let context = Arc::new(Context::new(client.clone(), health));
    Controller::new(scoped::<StreamPipeline>(&client, namespace), watcher::Config::default())
        .owns(scoped::<StatefulSet>(&client, namespace), watcher::Config::default())
        .owns(scoped::<Deployment>(&client, namespace), watcher::Config::default())
        .owns(scoped::<ConfigMap>(&client, namespace), watcher::Config::default())
        .owns(scoped::<Service>(&client, namespace), watcher::Config::default())
        .shutdown_on_signal()
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "reconcile result");
            }
        })
        .await;
}
