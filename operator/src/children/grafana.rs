//! Grafana for a pipeline (pure): provisioned with the pipeline's InfluxDB
//! as datasource and a dashboard of its raw and joined quantities.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, HTTPGetAction, PodSecurityContext,
    PodSpec, PodTemplateSpec, Probe, Secret, Service, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::{labels, metadata, secret_env};
use crate::crd::StreamPipeline;

pub const PORT: i32 = 3000;
const COMPONENT: &str = "grafana";
const DEFAULT_IMAGE: &str = "grafana/grafana:11.3.0";

/// The uid of the pipeline's dashboard (Grafana allows 40 characters).
pub fn dashboard_uid(p: &StreamPipeline) -> String {
    format!("millrace-{}", p.name_any())
}

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

/// Datasource and dashboard provisioning.
pub fn provisioning(p: &StreamPipeline) -> ConfigMap {
    let influx = p.spec.pipeline.influxdb.as_ref();
    let url = influx.map(|i| i.url.as_str()).unwrap_or("http://influxdb:8086");
    let database = influx.map(|i| i.database.as_str()).unwrap_or("millrace");
    let measurement = influx.map(|i| i.measurement.as_str()).unwrap_or("machine");
    let mut datasource = format!(
        "apiVersion: 1\ndatasources:\n  - name: InfluxDB\n    uid: millrace-influxdb\n    type: influxdb\n    access: proxy\n    url: {url}\n    jsonData: {{dbName: {database}}}\n    isDefault: true\n"
    );
    if influx.and_then(|i| i.credentials.as_ref()).is_some() {
        datasource.push_str("    user: $INFLUXDB_USERNAME\n    secureJsonData: {password: $INFLUXDB_PASSWORD}\n");
    }
    let providers = "apiVersion: 1\nproviders:\n  - name: millrace\n    type: file\n    options: {path: /etc/grafana/dashboards}\n".to_string();
    let joined: Vec<String> = p.spec.pipeline.joins.iter().map(|j| j.output.clone().unwrap_or_else(|| j.name.clone())).collect();
    let panel = |id: usize, title: &str, filter: &str, y: usize| {
        serde_json::json!({
            "id": id, "type": "timeseries", "title": title,
            "gridPos": {"h": 9, "w": 24, "x": 0, "y": y},
            "datasource": {"type": "influxdb", "uid": "millrace-influxdb"},
            "targets": [{"refId": "A", "rawQuery": true,
                "query": format!("SELECT mean(\"result\") FROM \"{measurement}\" WHERE {filter} AND $timeFilter GROUP BY time($__interval), \"thing\", \"quantity\" fill(none)")}]
        })
    };
    let joined_filter = if joined.is_empty() {
        "\"quantity\" = ''".to_string()
    } else {
        // Output names may use capture groups ($1): match them as patterns.
        let patterns: Vec<String> = joined.iter().map(|o| regex_for_output(o)).collect();
        format!("\"quantity\" =~ /^({})$/", patterns.join("|"))
    };
    let dashboard = serde_json::json!({
        "uid": dashboard_uid(p),
        "title": format!("Millrace: {}", p.name_any()),
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "10s",
        "panels": [panel(1, "Joined results", &joined_filter, 0), panel(2, "Raw quantities", "\"quantity\" =~ /.*/", 9)],
    });
    ConfigMap {
        metadata: metadata(p, format!("{}-provisioning", name(p)), COMPONENT),
        data: Some(BTreeMap::from([
            ("datasource.yaml".into(), datasource),
            ("dashboards.yaml".into(), providers),
            ("pipeline.json".into(), serde_json::to_string_pretty(&dashboard).expect("JSON")),
        ])),
        ..Default::default()
    }
}

/// `vaPower_$1` -> `vaPower_.*` (escaped otherwise), for InfluxQL regexes.
fn regex_for_output(output: &str) -> String {
    let mut out = String::new();
    let mut chars = output.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(|d| d.is_ascii_digit()) {
            while chars.peek().is_some_and(|d| d.is_ascii_digit()) {
                chars.next();
            }
            out.push_str(".*");
        } else if c.is_ascii_alphanumeric() || c == '_' {
            out.push(c);
        } else {
            out.push('\\');
            out.push(c);
        }
    }
    out
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
        env.push(secret_env("INFLUXDB_USERNAME", &c.secret_name, &c.username_key));
        env.push(secret_env("INFLUXDB_PASSWORD", &c.secret_name, &c.password_key));
    }
    let provisioning_volume = |n: &str| Volume {
        name: n.into(),
        config_map: Some(ConfigMapVolumeSource { name: format!("{}-provisioning", name(p)), ..Default::default() }),
        ..Default::default()
    };
    let mount = |n: &str, path: &str, sub: &str| VolumeMount {
        name: n.into(),
        mount_path: path.into(),
        sub_path: Some(sub.into()),
        read_only: Some(true),
        ..Default::default()
    };
    Deployment {
        metadata: metadata(p, name(p), COMPONENT),
        spec: Some(DeploymentSpec {
            replicas: Some(1),
            selector: LabelSelector { match_labels: Some(selector.clone()), ..Default::default() },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(selector), ..Default::default() }),
                spec: Some(PodSpec {
                    security_context: Some(PodSecurityContext { run_as_non_root: Some(true), run_as_user: Some(472), fs_group: Some(472), ..Default::default() }),
                    containers: vec![Container {
                        name: "grafana".into(),
                        image: Some(p.spec.grafana.image.clone().unwrap_or_else(|| DEFAULT_IMAGE.into())),
                        env: Some(env),
                        ports: Some(vec![ContainerPort { name: Some("http".into()), container_port: PORT, protocol: Some("TCP".into()), ..Default::default() }]),
                        readiness_probe: Some(Probe {
                            http_get: Some(HTTPGetAction { path: Some("/api/health".into()), port: IntOrString::Int(PORT), ..Default::default() }),
                            ..Default::default()
                        }),
                        volume_mounts: Some(vec![
                            mount("provisioning", "/etc/grafana/provisioning/datasources/datasource.yaml", "datasource.yaml"),
                            mount("provisioning", "/etc/grafana/provisioning/dashboards/dashboards.yaml", "dashboards.yaml"),
                            mount("provisioning", "/etc/grafana/dashboards/pipeline.json", "pipeline.json"),
                            VolumeMount { name: "data".into(), mount_path: "/var/lib/grafana".into(), ..Default::default() },
                        ]),
                        ..Default::default()
                    }],
                    volumes: Some(vec![
                        provisioning_volume("provisioning"),
                        Volume { name: "data".into(), empty_dir: Some(EmptyDirVolumeSource::default()), ..Default::default() },
                    ]),
                    ..Default::default()
                }),
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
        let query = dashboard["panels"][0]["targets"][0]["query"].as_str().unwrap();
        assert!(query.contains(r#""quantity" =~ /^(vaPower_.*)$/"#), "{query}");
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
