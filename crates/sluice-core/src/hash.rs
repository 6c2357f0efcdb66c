//! Canonical JSON and content hashes: two values that are equal as JSON (whatever their key
//! order) hash the same. Used for payload dedupe and for action content in idempotency keys.

use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Writes `value` as compact JSON with object keys sorted, so equal values give equal text.
pub fn canonical_json(value: &Value) -> String {
    let mut out = Vec::new();
    write_canonical(value, &mut out);
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

/// Appends the canonical JSON of `value` to `out`. Keys and scalars are written by
/// serde_json straight into `out` (the same text as `to_string`, without a `String` each:
/// this runs for every ingested event).
pub fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => write_canonical_object(map, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        scalar => write_json(scalar, out),
    }
}

/// Appends the canonical JSON of an object: its keys sorted, at every level.
pub fn write_canonical_object(map: &Map<String, Value>, out: &mut Vec<u8>) {
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    out.push(b'{');
    for (i, (key, item)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_json(key, out);
        out.push(b':');
        write_canonical(item, out);
    }
    out.push(b'}');
}

/// Appends `value` as compact JSON (a string escaped and quoted).
pub fn write_json<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) {
    serde_json::to_writer(out, value).expect("a string or a JSON scalar always serializes");
}

/// Hex SHA-256 of the canonical JSON of `value`.
pub fn content_hash(value: &Value) -> String {
    let mut out = Vec::new();
    write_canonical(value, &mut out);
    sha256_hex(&out)
}

/// Hex SHA-256 of raw bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    sha256_hex_of(&[bytes])
}

/// The SHA-256 of the concatenated `parts`, in hex, without concatenating them.
pub fn sha256_hex_of(parts: &[&[u8]]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part);
    }
    // Into a buffer rather than `hex::encode`, which builds the string a char at a time.
    let mut digits = [0_u8; 64];
    hex::encode_to_slice(hasher.finalize(), &mut digits).expect("64 digits for 32 bytes");
    std::str::from_utf8(&digits)
        .expect("hex digits are ASCII")
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn key_order_does_not_change_the_hash() {
        let a = json!({"a": 1, "b": {"y": [1, 2], "x": null}});
        let b = json!({"b": {"x": null, "y": [1, 2]}, "a": 1});
        assert_eq!(content_hash(&a), content_hash(&b));
        assert_eq!(canonical_json(&a), r#"{"a":1,"b":{"x":null,"y":[1,2]}}"#);
    }

    #[test]
    fn different_values_hash_differently() {
        assert_ne!(
            content_hash(&json!({"a": 1})),
            content_hash(&json!({"a": 2}))
        );
        assert_ne!(content_hash(&json!([1, 2])), content_hash(&json!([2, 1])));
    }
}
