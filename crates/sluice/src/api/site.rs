//! Which sites may talk to sluice: requests must name an allowed `Host` (a web page cannot
//! reach a loopback sluice through DNS rebinding), writes to the JSON API and `/ws` upgrades
//! from another site's pages are refused (a page cannot forge a replay on the visitor's
//! sluice), and every answer carries headers that stop sniffing and framing.

use crate::error::ApiError;
use axum::extract::Request;
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use std::net::IpAddr;

/// The `Host` names requests may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedHosts {
    Any,
    /// Lowercase names; an entry with a port (`host:port`) matches that port only.
    Only(Vec<String>),
}

impl AllowedHosts {
    /// From `ALLOWED_HOSTS` (comma-separated, `*` for any); unset means the loopback names
    /// when bound to a loopback address, and any host otherwise.
    pub fn from_setting(setting: Option<&str>, bound_to: IpAddr) -> Self {
        match setting.map(str::trim) {
            Some("*") => AllowedHosts::Any,
            Some(list) if !list.is_empty() => AllowedHosts::Only(
                list.split(',')
                    .map(|h| h.trim().to_ascii_lowercase())
                    .filter(|h| !h.is_empty())
                    // A bare IPv6 address is written in brackets in a Host header.
                    .map(|h| match h.parse::<std::net::Ipv6Addr>() {
                        Ok(ip) => format!("[{ip}]"),
                        Err(_) => h,
                    })
                    .collect(),
            ),
            _ if bound_to.is_loopback() => {
                let mut names: Vec<String> = ["localhost", "127.0.0.1", "[::1]"]
                    .map(str::to_owned)
                    .to_vec();
                let bound = match bound_to {
                    IpAddr::V4(ip) => ip.to_string(),
                    IpAddr::V6(ip) => format!("[{ip}]"),
                };
                if !names.contains(&bound) {
                    names.push(bound);
                }
                AllowedHosts::Only(names)
            }
            _ => AllowedHosts::Any,
        }
    }

    pub fn allows(&self, host: &str) -> bool {
        let AllowedHosts::Only(names) = self else {
            return true;
        };
        let host = host.to_ascii_lowercase();
        let name = host_name(&host);
        names
            .iter()
            .any(|allowed| *allowed == host || (!has_port(allowed) && allowed == name))
    }
}

/// `host` without its `:port` (`[::1]:3000` → `[::1]`).
fn host_name(host: &str) -> &str {
    if let Some(end) = host.find(']') {
        // `[v6]` or `[v6]:port`; anything else after the bracket is not a host name.
        let rest = &host[end + 1..];
        return if rest.is_empty() || rest.starts_with(':') {
            &host[..=end]
        } else {
            host
        };
    }
    host.rsplit_once(':').map_or(host, |(name, _)| name)
}

fn has_port(host: &str) -> bool {
    host_name(host).len() != host.len()
}

/// What the guard needs to know, built once at start.
#[derive(Debug, Clone)]
pub struct SitePolicy {
    pub hosts: AllowedHosts,
    /// Origins `CORS_ORIGIN` lets in (their cross-site writes are wanted); `None` = none,
    /// `Some([])` with `any` = every origin.
    pub cors_any: bool,
    pub cors_origins: Vec<String>,
}

impl SitePolicy {
    pub fn new(allowed_hosts: Option<&str>, bound_to: IpAddr, cors: Option<&str>) -> Self {
        let cors = cors.map(str::trim).unwrap_or_default();
        SitePolicy {
            hosts: AllowedHosts::from_setting(allowed_hosts, bound_to),
            cors_any: cors == "*",
            cors_origins: cors
                .split(',')
                .map(|o| o.trim().to_ascii_lowercase())
                .filter(|o| !o.is_empty() && o != "*")
                .collect(),
        }
    }

    fn cors_allows(&self, headers: &HeaderMap) -> bool {
        let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
            return false;
        };
        self.cors_any || self.cors_origins.contains(&origin.to_ascii_lowercase())
    }
}

