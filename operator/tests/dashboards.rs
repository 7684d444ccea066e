//! The Grafana the operator provisions: every dashboard type-checks against
//! Grafana's own schema types (npm `@grafana/schema`, with `tsc --strict`),
//! and every panel, query and variable names a datasource that is
//! provisioned beside it, with its type. Grafana itself cannot be had here.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use millrace_operator::children::grafana;
use millrace_operator::crd::StreamPipeline;
use serde_json::Value;

const GRAFANA_SCHEMA_VERSION: &str = "13.2.3";

/// Pipelines as users write them, and the corners: several joins, none,
/// credentials, a Prometheus.
fn pipelines() -> Vec<(&'static str, StreamPipeline)> {
    let parse = |yaml: &str| serde_yaml::from_str::<StreamPipeline>(yaml).unwrap();
    let base = "apiVersion: millrace.io/v1alpha1\nkind: StreamPipeline\nmetadata: {name: l1, namespace: plant}\nspec:\n  pipeline:\n    kafka: {bootstrapServers: 'k:9092'}\n    influxdb: {url: 'http://influx:8086', database: plant, credentials: {secretName: influx}}\n";
    vec![
        ("examples/streampipeline.yaml", parse(include_str!("../../examples/streampipeline.yaml"))),
        ("scripts/kind/pipeline.yaml", parse(include_str!("../../scripts/kind/pipeline.yaml"))),
        (
            "two joins and Prometheus",
            parse(&format!("{base}    joins:\n      - {{name: power, left: 'actSpeed_(C\\d+)', right: 'vaTorque_(C\\d+)', output: 'derivedPower_$1', expression: '2*pi/60*left*right'}}\n      - {{name: load, left: vaLoad_C11, right: vaCurr_C11}}\n  grafana: {{enabled: true, prometheus: {{url: 'http://prometheus.monitoring:9090'}}}}\n")),
        ),
        ("no joins", parse(&format!("{base}  grafana: {{enabled: true}}\n"))),
    ]
}

/// Panels, rows' panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in dashboard["panels"].as_array().unwrap() {
        out.push(p);
        out.extend(p["panels"].as_array().into_iter().flatten());
    }
    out
}

#[test]
fn every_panel_query_and_variable_names_a_provisioned_datasource() {
    for (name, p) in pipelines() {
        let data = grafana::provisioning(&p).data.unwrap();
        let provisioned: serde_yaml::Value = serde_yaml::from_str(&data["datasource.yaml"]).unwrap();
        assert_eq!(provisioned["apiVersion"], 1, "{name}");
        let mut known = BTreeSet::new();
        for d in provisioned["datasources"].as_sequence().unwrap() {
            for field in ["name", "uid", "type", "access", "url"] {
                assert!(d[field].as_str().is_some_and(|v| !v.is_empty()), "{name}: datasource without {field}: {d:?}");
            }
            assert!(known.insert((d["uid"].as_str().unwrap().to_string(), d["type"].as_str().unwrap().to_string())), "{name}: uid twice");
        }
        let expected: BTreeSet<_> = grafana::datasources(&p).iter().map(|d| (d.uid.to_string(), d.kind.to_string())).collect();
        assert_eq!(known, expected, "{name}");
        assert_eq!(
            p.spec.grafana.prometheus.is_some(),
            known.iter().any(|(_, t)| t == "prometheus"),
            "{name}: Prometheus exactly when named"
        );

        let files = grafana::dashboard_files(&p);
        assert_eq!(files.len(), 1 + p.spec.grafana.prometheus.is_some() as usize, "{name}: the health dashboard comes with Prometheus");
        for (file, dashboard) in &files {
            assert_eq!(serde_json::from_str::<Value>(&data[file]).unwrap(), *dashboard, "{name}: {file} is what the ConfigMap holds");
            let resolves = |what: String, ds: &Value| {
                let key = (ds["uid"].as_str().unwrap_or_default().to_string(), ds["type"].as_str().unwrap_or_default().to_string());
                assert!(known.contains(&key), "{name} {file}: {what} names datasource {ds}, not one of {known:?}");
            };
            for v in dashboard["templating"]["list"].as_array().unwrap() {
                resolves(format!("variable {}", v["name"]), &v["datasource"]);
            }
            let mut queried = 0;
            for panel in panels(dashboard).into_iter().filter(|p| p["type"] != "row") {
                resolves(format!("panel {}", panel["title"]), &panel["datasource"]);
                for t in panel["targets"].as_array().unwrap() {
                    if !t["datasource"].is_null() {
                        resolves(format!("panel {} query {}", panel["title"], t["refId"]), &t["datasource"]);
                    }
                    queried += 1;
                }
            }
            assert!(queried > 0, "{name} {file}: no queries");
        }

        // Grafana finds the files where the provider says they are.
        let providers: serde_yaml::Value = serde_yaml::from_str(&data["dashboards.yaml"]).unwrap();
        assert_eq!(providers["apiVersion"], 1);
        let path = providers["providers"][0]["options"]["path"].as_str().unwrap();
        let pod = grafana::deployment(&p).spec.unwrap().template.spec.unwrap();
        let mount = pod.containers[0].volume_mounts.as_ref().unwrap().iter().find(|m| m.mount_path == path).expect("dashboards mounted");
        let volume = pod.volumes.unwrap().into_iter().find(|v| v.name == mount.name).unwrap();
        let items: BTreeSet<String> = volume.config_map.unwrap().items.unwrap().into_iter().map(|i| i.key).collect();
        assert_eq!(items, files.iter().map(|(f, _)| f.clone()).collect(), "{name}");
    }
}

