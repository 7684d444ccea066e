//! The Grafana dashboards of a pipeline (pure JSON): what a plant engineer
//! reads (one panel per join rule, the raw quantities per machine, with
//! machine and quantity to choose), and the pipeline's health from
//! Prometheus. Each names its datasource by the uid provisioned beside it.

use kube::ResourceExt;
use serde_json::{json, Value};

use crate::crd::StreamPipeline;

/// A provisioned datasource, as the panels name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Datasource {
    pub name: &'static str,
    pub uid: &'static str,
    pub kind: &'static str,
}

pub const INFLUXDB: Datasource = Datasource { name: "InfluxDB", uid: "millrace-influxdb", kind: "influxdb" };
pub const PROMETHEUS: Datasource = Datasource { name: "Prometheus", uid: "millrace-prometheus", kind: "prometheus" };

/// The dashboard JSON's schema version (Grafana 11).
const SCHEMA_VERSION: u32 = 39;
const WIDTH: u32 = 24;
const HEIGHT: u32 = 8;

/// The uid of the pipeline's data dashboard (Grafana allows 40 characters).
pub fn data_uid(p: &StreamPipeline) -> String {
    format!("millrace-{}", p.name_any())
}

/// The uid of the health dashboard: shorter than the data one's, so the
/// same limit on the pipeline's name covers both.
pub fn health_uid(p: &StreamPipeline) -> String {
    format!("health-{}", p.name_any())
}

fn datasource(d: Datasource) -> Value {
    json!({"type": d.kind, "uid": d.uid})
}

/// Places panels left to right, wrapping at Grafana's 24 columns.
struct Layout {
    y: u32,
    x: u32,
}

impl Layout {
    fn place(&mut self, width: u32) -> Value {
        if self.x + width > WIDTH {
            self.x = 0;
            self.y += HEIGHT;
        }
        let pos = json!({"h": HEIGHT, "w": width, "x": self.x, "y": self.y});
        self.x += width;
        pos
    }

    fn row(&mut self, id: u32, title: &str) -> Value {
        if self.x > 0 {
            self.x = 0;
            self.y += HEIGHT;
        }
        let row = json!({"id": id, "type": "row", "title": title, "collapsed": false, "panels": [],
            "gridPos": {"h": 1, "w": WIDTH, "x": 0, "y": self.y}});
        self.y += 1;
        row
    }
}

fn dashboard(uid: String, title: String, tags: &[&str], variables: Vec<Value>, panels: Vec<Value>) -> Value {
    json!({
        "uid": uid, "title": title, "tags": tags,
        "editable": true, "graphTooltip": 1, "schemaVersion": SCHEMA_VERSION,
        "time": {"from": "now-1h", "to": "now"}, "refresh": "10s",
        "templating": {"list": variables}, "annotations": {"list": []},
        "panels": panels,
    })
}

fn timeseries(id: u32, title: &str, description: &str, ds: Datasource, grid: Value, unit: &str, targets: Vec<Value>) -> Value {
    json!({
        "id": id, "type": "timeseries", "title": title, "description": description,
        "gridPos": grid, "datasource": datasource(ds), "targets": targets,
        "fieldConfig": {"defaults": {"unit": unit, "custom": {"spanNulls": false, "showPoints": "auto"}}, "overrides": []},
        "options": {"legend": {"displayMode": "table", "placement": "right", "calcs": ["lastNotNull", "max"], "showLegend": true},
            "tooltip": {"mode": "multi", "sort": "none"}},
    })
}

/// An InfluxDB variable listing one tag's values, filtered by `where_`.
fn tag_variable(name: &str, label: &str, measurement: &str, key: &str, where_: &str) -> Value {
    let query = format!("SHOW TAG VALUES FROM \"{measurement}\" WITH KEY = \"{key}\"{where_}");
    json!({
        "name": name, "label": label, "type": "query", "datasource": datasource(INFLUXDB),
        "query": query, "refresh": 2, "sort": 1,
        "multi": true, "includeAll": true, "current": {"text": ["All"], "value": ["$__all"]},
    })
}

fn influx_target(ref_id: &str, measurement: &str, filter: &str, group_by: &str, alias: &str) -> Value {
    json!({"refId": ref_id, "rawQuery": true, "resultFormat": "time_series", "alias": alias,
        "query": format!("SELECT mean(\"result\") FROM \"{measurement}\" WHERE {filter} AND $timeFilter GROUP BY time($__interval), {group_by} fill(none)")})
}

