//! A node's resolved networks as DRA devices (resource.k8s.io/v1), so a
//! pod can claim "1 Gbit/s of green" and be placed where green resolves
//! and bandwidth is left. Pure: from the NodeSurvey status the agent
//! publishes to the devices of its ResourceSlice.
//!
//! One device per resolved network, named after it, shared between claims
//! (`allowMultipleAllocations`) with the link speed as consumable
//! `bandwidth`. Where the cluster drops that field (the
//! `DRAConsumableCapacity` gate off), each network becomes N numbered
//! exclusive devices instead (`green-0` ...), each holding a 1/N share.
//!
//! The API's limits are kept by leaving out what does not fit, and saying
//! so: a value cut to fit would be a wrong value a CEL selector matches.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::resource::v1::{
    CapacityRequestPolicy, CapacityRequestPolicyRange, Device, DeviceAttribute, DeviceCapacity,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::crd::NodeSurveyStatus;

/// The driver name, and the domain of our attributes.
pub const DRIVER: &str = "surveyor.dev";
/// Devices in one ResourceSlice (resource.k8s.io/v1).
pub const MAX_DEVICES: usize = 128;
/// Attributes and capacities of one device, together.
pub const MAX_ATTRIBUTES: usize = 32;
/// Length of a string attribute's value.
pub const MAX_VALUE_LEN: usize = 64;
/// Length of a device name (a DNS label).
pub const MAX_NAME_LEN: usize = 63;
/// The numbered devices per network when sharing is unavailable.
pub const DEFAULT_NUMBERED: u16 = 32;

/// Multus's DRA path finds the device for a NAD by these (the NAD's
/// `k8s.v1.cni.cncf.io/resourceName` annotation must equal the first) and
/// passes the second to the CNI plugin as `deviceID`.
pub const MULTUS_RESOURCE_NAME: &str = "k8s.cni.cncf.io/resourceName";
pub const MULTUS_DEVICE_ID: &str = "k8s.cni.cncf.io/deviceID";

/// The `resourceName` a network's devices carry (and its NAD names).
pub fn resource_name(network: &str) -> String {
    format!("{DRIVER}/{network}")
}

/// The label a DeviceClass of ours carries, naming its network (the
/// controller watches classes by it, and never touches others).
pub const CLASS_LABEL: &str = "surveyor.dev/network";

/// The DeviceClass of a network: what a ResourceClaim names.
pub fn class_name(network: &str) -> String {
    format!("{network}.{DRIVER}")
}

/// The DeviceClass selecting `network`'s devices on every node, as applied
/// (`None` for a name that could not be quoted into CEL safely; NetworkMap
/// names are DNS subdomains, so none is refused in practice).
pub fn device_class(network: &str) -> Option<serde_json::Value> {
    let plain = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.';
    if network.is_empty() || !network.bytes().all(plain) {
        return None;
    }
    Some(serde_json::json!({
        "apiVersion": "resource.k8s.io/v1",
        "kind": "DeviceClass",
        "metadata": {
            "name": class_name(network),
            "labels": {CLASS_LABEL: network},
        },
        "spec": {"selectors": [{"cel": {"expression": format!(
            "device.driver == \"{DRIVER}\" && device.attributes[\"{DRIVER}\"].network == \"{network}\""
        )}}]},
    }))
}

/// How a network's capacity is offered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sharing {
    /// One device per network, allocated to many claims, each consuming
    /// part of its bandwidth.
    Shared,
    /// N exclusive devices per network (the cluster keeps no
    /// `allowMultipleAllocations`).
    Numbered(u16),
}

impl fmt::Display for Sharing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Sharing::Shared => f.write_str("shared devices with consumable bandwidth"),
            Sharing::Numbered(n) => write!(f, "{n} numbered devices per network"),
        }
    }
}

