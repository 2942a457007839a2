//! `PROJECTION_VERSION` follows the projections' serialized shape.
//!
//! Stored projection snapshots are trusted only when they were written by the same
//! `PROJECTION_VERSION` (src/replay.rs). The version is an explicit constant, raised by hand
//! when `apply` or a view's shape changes; this test catches the shape half of "forgot to
//! raise it": `view-shape.v{PROJECTION_VERSION}.json` holds a `LedgerView` with every field
//! given a value, exactly as this build serializes it. A field added, removed, renamed or
//! retyped (here or in the event types the views hold) changes the text, and the recorded
//! file of the current version can no longer match: raise `PROJECTION_VERSION`, and record
//! the new shape as a new file (keep the old ones: they are the history).

use chat_ledger_projections::{LedgerView, PROJECTION_VERSION};
use serde_json::Value;

fn recorded() -> (String, String) {
    let name = format!("view-shape.v{PROJECTION_VERSION}.json");
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(&name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "no shape recorded for PROJECTION_VERSION {PROJECTION_VERSION}: copy the previous \
             view-shape.v*.json to {name} and give every new field a value"
        )
    });
    (name, text)
}

/// Object fields that are null or empty: a sample that leaves a field out of the check.
fn unset_fields(value: &Value, path: &str, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                let here = format!("{path}.{key}");
                let unset = v.is_null()
                    || v.as_object().is_some_and(|m| m.is_empty())
                    || v.as_array().is_some_and(|a| a.is_empty());
                if unset {
                    out.push(here.clone());
                }
                unset_fields(v, &here, out);
            }
        }
        // Inside arrays (tuples such as an open unusable period) a null is a value.
        Value::Array(items) => items.iter().for_each(|v| unset_fields(v, path, out)),
        _ => {}
    }
}

#[test]
fn the_recorded_view_shape_is_this_builds_for_this_projection_version() {
    let (name, text) = recorded();
    let bump = format!(
        "LedgerView's serialized shape differs from {name}: raise PROJECTION_VERSION (now \
         {PROJECTION_VERSION}) so stored snapshots of the old shape are rebuilt, and record the \
         new shape as view-shape.v{}.json",
        PROJECTION_VERSION + 1
    );
    let view: LedgerView = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{bump}: {e}"));
    let again = serde_json::to_string_pretty(&view).unwrap() + "\n";
    assert!(again == text, "{bump}\n--- this build writes ---\n{again}");

    let mut unset = Vec::new();
    unset_fields(&serde_json::from_str(&again).unwrap(), "view", &mut unset);
    assert!(
        unset.is_empty(),
        "every field of the sample needs a value, or its shape goes unchecked: {unset:?}"
    );
}