/// The data dashboard: a panel per join rule (its outputs per machine and
/// axis, as the prototype's power per axis), then the chosen raw
/// quantities, a panel per chosen machine.
pub fn data(p: &StreamPipeline) -> Value {
    let influx = p.spec.pipeline.influxdb.as_ref();
    let measurement = influx.map(|i| i.measurement.as_str()).unwrap_or("machine");
    let variables = vec![
        tag_variable("thing", "Machine", measurement, "thing", ""),
        tag_variable("quantity", "Quantity", measurement, "quantity", " WHERE \"thing\" =~ /^$thing$/"),
    ];
    let mut layout = Layout { x: 0, y: 0 };
    let mut panels = vec![layout.row(1, "Joined quantities")];
    let mut id = 2;
    for rule in &p.spec.pipeline.joins {
        let output = rule.output.clone().unwrap_or_else(|| rule.name.clone());
        let description = format!(
            "Join rule {}: {} = {} of {} (left) and {} (right), per machine and axis.",
            rule.name,
            output,
            rule.expression.as_deref().unwrap_or("the pair"),
            rule.left,
            rule.right
        );
        let filter = format!("\"quantity\" =~ /^{}$/ AND \"thing\" =~ /^$thing$/", regex_for_output(&output));
        let target = influx_target("A", measurement, &filter, "\"thing\", \"quantity\"", "$tag_thing $tag_quantity");
        panels.push(timeseries(id, &format!("{}: {output}", rule.name), &description, INFLUXDB, layout.place(WIDTH), "none", vec![target]));
        id += 1;
    }
    panels.push(layout.row(id, "Raw quantities per machine"));
    let mut raw = timeseries(
        id + 1,
        "Machine $thing",
        "The quantities chosen above, as the machine sent them (mean per interval).",
        INFLUXDB,
        layout.place(WIDTH / 2),
        "none",
        vec![influx_target("A", measurement, "\"thing\" =~ /^$thing$/ AND \"quantity\" =~ /^$quantity$/", "\"quantity\"", "$tag_quantity")],
    );
    // One panel per chosen machine, two to a row.
    raw["repeat"] = json!("thing");
    raw["repeatDirection"] = json!("h");
    raw["maxPerRow"] = json!(2);
    panels.push(raw);
    dashboard(data_uid(p), format!("Millrace: {}", p.name_any()), &["millrace"], variables, panels)
}

