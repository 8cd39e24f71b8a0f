//! CDP (Cisco Discovery Protocol, v1 and v2) and FDP (Foundry's, the same
//! frame with its own address and OUI): a pure decoder of the PDU after
//! the LLC/SNAP header, as forgiving as the LLDP one. The device ID and the
//! port ID make a neighbor; any other TLV that is cut short or odd is
//! skipped alone. The checksum is not checked: Ethernet's FCS has, and
//! some IOS releases compute it wrongly for odd lengths.
//!
//! What is published follows lldpd: the device ID is the chassis ID (as a
//! local name) and the system name, the port ID is the port's ifname and
//! description, platform and software version make the description.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::frame::{be16, text};
use crate::inventory::{Neighbor, Protocol, TypedId};

/// Where CDP is sent, and FDP.
pub const CDP_MULTICAST: [u8; 6] = [0x01, 0x00, 0x0c, 0xcc, 0xcc, 0xcc];
pub const FDP_MULTICAST: [u8; 6] = [0x01, 0xe0, 0x52, 0xcc, 0xcc, 0xcc];
/// The SNAP OUIs and protocol ID that carry them.
pub const OUI_CISCO: [u8; 3] = [0x00, 0x00, 0x0c];
pub const OUI_FOUNDRY: [u8; 3] = [0x00, 0xe0, 0x52];
pub const PID_CDP: u16 = 0x2000;

const TLV_DEVICE_ID: u16 = 0x0001;
const TLV_ADDRESSES: u16 = 0x0002;
const TLV_PORT_ID: u16 = 0x0003;
const TLV_CAPABILITIES: u16 = 0x0004;
const TLV_SOFTWARE: u16 = 0x0005;
const TLV_PLATFORM: u16 = 0x0006;
const TLV_NATIVE_VLAN: u16 = 0x000a;
const TLV_DUPLEX: u16 = 0x000b;
const TLV_MANAGEMENT_ADDRESSES: u16 = 0x0016;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CdpError {
    #[error("a CDP header needs 4 bytes, the PDU has {0}")]
    ShortHeader(usize),
    #[error("CDP version {0} is not 1 or 2")]
    Version(u8),
    #[error("CDP TLV type {tlv:#06x} at offset {offset} claims {len} bytes but {left} remain")]
    PastEnd {
        tlv: u16,
        offset: usize,
        len: usize,
        left: usize,
    },
    #[error("CDP TLV at offset {0} has a length under its own header")]
    BadTlvLength(usize),
    #[error("the CDP PDU has no {0} TLV")]
    Missing(&'static str),
    #[error("CDP {what} has an invalid length {len}")]
    BadLength { what: &'static str, len: usize },
    #[error("the CDP PDU says a hold time of 0 s")]
    ZeroTtl,
}

impl CdpError {
    /// A short, stable name for metrics labels.
    pub fn reason(&self) -> &'static str {
        match self {
            CdpError::ShortHeader(_) => "short_frame",
            CdpError::Version(_) => "bad_version",
            CdpError::PastEnd { .. } | CdpError::BadTlvLength(_) => "truncated",
            CdpError::Missing(_) => "missing_tlv",
            CdpError::BadLength { .. } => "bad_length",
            CdpError::ZeroTtl => "bad_ttl",
        }
    }
}

/// What one CDP (or FDP) PDU said that Surveyor decodes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CdpPdu {
    /// CDP, or FDP.
    pub protocol: Protocol,
    pub version: u8,
    /// The hold time: how long the neighbor stands without a refresh.
    pub ttl_seconds: u16,
    pub device_id: String,
    pub port_id: String,
    pub addresses: Vec<String>,
    /// CDP's capability bits (router 0x01, bridges 0x02/0x04, switch
    /// 0x08, host 0x10, IGMP 0x20, repeater 0x40); FDP sends words.
    pub capabilities: Option<u32>,
    pub software: Option<String>,
    pub platform: Option<String>,
    pub native_vlan: Option<u16>,
    pub full_duplex: Option<bool>,
    pub management_addresses: Vec<String>,
    /// Optional TLVs left out because they were malformed.
    pub skipped: Vec<CdpError>,
}

