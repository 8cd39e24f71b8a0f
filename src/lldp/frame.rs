//! A pure LLDPDU parser (IEEE 802.1AB), as forgiving as the best
//! receivers: the mandatory TLVs decide whether a frame stands; an
//! optional TLV that is malformed is skipped alone; strings lose trailing
//! NULs (some switches send C strings) and invalid UTF-8 is decoded
//! lossily rather than dropping the neighbor.
//!
//! Checked indexing only: every length comes from the wire, so every slice
//! goes through `get` and a short buffer is an error, never a panic.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use crate::inventory::{Neighbor, Protocol, TypedId, Vlan, format_mac};

pub const ETHERTYPE_LLDP: u16 = 0x88cc;
const ETHERTYPE_VLAN: u16 = 0x8100;
/// The nearest-bridge group address LLDP is sent to.
pub const NEAREST_BRIDGE: [u8; 6] = [0x01, 0x80, 0xc2, 0x00, 0x00, 0x0e];

const TLV_END: u8 = 0;
const TLV_CHASSIS_ID: u8 = 1;
const TLV_PORT_ID: u8 = 2;
const TLV_TTL: u8 = 3;
const TLV_PORT_DESCRIPTION: u8 = 4;
const TLV_SYSTEM_NAME: u8 = 5;
const TLV_SYSTEM_DESCRIPTION: u8 = 6;
const TLV_CAPABILITIES: u8 = 7;
const TLV_MANAGEMENT_ADDRESS: u8 = 8;
const TLV_ORG: u8 = 127;

const OUI_8021: [u8; 3] = [0x00, 0x80, 0xc2];
const OUI_8023: [u8; 3] = [0x00, 0x12, 0x0f];

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {0} bytes is too short for an Ethernet header")]
    ShortFrame(usize),
    #[error("not an LLDP frame (ethertype {0:#06x})")]
    NotLldp(u16),
    #[error("TLV header cut short at offset {0}")]
    TruncatedHeader(usize),
    #[error("TLV type {tlv} at offset {offset} claims {len} bytes but {left} remain")]
    PastEnd {
        tlv: u8,
        offset: usize,
        len: usize,
        left: usize,
    },
    #[error("TLV {position} must be {expected}, found type {found}")]
    Misordered {
        position: usize,
        expected: &'static str,
        found: u8,
    },
    #[error("the LLDPDU ends before its mandatory {0} TLV")]
    Missing(&'static str),
    #[error("{0} TLV appears more than once")]
    Duplicate(&'static str),
    #[error("{what} has an invalid length {len}")]
    BadLength { what: &'static str, len: usize },
    #[error("{0} is empty")]
    Empty(&'static str),
}

impl FrameError {
    /// A short, stable name for metrics labels.
    pub fn reason(&self) -> &'static str {
        match self {
            FrameError::ShortFrame(_) => "short_frame",
            FrameError::NotLldp(_) => "not_lldp",
            FrameError::TruncatedHeader(_) | FrameError::PastEnd { .. } => "truncated",
            FrameError::Misordered { .. } => "misordered",
            FrameError::Missing(_) => "missing_tlv",
            FrameError::Duplicate(_) => "duplicate_tlv",
            FrameError::BadLength { .. } => "bad_length",
            FrameError::Empty(_) => "empty_id",
        }
    }
}

/// Everything an LLDPDU said that Surveyor decodes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Lldpdu {
    pub chassis_id: TypedId,
    pub port_id: TypedId,
    /// 0 means "this neighbor is shutting down: forget it now".
    pub ttl_seconds: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Capabilities>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub management_addresses: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pvid: Option<u16>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ppvids: Vec<Ppvid>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vlans: Vec<Vlan>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac_phy: Option<MacPhy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_frame_size: Option<u16>,
    /// Optional TLVs left out because they were malformed.
    #[serde(skip)]
    pub skipped: Vec<FrameError>,
}

/// System capabilities, as the IEEE bit map (bit 0 other, 1 repeater,
/// 2 bridge, 3 WLAN AP, 4 router, 5 telephone, 6 DOCSIS, 7 station).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    pub supported: u16,
    pub enabled: u16,
}

/// 802.1 port-and-protocol VLAN ID.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ppvid {
    pub id: u16,
    pub supported: bool,
    pub enabled: bool,
}

