//! Grafana for a pipeline (pure): provisioned with the pipeline's InfluxDB
//! (and Prometheus, when it names one) as datasources and the dashboards of
//! [`super::dashboards`].

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, HTTPGetAction, KeyToPath, PodSpec, PodTemplateSpec, Probe, Secret, Service, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::dashboards::{self, Datasource, INFLUXDB, PROMETHEUS};
use super::{labels, metadata, pod_security, secret_env, config_hash, template_metadata};
use crate::crd::StreamPipeline;

pub const PORT: i32 = 3000;
const COMPONENT: &str = "grafana";
/// The Grafana image's own non-root user.
const GRAFANA_USER: i64 = 472;
const DEFAULT_IMAGE: &str = "grafana/grafana:11.3.0";

pub fn name(p: &StreamPipeline) -> String {
    format!("{}-grafana", p.name_any())
}

/// The admin Secret in use: the referenced one, or the generated one.
pub fn admin_secret_name(p: &StreamPipeline) -> String {
    p.spec.grafana.admin_secret.clone().unwrap_or_else(|| format!("{}-admin", name(p)))
}

/// A generated admin Secret (only when none is referenced); `password` is
/// made once by the caller and kept: the Secret is created, never updated.
pub fn generated_admin_secret(p: &StreamPipeline, password: &str) -> Secret {
    Secret {
        metadata: metadata(p, admin_secret_name(p), COMPONENT),
        string_data: Some(BTreeMap::from([("admin-user".into(), "admin".into()), ("admin-password".into(), password.into())])),
        ..Default::default()
    }
}

/// Where the dashboards' JSON files are mounted.
const DASHBOARDS_DIR: &str = "/etc/grafana/dashboards";

/// The datasources provisioned for a pipeline, as its panels name them.
pub fn datasources(p: &StreamPipeline) -> Vec<Datasource> {
    let mut out = vec![INFLUXDB];
    out.extend(p.spec.grafana.prometheus.as_ref().map(|_| PROMETHEUS));
    out
}

/// The dashboards: file name and JSON. The health one needs Prometheus.
pub fn dashboard_files(p: &StreamPipeline) -> Vec<(String, serde_json::Value)> {
    let mut out = vec![("pipeline.json".to_string(), dashboards::data(p))];
    if p.spec.grafana.prometheus.is_some() {
        out.push(("health.json".to_string(), dashboards::health(p)));
    }
    out
}

/// Datasource and dashboard provisioning.
pub fn provisioning(p: &StreamPipeline) -> ConfigMap {
    let influx = p.spec.pipeline.influxdb.as_ref();
    let url = influx.map(|i| i.url.as_str()).unwrap_or("http://influxdb:8086");
    let database = influx.map(|i| i.database.as_str()).unwrap_or("millrace");
    let entry = |d: Datasource, url: &str| {
        format!("  - name: {}\n    uid: {}\n    type: {}\n    access: proxy\n    url: {url}\n", d.name, d.uid, d.kind)
    };
    let mut datasource = format!("apiVersion: 1\ndatasources:\n{}    jsonData: {{dbName: {database}}}\n    isDefault: true\n", entry(INFLUXDB, url));
    if influx.and_then(|i| i.credentials.as_ref()).is_some() {
        datasource.push_str("    user: $INFLUXDB_USERNAME\n    secureJsonData: {password: $INFLUXDB_PASSWORD}\n");
    }
    if let Some(prometheus) = &p.spec.grafana.prometheus {
        datasource.push_str(&entry(PROMETHEUS, &prometheus.url));
        datasource.push_str("    jsonData: {httpMethod: POST}\n");
    }
    let providers = format!("apiVersion: 1\nproviders:\n  - name: millrace\n    type: file\n    options: {{path: {DASHBOARDS_DIR}}}\n");
    let mut data = BTreeMap::from([("datasource.yaml".to_string(), datasource), ("dashboards.yaml".to_string(), providers)]);
    for (file, dashboard) in dashboard_files(p) {
        data.insert(file, serde_json::to_string_pretty(&dashboard).expect("JSON"));
    }
    ConfigMap { metadata: metadata(p, format!("{}-provisioning", name(p)), COMPONENT), data: Some(data), ..Default::default() }
}