/// A rate in bits per second, written as a Kubernetes quantity with a
/// decimal suffix (`25G`, `100M`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Bandwidth(pub u64);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error(
        "{0:?} is not a bandwidth: give bits per second with an optional k, M, G or T suffix (e.g. 1G, 100M)"
    )]
    Bandwidth(String),
    #[error("the default bandwidth {default} is below the minimum {min}")]
    DefaultBelowMin { default: Bandwidth, min: Bandwidth },
}

const SUFFIXES: [(char, u64); 4] = [
    ('T', 1_000_000_000_000),
    ('G', 1_000_000_000),
    ('M', 1_000_000),
    ('k', 1_000),
];

impl std::str::FromStr for Bandwidth {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || Error::Bandwidth(s.to_string());
        let (digits, scale) = match s.chars().last() {
            Some(c) => match SUFFIXES.iter().find(|(suffix, _)| *suffix == c) {
                Some((_, scale)) => (&s[..s.len() - 1], *scale),
                None => (s, 1),
            },
            None => return Err(bad()),
        };
        // An optional fraction ("2.5G"), exact in bits.
        let (whole, frac) = digits.split_once('.').unwrap_or((digits, ""));
        let all_digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() || !all_digits(whole) || !all_digits(frac) {
            return Err(bad());
        }
        let mut bits = whole
            .parse::<u64>()
            .ok()
            .and_then(|w| w.checked_mul(scale))
            .ok_or_else(bad)?;
        let mut unit = scale;
        for digit in frac.bytes() {
            unit /= 10;
            if unit == 0 {
                return Err(bad()); // finer than a bit
            }
            bits = bits
                .checked_add(u64::from(digit - b'0') * unit)
                .ok_or_else(bad)?;
        }
        Ok(Bandwidth(bits))
    }
}

impl fmt::Display for Bandwidth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (suffix, scale) in SUFFIXES {
            if self.0 >= scale && self.0 % scale == 0 {
                return write!(f, "{}{suffix}", self.0 / scale);
            }
        }
        write!(f, "{}", self.0)
    }
}

impl Bandwidth {
    fn quantity(self) -> Quantity {
        Quantity(self.to_string())
    }

    /// A Kubernetes quantity as the API may write one back (`4G`, `1500M`,
    /// `1Gi`, `2.5G`, `25e8`, `500m`), in whole bits, rounded up; `None`
    /// for what is not a quantity, negative, or over `u64`.
    pub fn from_quantity(q: &str) -> Option<Bandwidth> {
        let q = q.trim();
        let q = q.strip_prefix('+').unwrap_or(q);
        let end = q
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(q.len());
        let (number, suffix) = q.split_at(end);
        let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() && frac.is_empty() || frac.contains('.') || number.len() > 38 {
            return None;
        }
        let digits = format!("{whole}{frac}");
        let mantissa: u128 = digits.parse().ok()?;
        let (binary, mut exp10): (u32, i32) = match suffix {
            "Ki" => (10, 0),
            "Mi" => (20, 0),
            "Gi" => (30, 0),
            "Ti" => (40, 0),
            "Pi" => (50, 0),
            "Ei" => (60, 0),
            "n" => (0, -9),
            "u" => (0, -6),
            "m" => (0, -3),
            "" => (0, 0),
            "k" => (0, 3),
            "M" => (0, 6),
            "G" => (0, 9),
            "T" => (0, 12),
            "P" => (0, 15),
            "E" => (0, 18),
            e => (0, e.strip_prefix(['e', 'E'])?.parse::<i32>().ok()?),
        };
        exp10 -= i32::try_from(frac.len()).ok()?;
        let scaled = mantissa.checked_mul(1u128.checked_shl(binary)?)?;
        let bits = if exp10 >= 0 {
            scaled.checked_mul(10u128.checked_pow(u32::try_from(exp10).ok()?)?)?
        } else {
            let divisor = 10u128
                .checked_pow(exp10.unsigned_abs())
                .unwrap_or(u128::MAX);
            scaled.div_ceil(divisor)
        };
        u64::try_from(bits).ok().map(Bandwidth)
    }
}

