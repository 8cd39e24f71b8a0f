//! CNI errors: the spec's JSON error object, with its codes.

use serde::{Deserialize, Serialize};

/// Incompatible CNI version.
pub const INCOMPATIBLE_VERSION: u32 = 1;
/// Invalid necessary environment variables (CNI_COMMAND, CNI_CONTAINERID, ...).
pub const INVALID_ENV: u32 = 4;
/// Failed to decode the network configuration on stdin.
pub const UNDECODABLE: u32 = 6;
/// Invalid network configuration.
pub const INVALID_CONFIG: u32 = 7;
/// Try again later: transient (no snapshot yet: the agent is starting).
pub const TRY_AGAIN: u32 = 11;
/// Plugin not available (STATUS): the node cannot serve ADDs now.
pub const NOT_AVAILABLE: u32 = 50;
/// Surveyor: the network is not mapped (or not resolved) on this node.
pub const NOT_MAPPED: u32 = 100;
/// Surveyor: the resolved device, and every other candidate, vanished.
pub const DEVICE_VANISHED: u32 = 101;
/// Surveyor: the delegate plugin could not be run or answered nonsense.
pub const DELEGATE_FAILED: u32 = 102;
/// Surveyor: the ADD cache could not be read or written.
pub const CACHE_FAILED: u32 = 103;
/// Surveyor: the node-level configuration (where the snapshot and the
/// cache are) is unreadable or invalid.
pub const NODE_CONFIG: u32 = 104;
/// Surveyor: the device a DRA allocation names (`deviceID`) is no longer
/// the network's device on this node.
pub const ALLOCATION_STALE: u32 = 105;
/// Surveyor: the pod's interface could not be shaped as asked (ADD), or is
/// no longer shaped as it was (CHECK).
pub const SHAPING_FAILED: u32 = 106;

/// A CNI error result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CniError {
    #[serde(default)]
    pub cni_version: String,
    pub code: u32,
    pub msg: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        CniError {
            cni_version: String::new(),
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    /// The JSON the runtime reads on stdout. The version is the config's
    /// when known, else the newest this plugin speaks.
    pub fn to_json(&self, version: Option<&str>) -> String {
        let mut e = self.clone();
        if e.cni_version.is_empty() {
            e.cni_version = version.unwrap_or(super::version::LATEST).to_string();
        }
        serde_json::to_string(&e).unwrap_or_else(|_| {
            format!(
                r#"{{"cniVersion":"{}","code":{},"msg":"unencodable error"}}"#,
                e.cni_version, e.code
            )
        })
    }
}

impl std::fmt::Display for CniError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CNI error {}: {}", self.code, self.msg)?;
        if !self.details.is_empty() {
            write!(f, " ({})", self.details)?;
        }
        Ok(())
    }
}

impl std::error::Error for CniError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape() {
        let e = CniError::new(NOT_MAPPED, "network \"blue\" is not mapped on node n1")
            .details("check it");
        let v: serde_json::Value = serde_json::from_str(&e.to_json(Some("1.0.0"))).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"cniVersion": "1.0.0", "code": 100, "msg": "network \"blue\" is not mapped on node n1", "details": "check it"})
        );
        let v: serde_json::Value =
            serde_json::from_str(&CniError::new(4, "x").to_json(None)).unwrap();
        assert_eq!(v["cniVersion"], super::super::version::LATEST);
        assert!(v.get("details").is_none());
    }
}