/// 802.3 MAC/PHY configuration and status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MacPhy {
    pub autoneg_supported: bool,
    pub autoneg_enabled: bool,
    pub advertised: u16,
    pub mau_type: u16,
}

impl Lldpdu {
    /// The shape published in a NodeSurvey: only what identifies the
    /// neighbor and the networks it carries.
    pub fn neighbor(&self) -> Neighbor {
        Neighbor {
            protocol: Protocol::Lldp,
            chassis_id: self.chassis_id.clone(),
            port_id: self.port_id.clone(),
            system_name: self.system_name.clone(),
            port_description: self.port_description.clone(),
            system_description: self.system_description.clone(),
            management_addresses: self.management_addresses.clone(),
            pvid: self.pvid,
            vlans: self.vlans.clone(),
            ttl_seconds: self.ttl_seconds,
        }
    }
}

/// Splits an Ethernet frame into its source MAC and LLDPDU. One 802.1Q
/// tag is skipped.
pub fn parse_frame(frame: &[u8]) -> Result<([u8; 6], Lldpdu), FrameError> {
    let short = || FrameError::ShortFrame(frame.len());
    let src: [u8; 6] = frame
        .get(6..12)
        .ok_or_else(short)?
        .try_into()
        .map_err(|_| short())?;
    let mut offset = 12;
    let mut ethertype = be16(frame, offset).ok_or_else(short)?;
    if ethertype == ETHERTYPE_VLAN {
        offset += 4;
        ethertype = be16(frame, offset).ok_or_else(short)?;
    }
    if ethertype != ETHERTYPE_LLDP {
        return Err(FrameError::NotLldp(ethertype));
    }
    let body = frame.get(offset + 2..).ok_or_else(short)?;
    Ok((src, parse_lldpdu(body)?))
}

/// Parses the TLVs of one LLDPDU.
pub fn parse_lldpdu(buf: &[u8]) -> Result<Lldpdu, FrameError> {
    let mut pdu = Lldpdu::default();
    let mut offset = 0;
    let mut position = 0;
    while offset < buf.len() {
        let header = be16(buf, offset).ok_or(FrameError::TruncatedHeader(offset))?;
        let tlv = (header >> 9) as u8;
        let len = usize::from(header & 0x01ff);
        let value = buf
            .get(offset + 2..offset + 2 + len)
            .ok_or(FrameError::PastEnd {
                tlv,
                offset,
                len,
                left: buf.len() - offset - 2,
            })?;
        if let Some(expected) = MANDATORY.get(position) {
            if tlv != expected.0 {
                return Err(FrameError::Misordered {
                    position: position + 1,
                    expected: expected.1,
                    found: tlv,
                });
            }
        }
        match tlv {
            // The End TLV is empty (lldpd drops a frame whose End has a
            // length); whatever follows it is ignored.
            TLV_END if len != 0 => {
                return Err(FrameError::BadLength {
                    what: "End of LLDPDU TLV",
                    len,
                });
            }
            TLV_END => break,
            TLV_CHASSIS_ID if position == 0 => {
                pdu.chassis_id = id("chassis ID", value, chassis_subtype)?
            }
            TLV_PORT_ID if position == 1 => pdu.port_id = id("port ID", value, port_subtype)?,
            TLV_TTL if position == 2 => {
                pdu.ttl_seconds =
                    be16(value, 0).ok_or(FrameError::BadLength { what: "TTL", len })?
            }
            TLV_CHASSIS_ID => return Err(FrameError::Duplicate("chassis ID")),
            TLV_PORT_ID => return Err(FrameError::Duplicate("port ID")),
            TLV_TTL => return Err(FrameError::Duplicate("TTL")),
            _ => {
                if let Err(e) = optional(&mut pdu, tlv, value) {
                    pdu.skipped.push(e);
                }
            }
        }
        offset += 2 + len;
        position += 1;
    }
    if let Some(missing) = MANDATORY.get(position) {
        return Err(FrameError::Missing(missing.1));
    }
    Ok(pdu)
}

