//! Access control (`AUTH=api_key`): who may call which route, and who did what.
//!
//! - [`keys`]: what a key looks like, how one is made and hashed (the store keeps only the
//!   hash and a public prefix).
//! - [`keyring`]: every process's in-memory view of the keys table, refreshed every second,
//!   so checking a key costs a hash and a map lookup — no database round trip per request —
//!   and a revoked key is refused everywhere within [`keyring::REFRESH`] plus a query.
//! - [`access`]: the one table mapping routes to scopes (the OpenAPI spec declares the same,
//!   and a test checks the two agree), and the middleware that enforces it on the JSON API.
//! - [`session`]: the console's login sessions (a cookie whose token is stored hashed).
//!
//! With `AUTH=none` (the default) every route is open and nothing is recorded as "by".

pub mod access;
pub mod keyring;
pub mod keys;
pub mod session;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use clap::ValueEnum;
use serde::{Deserialize, Serialize};
use std::convert::Infallible;
use std::sync::Arc;
use utoipa::ToSchema;

/// `AUTH`: whether requests need a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthMode {
    /// Every route open (the local quick start).
    None,
    /// Every route but `/health` and `/ready` needs an API key with the right scope.
    #[value(name = "api_key")]
    ApiKey,
}

/// What a key may do. `admin` covers everything; `ingest` and `read` only their routes.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// `POST /events`, `POST /events/batch`.
    Ingest,
    /// Every `GET` (but the keys list), `/ws`, `/metrics`, `/api-docs.json`; the console
    /// without its write controls.
    Read,
    /// Everything: rules, replay, requeue, keys, and all the above.
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Ingest, Scope::Read, Scope::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Ingest => "ingest",
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A key's scopes, deduplicated and in a stable order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Scopes(Vec<Scope>);

impl Scopes {
    pub fn new(scopes: impl IntoIterator<Item = Scope>) -> Scopes {
        let mut scopes: Vec<Scope> = scopes.into_iter().collect();
        scopes.sort();
        scopes.dedup();
        Scopes(scopes)
    }

    /// From stored names; names this binary does not know are ignored (they grant nothing).
    pub fn from_names<S: AsRef<str>>(names: &[S]) -> Scopes {
        Scopes::new(names.iter().filter_map(|n| Scope::parse(n.as_ref())))
    }

    /// Whether these scopes let a caller do what `needed` guards.
    pub fn cover(&self, needed: Scope) -> bool {
        self.0.contains(&Scope::Admin) || self.0.contains(&needed)
    }

    pub fn as_slice(&self) -> &[Scope] {
        &self.0
    }

    pub fn names(&self) -> Vec<String> {
        self.0.iter().map(|s| s.as_str().to_owned()).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The key a request was made with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub key_id: i64,
    /// The key's name: what audit fields (`created_by`, `requested_by`) record.
    pub name: String,
    pub scopes: Scopes,
}

/// Who is calling, as handlers see it: the key's principal, or nobody with `AUTH=none`.
#[derive(Debug, Clone, Default)]
pub struct Caller(pub Option<Arc<Principal>>);

impl Caller {
    /// The name recorded as "by" (`None` without access control).
    pub fn name(&self) -> Option<&str> {
        self.0.as_deref().map(|p| p.name.as_str())
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Caller(parts.extensions.get::<Arc<Principal>>().cloned()))
    }
}

/// Counts a refused request (`sluice_auth_failures_total{reason}`).
pub fn count_failure(reason: &'static str) {
    metrics::counter!("sluice_auth_failures_total", "reason" => reason).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_covers_every_scope_and_others_only_their_own() {
        let admin = Scopes::new([Scope::Admin]);
        let ingest = Scopes::new([Scope::Ingest]);
        let both = Scopes::from_names(&["read", "ingest", "read", "bogus"]);
        assert!(Scope::ALL.iter().all(|s| admin.cover(*s)));
        assert!(ingest.cover(Scope::Ingest));
        assert!(!ingest.cover(Scope::Read));
        assert!(!ingest.cover(Scope::Admin));
        assert_eq!(both.as_slice(), &[Scope::Ingest, Scope::Read]);
        assert!(!both.cover(Scope::Admin));
    }
}
