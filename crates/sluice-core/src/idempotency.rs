//! Idempotency keys for actions: one stable key per event × rule × action content, sent as the
//! webhook's `Idempotency-Key` and Standard Webhooks `webhook-id` and recorded on the rule
//! execution, so a retry, a replay or a re-send after a crash carries the same key and receivers
//! can dedupe it.

use crate::hash::sha256_hex;

/// How many hex digits of the digest go into a key: 64 bits, ample to tell apart the action
/// contents of one rule on one event (the ids in front already separate everything else).
const DIGEST_HEX_CHARS: usize = 16;

/// `evt_{event_id}_rule_{rule_id}_{d}` where `d` is the first 16 hex digits of
/// SHA-256(`"{event_id}|{rule_id}|{action_hash}"`), `action_hash` being the action's content hash.
///
/// The ids stay readable so an operator can match a receiver's log line to an event; the digest
/// changes when the action's content does, so a new rule version with a different action is a
/// new delivery while one that changes only the condition is not. The key uses only
/// `[A-Za-z0-9_-]`, safe in an HTTP header and as a `webhook-id`.
pub fn idempotency_key(event_id: i64, rule_id: i64, action_hash: &str) -> String {
    let digest = sha256_hex(format!("{event_id}|{rule_id}|{action_hash}").as_bytes());
    format!(
        "evt_{event_id}_rule_{rule_id}_{}",
        &digest[..DIGEST_HEX_CHARS]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn has_the_documented_shape() {
        let key = idempotency_key(42, 7, "abc");
        let digest = sha256_hex(b"42|7|abc");
        assert_eq!(key, format!("evt_42_rule_7_{}", &digest[..16]));
    }

    #[test]
    fn is_stable() {
        assert_eq!(idempotency_key(1, 2, "h"), idempotency_key(1, 2, "h"));
    }

    #[test]
    fn differs_when_any_input_differs() {
        let base = idempotency_key(1, 2, "h");
        assert_ne!(base, idempotency_key(3, 2, "h"));
        assert_ne!(base, idempotency_key(1, 3, "h"));
        assert_ne!(base, idempotency_key(1, 2, "i"));
        // The separator keeps shifted digits from colliding in the digest input.
        let a = idempotency_key(12, 3, "h");
        let b = idempotency_key(1, 23, "h");
        assert_ne!(a[a.len() - 16..], b[b.len() - 16..]);
    }

    #[test]
    fn is_header_safe() {
        let key = idempotency_key(-5, i64::MAX, "\"weird\" hash\n");
        assert!(key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'));
    }
}