/// One optional TLV into `pdu`; an error leaves `pdu` as it was.
fn optional(pdu: &mut Lldpdu, tlv: u8, value: &[u8]) -> Result<(), FrameError> {
    match tlv {
        TLV_PORT_DESCRIPTION => set_once(&mut pdu.port_description, text(value)),
        TLV_SYSTEM_NAME => set_once(&mut pdu.system_name, text(value)),
        TLV_SYSTEM_DESCRIPTION => set_once(&mut pdu.system_description, text(value)),
        TLV_CAPABILITIES => {
            let (Some(supported), Some(enabled), 4) = (be16(value, 0), be16(value, 2), value.len())
            else {
                return Err(FrameError::BadLength {
                    what: "capabilities",
                    len: value.len(),
                });
            };
            pdu.capabilities = Some(Capabilities { supported, enabled });
        }
        TLV_MANAGEMENT_ADDRESS => pdu.management_addresses.push(management_address(value)?),
        TLV_ORG => org(pdu, value)?,
        _ => {} // reserved or unknown: skipped
    }
    Ok(())
}

const MANDATORY: [(u8, &str); 3] = [
    (TLV_CHASSIS_ID, "chassis ID"),
    (TLV_PORT_ID, "port ID"),
    (TLV_TTL, "TTL"),
];

pub(crate) fn be16(buf: &[u8], at: usize) -> Option<u16> {
    let b = buf.get(at..at + 2)?;
    Some(u16::from_be_bytes([b[0], b[1]]))
}

fn set_once(slot: &mut Option<String>, value: Option<String>) {
    if slot.is_none() {
        *slot = value;
    }
}

