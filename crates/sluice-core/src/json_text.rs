//! A JSON document read for one purpose: to be checked and written back in canonical form.
//!
//! [`JsonNode`] borrows every string it can from the request's bytes and keeps an object's
//! entries in a plain list, so reading an event costs one allocation per object and array
//! instead of one per key and string, and no hashing of keys: `serde_json::Value` (with its
//! ordered, hashed maps) spent about a sixth of the API's work per ingested event on this.
//! The canonical text it writes is the text [`crate::hash::write_canonical`] writes for the
//! equal `Value`, so payload hashes do not depend on which of the two read the JSON.

use crate::error::join_path;
use crate::hash::write_json;
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Number;
use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

/// One JSON value. An object keeps its entries in document order, duplicates included; as
/// in `serde_json::Value`, the last of equal keys is the one that counts.
#[derive(Debug, Clone, PartialEq)]
pub enum JsonNode<'a> {
    Null,
    Bool(bool),
    Number(Number),
    String(Cow<'a, str>),
    Array(Vec<JsonNode<'a>>),
    Object(Vec<(Cow<'a, str>, JsonNode<'a>)>),
}

impl<'a> JsonNode<'a> {
    /// "object", "array", "string", … for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            JsonNode::Null => "null",
            JsonNode::Bool(_) => "boolean",
            JsonNode::Number(_) => "number",
            JsonNode::String(_) => "string",
            JsonNode::Array(_) => "array",
            JsonNode::Object(_) => "object",
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            JsonNode::String(s) => Some(s),
            _ => None,
        }
    }

    /// An object's value for `key` (the last, if the key repeats).
    pub fn get(&self, key: &str) -> Option<&JsonNode<'a>> {
        match self {
            JsonNode::Object(entries) => entries.iter().rev().find(|(k, _)| k == key).map(|e| &e.1),
            _ => None,
        }
    }

    /// The value a JSON pointer (RFC 6901: `/a/0/b`, `~1` for `/`, `~0` for `~`) names.
    pub fn pointer(&self, pointer: &str) -> Option<&JsonNode<'a>> {
        if pointer.is_empty() {
            return Some(self);
        }
        let mut node = self;
        for token in pointer.strip_prefix('/')?.split('/') {
            let token = token.replace("~1", "/").replace("~0", "~");
            node = match node {
                JsonNode::Object(_) => node.get(&token)?,
                JsonNode::Array(items) => {
                    if token.len() > 1 && token.starts_with('0') {
                        return None;
                    }
                    items.get(token.parse::<usize>().ok()?)?
                }
                _ => return None,
            };
        }
        Some(node)
    }

    /// Takes an object's value for `key` out of it (the last, if the key repeats).
    pub fn take(&mut self, key: &str) -> Option<JsonNode<'a>> {
        match self {
            JsonNode::Object(entries) => {
                let at = entries.iter().rposition(|(k, _)| k == key)?;
                Some(std::mem::replace(&mut entries[at].1, JsonNode::Null))
            }
            _ => None,
        }
    }

    /// An object's distinct keys, in the order they first appear.
    pub fn keys(&self) -> Vec<&str> {
        let JsonNode::Object(entries) = self else {
            return Vec::new();
        };
        let mut seen = HashSet::with_capacity(entries.len());
        entries
            .iter()
            .map(|(k, _)| k.as_ref())
            .filter(|k| seen.insert(*k))
            .collect()
    }

    /// Appends the canonical JSON of this value to `out` (compact, keys sorted at every
    /// level, the last of equal keys kept) and returns its nesting depth: scalars are 0,
    /// `{}`/`[]` of scalars are 1.
    pub fn write_canonical(&self, out: &mut Vec<u8>) -> usize {
        match self {
            JsonNode::Null => {
                out.extend_from_slice(b"null");
                0
            }
            JsonNode::Bool(b) => {
                out.extend_from_slice(if *b { b"true" } else { b"false" });
                0
            }
            JsonNode::Number(n) => {
                write_json(n, out);
                0
            }
            JsonNode::String(s) => {
                write_json(s.as_ref(), out);
                0
            }
            JsonNode::Array(items) => {
                out.push(b'[');
                let mut deepest = 0;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    deepest = deepest.max(item.write_canonical(out));
                }
                out.push(b']');
                deepest + 1
            }
            JsonNode::Object(entries) => {
                out.push(b'{');
                let mut deepest = 0;
                for (i, (key, item)) in live_entries_sorted(entries).into_iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write_json(key.as_ref(), out);
                    out.push(b':');
                    deepest = deepest.max(item.write_canonical(out));
                }
                out.push(b'}');
                deepest + 1
            }
        }
    }

    /// The path (from `path`) of a string, key or value, that holds U+0000, which no backend
    /// can store as JSON text (PostgreSQL's `jsonb` refuses it), or `None`. Keys are visited
    /// in sorted order, as they are written; no path is built unless there is one to find.
    pub fn nul_path(&self, path: &str) -> Option<String> {
        if !self.may_hold_nul() {
            return None;
        }
        match self {
            JsonNode::String(_) => Some(path.to_owned()),
            JsonNode::Array(items) => items
                .iter()
                .enumerate()
                .filter(|(_, item)| item.may_hold_nul())
                .find_map(|(i, item)| item.nul_path(&format!("{path}[{i}]"))),
            JsonNode::Object(entries) => {
                live_entries_sorted(entries)
                    .into_iter()
                    .find_map(|(key, item)| {
                        if key.contains('\0') {
                            Some(join_path(path, &key.replace('\0', "\\u0000")))
                        } else if item.may_hold_nul() {
                            item.nul_path(&join_path(path, key))
                        } else {
                            None
                        }
                    })
            }
            _ => None,
        }
    }

    /// Whether any string in this value, shadowed entries included, holds U+0000: the
    /// common answer, no, without sorting or allocating.
    fn may_hold_nul(&self) -> bool {
        match self {
            JsonNode::String(s) => s.contains('\0'),
            JsonNode::Array(items) => items.iter().any(JsonNode::may_hold_nul),
            JsonNode::Object(entries) => entries
                .iter()
                .any(|(key, item)| key.contains('\0') || item.may_hold_nul()),
            _ => false,
        }
    }
}

