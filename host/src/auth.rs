//! Who may use the admin API, and for what. Three scopes, each a bearer token:
//!
//! | scope | may | for |
//! | --- | --- | --- |
//! | `read` | every `GET` | dashboards, monitoring |
//! | `deploy` | `read`, plus uploading components and creating, scaling and deleting services | CI pipelines |
//! | `admin` | everything, membership and fault injection included | operators |
//!
//! The admin token is always set; the read and deploy tokens exist when configured
//! (`--read-token-file`, `--deploy-token-file`, or the cluster directory's `read-token`
//! and `deploy-token`). Tokens are compared in constant time.

use http::{HeaderMap, Method};

/// What a token allows, from least to most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Read,
    Deploy,
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Deploy => "deploy",
            Scope::Admin => "admin",
        }
    }
}

/// The node's admin API tokens.
#[derive(Clone)]
pub struct Tokens {
    pub admin: String,
    pub deploy: Option<String>,
    pub read: Option<String>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("deploy", &self.deploy.is_some())
            .field("read", &self.read.is_some())
            .finish_non_exhaustive()
    }
}

/// Compare without an early exit, so response time does not reveal a matching prefix.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers.get(http::header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ").map(str::trim)
}

impl Tokens {
    /// The scope of the request's bearer token, if it is one of the node's.
    pub fn scope_of(&self, headers: &HeaderMap) -> Option<Scope> {
        let given = bearer(headers)?.as_bytes();
        // Check every token whatever matches, so timing says nothing about which.
        let admin = constant_time_eq(given, self.admin.as_bytes());
        let deploy = self.deploy.as_ref().is_some_and(|t| constant_time_eq(given, t.as_bytes()));
        let read = self.read.as_ref().is_some_and(|t| constant_time_eq(given, t.as_bytes()));
        match (admin, deploy, read) {
            (true, _, _) => Some(Scope::Admin),
            (_, true, _) => Some(Scope::Deploy),
            (_, _, true) => Some(Scope::Read),
            _ => None,
        }
    }
}

/// The grant in `grants` that only an admin may give, if any: files and sockets reach the
/// host itself, and an `outbound_http` address on loopback, link-local or a private range
/// (a literal address skips the range check guests are otherwise held to).
pub fn grant_needing_admin(grants: &crate::services::spec::Grants) -> Option<String> {
    if !grants.files.is_empty() {
        return Some("grants.files".into());
    }
    if !grants.sockets.is_empty() {
        return Some("grants.sockets".into());
    }
    grants.outbound_http.iter().find_map(|entry| {
        let host = entry.rsplit_once(':').map_or(entry.as_str(), |(h, _)| h);
        let ip: std::net::IpAddr = host.trim_start_matches('[').trim_end_matches(']').parse().ok()?;
        crate::runtime::outbound::internal(ip)
            .then(|| format!("grants.outbound_http entry {entry:?} (an internal address)"))
    })
}

/// The scope an admin route needs (`segments`: the path split at '/').
pub fn needed(method: &Method, segments: &[&str]) -> Scope {
    match (method, segments) {
        (&Method::GET | &Method::HEAD, _) => Scope::Read,
        (_, ["v1", "components"] | ["v1", "services", ..]) => Scope::Deploy,
        _ => Scope::Admin,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, format!("Bearer {token}").parse().unwrap());
        h
    }

    #[test]
    fn each_token_has_its_scope_and_routes_need_theirs() {
        let t = Tokens { admin: "a".repeat(64), deploy: Some("d".repeat(64)), read: Some("r".repeat(64)) };
        assert_eq!(t.scope_of(&headers(&"a".repeat(64))), Some(Scope::Admin));
        assert_eq!(t.scope_of(&headers(&"d".repeat(64))), Some(Scope::Deploy));
        assert_eq!(t.scope_of(&headers(&"r".repeat(64))), Some(Scope::Read));
        assert_eq!(t.scope_of(&headers("r")), None);
        assert_eq!(t.scope_of(&HeaderMap::new()), None);
        let none = Tokens { admin: "a".into(), deploy: None, read: None };
        assert_eq!(none.scope_of(&headers("")), None, "an unset scope has no token, not an empty one");
        assert_eq!(needed(&Method::GET, &["v1", "cluster"]), Scope::Read);
        assert_eq!(needed(&Method::PUT, &["v1", "services", "x"]), Scope::Deploy);
        assert_eq!(needed(&Method::POST, &["v1", "services", "x", "scale"]), Scope::Deploy);
        assert_eq!(needed(&Method::PUT, &["v1", "components"]), Scope::Deploy);
        assert_eq!(needed(&Method::DELETE, &["v1", "cluster", "nodes", "n1"]), Scope::Admin);
        assert_eq!(needed(&Method::POST, &["v1", "debug", "gossip"]), Scope::Admin);
        assert!(Scope::Read < Scope::Deploy && Scope::Deploy < Scope::Admin);
    }
}
