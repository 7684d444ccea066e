//! Whether a child in the cluster has drifted from what the operator wants
//! (pure). A child that has not is left alone, so a resync of an unchanged
//! pipeline sends no write requests; one edited by hand has drifted and is
//! applied again.

use serde_json::Value;

/// True when `actual` no longer holds every field of `desired` with the same
/// value. Fields the server or other managers added are not drift: server-side
/// apply would not remove them either.
pub fn drifted(desired: &Value, actual: &Value) -> bool {
    !holds(actual, desired)
}

fn holds(actual: &Value, desired: &Value) -> bool {
    match (desired, actual) {
        (Value::Object(want), Value::Object(have)) => want.iter().all(|(key, want)| match have.get(key) {
            Some(have) => holds(have, want),
            // The server drops empty values instead of storing them.
            None => is_empty(want),
        }),
        // Lists are owned whole (containers, ports, env): same length,
        // element by element.
        (Value::Array(want), Value::Array(have)) => want.len() == have.len() && want.iter().zip(have).all(|(w, h)| holds(h, w)),
        (Value::Number(want), Value::Number(have)) => want.as_f64() == have.as_f64(),
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

#[cfg(test)]
mod tests {
    use super::drifted;
    use serde_json::json;

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
}
