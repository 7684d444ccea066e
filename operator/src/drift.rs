//! Whether a child in the cluster has drifted from what the operator wants
//! (pure). A child that has not is left alone, so a resync of an unchanged
//! pipeline sends no write requests; one edited by hand has drifted and is
//! applied again, and so has one that still holds a field the operator set
//! before but no longer wants (server-side apply then removes it).

use serde_json::Value;

/// True when `actual` no longer holds every field of `desired` with the same
/// value, or still holds a field the operator applied before that `desired`
/// has dropped (its `managedFields` say which are ours). Fields the server
/// or other managers added are not drift: server-side apply would not
/// remove them either.
pub fn drifted(desired: &Value, actual: &Value) -> bool {
    !holds(actual, desired, false) || holds_dropped_fields(desired, actual)
}

/// `quantities`: values under `limits` or `requests` (resource quantities,
/// which the server rewrites: `0.5` is stored as `500m`).
fn holds(actual: &Value, desired: &Value, quantities: bool) -> bool {
    match (desired, actual) {
        (Value::Object(want), Value::Object(have)) => want.iter().all(|(key, want)| match have.get(key) {
            Some(have) => holds(have, want, quantities || key == "limits" || key == "requests"),
            // The server drops empty values instead of storing them, and
            // Go's `omitempty` drops false, 0 and "" (`readOnly: false`).
            None => is_empty(want) || matches!(want, Value::Bool(false)) || want.as_f64() == Some(0.0) || want.as_str() == Some(""),
        }),
        // Lists are owned whole (containers, ports, env): same length,
        // element by element.
        (Value::Array(want), Value::Array(have)) => want.len() == have.len() && want.iter().zip(have).all(|(w, h)| holds(h, w, false)),
        (Value::Number(want), Value::Number(have)) => want.as_f64() == have.as_f64(),
        (Value::String(want), Value::String(have)) if quantities && want != have => {
            quantity_nanos(want).is_some_and(|w| Some(w) == quantity_nanos(have))
        }
        (want, have) => want == have || (is_empty(want) && is_empty(have)),
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

/// A Kubernetes resource quantity (`500m`, `0.5`, `1Gi`, `1e3`) in billionths,
/// exactly; `None` when it is not one (or too large).
pub fn quantity_nanos(text: &str) -> Option<i128> {
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-')).unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let (sign, number) = match number.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, number.strip_prefix('+').unwrap_or(number)),
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() || !(whole.chars().chain(fraction.chars()).all(|c| c.is_ascii_digit())) {
        return None;
    }
    let digits: i128 = format!("{whole}{fraction}").parse().ok()?;
    let multiplier: i128 = match suffix {
        "n" => 1,
        "u" => 1_000,
        "m" => 1_000_000,
        "" => 1_000_000_000,
        "k" => 1_000_000_000_000,
        "M" => 10i128.pow(15),
        "G" => 10i128.pow(18),
        "T" => 10i128.pow(21),
        "P" => 10i128.pow(24),
        "E" => 10i128.pow(27),
        "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" => {
            let power = ["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"].iter().position(|s| *s == suffix)? as u32 + 1;
            (1i128 << (10 * power)) * 1_000_000_000
        }
        exponent => {
            let e: u32 = exponent.strip_prefix(['e', 'E'])?.parse().ok()?;
            10i128.checked_pow(e)?.checked_mul(1_000_000_000)?
        }
    };
    let scaled = digits.checked_mul(multiplier)?;
    let divisor = 10i128.checked_pow(fraction.len() as u32)?;
    // Below a billionth the server rounds up; equal values still compare equal.
    Some(sign * scaled / divisor)
}

/// Whether `actual` holds a field that the operator's last apply set (its
/// entry in `managedFields`) and that `desired` no longer has.
fn holds_dropped_fields(desired: &Value, actual: &Value) -> bool {
    let Some(entries) = actual.pointer("/metadata/managedFields").and_then(Value::as_array) else {
        return false;
    };
    entries
        .iter()
        .filter(|e| e["manager"] == crate::reconcile::FIELD_MANAGER && e["operation"] == "Apply")
        .filter_map(|e| e.get("fieldsV1"))
        .any(|owned| !covered(owned, desired))
}

/// Whether every field of the `fieldsV1` tree `owned` is in `desired`:
/// `f:name` a field, `k:{..}` a list item by its key fields, `v:..` a set
/// member, `.` the item itself.
fn covered(owned: &Value, desired: &Value) -> bool {
    let Value::Object(fields) = owned else { return true };
    fields.iter().all(|(key, below)| {
        if let Some(name) = key.strip_prefix("f:") {
            return match desired.get(name) {
                Some(d) if !d.is_null() => covered(below, d),
                _ => false,
            };
        }
        if let Some(keys) = key.strip_prefix("k:") {
            let Ok(Value::Object(keys)) = serde_json::from_str::<Value>(keys) else { return true };
            let item = desired.as_array().and_then(|items| items.iter().find(|item| keys.iter().all(|(k, v)| key_matches(item, k, v))));
            return item.is_some_and(|item| covered(below, item));
        }
        if let Some(value) = key.strip_prefix("v:") {
            let Ok(value) = serde_json::from_str::<Value>(value) else { return true };
            return desired.as_array().is_some_and(|items| items.contains(&value));
        }
        true
    })
}

/// A list item's key field as the server keys it: a port's `protocol` left
/// out is the server's default, TCP.
fn key_matches(item: &Value, key: &str, value: &Value) -> bool {
    match item.get(key) {
        Some(v) => v == value || v.as_f64().is_some_and(|v| Some(v) == value.as_f64()),
        None => key == "protocol" && value == "TCP",
    }
}

#[cfg(test)]
mod tests {
    use super::drifted;
    use serde_json::json;

    #[test]
    fn zero_values_the_server_leaves_out_are_not_drift() {
        let desired = json!({"spec": {"volumeMounts": [{"name": "auth", "mountPath": "/a", "readOnly": false}], "replicas": 0}});
        let actual = json!({"spec": {"volumeMounts": [{"name": "auth", "mountPath": "/a"}]}});
        assert!(!drifted(&desired, &actual));
        let hand_edited = json!({"spec": {"volumeMounts": [{"name": "auth", "mountPath": "/a", "readOnly": true}]}});
        assert!(drifted(&desired, &hand_edited));
    }

    #[test]
    fn fields_added_by_the_server_are_not_drift() {
        let desired = json!({"metadata": {"name": "a", "labels": {"x": "1"}}, "spec": {"replicas": 2, "ports": [{"port": 80}]}});
        let actual = json!({
            "metadata": {"name": "a", "labels": {"x": "1"}, "resourceVersion": "7", "uid": "u", "managedFields": []},
            "spec": {"replicas": 2, "ports": [{"port": 80, "protocol": "TCP"}], "clusterIP": "10.96.0.3"},
            "status": {"readyReplicas": 0}
        });
        assert!(!drifted(&desired, &actual));
    }

    #[test]
    fn a_changed_or_missing_field_is_drift() {
        let desired = json!({"spec": {"replicas": 2, "template": {"image": "w:1"}}});
        assert!(drifted(&desired, &json!({"spec": {"replicas": 3, "template": {"image": "w:1"}}})));
        assert!(drifted(&desired, &json!({"spec": {"replicas": 2, "template": {}}})));
        assert!(drifted(&desired, &json!({"spec": {"replicas": 2}})));
    }

    #[test]
    fn lists_must_match_in_length_and_order() {
        let desired = json!({"ports": [{"port": 80}, {"port": 81}]});
        assert!(drifted(&desired, &json!({"ports": [{"port": 81}, {"port": 80}]})));
        assert!(drifted(&desired, &json!({"ports": [{"port": 80}]})));
        assert!(drifted(&desired, &json!({"ports": [{"port": 80}, {"port": 81}, {"port": 82}]})));
        assert!(!drifted(&desired, &json!({"ports": [{"port": 80, "name": "a"}, {"port": 81}]})));
    }

    #[test]
    fn empty_values_the_server_omits_are_not_drift() {
        let desired = json!({"spec": {"volumes": [], "nodeSelector": {}, "hostname": null}});
        assert!(!drifted(&desired, &json!({"spec": {}})));
        assert!(drifted(&json!({"spec": {"volumes": [1]}}), &json!({"spec": {}})));
    }

    #[test]
    fn numbers_compare_by_value() {
        assert!(!drifted(&json!({"n": 1}), &json!({"n": 1.0})));
        assert!(drifted(&json!({"n": 1}), &json!({"n": 2})));
    }

    #[test]
    fn quantities_compare_by_value_under_limits_and_requests() {
        let desired = json!({"resources": {"limits": {"cpu": "0.5", "memory": "1Gi"}, "requests": {"cpu": "100m"}}});
        let stored = json!({"resources": {"limits": {"cpu": "500m", "memory": "1073741824"}, "requests": {"cpu": "0.1"}}});
        assert!(!drifted(&desired, &stored));
        assert!(drifted(&desired, &json!({"resources": {"limits": {"cpu": "600m", "memory": "1Gi"}, "requests": {"cpu": "100m"}}})));
        // Elsewhere strings are strings.
        assert!(drifted(&json!({"image": "0.5"}), &json!({"image": "500m"})));
        assert_eq!(super::quantity_nanos("1.5Gi"), Some(1_610_612_736_000_000_000));
        assert_eq!(super::quantity_nanos("2e3"), super::quantity_nanos("2k"));
        assert_eq!(super::quantity_nanos("-1m"), Some(-1_000_000));
        assert_eq!(super::quantity_nanos("abc"), None);
        assert_eq!(super::quantity_nanos("1Xi"), None);
    }

    #[test]
    fn a_field_the_operator_set_and_no_longer_wants_is_drift() {
        let owned = json!([{"manager": "millrace-operator", "operation": "Apply", "fieldsV1": {
            "f:spec": {"f:type": {}, "f:ports": {"k:{\"port\":1883,\"protocol\":\"TCP\"}": {".": {}, "f:name": {}, "f:nodePort": {}, "f:port": {}}}}
        }}, {"manager": "kubectl", "operation": "Update", "fieldsV1": {"f:spec": {"f:sessionAffinity": {}}}}]);
        let actual = json!({"metadata": {"managedFields": owned}, "spec": {"type": "NodePort", "sessionAffinity": "None",
            "ports": [{"name": "mqtt", "port": 1883, "protocol": "TCP", "nodePort": 31883}]}});
        // Still wanted: no drift (protocol left to the server's default).
        let with = json!({"spec": {"type": "NodePort", "ports": [{"name": "mqtt", "port": 1883, "nodePort": 31883}]}});
        assert!(!drifted(&with, &actual));
        // nodePort removed from the spec (and the type with it): drift.
        let without = json!({"spec": {"type": "ClusterIP", "ports": [{"name": "mqtt", "port": 1883}]}});
        assert!(drifted(&without, &actual));
        let without_port = json!({"spec": {"type": "NodePort", "ports": [{"name": "mqtt", "port": 1883}]}});
        assert!(drifted(&without_port, &actual), "a field of ours gone from the spec");
        // Another manager's field is not ours to remove.
        let actual_kubectl_only = json!({"metadata": {"managedFields": [owned[1].clone()]}, "spec": {"type": "NodePort", "sessionAffinity": "None",
            "ports": [{"name": "mqtt", "port": 1883, "protocol": "TCP", "nodePort": 31883}]}});
        assert!(!drifted(&without_port, &actual_kubectl_only));
    }
}