impl CdpPdu {
    /// The neighbor as published, the way lldpd shows it.
    pub fn neighbor(&self) -> Neighbor {
        let description = match (&self.platform, &self.software) {
            (Some(p), Some(s)) => Some(format!("{p} running on\n{s}")),
            (Some(one), None) | (None, Some(one)) => Some(one.clone()),
            (None, None) => None,
        };
        let mut management: Vec<String> = Vec::new();
        for a in self.management_addresses.iter().chain(&self.addresses) {
            if !management.contains(a) {
                management.push(a.clone());
            }
        }
        Neighbor {
            protocol: self.protocol,
            chassis_id: TypedId {
                subtype: "local".into(),
                value: self.device_id.clone(),
            },
            port_id: TypedId {
                subtype: "ifname".into(),
                value: self.port_id.clone(),
            },
            system_name: Some(self.device_id.clone()),
            port_description: Some(self.port_id.clone()),
            system_description: description,
            management_addresses: management,
            pvid: self.native_vlan.filter(|v| *v != 0),
            vlans: Vec::new(),
            ttl_seconds: self.ttl_seconds,
        }
    }
}

/// Decodes a CDP (or, with `Protocol::Fdp`, FDP) PDU: version, TTL,
/// checksum, then TLVs of a 2-byte type and a 2-byte length that counts
/// the header.
pub fn parse(pdu: &[u8], protocol: Protocol) -> Result<CdpPdu, CdpError> {
    let (&version, rest) = pdu.split_first().ok_or(CdpError::ShortHeader(pdu.len()))?;
    let ttl = *rest.first().ok_or(CdpError::ShortHeader(pdu.len()))?;
    if pdu.len() < 4 {
        return Err(CdpError::ShortHeader(pdu.len()));
    }
    if !(1..=2).contains(&version) {
        return Err(CdpError::Version(version));
    }
    let mut out = CdpPdu {
        protocol,
        version,
        ttl_seconds: u16::from(ttl),
        ..CdpPdu::default()
    };
    let mut offset = 4;
    // At least a header's worth left: trailing padding is no TLV.
    while offset + 4 <= pdu.len() {
        let (Some(tlv), Some(len)) = (be16(pdu, offset), be16(pdu, offset + 2)) else {
            break;
        };
        let len = usize::from(len);
        if len < 4 {
            return Err(CdpError::BadTlvLength(offset));
        }
        let value = pdu.get(offset + 4..offset + len).ok_or(CdpError::PastEnd {
            tlv,
            offset,
            len,
            left: pdu.len() - offset,
        })?;
        match tlv {
            TLV_DEVICE_ID => out.device_id = text(value).unwrap_or_default(),
            TLV_PORT_ID => out.port_id = text(value).unwrap_or_default(),
            _ => {
                if let Err(e) = optional(&mut out, tlv, value) {
                    out.skipped.push(e);
                }
            }
        }
        offset += len;
    }
    if out.device_id.is_empty() {
        return Err(CdpError::Missing("device ID"));
    }
    if out.port_id.is_empty() {
        return Err(CdpError::Missing("port ID"));
    }
    if out.ttl_seconds == 0 {
        return Err(CdpError::ZeroTtl);
    }
    Ok(out)
}

fn optional(out: &mut CdpPdu, tlv: u16, value: &[u8]) -> Result<(), CdpError> {
    let bad = |what| CdpError::BadLength {
        what,
        len: value.len(),
    };
    match tlv {
        TLV_ADDRESSES => out.addresses = addresses(value)?,
        TLV_MANAGEMENT_ADDRESSES => out.management_addresses = addresses(value)?,
        TLV_CAPABILITIES => {
            out.capabilities = Some(match (out.protocol, <[u8; 4]>::try_from(value)) {
                (Protocol::Cdp, Ok(bits)) => u32::from_be_bytes(bits),
                (Protocol::Cdp, Err(_)) => return Err(bad("capabilities")),
                // FDP says it in words ("Router", "Switch", "Host").
                _ => words_to_caps(&text(value).ok_or_else(|| bad("capabilities"))?),
            })
        }
        TLV_SOFTWARE => out.software = text(value),
        TLV_PLATFORM => out.platform = text(value),
        TLV_NATIVE_VLAN => {
            let (Some(vlan), 2) = (be16(value, 0), value.len()) else {
                return Err(bad("native VLAN"));
            };
            out.native_vlan = Some(vlan);
        }
        TLV_DUPLEX => {
            let [d] = value else {
                return Err(bad("duplex"));
            };
            out.full_duplex = Some(*d != 0);
        }
        _ => {} // VTP domain, power, ...: not used
    }
    Ok(())
}