/// `tsc` and Grafana's types from `scripts/deps.sh` (under the cache).
fn grafana_schema() -> Option<PathBuf> {
    let cache = std::env::var_os("MILLRACE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/millrace"));
    let dir = cache.join(format!("grafana-schema-{GRAFANA_SCHEMA_VERSION}"));
    let ready = dir.join("node_modules/typescript/bin/tsc").exists() && dir.join("node_modules/@grafana/schema/package.json").exists();
    if ready && Command::new("node").arg("--version").output().is_ok() {
        return Some(dir);
    }
    assert!(!millrace_testkit::in_ci(), "{} (tsc and @grafana/schema) or node missing: run scripts/deps.sh", dir.display());
    eprintln!("skipped: {} or node missing: run scripts/deps.sh", dir.display());
    None
}

/// Type-checks each (file stem, dashboard JSON); the errors, if any.
fn type_check(schema: &std::path::Path, dashboards: &[(String, Value)]) -> Result<(), String> {
    // Inside the schema's directory, so that `@grafana/schema` resolves.
    let dir = tempfile::tempdir_in(schema).unwrap();
    let mut files = Vec::new();
    for (stem, json) in dashboards {
        let path = dir.path().join(format!("{stem}.ts"));
        let text = serde_json::to_string_pretty(json).unwrap();
        std::fs::write(
            &path,
            format!("import type {{ Dashboard }} from '@grafana/schema';\nexport const dashboard: Dashboard = {text};\n"),
        )
        .unwrap();
        files.push(path);
    }
    let out = Command::new("node")
        .arg(schema.join("node_modules/typescript/bin/tsc"))
        .args(["--noEmit", "--strict", "--skipLibCheck", "--module", "esnext", "--moduleResolution", "bundler", "--target", "es2022"])
        .args(&files)
        .current_dir(dir.path())
        .output()
        .unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    }
}

#[test]
fn every_dashboard_type_checks_against_grafanas_schema() {
    let Some(schema) = grafana_schema() else { return };
    let mut dashboards = Vec::new();
    for (i, (_, p)) in pipelines().into_iter().enumerate() {
        for (file, json) in grafana::dashboard_files(&p) {
            dashboards.push((format!("p{i}_{}", file.trim_end_matches(".json")), json));
        }
    }
    assert!(dashboards.len() >= 5, "{}", dashboards.len());
    type_check(&schema, &dashboards).unwrap_or_else(|e| panic!("a dashboard does not fit Grafana's schema:\n{e}"));

    // The check has teeth: a panel with a key Grafana does not know, or a
    // gridPos without its height, is refused.
    let mut unknown_key = dashboards[0].1.clone();
    unknown_key["panels"][1]["colour"] = "red".into();
    let mut no_height = dashboards[0].1.clone();
    no_height["panels"][1]["gridPos"].as_object_mut().unwrap().remove("h");
    for (what, bad) in [("unknown key", unknown_key), ("gridPos without h", no_height)] {
        let e = type_check(&schema, &[("bad".into(), bad)]).expect_err(what);
        assert!(e.contains("error TS"), "{what}: {e}");
    }
}