/// `vaPower_$1` -> `vaPower_.*` (escaped otherwise), for InfluxQL regexes.
pub fn regex_for_output(output: &str) -> String {
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

/// Title, description, unit, width, and (query, legend) of a health panel.
type HealthPanel<'a> = (&'a str, &'a str, &'a str, u32, Vec<(String, &'a str)>);

fn prom_target(ref_id: &str, expr: String, legend: &str) -> Value {
    json!({"refId": ref_id, "expr": expr, "legendFormat": legend, "range": true, "datasource": datasource(PROMETHEUS)})
}

/// The health dashboard, from the workers' own metrics
/// (`worker/src/metrics.rs`) and the operator's.
pub fn health(p: &StreamPipeline) -> Value {
    // Pods of the pipeline's StatefulSets are `<name>-<stage>-<ordinal>`.
    let sel = format!("namespace=\"{}\", pod=~\"{}-(ingest|join|export)-[0-9]+\"", p.namespace().unwrap_or_default(), p.name_any());
    let rate = |metric: &str, extra: &str, by: &str| format!("sum by ({by}) (rate({metric}{{{sel}{extra}}}[$__rate_interval]))");
    let tx = format!("rate(millrace_join_transaction_seconds_count{{{sel}}}[$__rate_interval])");
    let p99 = |metric: &str, sel: &str| format!("histogram_quantile(0.99, sum by (le) (rate({metric}_bucket{sel}[$__rate_interval])))");
    let half = WIDTH / 2;
    let rows: Vec<HealthPanel> = vec![
        (
            "Ingest",
            "MQTT messages read and narrow records produced per second.",
            "ops",
            half,
            vec![
                (rate("millrace_records_in_total", ", stage=\"ingest\"", "stage"), "messages in"),
                (rate("millrace_records_out_total", ", stage=\"ingest\"", "stage"), "records out"),
            ],
        ),
        (
            "Export",
            "Points written to InfluxDB per second.",
            "ops",
            half,
            vec![
                (rate("millrace_records_out_total", ", stage=\"export\"", "stage"), "points written"),
                (rate("millrace_records_in_total", ", stage=\"export\"", "stage"), "records read"),
            ],
        ),
        (
            "Join: lag",
            "Records in the raw topic the join stage has not read yet.",
            "short",
            half,
            vec![(format!("sum(millrace_lag{{{sel}, stage=\"join\"}})"), "lag")],
        ),
        (
            "Join: state",
            "Records the join holds, per raw-topic partition: bounded, not growing.",
            "short",
            half,
            vec![(format!("sum by (partition) (millrace_join_state_records{{{sel}}})"), "partition {{partition}}")],
        ),
        (
            "Join: transactions",
            "Committed transactions per second and their 99th-percentile duration.",
            "short",
            half,
            vec![(format!("sum({tx})"), "commits/s"), (p99("millrace_join_transaction_seconds", &format!("{{{sel}}}")), "p99 seconds")],
        ),
        (
            "Join: records",
            "Records read and joined records produced per second.",
            "ops",
            half,
            vec![
                (rate("millrace_records_in_total", ", stage=\"join\"", "stage"), "read"),
                (rate("millrace_records_out_total", ", stage=\"join\"", "stage"), "joined"),
            ],
        ),
        (
            "Dead letters by reason",
            "Bad input set aside per second, by stage and reason.",
            "ops",
            half,
            vec![(rate("millrace_dead_letters_total", "", "stage, reason"), "{{stage}} {{reason}}")],
        ),
        (
            "Errors survived",
            "Errors a stage retried or survived, by kind.",
            "ops",
            half,
            vec![(rate("millrace_errors_total", "", "stage, kind"), "{{stage}} {{kind}}")],
        ),
        (
            "Operator: reconciles",
            "Reconciles of every pipeline by result, and the 99th-percentile duration.",
            "short",
            WIDTH,
            vec![
                ("sum by (result) (rate(millrace_reconciles_total[$__rate_interval]))".into(), "{{result}}/s"),
                (p99("millrace_reconcile_seconds", ""), "p99 seconds"),
            ],
        ),
    ];
    let mut layout = Layout { x: 0, y: 0 };
    let panels = rows
        .into_iter()
        .zip(1..)
        .map(|((title, description, unit, width, queries), id)| {
            let targets = queries.into_iter().zip(["A", "B"]).map(|((expr, legend), r)| prom_target(r, expr, legend)).collect();
            timeseries(id, title, description, PROMETHEUS, layout.place(width), unit, targets)
        })
        .collect();
    dashboard(health_uid(p), format!("Millrace: {} health", p.name_any()), &["millrace", "health"], vec![], panels)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipeline(joins: &str) -> StreamPipeline {
        serde_yaml::from_str(&format!(
            "apiVersion: millrace.io/v1alpha1\nkind: StreamPipeline\nmetadata: {{name: l1, namespace: plant}}\nspec:\n  pipeline:\n    joins: {joins}\n"
        ))
        .unwrap()
    }

    fn queries(d: &Value) -> Vec<(String, String)> {
        d["panels"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|p| {
                p["targets"].as_array().cloned().unwrap_or_default().into_iter().map(move |t| (p["title"].as_str().unwrap().to_string(), t))
            })
            .map(|(title, t)| (title, t["query"].as_str().or(t["expr"].as_str()).unwrap().to_string()))
            .collect()
    }

    #[test]
    fn each_join_rule_has_its_panel_over_its_outputs_and_the_chosen_machines() {
        let d =
            data(&pipeline("[{name: power, left: 'a_(\\d)', right: 'b_(\\d)', output: 'vaPower_$1'}, {name: ratio, left: x, right: y}]"));
        let q = queries(&d);
        assert_eq!(q.len(), 3, "{q:?}");
        assert_eq!(q[0].0, "power: vaPower_$1");
        assert!(q[0].1.contains(r#""quantity" =~ /^vaPower_.*$/ AND "thing" =~ /^$thing$/"#), "{}", q[0].1);
        assert!(q[1].1.contains(r#""quantity" =~ /^ratio$/"#), "an output-less rule is named after itself: {}", q[1].1);
        assert!(
            q[2].1.contains(r#""quantity" =~ /^$quantity$/"#) && q[2].1.contains(r#"GROUP BY time($__interval), "quantity""#),
            "{}",
            q[2].1
        );
        let vars: Vec<&str> = d["templating"]["list"].as_array().unwrap().iter().map(|v| v["name"].as_str().unwrap()).collect();
        assert_eq!(vars, ["thing", "quantity"]);
        assert_eq!(d["panels"].as_array().unwrap().last().unwrap()["repeat"], "thing");
    }

    #[test]
    fn health_queries_select_this_pipelines_pods_only() {
        let q = queries(&health(&pipeline("[]")));
        let worker: Vec<_> = q.iter().filter(|(_, e)| !e.contains("reconcile")).collect();
        assert!(worker.len() >= 10, "{q:?}");
        for (title, e) in worker {
            assert!(e.contains(r#"namespace="plant", pod=~"l1-(ingest|join|export)-[0-9]+""#), "{title}: {e}");
        }
    }

    #[test]
    fn panels_do_not_overlap() {
        let p = pipeline("[{name: a, left: x, right: y}, {name: b, left: x, right: z}, {name: c, left: y, right: z}]");
        for d in [data(&p), health(&p)] {
            let cells: Vec<(u64, u64, u64, u64)> = d["panels"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    let g = &p["gridPos"];
                    (g["x"].as_u64().unwrap(), g["y"].as_u64().unwrap(), g["w"].as_u64().unwrap(), g["h"].as_u64().unwrap())
                })
                .collect();
            for (i, a) in cells.iter().enumerate() {
                assert!(a.0 + a.2 <= WIDTH as u64);
                for b in &cells[i + 1..] {
                    let apart = a.0 + a.2 <= b.0 || b.0 + b.2 <= a.0 || a.1 + a.3 <= b.1 || b.1 + b.3 <= a.1;
                    assert!(apart, "{a:?} overlaps {b:?} in {}", d["title"]);
                }
            }
        }
    }
}