/// Why a request is refused before it reaches its route: a `Host` not allowed here, or a
/// write or WebSocket upgrade from another site's page. `None`: it may go on.
pub fn refusal(policy: &SitePolicy, request: &Request) -> Option<Response> {
    let headers = request.headers();
    let host = match headers.get(header::HOST) {
        Some(value) => value.to_str().ok(),
        None => request.uri().authority().map(|a| a.as_str()),
    };
    match host {
        Some(host) if policy.hosts.allows(host) => {}
        // No name (HTTP/1.0) or one that is not text: only an open policy serves it.
        None if policy.hosts == AllowedHosts::Any => {}
        _ => {
            return Some(
                ApiError::forbidden(format!(
                    "host '{}' is not allowed here (set ALLOWED_HOSTS to serve it)",
                    host.unwrap_or("(none)")
                ))
                .into_response(),
            );
        }
    }
    let path = request.uri().path();
    let is_console = path == "/console" || path.starts_with("/console/");
    let writes = !matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    let upgrades = headers.contains_key(header::UPGRADE);
    // The console checks its own forms (and shows a page); here, the JSON API and `/ws`.
    if !is_console && (writes || upgrades) && !same_origin(headers) && !policy.cors_allows(headers)
    {
        let what = if upgrades {
            "a WebSocket from another site"
        } else {
            "a write from another site's page"
        };
        return Some(
            ApiError::forbidden(format!(
                "refused {what} (allow its origin with CORS_ORIGIN)"
            ))
            .into_response(),
        );
    }
    None
}

/// Headers every answer that got past the site checks carries: no sniffing, no framing.
pub fn harden(response: &mut Response) {
    let headers = response.headers_mut();
    for (name, value) in [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; frame-ancestors 'none'",
        ),
    ] {
        headers
            .entry(name)
            .or_insert(HeaderValue::from_static(value));
    }
}

/// Browsers say where a request comes from (`Sec-Fetch-Site`, or `Origin` on older ones);
/// requests without either are not from a browser page and cannot be forged by one.
pub fn same_origin(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        return matches!(site.as_bytes(), b"same-origin" | b"none");
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, rest)| rest);
    matches!((origin_host, host), (Some(o), Some(h)) if o.eq_ignore_ascii_case(h))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn cross_site_posts_are_told_apart() {
        assert!(same_origin(&headers(&[])));
        assert!(same_origin(&headers(&[("sec-fetch-site", "same-origin")])));
        assert!(!same_origin(&headers(&[("sec-fetch-site", "cross-site")])));
        assert!(!same_origin(&headers(&[("sec-fetch-site", "same-site")])));
        assert!(same_origin(&headers(&[
            ("origin", "http://127.0.0.1:3000"),
            ("host", "127.0.0.1:3000")
        ])));
        assert!(!same_origin(&headers(&[
            ("origin", "https://evil.example"),
            ("host", "127.0.0.1:3000")
        ])));
        assert!(!same_origin(&headers(&[("origin", "null"), ("host", "x")])));
    }

    #[test]
    fn loopback_binds_allow_only_loopback_names_by_default() {
        let hosts = AllowedHosts::from_setting(None, "127.0.0.1".parse().unwrap());
        assert!(hosts.allows("127.0.0.1:3000"));
        assert!(hosts.allows("localhost:3000"));
        assert!(hosts.allows("LOCALHOST"));
        assert!(hosts.allows("[::1]:3000"));
        assert!(!hosts.allows("evil.example:3000"));
        assert!(!hosts.allows("127.0.0.1.evil.example"));
        assert!(!hosts.allows("[::1]evil.example"));
        let other_loopback = AllowedHosts::from_setting(None, "127.0.0.2".parse().unwrap());
        assert!(other_loopback.allows("127.0.0.2:3000"));
        let open = AllowedHosts::from_setting(None, "0.0.0.0".parse().unwrap());
        assert!(open.allows("evil.example"));
    }

    #[test]
    fn listed_hosts_match_with_or_without_their_port() {
        let hosts = AllowedHosts::from_setting(
            Some("sluice.example.com, api.example.com:8443"),
            "0.0.0.0".parse().unwrap(),
        );
        assert!(hosts.allows("sluice.example.com"));
        assert!(hosts.allows("sluice.example.com:443"));
        assert!(hosts.allows("api.example.com:8443"));
        assert!(!hosts.allows("api.example.com:9000"));
        assert!(!hosts.allows("other.example.com"));
        let v6 = AllowedHosts::from_setting(Some("fe80::1"), "0.0.0.0".parse().unwrap());
        assert!(v6.allows("[fe80::1]:3000"));
        assert_eq!(
            AllowedHosts::from_setting(Some("*"), "127.0.0.1".parse().unwrap()),
            AllowedHosts::Any
        );
    }
}