/// The health queries are PromQL that `promtool` accepts, over metrics the
/// worker and the operator register (checked against their sources: the
/// operator does not depend on the worker).
#[test]
fn health_queries_parse_and_use_the_metrics_the_code_registers() {
    let (_, p) = pipelines().into_iter().find(|(_, p)| p.spec.grafana.prometheus.is_some()).unwrap();
    let health = grafana::dashboard_files(&p).into_iter().find(|(f, _)| f == "health.json").unwrap().1;
    let exprs: Vec<String> = panels(&health)
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter().map(|t| t["expr"].as_str().unwrap().replace("$__rate_interval", "5m")))
        .collect();
    let registered = [include_str!("../../worker/src/metrics.rs"), include_str!("../src/metrics.rs")].concat();
    for e in &exprs {
        let names: Vec<&str> = e
            .match_indices("millrace_")
            .map(|(i, _)| e[i + "millrace_".len()..].split(|c: char| !(c.is_ascii_lowercase() || c == '_')).next().unwrap())
            .collect();
        assert!(!names.is_empty(), "no millrace metric in {e}");
        for name in names {
            let base = ["_total", "_count", "_bucket", "_sum"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name);
            assert!(
                registered.contains(&format!("register(\"{base}\"")),
                "{e}: millrace_{base} is not registered by the worker or the operator"
            );
        }
    }
    let promtool = match millrace_testkit::find_binary("promtool") {
        Ok(p) => p,
        Err(e) => {
            assert!(!millrace_testkit::in_ci(), "{e}");
            eprintln!("skipped the PromQL check: {e}");
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let rules: Vec<Value> =
        exprs.iter().enumerate().map(|(i, e)| serde_json::json!({"record": format!("millrace:check_{i}"), "expr": e})).collect();
    let file = dir.path().join("rules.yaml");
    std::fs::write(&file, serde_yaml::to_string(&serde_json::json!({"groups": [{"name": "health", "rules": rules}]})).unwrap()).unwrap();
    let out = Command::new(promtool).args(["check", "rules"]).arg(&file).output().unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

/// The data dashboard's InfluxQL runs on a real InfluxDB 1.x, with the
/// variables interpolated as Grafana does (a multi-value regex), and finds
/// what the export stage writes: the join panel its outputs, the raw panel
/// the chosen quantities, the variables the machines and quantities.
#[test]
fn data_queries_run_on_influxdb_and_find_the_exported_series() {
    let influx = millrace_testkit::require!(millrace_testkit::InfluxDb::start());
    let (_, p) = pipelines().into_iter().find(|(n, _)| *n == "two joins and Prometheus").unwrap();
    let db = &p.spec.pipeline.influxdb.as_ref().unwrap().database;
    influx.query("", &format!("CREATE DATABASE \"{db}\"")).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let mut lines = String::new();
    for (i, (thing, quantity)) in [
        ("R0815", "derivedPower_C11"),
        ("R0815", "derivedPower_C12"),
        ("H31415", "vaLoad_C11"),
        ("R0815", "actSpeed_C11"),
        ("H31415", "load"),
    ]
    .iter()
    .enumerate()
    {
        lines.push_str(&format!("machine,thing={thing},quantity={quantity} result={}.5 {}\n", i + 1, now - 60_000_000_000));
    }
    influx.write(db, &lines).unwrap();

    let grafana = |q: &str| {
        q.replace("$timeFilter", "time > now() - 1h")
            .replace("$__interval", "10s")
            .replace("$thing", "(R0815|H31415)")
            .replace("$quantity", "(actSpeed_C11|vaLoad_C11)")
    };
    let series = |q: &str| -> Vec<String> {
        let answer = influx.query(db, &grafana(q)).unwrap();
        assert!(answer.pointer("/results/0/error").is_none(), "{q}: {answer}");
        let rows = answer.pointer("/results/0/series").and_then(Value::as_array).cloned().unwrap_or_default();
        let mut found: Vec<String> = rows
            .iter()
            .flat_map(|s| match s["tags"].as_object() {
                Some(tags) => {
                    let tag = |k: &str| tags.get(k).and_then(Value::as_str).unwrap_or("-").to_string();
                    vec![format!("{} {}", tag("thing"), tag("quantity"))]
                }
                None => s["values"].as_array().unwrap().iter().map(|v| v[1].as_str().unwrap().to_string()).collect(),
            })
            .collect();
        found.sort();
        found
    };
    let d = grafana::dashboard_files(&p).remove(0).1;
    let vars: Vec<Vec<String>> = d["templating"]["list"].as_array().unwrap().iter().map(|v| series(v["query"].as_str().unwrap())).collect();
    assert_eq!(vars[0], ["H31415", "R0815"]);
    assert_eq!(vars[1], ["actSpeed_C11", "derivedPower_C11", "derivedPower_C12", "load", "vaLoad_C11"]);
    let found: Vec<(String, Vec<String>)> = panels(&d)
        .into_iter()
        .filter(|p| p["type"] != "row")
        .map(|p| (p["title"].as_str().unwrap().to_string(), series(p["targets"][0]["query"].as_str().unwrap())))
        .collect();
    assert_eq!(
        found,
        [
            ("power: derivedPower_$1".to_string(), vec!["R0815 derivedPower_C11".to_string(), "R0815 derivedPower_C12".to_string()]),
            ("load: load".to_string(), vec!["H31415 load".to_string()]),
            ("Machine $thing".to_string(), vec!["- actSpeed_C11".to_string(), "- vaLoad_C11".to_string()]),
        ]
    );
}
