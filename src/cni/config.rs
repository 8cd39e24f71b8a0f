//! The network configuration on stdin: the keys Surveyor reads, and the
//! delegate's configuration built from the rest.
//!
//! It comes from a NetworkAttachmentDefinition, which tenants may write:
//! nothing in it may choose where this root process reads or writes (that
//! is the node's setting, [`super::node_config`]) or steer the master
//! device (that is the NetworkMap's).

use serde_json::{Map, Value};

use super::error::{CniError, INCOMPATIBLE_VERSION, INVALID_CONFIG, UNDECODABLE};
use super::node_config;
use super::version;

/// Keys that are Surveyor's own and never reach the delegate.
/// `deviceID` is what Multus's DRA path passes: the device of the claim's
/// allocation, checked against the snapshot, never obeyed on its own.
const OWN_KEYS: [&str; 3] = ["network", "delegate", "deviceID"];

/// Keys that once chose directories: now the node's setting.
const NODE_KEYS: [&str; 2] = ["stateDir", "cacheDir"];

/// Delegate keys that would choose or redirect the master device.
const MASTER_KEYS: [&str; 2] = ["master", "linkInContainer"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delegate {
    Macvlan,
    Ipvlan,
}

impl Delegate {
    pub fn as_str(self) -> &'static str {
        match self {
            Delegate::Macvlan => "macvlan",
            Delegate::Ipvlan => "ipvlan",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct NetConf {
    pub cni_version: String,
    /// The CNI network name (`name`).
    pub name: String,
    /// The semantic network (`network`): a NetworkMap name.
    pub network: String,
    pub delegate: Delegate,
    /// The device a DRA allocation names (`deviceID`, set by Multus).
    pub device_id: Option<String>,
    /// The whole object as given, for the delegate.
    pub raw: Map<String, Value>,
}

/// Reads just `cniVersion` (VERSION needs nothing else).
pub fn cni_version(stdin: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(stdin).ok()?;
    v.get("cniVersion")?.as_str().map(str::to_string)
}

impl NetConf {
    pub fn parse(stdin: &[u8]) -> Result<NetConf, CniError> {
        let value: Value = serde_json::from_slice(stdin).map_err(|e| {
            CniError::new(
                UNDECODABLE,
                format!("network configuration on stdin is not JSON: {e}"),
            )
        })?;
        let Value::Object(raw) = value else {
            return Err(CniError::new(
                UNDECODABLE,
                "network configuration on stdin is not a JSON object",
            ));
        };
        let invalid = |msg: String| CniError::new(INVALID_CONFIG, msg);
        let string = |key: &str| -> Result<Option<String>, CniError> {
            match raw.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(other) => Err(invalid(format!("{key} must be a string, not {other}"))),
            }
        };
        let cni_version =
            string("cniVersion")?.ok_or_else(|| invalid("cniVersion is required".into()))?;
        if !version::is_supported(&cni_version) {
            return Err(CniError::new(
                INCOMPATIBLE_VERSION,
                format!(
                    "incompatible CNI version {cni_version:?}: surveyor supports {}",
                    version::SUPPORTED.join(", ")
                ),
            ));
        }
        let name = string("name")?
            .filter(|n| !n.is_empty())
            .ok_or_else(|| invalid("name is required".into()))?;
        let network = string("network")?.filter(|n| !n.is_empty()).ok_or_else(|| {
            invalid(format!(
                "network {name:?}: \"network\" is required: the NetworkMap name whose device this attachment uses, e.g. \"network\": \"green\""
            ))
        })?;
        if raw.contains_key("master") {
            return Err(invalid(format!(
                "network {name:?}: \"master\" must not be set: surveyor picks the device from NetworkMap {network:?}; remove \"master\""
            )));
        }
        for key in MASTER_KEYS.iter().filter(|k| **k != "master") {
            if raw.contains_key(*key) {
                return Err(invalid(format!(
                    "network {name:?}: {key:?} must not be set: it would make the delegate look the master device up elsewhere than where NetworkMap {network:?} resolved it; remove {key:?}"
                )));
            }
        }
        for key in NODE_KEYS {
            if raw.contains_key(key) {
                return Err(invalid(format!(
                    "network {name:?}: {key:?} is no longer a network setting: where the plugin reads the snapshot and keeps its cache is the node's choice, in {} (or the file $SURVEYOR_CNI_CONFIG names), which surveyor install-cni writes; remove {key:?}",
                    node_config::DEFAULT_PATH
                )));
            }
        }
        let delegate = match string("delegate")?.as_deref() {
            None | Some("macvlan") => Delegate::Macvlan,
            Some("ipvlan") => Delegate::Ipvlan,
            Some(other) => {
                return Err(invalid(format!(
                    "network {name:?}: delegate {other:?} is not supported (macvlan or ipvlan)"
                )));
            }
        };
        let device_id = string("deviceID")?;
        Ok(NetConf {
            cni_version,
            name,
            network,
            delegate,
            device_id,
            raw,
        })
    }

    /// The `runtimeConfig` object, if any.
    pub fn runtime_config(&self) -> Option<&Map<String, Value>> {
        self.raw.get("runtimeConfig").and_then(Value::as_object)
    }

    /// The delegate's configuration: everything given except Surveyor's
    /// own keys and the `bandwidth` capability (Surveyor shapes; macvlan
    /// and ipvlan know nothing of it), with `type`, `master` and
    /// `cniVersion` set. `master` is set last, so nothing in the input can
    /// steer it.
    pub fn delegate_config(&self, master: &str, cni_version: &str) -> Map<String, Value> {
        let mut conf = self.raw.clone();
        for key in OWN_KEYS {
            conf.remove(key);
        }
        if let Some(Value::Object(runtime)) = conf.get_mut("runtimeConfig") {
            runtime.remove("bandwidth");
            if runtime.is_empty() {
                conf.remove("runtimeConfig");
            }
        }
        if let Some(Value::Object(caps)) = conf.get_mut("capabilities") {
            caps.remove("bandwidth");
            if caps.is_empty() {
                conf.remove("capabilities");
            }
        }
        conf.insert("cniVersion".into(), Value::String(cni_version.into()));
        conf.insert("type".into(), Value::String(self.delegate.as_str().into()));
        conf.insert("master".into(), Value::String(master.into()));
        conf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GREEN: &str = r#"{"cniVersion":"1.0.0","name":"green","type":"surveyor","network":"green","mode":"bridge",
        "ipam":{"type":"host-local","subnet":"10.10.0.0/24"},"args":{"cni":{"master":"eth0"}},
        "runtimeConfig":{"mac":"02:00:00:00:00:09"},"prevResult":{"cniVersion":"1.0.0"}}"#;

    #[test]
    fn parses_and_builds_the_delegate_config() {
        let c = NetConf::parse(GREEN.as_bytes()).unwrap();
        assert_eq!(
            (c.name.as_str(), c.network.as_str(), c.delegate),
            ("green", "green", Delegate::Macvlan)
        );
        let d = Value::Object(c.delegate_config("ens4", "1.0.0"));
        assert_eq!(d["type"], "macvlan");
        assert_eq!(d["master"], "ens4");
        assert_eq!(d["mode"], "bridge");
        assert_eq!(d["ipam"]["subnet"], "10.10.0.0/24");
        assert_eq!(d["runtimeConfig"]["mac"], "02:00:00:00:00:09");
        assert_eq!(d["prevResult"]["cniVersion"], "1.0.0");
        assert_eq!(
            d["args"]["cni"]["master"], "eth0",
            "args pass through untouched; the delegate's master is top-level"
        );
        for own in OWN_KEYS {
            assert!(d.get(own).is_none(), "{own} leaked to the delegate");
        }
        // The bandwidth capability is Surveyor's to act on, not the
        // delegate's; the rest of runtimeConfig passes.
        let shaped = GREEN.replace(
            r#""runtimeConfig":{"mac":"02:00:00:00:00:09"}"#,
            r#""capabilities":{"bandwidth":true,"mac":true},"runtimeConfig":{"mac":"02:00:00:00:00:09","bandwidth":{"egressRate":1000,"egressBurst":20000}}"#,
        );
        let c = NetConf::parse(shaped.as_bytes()).unwrap();
        assert_eq!(c.runtime_config().unwrap()["bandwidth"]["egressRate"], 1000);
        let d = Value::Object(c.delegate_config("ens4", "1.0.0"));
        assert_eq!(
            d["runtimeConfig"],
            serde_json::json!({"mac": "02:00:00:00:00:09"})
        );
        assert_eq!(d["capabilities"], serde_json::json!({"mac": true}));
        let only = r#"{"cniVersion":"1.0.0","name":"g","network":"g","capabilities":{"bandwidth":true},"runtimeConfig":{"bandwidth":{}}}"#;
        let d = NetConf::parse(only.as_bytes())
            .unwrap()
            .delegate_config("ens4", "1.0.0");
        assert!(!d.contains_key("runtimeConfig") && !d.contains_key("capabilities"));
        let ipvlan = GREEN.replace(
            "\"type\":\"surveyor\"",
            "\"type\":\"surveyor\",\"delegate\":\"ipvlan\"",
        );
        assert_eq!(
            NetConf::parse(ipvlan.as_bytes())
                .unwrap()
                .delegate_config("ens4", "1.0.0")["type"],
            "ipvlan"
        );
    }

    #[test]
    fn any_input_is_an_answer_never_a_panic() {
        let mut seed = 0x1234_5678_u32;
        let alphabet = br#"{}[]":,0123456789 abcnetworkmastercniVersion1.0.0\"#;
        for _ in 0..20_000 {
            let len = (seed % 120) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    alphabet[(seed as usize) % alphabet.len()]
                })
                .collect();
            let _ = NetConf::parse(&bytes);
            let _ = cni_version(&bytes);
        }
        let _ = NetConf::parse(GREEN.as_bytes().get(..40).unwrap());
    }

    #[test]
    fn bad_configs_get_the_right_codes() {
        let code = |s: &str| NetConf::parse(s.as_bytes()).unwrap_err().code;
        assert_eq!(code("{not json"), UNDECODABLE);
        assert_eq!(code("[1,2]"), UNDECODABLE);
        assert_eq!(
            code(r#"{"cniVersion":"0.2.0","name":"g","network":"g"}"#),
            INCOMPATIBLE_VERSION
        );
        assert_eq!(
            code(r#"{"cniVersion":"9.9.9","name":"g","network":"g"}"#),
            INCOMPATIBLE_VERSION
        );
        assert_eq!(code(r#"{"name":"g","network":"g"}"#), INVALID_CONFIG);
        assert_eq!(
            code(r#"{"cniVersion":"1.0.0","network":"g"}"#),
            INVALID_CONFIG
        );
        assert_eq!(code(r#"{"cniVersion":"1.0.0","name":"g"}"#), INVALID_CONFIG);
        assert_eq!(
            code(r#"{"cniVersion":"1.0.0","name":"g","network":7}"#),
            INVALID_CONFIG
        );
        assert_eq!(
            code(r#"{"cniVersion":"1.0.0","name":"g","network":"g","master":"eth1"}"#),
            INVALID_CONFIG
        );
        assert_eq!(
            code(r#"{"cniVersion":"1.0.0","name":"g","network":"g","delegate":"bridge"}"#),
            INVALID_CONFIG
        );
        for key in ["stateDir", "cacheDir"] {
            let e = NetConf::parse(
                format!(
                    r#"{{"cniVersion":"1.0.0","name":"g","network":"g","{key}":"/etc/cni/net.d"}}"#
                )
                .as_bytes(),
            )
            .unwrap_err();
            assert_eq!(e.code, INVALID_CONFIG);
            assert!(e.msg.contains(key) && e.msg.contains("surveyor.d"), "{e}");
        }
        let e = NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":"g","network":"green","linkInContainer":true}"#,
        )
        .unwrap_err();
        assert_eq!(e.code, INVALID_CONFIG);
        assert!(e.msg.contains("linkInContainer"), "{e}");
        let master = NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":"g","network":"green","master":"eth1"}"#,
        )
        .unwrap_err();
        assert!(
            master.msg.contains("\"master\" must not be set") && master.msg.contains("green"),
            "{master}"
        );
        assert_eq!(
            cni_version(br#"{"cniVersion":"1.1.0"}"#).as_deref(),
            Some("1.1.0")
        );
    }
}