pub fn deployment(p: &StreamPipeline) -> Deployment {
    let selector = labels(p, COMPONENT);
    let admin = admin_secret_name(p);
    let mut env = vec![
        secret_env("GF_SECURITY_ADMIN_USER", &admin, "admin-user"),
        secret_env("GF_SECURITY_ADMIN_PASSWORD", &admin, "admin-password"),
        EnvVar { name: "GF_PATHS_PROVISIONING".into(), value: Some("/etc/grafana/provisioning".into()), ..Default::default() },
    ];
    if let Some(c) = p.spec.pipeline.influxdb.as_ref().and_then(|i| i.credentials.as_ref()) {
        env.extend(super::login_env("INFLUXDB", c));
    }
    let provisioning_volume = |n: &str, items: Option<Vec<KeyToPath>>| Volume {
        name: n.into(),
        config_map: Some(ConfigMapVolumeSource { name: format!("{}-provisioning", name(p)), items, ..Default::default() }),
        ..Default::default()
    };
    let dashboard_items = dashboard_files(p).into_iter().map(|(f, _)| KeyToPath { key: f.clone(), path: f, ..Default::default() }).collect();
    // Whole directories, one key each: a subPath mount would never see a
    // changed ConfigMap.
    let only = |key: &str| Some(vec![KeyToPath { key: key.into(), path: key.into(), ..Default::default() }]);
    let mount = |n: &str, path: &str| VolumeMount { name: n.into(), mount_path: path.into(), read_only: Some(true), ..Default::default() };
    Deployment {
        metadata: metadata(p, name(p), COMPONENT),
        spec: Some(DeploymentSpec {
            replicas: Some(1),
            selector: LabelSelector { match_labels: Some(selector.clone()), ..Default::default() },
            template: PodTemplateSpec {
                // Grafana reads its provisioning at start: a change rolls it.
                metadata: Some(template_metadata(selector, config_hash(&provisioning(p)))),
                spec: Some(super::placement::placed(p, PodSpec {
                    security_context: Some(pod_security::pod(p.spec.user_ids, GRAFANA_USER)),
                    containers: vec![Container {
                        name: "grafana".into(),
                        image: Some(p.spec.grafana.image.clone().unwrap_or_else(|| DEFAULT_IMAGE.into())),
                        // Writable root: Grafana's image writes outside its
                        // data volume (logs, plugin and temp files).
                        security_context: Some(pod_security::container(false)),
                        env: Some(env),
                        ports: Some(vec![ContainerPort { name: Some("http".into()), container_port: PORT, protocol: Some("TCP".into()), ..Default::default() }]),
                        readiness_probe: Some(Probe {
                            http_get: Some(HTTPGetAction { path: Some("/api/health".into()), port: IntOrString::Int(PORT), ..Default::default() }),
                            ..Default::default()
                        }),
                        volume_mounts: Some(vec![
                            mount("datasources", "/etc/grafana/provisioning/datasources"),
                            mount("providers", "/etc/grafana/provisioning/dashboards"),
                            VolumeMount { name: "dashboards".into(), mount_path: DASHBOARDS_DIR.into(), read_only: Some(true), ..Default::default() },
                            VolumeMount { name: "data".into(), mount_path: "/var/lib/grafana".into(), ..Default::default() },
                        ]),
                        ..Default::default()
                    }],
                    volumes: Some(vec![
                        provisioning_volume("datasources", only("datasource.yaml")),
                        provisioning_volume("providers", only("dashboards.yaml")),
                        provisioning_volume("dashboards", Some(dashboard_items)),
                        Volume { name: "data".into(), empty_dir: Some(EmptyDirVolumeSource::default()), ..Default::default() },
                    ]),
                    ..Default::default()
                })),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn service(p: &StreamPipeline) -> Service {
    super::service(p, name(p), COMPONENT, "http", PORT, p.spec.grafana.node_port)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipeline(grafana: &str) -> StreamPipeline {
        serde_yaml::from_str(&format!(
            "apiVersion: millrace.io/v1alpha1\nkind: StreamPipeline\nmetadata: {{name: l1, namespace: plant}}\nspec:\n  pipeline:\n    joins: [{{name: power, left: 'a_(\\d)', right: 'b_(\\d)', output: 'vaPower_$1'}}]\n    influxdb: {{url: 'http://influx:8086', database: plant, credentials: {{secretName: influx}}}}\n  grafana: {grafana}\n"
        ))
        .unwrap()
    }

    #[test]
    fn the_datasource_points_at_the_pipelines_influxdb_and_the_dashboard_at_its_joins() {
        let cm = provisioning(&pipeline("{enabled: true}"));
        let data = cm.data.unwrap();
        assert!(data["datasource.yaml"].contains("url: http://influx:8086") && data["datasource.yaml"].contains("dbName: plant"));
        assert!(data["datasource.yaml"].contains("$INFLUXDB_PASSWORD"), "credentials by reference");
        let dashboard: serde_json::Value = serde_json::from_str(&data["pipeline.json"]).unwrap();
        let join_panel = &dashboard["panels"][1];
        assert_eq!(join_panel["title"], "power: vaPower_$1");
        let query = join_panel["targets"][0]["query"].as_str().unwrap();
        assert!(query.contains(r#""quantity" =~ /^vaPower_.*$/"#), "{query}");
    }

    #[test]
    fn provisioning_reaches_grafana_without_sub_path_mounts_and_a_change_rolls_it() {
        let p = pipeline("{enabled: true}");
        let template = deployment(&p).spec.unwrap().template;
        let pod = template.spec.unwrap();
        let mounts = pod.containers[0].volume_mounts.clone().unwrap();
        assert!(mounts.iter().all(|m| m.sub_path.is_none()), "a subPath mount never sees a changed ConfigMap: {mounts:?}");
        // Each provisioning directory holds its one file.
        for (dir, file) in [("/etc/grafana/provisioning/datasources", "datasource.yaml"), ("/etc/grafana/provisioning/dashboards", "dashboards.yaml")] {
            let m = mounts.iter().find(|m| m.mount_path == dir).unwrap_or_else(|| panic!("{dir} not mounted"));
            let v = pod.volumes.as_ref().unwrap().iter().find(|v| v.name == m.name).unwrap();
            let items = v.config_map.as_ref().unwrap().items.clone().unwrap();
            assert_eq!((items.len(), items[0].key.as_str(), items[0].path.as_str()), (1, file, file));
        }
        let hash = template.metadata.unwrap().annotations.unwrap()[crate::children::CONFIG_HASH_ANNOTATION].clone();
        assert_eq!(hash, crate::children::config_hash(&provisioning(&p)));
        let other = deployment(&pipeline("{enabled: true, prometheus: {url: 'http://prom:9090'}}")).spec.unwrap().template.metadata.unwrap();
        assert_ne!(other.annotations.unwrap()[crate::children::CONFIG_HASH_ANNOTATION], hash, "new provisioning, new template");
    }

    #[test]
    fn a_node_port_exposes_grafana_outside_the_cluster() {
        assert_eq!(service(&pipeline("{enabled: true}")).spec.unwrap().type_, None);
        let outside = service(&pipeline("{enabled: true, nodePort: 30300}")).spec.unwrap();
        assert_eq!(outside.type_.as_deref(), Some("NodePort"));
        assert_eq!(outside.ports.unwrap()[0].node_port, Some(30300));
    }

    #[test]
    fn the_admin_secret_is_generated_unless_one_is_referenced() {
        let generated = pipeline("{enabled: true}");
        assert_eq!(admin_secret_name(&generated), "l1-grafana-admin");
        let s = generated_admin_secret(&generated, "pw");
        assert_eq!(s.string_data.unwrap()["admin-password"], "pw");
        let referenced = pipeline("{enabled: true, adminSecret: mine}");
        let d = deployment(&referenced);
        let env = d.spec.unwrap().template.spec.unwrap().containers[0].env.clone().unwrap();
        assert_eq!(env[1].value_from.as_ref().unwrap().secret_key_ref.as_ref().unwrap().name, "mine");
    }
}
