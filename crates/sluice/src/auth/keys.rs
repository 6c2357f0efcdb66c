//! API keys: `sk_` + 8 public characters (the prefix, shown in listings and used to find the
//! key) + 32 secret characters, all from [A-Za-z0-9] — about 190 bits of secret. Only the
//! prefix and a SHA-256 of the whole key are stored: a random key that long needs no slow
//! password hash, and a leaked table gives nothing to log in with.

use rand::distributions::{Alphanumeric, DistString};
use rand::rngs::OsRng;
use sha2::{Digest, Sha256};

const MARK: &str = "sk_";
const PUBLIC_LEN: usize = 8;
const SECRET_LEN: usize = 32;
/// Length of a whole key.
pub const KEY_LEN: usize = MARK.len() + PUBLIC_LEN + SECRET_LEN;
/// Length of the stored, displayable prefix (`sk_` and the public part).
pub const PREFIX_LEN: usize = MARK.len() + PUBLIC_LEN;

/// A key just made: the only moment its plaintext exists on the server.
pub struct GeneratedKey {
    pub key: String,
    pub prefix: String,
    pub hash: [u8; 32],
}

impl std::fmt::Debug for GeneratedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratedKey")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// A new random key from the operating system's generator.
pub fn generate() -> GeneratedKey {
    let body = Alphanumeric.sample_string(&mut OsRng, PUBLIC_LEN + SECRET_LEN);
    let key = format!("{MARK}{body}");
    GeneratedKey {
        prefix: key[..PREFIX_LEN].to_owned(),
        hash: digest(&key),
        key,
    }
}

/// SHA-256 of a key (or of a session token).
pub fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// The hash as stored: lowercase hex.
pub fn to_hex(hash: &[u8; 32]) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

/// The stored hex form back to bytes; `None` if it is not 64 hex digits.
pub fn from_hex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// The prefix of something shaped like a key; `None` if it cannot be one (so it is refused
/// without any lookup).
pub fn prefix_of(candidate: &str) -> Option<&str> {
    let well_formed = candidate.len() == KEY_LEN
        && candidate.starts_with(MARK)
        && candidate[MARK.len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric());
    well_formed.then(|| &candidate[..PREFIX_LEN])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_prefixed_random_and_recognised() {
        let a = generate();
        let b = generate();
        assert_ne!(a.key, b.key);
        assert!(a.key.starts_with("sk_"));
        assert_eq!(a.key.len(), KEY_LEN);
        assert_eq!(prefix_of(&a.key), Some(a.prefix.as_str()));
        assert_eq!(a.hash, digest(&a.key));
        assert_eq!(from_hex(&to_hex(&a.hash)), Some(a.hash));
        assert!(!format!("{a:?}").contains(&a.key[PREFIX_LEN..]));
    }

    #[test]
    fn malformed_keys_have_no_prefix() {
        assert_eq!(prefix_of(""), None);
        assert_eq!(prefix_of("sk_short"), None);
        assert_eq!(prefix_of(&format!("pk_{}", "a".repeat(40))), None);
        assert_eq!(prefix_of(&format!("sk_{}!", "a".repeat(39))), None);
        assert_eq!(prefix_of(&format!("sk_{}é", "a".repeat(38))), None);
        assert_eq!(from_hex("zz"), None);
    }
}
