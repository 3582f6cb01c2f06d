//! Service specs: what the admin API accepts and what is stored.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Most instances one service may ask for on one node.
pub const MAX_INSTANCES: u32 = 1000;

/// Per-service execution limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest linear memory of one instance, in MiB.
    #[serde(default = "Limits::default_memory_mib")]
    pub memory_mib: u32,
    /// Wall-clock deadline of one request, in milliseconds.
    #[serde(default = "Limits::default_timeout_ms")]
    pub timeout_ms: u64,
}

impl Limits {
    fn default_memory_mib() -> u32 {
        64
    }
    fn default_timeout_ms() -> u64 {
        5000
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits { memory_mib: Self::default_memory_mib(), timeout_ms: Self::default_timeout_ms() }
    }
}

/// The stored, complete spec of a service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceSpec {
    pub name: String,
    /// Digest of the component (`sha256:<hex>`).
    pub component: String,
    /// Concurrent executions on the node; 0 means stopped.
    pub instances: u32,
    /// Requests that may wait for a slot; `None` means 4 x instances.
    #[serde(default)]
    pub max_queue: Option<u32>,
    /// How long a request may wait for a slot before it gets 503.
    pub queue_timeout_ms: u64,
    pub limits: Limits,
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// Bumped on every change.
    pub generation: u64,
    /// Unix time of the last change, in milliseconds.
    pub updated_at_ms: u64,
}

impl ServiceSpec {
    /// The queue bound in force: the explicit one, or 4 x instances.
    pub fn effective_queue(&self) -> u32 {
        self.max_queue.unwrap_or_else(|| self.instances.saturating_mul(4))
    }
}

/// The body of `PUT /v1/services/{name}`. Unknown fields are refused so typos are caught.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceRequest {
    pub component: String,
    #[serde(default)]
    pub instances: Option<serde_json::Value>,
    #[serde(default)]
    pub max_queue: Option<serde_json::Value>,
    #[serde(default)]
    pub queue_timeout_ms: Option<u64>,
    #[serde(default)]
    pub limits: Option<Limits>,
    #[serde(default)]
    pub config: BTreeMap<String, String>,
}

/// The body of `POST /v1/services/{name}/scale`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScaleRequest {
    pub instances: serde_json::Value,
    /// A new explicit queue bound; omitted keeps the current setting.
    #[serde(default)]
    pub max_queue: Option<serde_json::Value>,
}

pub const DEFAULT_QUEUE_TIMEOUT_MS: u64 = 10_000;

/// Service names are DNS labels: they appear in URLs and key namespaces.
pub fn validate_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "service name {name:?} is not valid: use 1-63 lowercase letters, digits and '-', not starting or ending with '-'"
        ))
    }
}

/// Parse an instance count from JSON, naming the problem if it is not 0..=MAX_INSTANCES.
pub fn parse_instances(v: &serde_json::Value) -> Result<u32, String> {
    match v.as_i64() {
        Some(n) if (0..=MAX_INSTANCES as i64).contains(&n) => Ok(n as u32),
        Some(n) => Err(format!("instances must be between 0 and {MAX_INSTANCES}, got {n}")),
        None => Err(format!("instances must be a whole number between 0 and {MAX_INSTANCES}, got {v}")),
    }
}

pub fn parse_queue(v: &serde_json::Value) -> Result<u32, String> {
    match v.as_i64() {
        Some(n) if (0..=100_000).contains(&n) => Ok(n as u32),
        _ => Err(format!("max_queue must be a whole number between 0 and 100000, got {v}")),
    }
}

pub fn validate_limits(l: &Limits) -> Result<(), String> {
    if !(1..=4096).contains(&l.memory_mib) {
        return Err(format!("limits.memory_mib must be between 1 and 4096, got {}", l.memory_mib));
    }
    if !(1..=3_600_000).contains(&l.timeout_ms) {
        return Err(format!("limits.timeout_ms must be between 1 and 3600000, got {}", l.timeout_ms));
    }
    Ok(())
}

pub fn validate_digest(d: &str) -> Result<(), String> {
    let hex = d.strip_prefix("sha256:").unwrap_or("");
    if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) {
        Ok(())
    } else {
        Err(format!("component {d:?} is not a digest; use the \"sha256:…\" value PUT /v1/components returned"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names() {
        assert!(validate_name("hello").is_ok());
        assert!(validate_name("chain-1").is_ok());
        for bad in ["", "Hello", "a/b", "-a", "a-", "a b", "../x", &"x".repeat(64)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn instances() {
        assert_eq!(parse_instances(&json!(0)), Ok(0));
        assert_eq!(parse_instances(&json!(8)), Ok(8));
        assert!(parse_instances(&json!(-1)).unwrap_err().contains("got -1"));
        assert!(parse_instances(&json!(1_000_000)).is_err());
        assert!(parse_instances(&json!("2")).is_err());
        assert!(parse_instances(&json!(1.5)).is_err());
    }

    #[test]
    fn unknown_fields_are_named() {
        let err = serde_json::from_str::<ServiceRequest>(r#"{"component":"x","instnces":2}"#).unwrap_err();
        assert!(err.to_string().contains("instnces"), "{err}");
    }
}