/// What a claim gets when it asks for no bandwidth, and the least it may
/// ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    pub default: Bandwidth,
    pub min: Bandwidth,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            default: Bandwidth(1_000_000_000),
            min: Bandwidth(100_000_000),
        }
    }
}

impl Policy {
    pub fn new(default: Bandwidth, min: Bandwidth) -> Result<Self, Error> {
        if default < min {
            return Err(Error::DefaultBelowMin { default, min });
        }
        Ok(Policy { default, min })
    }
}

/// Something left out of the slice, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeftOut {
    /// The network.
    pub network: String,
    /// An attribute or capacity name, or "device".
    pub what: String,
    pub why: String,
}

impl fmt::Display for LeftOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "network {}: {} left out: {}",
            self.network, self.what, self.why
        )
    }
}

/// The devices of a node's slice, and what did not fit.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Devices {
    pub devices: Vec<Device>,
    pub left_out: Vec<LeftOut>,
}

/// The devices for the networks resolved in `status`.
pub fn devices(status: &NodeSurveyStatus, policy: &Policy, sharing: Sharing) -> Devices {
    let mut out = Devices::default();
    let resolved: Vec<(&String, &String)> = status
        .networks
        .iter()
        .filter_map(|(network, s)| Some((network, s.device.as_ref()?)))
        .collect();
    let per_network = match sharing {
        Sharing::Shared => 1,
        Sharing::Numbered(n) => {
            let fits = MAX_DEVICES / resolved.len().max(1);
            usize::from(n.max(1)).min(fits.max(1))
        }
    };
    for (network, device) in resolved {
        let left_out = |what: &str, why: String| LeftOut {
            network: network.clone(),
            what: what.to_string(),
            why,
        };
        let names: Vec<String> = match sharing {
            Sharing::Shared => vec![network.clone()],
            Sharing::Numbered(n) => {
                if usize::from(n) > per_network {
                    out.left_out.push(left_out(
                        "devices",
                        format!(
                            "{per_network} of {n} numbered devices published: a slice holds at most {MAX_DEVICES}"
                        ),
                    ));
                }
                (0..per_network).map(|i| format!("{network}-{i}")).collect()
            }
        };
        if let Some(bad) = names.iter().find(|n| !is_dns_label(n)) {
            out.left_out.push(left_out(
                "device",
                format!("{bad:?} is not a DNS label of at most {MAX_NAME_LEN} characters"),
            ));
            continue;
        }
        if out.devices.len() + names.len() > MAX_DEVICES {
            out.left_out.push(left_out(
                "device",
                format!("a slice holds at most {MAX_DEVICES} devices"),
            ));
            continue;
        }
        let interface = status.interfaces.iter().find(|i| i.name == *device);
        let mut attributes = BTreeMap::new();
        let mut string = |key: &str, value: &str| {
            if value.len() > MAX_VALUE_LEN {
                out.left_out.push(left_out(
                    key,
                    format!(
                        "{} bytes, longer than the API's {MAX_VALUE_LEN}",
                        value.len()
                    ),
                ));
            } else {
                attributes.insert(key.to_string(), text(value));
            }
        };
        string("network", network);
        string("interface", device);
        string(MULTUS_RESOURCE_NAME, &resource_name(network));
        string(MULTUS_DEVICE_ID, device);
        let lldp = interface.and_then(|i| i.lldp.as_ref());
        if let Some(system) = lldp.and_then(|n| n.system_name.as_deref()) {
            string("switch", system);
        }
        if let Some(port) = lldp.map(|n| n.port_id.value.as_str()) {
            string("port", port);
        }
        if let Some(vlan) = lldp.and_then(|n| n.pvid) {
            attributes.insert("vlan".into(), int(i64::from(vlan)));
        }
        let speed = interface.and_then(|i| i.speed_mbps);
        if let Some(mbps) = speed {
            attributes.insert("speedMbps".into(), int(i64::from(mbps)));
        }
        let link = speed.map(|mbps| Bandwidth(u64::from(mbps) * 1_000_000));
        if link.is_none() {
            out.left_out.push(left_out(
                "bandwidth",
                format!("the link speed of {device} is unknown: claims asking for bandwidth cannot use it"),
            ));
        }
        // Our own attributes are fewer than the limit; kept checked.
        let capacities = usize::from(link.is_some());
        while attributes.len() + capacities > MAX_ATTRIBUTES {
            let Some((key, _)) = attributes.pop_last() else {
                break;
            };
            out.left_out.push(left_out(
                &key,
                format!("a device holds at most {MAX_ATTRIBUTES} attributes and capacities"),
            ));
        }
        for name in names {
            let capacity = link.map(|link| {
                let value = match sharing {
                    Sharing::Shared => DeviceCapacity {
                        value: link.quantity(),
                        request_policy: Some(CapacityRequestPolicy {
                            default: Some(policy.default.quantity()),
                            valid_range: Some(CapacityRequestPolicyRange {
                                min: policy.min.quantity(),
                                max: None,
                                step: None,
                            }),
                            valid_values: None,
                        }),
                    },
                    Sharing::Numbered(_) => DeviceCapacity {
                        value: Bandwidth(link.0 / per_network as u64).quantity(),
                        request_policy: None,
                    },
                };
                BTreeMap::from([("bandwidth".to_string(), value)])
            });
            out.devices.push(Device {
                name,
                allow_multiple_allocations: (sharing == Sharing::Shared).then_some(true),
                attributes: Some(attributes.clone()),
                capacity,
                ..Device::default()
            });
        }
    }
    out
}