/// An object's entries sorted by key, each key once with its last value. The sort is
/// stable, so equal keys stay in document order and the last of each run is the live one.
fn live_entries_sorted<'n, 'a>(
    entries: &'n [(Cow<'a, str>, JsonNode<'a>)],
) -> Vec<(&'n Cow<'a, str>, &'n JsonNode<'a>)> {
    let mut sorted: Vec<(&Cow<'a, str>, &JsonNode<'a>)> =
        entries.iter().map(|(k, v)| (k, v)).collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut live: Vec<(&Cow<'a, str>, &JsonNode<'a>)> = Vec::with_capacity(sorted.len());
    for entry in sorted {
        match live.last_mut() {
            Some(last) if last.0 == entry.0 => *last = entry,
            _ => live.push(entry),
        }
    }
    live
}

impl<'de> Deserialize<'de> for JsonNode<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = JsonNode<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(JsonNode::Null)
    }

    fn visit_bool<E>(self, b: bool) -> Result<Self::Value, E> {
        Ok(JsonNode::Bool(b))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Self::Value, E> {
        Ok(JsonNode::Number(n.into()))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Self::Value, E> {
        Ok(JsonNode::Number(n.into()))
    }

    fn visit_f64<E>(self, n: f64) -> Result<Self::Value, E> {
        // As `serde_json::Value` does: a float JSON cannot spell becomes null.
        Ok(Number::from_f64(n).map_or(JsonNode::Null, JsonNode::Number))
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(JsonNode::String(Cow::Borrowed(s)))
    }

    fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
        Ok(JsonNode::String(Cow::Owned(s.to_owned())))
    }

    fn visit_string<E>(self, s: String) -> Result<Self::Value, E> {
        Ok(JsonNode::String(Cow::Owned(s)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(JsonNode::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0).min(64));
        while let Some(Key(key)) = map.next_key()? {
            entries.push((key, map.next_value()?));
        }
        Ok(JsonNode::Object(entries))
    }
}

/// An object key, borrowed from the document when it has no escapes (serde's own `Cow`
/// always copies).
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E>(self, s: String) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(s)))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::canonical_json;
    use serde_json::Value;

    fn canonical(text: &str) -> (String, usize) {
        let node: JsonNode = serde_json::from_str(text).expect("valid JSON");
        let mut out = Vec::new();
        let depth = node.write_canonical(&mut out);
        (String::from_utf8(out).expect("UTF-8"), depth)
    }

    #[test]
    fn writes_the_same_canonical_text_as_a_value() {
        for text in [
            r#"{"b": [1, 2.5, -0, 1e3, 12345678901234567890, -9223372036854775808], "a": null}"#,
            r#"{"é": "\u00e9\n\t\"\\\u0001", "e\u0301": true, "": false, "z": {"y": {}, "x": []}}"#,
            r#"{"k": 1, "j": 2, "k": 3, "nested": {"a": 1, "a": {"deep": [0.1, 1.0e-7]}}}"#,
            r#"[{"b": 1, "a": 2}, "x", 3.0, 1.7976931348623157e308]"#,
            r#""just a string""#,
        ] {
            let value: Value = serde_json::from_str(text).expect("valid JSON");
            assert_eq!(canonical(text).0, canonical_json(&value), "{text}");
        }
    }

    #[test]
    fn reports_the_depth_of_what_it_wrote() {
        assert_eq!(canonical("1").1, 0);
        assert_eq!(canonical("{}").1, 1);
        assert_eq!(canonical(r#"{"a": [1, {"b": []}]}"#).1, 4);
        // A value shadowed by a later equal key does not count.
        assert_eq!(canonical(r#"{"a": [[[[]]]], "a": 1}"#).1, 1);
    }

    #[test]
    fn strings_without_escapes_are_borrowed() {
        let text = r#"{"plain": "text", "esc\u0061ped": "x\ny"}"#;
        let JsonNode::Object(entries) = serde_json::from_str::<JsonNode>(text).expect("valid")
        else {
            panic!("an object")
        };
        assert!(matches!(entries[0].0, Cow::Borrowed("plain")));
        assert!(matches!(
            entries[0].1,
            JsonNode::String(Cow::Borrowed("text"))
        ));
        assert_eq!(entries[1].0, "escaped");
        assert_eq!(
            entries[1].1,
            JsonNode::String(Cow::Owned("x\ny".to_owned()))
        );
    }

    #[test]
    fn the_last_of_equal_keys_counts() {
        let mut node: JsonNode =
            serde_json::from_str(r#"{"a": 1, "b": 2, "a": "last"}"#).expect("valid");
        assert_eq!(node.get("a").and_then(JsonNode::as_str), Some("last"));
        assert_eq!(node.keys(), ["a", "b"]);
        assert_eq!(node.take("a"), Some(JsonNode::String("last".into())));
        assert_eq!(node.get("missing"), None);
    }

    #[test]
    fn finds_a_nul_in_keys_and_values_with_its_path() {
        let node: JsonNode =
            serde_json::from_str(r#"{"ok": "fine", "list": [1, {"k": "a\u0000b"}]}"#)
                .expect("valid");
        assert_eq!(node.nul_path("data").as_deref(), Some("data.list[1].k"));
        let key: JsonNode = serde_json::from_str(r#"{"a\u0000": 1}"#).expect("valid");
        assert_eq!(key.nul_path("data").as_deref(), Some("data.a\\u0000"));
        let clean: JsonNode = serde_json::from_str(r#"{"a": ["\\u0000"]}"#).expect("valid");
        assert_eq!(clean.nul_path("data"), None);
        // Shadowed by a later equal key: not stored, so not refused.
        let shadowed: JsonNode = serde_json::from_str(r#"{"a": "\u0000", "a": 1}"#).expect("valid");
        assert_eq!(shadowed.nul_path("data"), None);
    }
}