fn words_to_caps(words: &str) -> u32 {
    let mut caps = 0;
    for w in words.split(|c: char| !c.is_ascii_alphanumeric()) {
        caps |= match w.to_ascii_lowercase().as_str() {
            "router" => 0x01,
            "bridge" => 0x02,
            "switch" => 0x08,
            "host" => 0x10,
            "repeater" => 0x40,
            _ => 0,
        };
    }
    caps
}

/// The Addresses TLV: a count, then per address a protocol type (1 NLPID,
/// 2 802.2), the protocol's length and bytes, the address's length and
/// bytes. IPv4 (NLPID 0xcc) and IPv6 (802.2 with ethertype 0x86dd) are
/// kept; other protocols are skipped.
fn addresses(value: &[u8]) -> Result<Vec<String>, CdpError> {
    let bad = || CdpError::BadLength {
        what: "addresses",
        len: value.len(),
    };
    let count = value
        .get(..4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
        .ok_or_else(bad)?;
    let mut out = Vec::new();
    let mut at = 4;
    for _ in 0..count {
        let kind = *value.get(at).ok_or_else(bad)?;
        let plen = usize::from(*value.get(at + 1).ok_or_else(bad)?);
        let protocol = value.get(at + 2..at + 2 + plen).ok_or_else(bad)?;
        at += 2 + plen;
        let alen = usize::from(be16(value, at).ok_or_else(bad)?);
        let address = value.get(at + 2..at + 2 + alen).ok_or_else(bad)?;
        at += 2 + alen;
        let ip = match (kind, protocol, address.len()) {
            (1, [0xcc], 4) => <[u8; 4]>::try_from(address)
                .ok()
                .map(|a| Ipv4Addr::from(a).to_string()),
            (2, [.., 0x86, 0xdd], 16) => <[u8; 16]>::try_from(address)
                .ok()
                .map(|a| Ipv6Addr::from(a).to_string()),
            _ => None,
        };
        out.extend(ip);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lldp::unhex;

    fn tlv(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut out = kind.to_be_bytes().to_vec();
        out.extend(((value.len() + 4) as u16).to_be_bytes());
        out.extend(value);
        out
    }

    /// The PDU lldpd 1.0.16 sends as a CDPv1 switch named sw-x on port pa
    /// (captured: after the SNAP header).
    const LLDPD_CDPV1: &str = "010444030001000873772d7800030006706100040008000000100005005a44656269616e20474e552f4c696e75782031322028626f6f6b776f726d29204c696e757820362e31382e34342d66632d763132353220233120534d5020505245454d50545f44594e414d4943204030207838365f3634000600094c696e7578";

    #[test]
    fn lldpd_s_cdp_decodes_as_lldpd_shows_it() {
        let pdu = parse(&unhex(LLDPD_CDPV1), Protocol::Cdp).unwrap();
        assert_eq!((pdu.version, pdu.ttl_seconds), (1, 4));
        assert_eq!(pdu.capabilities, Some(0x10));
        let n = pdu.neighbor();
        assert_eq!(n.protocol, Protocol::Cdp);
        assert_eq!(n.chassis_id.value, "sw-x");
        assert_eq!(n.system_name.as_deref(), Some("sw-x"));
        assert_eq!(
            (n.port_id.subtype.as_str(), n.port_id.value.as_str()),
            ("ifname", "pa")
        );
        assert!(
            n.system_description
                .unwrap()
                .starts_with("Linux running on\nDebian GNU/Linux 12")
        );
    }

    /// A Cisco IOS-like CDPv2 PDU: addresses (IPv4 and IPv6), native VLAN,
    /// duplex, management address, and a VTP domain we do not use.
    #[test]
    fn an_ios_cdpv2_pdu_with_everything() {
        let mut addrs = 2u32.to_be_bytes().to_vec();
        addrs.extend([1, 1, 0xcc, 0, 4, 192, 0, 2, 1]);
        addrs.extend([2, 8, 0xaa, 0xaa, 3, 0, 0, 0, 0x86, 0xdd, 0, 16]);
        addrs.extend([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        let mut mgmt = 1u32.to_be_bytes().to_vec();
        mgmt.extend([1, 1, 0xcc, 0, 4, 198, 51, 100, 7]);
        let mut pdu = vec![2, 180, 0x12, 0x34];
        for t in [
            tlv(1, b"tor-green-01.example.com"),
            tlv(2, &addrs),
            tlv(3, b"TenGigabitEthernet1/0/7"),
            tlv(4, &0x28u32.to_be_bytes()),
            tlv(5, b"Cisco IOS Software, C3850 Software, Version 16.12.4"),
            tlv(6, b"cisco WS-C3850-24XS"),
            tlv(9, b"vtp-domain"),
            tlv(0x0a, &100u16.to_be_bytes()),
            tlv(0x0b, &[1]),
            tlv(0x16, &mgmt),
        ] {
            pdu.extend(t);
        }
        let p = parse(&pdu, Protocol::Cdp).unwrap();
        assert_eq!(
            (p.version, p.ttl_seconds, p.native_vlan, p.full_duplex),
            (2, 180, Some(100), Some(true))
        );
        assert_eq!(p.addresses, ["192.0.2.1", "2001:db8::1"]);
        let n = p.neighbor();
        assert_eq!(n.pvid, Some(100));
        assert_eq!(
            n.management_addresses,
            ["198.51.100.7", "192.0.2.1", "2001:db8::1"]
        );
        assert_eq!(n.port_id.value, "TenGigabitEthernet1/0/7");
        assert_eq!(
            n.system_description.as_deref(),
            Some(
                "cisco WS-C3850-24XS running on\nCisco IOS Software, C3850 Software, Version 16.12.4"
            )
        );
        assert!(p.skipped.is_empty());
    }

    /// lldpd's FDP: the same TLVs, capabilities in words.
    #[test]
    fn lldpd_s_fdp_says_capabilities_in_words() {
        let fdp = "010410a70001000873772d7800030006706100040008486f73740005005a44656269616e20474e552f4c696e75782031322028626f6f6b776f726d29204c696e757820362e31382e34342d66632d763132353220233120534d5020505245454d50545f44594e414d4943204030207838365f3634000600094c696e7578";
        let p = parse(&unhex(fdp), Protocol::Fdp).unwrap();
        assert_eq!(p.capabilities, Some(0x10));
        assert_eq!(p.neighbor().protocol, Protocol::Fdp);
        assert_eq!(p.neighbor().chassis_id.value, "sw-x");
    }

    #[test]
    fn odd_tlvs_are_skipped_alone_and_missing_ids_refuse() {
        let mut pdu = vec![2, 120, 0, 0];
        pdu.extend(tlv(1, b"sw"));
        pdu.extend(tlv(0x0a, &[1])); // a one-byte native VLAN
        pdu.extend(tlv(2, &[0, 0, 0, 9])); // nine addresses, none there
        pdu.extend(tlv(3, b"Gi1/0/1\0"));
        let p = parse(&pdu, Protocol::Cdp).unwrap();
        assert_eq!(p.port_id, "Gi1/0/1");
        assert_eq!(p.skipped.len(), 2);
        assert_eq!(p.native_vlan, None);
        let mut no_port = vec![2, 120, 0, 0];
        no_port.extend(tlv(1, b"sw"));
        assert_eq!(
            parse(&no_port, Protocol::Cdp),
            Err(CdpError::Missing("port ID"))
        );
        assert_eq!(
            parse(&[3, 1, 0, 0], Protocol::Cdp),
            Err(CdpError::Version(3))
        );
        assert!(matches!(
            parse(&[2, 1, 0], Protocol::Cdp),
            Err(CdpError::ShortHeader(3))
        ));
        let mut past = vec![2, 120, 0, 0];
        past.extend([0, 1, 0, 40, b's']);
        assert!(matches!(
            parse(&past, Protocol::Cdp),
            Err(CdpError::PastEnd { .. })
        ));
        let mut zero = vec![2, 0, 0, 0];
        zero.extend(tlv(1, b"sw"));
        zero.extend(tlv(3, b"p1"));
        assert_eq!(parse(&zero, Protocol::Cdp), Err(CdpError::ZeroTtl));
    }
}