/// A display string. Trailing NULs are dropped (some switches send C
/// strings), bytes that are not UTF-8 (Latin-1 descriptions) become U+FFFD
/// as lldpd shows them, and an empty string counts as absent (the standard
/// allows zero-length descriptions).
pub(crate) fn text(value: &[u8]) -> Option<String> {
    let end = value.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    let s = String::from_utf8_lossy(&value[..end]);
    (!s.is_empty()).then(|| s.into_owned())
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// How an ID value of a subtype is rendered.
enum Render {
    Mac,
    Network,
    Text,
    Hex,
}

fn chassis_subtype(subtype: u8) -> (&'static str, Render) {
    match subtype {
        1 => ("chassiscomponent", Render::Text),
        2 => ("ifalias", Render::Text),
        3 => ("portcomponent", Render::Text),
        4 => ("mac", Render::Mac),
        5 => ("networkaddress", Render::Network),
        6 => ("ifname", Render::Text),
        7 => ("local", Render::Text),
        _ => ("unknown", Render::Hex),
    }
}

fn port_subtype(subtype: u8) -> (&'static str, Render) {
    match subtype {
        1 => ("ifalias", Render::Text),
        2 => ("portcomponent", Render::Text),
        3 => ("mac", Render::Mac),
        4 => ("networkaddress", Render::Network),
        5 => ("ifname", Render::Text),
        6 => ("circuitid", Render::Text),
        7 => ("local", Render::Text),
        _ => ("unknown", Render::Hex),
    }
}

/// A chassis or port ID: a subtype byte then 1..=255 bytes of ID.
fn id(
    what: &'static str,
    value: &[u8],
    kind: fn(u8) -> (&'static str, Render),
) -> Result<TypedId, FrameError> {
    let (&subtype, raw) = value.split_first().ok_or(FrameError::Empty(what))?;
    if raw.is_empty() {
        return Err(FrameError::Empty(what));
    }
    let (name, render) = kind(subtype);
    let value = match render {
        Render::Mac if raw.len() == 6 => format_mac(raw),
        Render::Mac => {
            return Err(FrameError::BadLength {
                what,
                len: raw.len(),
            });
        }
        Render::Network => network_address(raw).unwrap_or_else(|| hex(raw)),
        // Textual IDs are usually printable (less a trailing NUL); binary
        // ones are shown as hex.
        Render::Text => {
            let trimmed = raw
                .iter()
                .rposition(|&b| b != 0)
                .map_or(raw, |i| &raw[..=i]);
            match std::str::from_utf8(trimmed) {
                Ok(s) if !s.chars().any(char::is_control) => s.to_string(),
                _ => hex(raw),
            }
        }
        Render::Hex => hex(raw),
    };
    Ok(TypedId {
        subtype: name.to_string(),
        value,
    })
}

/// An IANA address family byte then the address: IPv4 and IPv6 as text.
fn network_address(raw: &[u8]) -> Option<String> {
    let (&family, addr) = raw.split_first()?;
    match (family, addr.len()) {
        (1, 4) => Some(Ipv4Addr::from(<[u8; 4]>::try_from(addr).ok()?).to_string()),
        (2, 16) => Some(Ipv6Addr::from(<[u8; 16]>::try_from(addr).ok()?).to_string()),
        _ => None,
    }
}

/// Management address TLV: address string length (subtype included),
/// subtype, address, interface numbering subtype, interface number, OID
/// length, OID.
fn management_address(value: &[u8]) -> Result<String, FrameError> {
    let bad = || FrameError::BadLength {
        what: "management address",
        len: value.len(),
    };
    let addr_len = usize::from(*value.first().ok_or_else(bad)?);
    if !(2..=32).contains(&addr_len) {
        return Err(bad());
    }
    let addr = value.get(1..1 + addr_len).ok_or_else(bad)?;
    let rest = value.get(1 + addr_len..).ok_or_else(bad)?;
    // Interface numbering subtype (1) + number (4) + OID length (1) + OID.
    let oid_len = usize::from(*rest.get(5).ok_or_else(bad)?);
    if rest.len() != 6 + oid_len {
        return Err(bad());
    }
    let (&subtype, raw) = addr.split_first().ok_or_else(bad)?;
    Ok(match (subtype, raw.len()) {
        (1 | 2, _) => network_address(addr).ok_or_else(bad)?,
        (6, 6) => format_mac(raw),
        _ => hex(addr),
    })
}

/// Organisationally specific TLVs: 802.1 (PVID, PPVID, VLAN name) and 802.3
/// (MAC/PHY, maximum frame size). Other OUIs and subtypes are skipped.
fn org(pdu: &mut Lldpdu, value: &[u8]) -> Result<(), FrameError> {
    let len = value.len();
    let bad = |what| FrameError::BadLength { what, len };
    let (Some(oui), Some(&subtype)) = (value.get(..3), value.get(3)) else {
        return Err(bad("organisationally specific TLV"));
    };
    let info = value.get(4..).unwrap_or_default();
    match (<[u8; 3]>::try_from(oui).unwrap_or_default(), subtype) {
        (OUI_8021, 1) => {
            let (Some(pvid), 2) = (be16(info, 0), info.len()) else {
                return Err(bad("802.1 port VLAN ID"));
            };
            // 0: the port does not support or know its PVID.
            pdu.pvid = (pvid != 0).then_some(pvid);
        }
        (OUI_8021, 2) => {
            let (Some(&flags), Some(id), 3) = (info.first(), be16(info, 1), info.len()) else {
                return Err(bad("802.1 port and protocol VLAN ID"));
            };
            pdu.ppvids.push(Ppvid {
                id,
                supported: flags & 0x02 != 0,
                enabled: flags & 0x04 != 0,
            });
        }
        (OUI_8021, 3) => {
            let (Some(id), Some(&name_len)) = (be16(info, 0), info.get(2)) else {
                return Err(bad("802.1 VLAN name"));
            };
            // The standard caps names at 32 bytes; like lldpd, accept any
            // name the TLV actually holds.
            let name = info
                .get(3..3 + usize::from(name_len))
                .ok_or_else(|| bad("802.1 VLAN name"))?;
            let name = text(name);
            pdu.vlans.push(Vlan {
                id: id & 0x0fff,
                name,
            });
        }
        (OUI_8023, 1) => {
            let (Some(&auto), Some(advertised), Some(mau_type), 5) =
                (info.first(), be16(info, 1), be16(info, 3), info.len())
            else {
                return Err(bad("802.3 MAC/PHY"));
            };
            pdu.mac_phy = Some(MacPhy {
                autoneg_supported: auto & 0x01 != 0,
                autoneg_enabled: auto & 0x02 != 0,
                advertised,
                mau_type,
            });
        }
        (OUI_8023, 4) => {
            let (Some(size), 2) = (be16(info, 0), info.len()) else {
                return Err(bad("802.3 maximum frame size"));
            };
            pdu.max_frame_size = Some(size);
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a TLV.
    fn tlv(kind: u8, value: &[u8]) -> Vec<u8> {
        let header = (u16::from(kind) << 9) | value.len() as u16;
        let mut out = header.to_be_bytes().to_vec();
        out.extend_from_slice(value);
        out
    }

    fn mandatory() -> Vec<u8> {
        let mut out = tlv(1, &[4, 0, 0x11, 0x22, 0x33, 0x44, 0x55]);
        out.extend(tlv(2, b"\x05Ethernet1/7"));
        out.extend(tlv(3, &[0, 120]));
        out
    }

    fn with(extra: &[Vec<u8>]) -> Vec<u8> {
        let mut out = mandatory();
        for t in extra {
            out.extend_from_slice(t);
        }
        out.extend(tlv(0, &[]));
        out
    }

    #[test]
    fn mandatory_tlvs_decode() {
        let pdu = parse_lldpdu(&with(&[])).unwrap();
        assert_eq!(pdu.chassis_id.subtype, "mac");
        assert_eq!(pdu.chassis_id.value, "00:11:22:33:44:55");
        assert_eq!(pdu.port_id.subtype, "ifname");
        assert_eq!(pdu.port_id.value, "Ethernet1/7");
        assert_eq!(pdu.ttl_seconds, 120);
    }

    #[test]
    fn optional_and_org_tlvs_decode() {
        let mut mgmt4 = vec![5, 1, 192, 0, 2, 10, 2, 0, 0, 0, 7, 0];
        let mgmt_mac = vec![7, 6, 2, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0];
        let pdu = parse_lldpdu(&with(&[
            tlv(4, b"uplink-to-node1"),
            tlv(5, b"tor-green-01"),
            tlv(6, b"NOS 1.2"),
            tlv(7, &[0, 0x14, 0, 0x04]),
            tlv(8, &mgmt4),
            tlv(8, &mgmt_mac),
            tlv(127, &[0x00, 0x80, 0xc2, 1, 0, 100]),
            tlv(127, &[0x00, 0x80, 0xc2, 2, 0x06, 0, 200]),
            tlv(
                127,
                &[0x00, 0x80, 0xc2, 3, 0, 100, 5, b'g', b'r', b'e', b'e', b'n'],
            ),
            tlv(127, &[0x00, 0x80, 0xc2, 3, 0, 101, 0]),
            tlv(127, &[0x00, 0x12, 0x0f, 1, 0x03, 0x6c, 0x01, 0x00, 0x10]),
            tlv(127, &[0x00, 0x12, 0x0f, 4, 0x23, 0xf0]),
            tlv(127, &[0x00, 0x12, 0xbb, 1, 9, 9]), // LLDP-MED: skipped
            tlv(42, b"reserved type, skipped"),
        ]))
        .unwrap();
        assert_eq!(pdu.port_description.as_deref(), Some("uplink-to-node1"));
        assert_eq!(pdu.system_name.as_deref(), Some("tor-green-01"));
        assert_eq!(pdu.system_description.as_deref(), Some("NOS 1.2"));
        assert_eq!(
            pdu.capabilities,
            Some(Capabilities {
                supported: 0x14,
                enabled: 0x04
            })
        );
        assert_eq!(
            pdu.management_addresses,
            vec!["192.0.2.10", "02:00:00:00:00:01"]
        );
        assert_eq!(pdu.pvid, Some(100));
        assert_eq!(
            pdu.ppvids,
            vec![Ppvid {
                id: 200,
                supported: true,
                enabled: true
            }]
        );
        assert_eq!(
            pdu.vlans,
            vec![
                Vlan {
                    id: 100,
                    name: Some("green".into())
                },
                Vlan {
                    id: 101,
                    name: None
                }
            ]
        );
        assert_eq!(
            pdu.mac_phy,
            Some(MacPhy {
                autoneg_supported: true,
                autoneg_enabled: true,
                advertised: 0x6c01,
                mau_type: 16
            })
        );
        assert_eq!(pdu.max_frame_size, Some(9200));
        // The published neighbor keeps only what identifies the link.
        let n = pdu.neighbor();
        assert_eq!(n.system_name.as_deref(), Some("tor-green-01"));
        assert_eq!(n.vlans.len(), 2);
        // A wrong OID length in a management address: that TLV is skipped.
        mgmt4[11] = 3;
        let pdu = parse_lldpdu(&with(&[tlv(8, &mgmt4)])).unwrap();
        assert!(pdu.management_addresses.is_empty());
        assert_eq!(pdu.skipped.len(), 1);
    }

    #[test]
    fn id_renderings() {
        let chassis = |v: &[u8]| id("chassis ID", v, chassis_subtype).unwrap();
        assert_eq!(chassis(&[5, 1, 10, 0, 0, 1]).value, "10.0.0.1");
        assert_eq!(
            chassis(&[5, 2, 0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]).value,
            "fe80::1"
        );
        assert_eq!(
            chassis(&[7, 0xff, 0x00]).value,
            "ff00",
            "binary local ID as hex"
        );
        assert_eq!(
            chassis(&[7, b'a', 1]).value,
            "6101",
            "control characters as hex"
        );
        assert_eq!(
            chassis(&[9, 1, 2]),
            TypedId {
                subtype: "unknown".into(),
                value: "0102".into()
            }
        );
        assert_eq!(
            id("port ID", &[6, b'c', b'1'], port_subtype)
                .unwrap()
                .subtype,
            "circuitid"
        );
    }

    #[test]
    fn malformed_input_is_an_error() {
        use FrameError::*;
        let cases: Vec<(Vec<u8>, FrameError)> = vec![
            (vec![0x02], TruncatedHeader(0)),
            (
                vec![0x02, 0x07, 4, 0, 0x11],
                PastEnd {
                    tlv: 1,
                    offset: 0,
                    len: 7,
                    left: 3,
                },
            ),
            (
                tlv(2, b"\x05eth0"),
                Misordered {
                    position: 1,
                    expected: "chassis ID",
                    found: 2,
                },
            ),
            (
                [tlv(1, &[7, b'x']), tlv(3, &[0, 1])].concat(),
                Misordered {
                    position: 2,
                    expected: "port ID",
                    found: 3,
                },
            ),
            (
                [tlv(1, &[7, b'x']), tlv(2, &[7, b'y'])].concat(),
                Missing("TTL"),
            ),
            (
                tlv(0, &[]),
                Misordered {
                    position: 1,
                    expected: "chassis ID",
                    found: 0,
                },
            ),
            (vec![], Missing("chassis ID")),
            (with(&[tlv(1, &[7, b'x'])]), Duplicate("chassis ID")),
            (with(&[tlv(3, &[0, 1])]), Duplicate("TTL")),
            (
                [tlv(1, &[7]), tlv(2, &[7, b'y']), tlv(3, &[0, 1])].concat(),
                Empty("chassis ID"),
            ),
            (
                [tlv(1, &[]), tlv(2, &[7, b'y']), tlv(3, &[0, 1])].concat(),
                Empty("chassis ID"),
            ),
            (
                [tlv(1, &[4, 1, 2]), tlv(2, &[7, b'y']), tlv(3, &[0, 1])].concat(),
                BadLength {
                    what: "chassis ID",
                    len: 2,
                },
            ),
            (
                [tlv(1, &[7, b'x']), tlv(2, &[7, b'y']), tlv(3, &[0])].concat(),
                BadLength {
                    what: "TTL",
                    len: 1,
                },
            ),
        ];
        for (bytes, want) in cases {
            assert_eq!(parse_lldpdu(&bytes), Err(want.clone()), "{bytes:02x?}");
        }
    }

    /// A malformed optional TLV is left out, alone: the rest of the frame,
    /// other TLVs of the same kind included, still counts.
    #[test]
    fn malformed_optional_tlvs_are_skipped_alone() {
        use FrameError::*;
        let cases: Vec<(Vec<u8>, FrameError)> = vec![
            (
                tlv(7, &[0, 4]),
                BadLength {
                    what: "capabilities",
                    len: 2,
                },
            ),
            (
                tlv(127, &[0, 0x80]),
                BadLength {
                    what: "organisationally specific TLV",
                    len: 2,
                },
            ),
            (
                tlv(127, &[0, 0x80, 0xc2, 1, 0]),
                BadLength {
                    what: "802.1 port VLAN ID",
                    len: 5,
                },
            ),
            (
                tlv(127, &[0, 0x80, 0xc2, 3, 0, 100, 9, b'g']),
                BadLength {
                    what: "802.1 VLAN name",
                    len: 8,
                },
            ),
            (
                tlv(8, &[40, 1]),
                BadLength {
                    what: "management address",
                    len: 2,
                },
            ),
        ];
        for (bad, want) in cases {
            let bytes = with(&[
                tlv(5, b"tor-green-01"),
                bad.clone(),
                tlv(
                    127,
                    &[0x00, 0x80, 0xc2, 3, 0, 101, 4, b'b', b'l', b'u', b'e'],
                ),
            ]);
            let pdu = parse_lldpdu(&bytes).unwrap_or_else(|e| panic!("{bad:02x?}: {e}"));
            assert_eq!(pdu.skipped, vec![want], "{bad:02x?}");
            assert_eq!(pdu.system_name.as_deref(), Some("tor-green-01"));
            assert_eq!(pdu.vlans.len(), 1, "the good VLAN TLV stays");
            assert_eq!(pdu.vlans[0].name.as_deref(), Some("blue"));
        }
    }

    /// Strings as switches really send them.
    #[test]
    fn nul_terminated_latin1_and_long_names_decode() {
        let pdu = parse_lldpdu(&with(&[
            tlv(5, b"Summit300-48\0"),
            tlv(4, b"Port caf\xe9 \xa0green"),
            tlv(6, b"\0\0"),
            tlv(
                127,
                &[&[0x00, 0x80, 0xc2, 3, 0, 100, 33][..], &[b'v'; 33]].concat(),
            ),
            tlv(
                127,
                &[
                    0x00, 0x80, 0xc2, 3, 0x01, 0xe8, 6, b'v', b'4', b'8', b'8', 0, 0,
                ],
            ),
        ]))
        .unwrap();
        assert_eq!(pdu.system_name.as_deref(), Some("Summit300-48"));
        assert_eq!(
            pdu.port_description.as_deref(),
            Some("Port caf\u{fffd} \u{fffd}green")
        );
        assert_eq!(pdu.system_description, None, "only NULs: absent");
        assert_eq!(pdu.vlans[0].name.as_deref(), Some(&"v".repeat(33)[..]));
        assert_eq!(pdu.vlans[1].name.as_deref(), Some("v488"));
        assert!(pdu.skipped.is_empty());
        // A textual ID loses its trailing NUL too.
        let chassis = id("chassis ID", b"\x07sw-1\0", chassis_subtype).unwrap();
        assert_eq!(chassis.value, "sw-1");
    }

    #[test]
    fn empty_descriptions_are_absent_and_end_is_optional() {
        let pdu = parse_lldpdu(&with(&[tlv(4, b""), tlv(5, b"sw")])).unwrap();
        assert_eq!(pdu.port_description, None);
        assert_eq!(pdu.system_name.as_deref(), Some("sw"));
        // No End TLV, but nothing cut short: accepted.
        assert!(parse_lldpdu(&mandatory()).is_ok());
        // Padding after End is ignored.
        let mut padded = with(&[]);
        padded.extend([0xde, 0xad]);
        assert!(parse_lldpdu(&padded).is_ok());
    }

    #[test]
    fn ethernet_framing() {
        let mut frame = NEAREST_BRIDGE.to_vec();
        frame.extend([2, 0, 0, 0, 0, 9]);
        frame.extend(ETHERTYPE_LLDP.to_be_bytes());
        frame.extend(with(&[]));
        let (src, pdu) = parse_frame(&frame).unwrap();
        assert_eq!(src, [2, 0, 0, 0, 0, 9]);
        assert_eq!(pdu.ttl_seconds, 120);
        let mut tagged = frame[..12].to_vec();
        tagged.extend([0x81, 0x00, 0x00, 0x64]);
        tagged.extend(&frame[12..]);
        assert!(parse_frame(&tagged).is_ok());
        frame[12] = 0x08;
        assert_eq!(parse_frame(&frame), Err(FrameError::NotLldp(0x08cc)));
        assert_eq!(parse_frame(&frame[..13]), Err(FrameError::ShortFrame(13)));
    }

    /// Deterministic random input and every truncation of a rich frame:
    /// errors are fine, panics and out-of-bounds reads are not.
    #[test]
    fn random_and_truncated_input_never_panics() {
        let rich = with(&[
            tlv(4, b"uplink"),
            tlv(8, &[5, 1, 192, 0, 2, 10, 2, 0, 0, 0, 7, 0]),
            tlv(
                127,
                &[0x00, 0x80, 0xc2, 3, 0, 100, 5, b'g', b'r', b'e', b'e', b'n'],
            ),
            tlv(127, &[0x00, 0x12, 0x0f, 1, 0x03, 0x6c, 0x01, 0x00, 0x10]),
        ]);
        for cut in 0..rich.len() {
            let _ = parse_lldpdu(&rich[..cut]);
        }
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let len = (next() % 200) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            // Half the time start from a valid prefix so parsing goes deep.
            if next() % 2 == 0 {
                bytes.splice(
                    0..0,
                    rich.iter()
                        .copied()
                        .take((next() % rich.len() as u64) as usize),
                );
            }
            let _ = parse_lldpdu(&bytes);
            let _ = parse_frame(&bytes);
        }
    }
}