/// Whether the devices the API gave back still allow multiple
/// allocations: false when the cluster dropped the field.
pub fn sharing_kept(devices: &[Device]) -> bool {
    devices
        .iter()
        .all(|d| d.allow_multiple_allocations == Some(true))
}

fn text(value: &str) -> DeviceAttribute {
    DeviceAttribute {
        string: Some(value.to_string()),
        ..DeviceAttribute::default()
    }
}

fn int(value: i64) -> DeviceAttribute {
    DeviceAttribute {
        int: Some(value),
        ..DeviceAttribute::default()
    }
}

/// RFC 1123 label: lower-case alphanumerics and '-', alphanumeric at both
/// ends, at most 63 characters.
fn is_dns_label(s: &str) -> bool {
    let ok = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_NAME_LEN
        && bytes.iter().all(|&b| ok(b) || b == b'-')
        && bytes.first().is_some_and(|&b| ok(b))
        && bytes.last().is_some_and(|&b| ok(b))
}

#[cfg(test)]
mod quantity_tests {
    use super::*;

    #[test]
    fn quantities_the_api_writes_are_read_in_bits() {
        for (q, bits) in [
            ("4G", 4_000_000_000),
            ("1500M", 1_500_000_000),
            ("2.5G", 2_500_000_000),
            ("1Gi", 1 << 30),
            ("1.5Ki", 1536),
            ("25e8", 2_500_000_000),
            ("1E", 1_000_000_000_000_000_000),
            ("500m", 1),
            ("1001m", 2),
            ("0", 0),
            ("+7", 7),
            ("100", 100),
        ] {
            assert_eq!(Bandwidth::from_quantity(q), Some(Bandwidth(bits)), "{q}");
        }
        for bad in [
            "", "-1G", "G", "1.2.3", "1X", "20E", "1e400", "1e-400x", ".",
        ] {
            assert_eq!(Bandwidth::from_quantity(bad), None, "{bad}");
        }
        assert_eq!(Bandwidth::from_quantity("1e-400"), Some(Bandwidth(1)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::NetworkStatus;
    use crate::inventory::{Interface, LinkKind, Neighbor, TypedId};

    fn nic(name: &str, speed: Option<u32>, switch: Option<&str>) -> Interface {
        let mut i = Interface::new(name, 2, LinkKind::Physical);
        i.speed_mbps = speed;
        i.lldp = switch.map(|s| Neighbor {
            protocol: crate::inventory::Protocol::Lldp,
            chassis_id: TypedId {
                subtype: "mac".into(),
                value: "02:00:00:00:00:01".into(),
            },
            port_id: TypedId {
                subtype: "ifname".into(),
                value: "Ethernet12".into(),
            },
            system_name: Some(s.into()),
            port_description: None,
            system_description: None,
            management_addresses: vec![],
            pvid: Some(100),
            vlans: vec![],
            ttl_seconds: 120,
        });
        i
    }

    fn status(nics: Vec<Interface>, networks: &[(&str, Option<&str>)]) -> NodeSurveyStatus {
        NodeSurveyStatus {
            interfaces: nics,
            networks: networks
                .iter()
                .map(|(n, d)| {
                    (
                        n.to_string(),
                        NetworkStatus {
                            device: d.map(str::to_string),
                            candidates: d.map(str::to_string).into_iter().collect(),
                            rule: Some("match".into()),
                            reason: None,
                            selected: true,
                        },
                    )
                })
                .collect(),
            ..NodeSurveyStatus::default()
        }
    }

    fn attr<'a>(d: &'a Device, key: &str) -> Option<&'a DeviceAttribute> {
        d.attributes.as_ref()?.get(key)
    }

    #[test]
    fn bandwidth_parses_and_prints_as_a_quantity() {
        let b = |s: &str| s.parse::<Bandwidth>();
        assert_eq!(b("1G"), Ok(Bandwidth(1_000_000_000)));
        assert_eq!(b("100M"), Ok(Bandwidth(100_000_000)));
        assert_eq!(b("2.5G"), Ok(Bandwidth(2_500_000_000)));
        assert_eq!(b("1500"), Ok(Bandwidth(1500)));
        for bad in [
            "",
            "G",
            "1Gi",
            "-1G",
            "1.G5",
            "1e9",
            "99999999999T",
            "0.0001k",
        ] {
            assert!(b(bad).is_err(), "{bad}");
        }
        assert_eq!(Bandwidth(25_000_000_000).to_string(), "25G");
        assert_eq!(Bandwidth(2_500_000_000).to_string(), "2500M");
        assert_eq!(Bandwidth(1234).to_string(), "1234");
        assert_eq!(Bandwidth(0).to_string(), "0");
        assert!(Policy::new(Bandwidth(1), Bandwidth(2)).is_err());
    }

    #[test]
    fn one_shared_device_per_resolved_network() {
        let s = status(
            vec![
                nic("ens4", Some(25_000), Some("tor-green-01")),
                nic("ens5", Some(10_000), None),
            ],
            &[
                ("green", Some("ens4")),
                ("blue", Some("ens5")),
                ("red", None),
            ],
        );
        let out = devices(&s, &Policy::default(), Sharing::Shared);
        assert_eq!(out.left_out, []);
        let names: Vec<&str> = out.devices.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["blue", "green"]);
        let green = &out.devices[1];
        assert_eq!(green.allow_multiple_allocations, Some(true));
        let s = |k: &str| attr(green, k).and_then(|a| a.string.as_deref());
        assert_eq!(s("network"), Some("green"));
        assert_eq!(s("interface"), Some("ens4"));
        assert_eq!(s("switch"), Some("tor-green-01"));
        assert_eq!(s("port"), Some("Ethernet12"));
        assert_eq!(s(MULTUS_RESOURCE_NAME), Some("surveyor.dev/green"));
        assert_eq!(s(MULTUS_DEVICE_ID), Some("ens4"));
        assert_eq!(attr(green, "vlan").and_then(|a| a.int), Some(100));
        assert_eq!(attr(green, "speedMbps").and_then(|a| a.int), Some(25_000));
        let bw = &green.capacity.as_ref().unwrap()["bandwidth"];
        assert_eq!(bw.value, Quantity("25G".into()));
        let policy = bw.request_policy.as_ref().unwrap();
        assert_eq!(policy.default, Some(Quantity("1G".into())));
        assert_eq!(
            policy.valid_range.as_ref().map(|r| &r.min),
            Some(&Quantity("100M".into()))
        );
        // blue has no neighbor: no switch, port or vlan.
        let blue = &out.devices[0];
        assert!(attr(blue, "switch").is_none() && attr(blue, "vlan").is_none());
    }

