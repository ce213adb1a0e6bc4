//! `events.k8s.io/v1` Events are a second view of the core Events, as in a real cluster:
//! what kube-rs' `Recorder` writes through one API, `kubectl get events` reads through
//! the other. Objects are stored in the core form; these functions convert.

use serde_json::{Map, Value};

/// `(events.k8s.io/v1 field, core/v1 field)` pairs that differ only by name.
const RENAMES: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

/// Core Event → `events.k8s.io/v1` Event.
pub fn to_v1(core: &Value) -> Value {
    let mut out = rename(core, |(v1, core)| (core, v1));
    if let Value::Object(map) = &mut out {
        map.insert("apiVersion".into(), "events.k8s.io/v1".into());
        map.insert("kind".into(), "Event".into());
    }
    out
}

/// `events.k8s.io/v1` Event → core Event.
pub fn to_core(v1: &Value) -> Value {
    let mut out = rename(v1, |(v1, core)| (v1, core));
    if let Value::Object(map) = &mut out {
        map.insert("apiVersion".into(), "v1".into());
        map.insert("kind".into(), "Event".into());
    }
    out
}

fn rename(
    input: &Value,
    direction: impl Fn((&'static str, &'static str)) -> (&'static str, &'static str),
) -> Value {
    let Some(map) = input.as_object() else {
        return input.clone();
    };
    let mut out = Map::new();
    for (key, value) in map {
        let renamed = RENAMES
            .iter()
            .map(|pair| direction(*pair))
            .find(|(from, _)| from == key)
            .map(|(_, to)| to);
        out.insert(renamed.unwrap_or(key).to_string(), value.clone());
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_v1_event_survives_the_round_trip_through_core() {
        let v1 = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"},
            "regarding": {"kind": "Pod", "name": "p"}, "note": "hello", "reason": "Started",
            "reportingController": "kcache", "series": {"count": 2}});
        let core = to_core(&v1);
        assert_eq!(core["involvedObject"]["name"], "p");
        assert_eq!(core["message"], "hello");
        assert_eq!(core["apiVersion"], "v1");
        assert_eq!(to_v1(&core), v1);
    }
}