    #[test]
    fn numbered_devices_share_the_link_and_fit_the_slice() {
        let s = status(
            vec![nic("ens4", Some(10_000), None)],
            &[("green", Some("ens4"))],
        );
        let out = devices(&s, &Policy::default(), Sharing::Numbered(4));
        let names: Vec<&str> = out.devices.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["green-0", "green-1", "green-2", "green-3"]);
        for d in &out.devices {
            assert_eq!(d.allow_multiple_allocations, None);
            let bw = &d.capacity.as_ref().unwrap()["bandwidth"];
            assert_eq!(
                (&bw.value.0, &bw.request_policy),
                (&"2500M".to_string(), &None)
            );
        }
        // Ten networks of 32 each would be 320 devices: 12 each fit.
        let nets: Vec<(String, Option<&str>)> =
            (0..10).map(|i| (format!("net{i}"), Some("ens4"))).collect();
        let nets: Vec<(&str, Option<&str>)> = nets.iter().map(|(n, d)| (n.as_str(), *d)).collect();
        let s = status(vec![nic("ens4", Some(10_000), None)], &nets);
        let out = devices(&s, &Policy::default(), Sharing::Numbered(32));
        assert_eq!(out.devices.len(), 120);
        assert_eq!(out.left_out.len(), 10);
        assert!(
            out.left_out[0].why.contains("12 of 32"),
            "{}",
            out.left_out[0]
        );
    }

    #[test]
    fn what_does_not_fit_is_left_out_never_cut() {
        let long_switch = "s".repeat(65);
        let s = status(
            vec![
                nic("ens4", None, Some(&long_switch)),
                nic("ens5", Some(1000), None),
            ],
            &[("green", Some("ens4")), ("Not_A_Label", Some("ens5"))],
        );
        let out = devices(&s, &Policy::default(), Sharing::Shared);
        assert_eq!(out.devices.len(), 1);
        let green = &out.devices[0];
        assert!(attr(green, "switch").is_none(), "never truncated");
        assert!(green.capacity.is_none(), "unknown speed: no bandwidth");
        assert!(attr(green, "speedMbps").is_none());
        let what: Vec<(&str, &str)> = out
            .left_out
            .iter()
            .map(|l| (l.network.as_str(), l.what.as_str()))
            .collect();
        assert_eq!(
            what,
            [
                ("Not_A_Label", "device"),
                ("green", "switch"),
                ("green", "bandwidth")
            ]
        );
        // A name that fits alone but not numbered.
        let name = "n".repeat(62);
        let s = status(
            vec![nic("ens4", Some(1000), None)],
            &[(&name, Some("ens4"))],
        );
        let out = devices(&s, &Policy::default(), Sharing::Numbered(12));
        assert!(out.devices.is_empty());
        assert_eq!(out.left_out.len(), 1);
    }

    #[test]
    fn a_network_s_device_class_selects_its_devices() {
        let class = device_class("green").unwrap();
        assert_eq!(class["metadata"]["name"], "green.surveyor.dev");
        assert_eq!(class["metadata"]["labels"][CLASS_LABEL], "green");
        assert_eq!(
            class["spec"]["selectors"][0]["cel"]["expression"],
            r#"device.driver == "surveyor.dev" && device.attributes["surveyor.dev"].network == "green""#
        );
        for bad in ["", "gr\"een", "a b", "Green"] {
            assert_eq!(device_class(bad), None, "{bad}");
        }
    }

    #[test]
    fn sharing_kept_reads_what_the_api_gave_back() {
        let s = status(
            vec![nic("ens4", Some(1000), None)],
            &[("green", Some("ens4"))],
        );
        let mut d = devices(&s, &Policy::default(), Sharing::Shared).devices;
        assert!(sharing_kept(&d));
        d[0].allow_multiple_allocations = None;
        assert!(!sharing_kept(&d));
    }
}
