//! EDP (Extreme Discovery Protocol): a pure decoder of the PDU after the
//! LLC/SNAP header. A header (version 1, the switch's MAC) and an Info TLV
//! (slot and port) make a neighbor; the Display TLV names it; VLAN TLVs
//! add VLANs and management addresses; anything else odd is skipped. EDP
//! carries no hold time: a neighbor stands [`HOLD_SECONDS`] without a
//! refresh (ExtremeXOS's default hold-down).
//!
//! What is published follows lldpd: the MAC is the chassis ID, the port
//! is `slot/port` (counted from 1) and "Slot S / Port P".

use std::net::Ipv4Addr;

use super::frame::{be16, text};
use crate::inventory::{Neighbor, Protocol, TypedId, Vlan, format_mac};

pub const EDP_MULTICAST: [u8; 6] = [0x00, 0xe0, 0x2b, 0x00, 0x00, 0x00];
pub const OUI_EXTREME: [u8; 3] = [0x00, 0xe0, 0x2b];
pub const PID_EDP: u16 = 0x00bb;
pub const HOLD_SECONDS: u16 = 180;

const HEADER: usize = 16;
const MARKER: u8 = 0x99;
const TLV_NULL: u8 = 0;
const TLV_DISPLAY: u8 = 1;
const TLV_INFO: u8 = 2;
const TLV_VLAN: u8 = 5;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EdpError {
    #[error("an EDP header needs {HEADER} bytes, the PDU has {0}")]
    ShortHeader(usize),
    #[error("EDP version {0} is not 1")]
    Version(u8),
    #[error("EDP device ID type {0} is not a MAC (0)")]
    IdType(u16),
    #[error("the EDP PDU has no Info TLV (slot and port)")]
    NoInfo,
    #[error("EDP {what} has an invalid length {len}")]
    BadLength { what: &'static str, len: usize },
}

impl EdpError {
    /// A short, stable name for metrics labels.
    pub fn reason(&self) -> &'static str {
        match self {
            EdpError::ShortHeader(_) => "short_frame",
            EdpError::Version(_) => "bad_version",
            EdpError::IdType(_) => "bad_id",
            EdpError::NoInfo => "missing_tlv",
            EdpError::BadLength { .. } => "bad_length",
        }
    }
}

/// What one EDP PDU said that Surveyor decodes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EdpPdu {
    pub mac: [u8; 6],
    pub name: Option<String>,
    /// Slot and port, counted from 1.
    pub slot: u16,
    pub port: u16,
    pub version: [u8; 4],
    pub vlans: Vec<Vlan>,
    pub addresses: Vec<String>,
    pub skipped: Vec<EdpError>,
}

impl EdpPdu {
    /// The neighbor as published, the way lldpd shows it.
    pub fn neighbor(&self) -> Neighbor {
        let [a, b, c, d] = self.version;
        Neighbor {
            protocol: Protocol::Edp,
            chassis_id: TypedId {
                subtype: "mac".into(),
                value: format_mac(&self.mac),
            },
            port_id: TypedId {
                subtype: "ifname".into(),
                value: format!("{}/{}", self.slot, self.port),
            },
            system_name: self.name.clone(),
            port_description: Some(format!("Slot {} / Port {}", self.slot, self.port)),
            system_description: Some(format!("EDP enabled device, version {a}.{b}.{c}.{d}")),
            management_addresses: self.addresses.clone(),
            pvid: None,
            vlans: self.vlans.clone(),
            ttl_seconds: HOLD_SECONDS,
        }
    }
}

/// Decodes an EDP PDU: version, reserved, length, checksum, sequence, the
/// device ID's type and MAC, then TLVs (a 0x99 marker, a type, a 2-byte
/// length counting the 4-byte header) up to a NULL TLV or the end.
pub fn parse(pdu: &[u8]) -> Result<EdpPdu, EdpError> {
    if pdu.len() < HEADER {
        return Err(EdpError::ShortHeader(pdu.len()));
    }
    if pdu[0] != 1 {
        return Err(EdpError::Version(pdu[0]));
    }
    let id_type = be16(pdu, 8).unwrap_or_default();
    if id_type != 0 {
        return Err(EdpError::IdType(id_type));
    }
    let mut out = EdpPdu::default();
    out.mac.copy_from_slice(&pdu[10..HEADER]);
    let mut info = false;
    let mut offset = HEADER;
    while offset + 4 <= pdu.len() {
        if pdu[offset] != MARKER {
            // Old Summits pad with garbage: what follows is no TLV.
            break;
        }
        let kind = pdu[offset + 1];
        let len = usize::from(be16(pdu, offset + 2).unwrap_or_default());
        let Some(value) = len
            .checked_sub(4)
            .and_then(|n| pdu.get(offset + 4..offset + 4 + n))
        else {
            out.skipped.push(EdpError::BadLength { what: "TLV", len });
            break;
        };
        match kind {
            TLV_NULL => break,
            TLV_DISPLAY => out.name = display(value),
            TLV_INFO => match info_tlv(&mut out, value) {
                Ok(()) => info = true,
                Err(e) => out.skipped.push(e),
            },
            TLV_VLAN => {
                if let Err(e) = vlan(&mut out, value) {
                    out.skipped.push(e);
                }
            }
            _ => {}
        }
        offset += len;
    }
    if !info {
        return Err(EdpError::NoInfo);
    }
    Ok(out)
}

/// The display string: up to its first NUL (what follows is garbage on
/// some switches).
fn display(value: &[u8]) -> Option<String> {
    let end = value.iter().position(|&b| b == 0).unwrap_or(value.len());
    text(&value[..end])
}

fn info_tlv(out: &mut EdpPdu, value: &[u8]) -> Result<(), EdpError> {
    // slot (2), port (2), virtual chassis (2), reserved (6), version (4),
    // connections (16).
    if value.len() < 32 {
        return Err(EdpError::BadLength {
            what: "Info TLV",
            len: value.len(),
        });
    }
    out.slot = be16(value, 0).unwrap_or_default().saturating_add(1);
    out.port = be16(value, 2).unwrap_or_default().saturating_add(1);
    out.version.copy_from_slice(&value[12..16]);
    Ok(())
}

fn vlan(out: &mut EdpPdu, value: &[u8]) -> Result<(), EdpError> {
    // flags (1), reserved (1), VLAN ID (2), reserved (4), IPv4 (4), name.
    if value.len() < 12 {
        return Err(EdpError::BadLength {
            what: "VLAN TLV",
            len: value.len(),
        });
    }
    let id = be16(value, 2).unwrap_or_default();
    let ip = Ipv4Addr::new(value[8], value[9], value[10], value[11]);
    if !ip.is_unspecified() {
        let ip = ip.to_string();
        if !out.addresses.contains(&ip) {
            out.addresses.push(ip);
        }
    }
    out.vlans.push(Vlan {
        id,
        name: display(&value[12..]),
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lldp::unhex;

    /// What lldpd 1.0.16 sends as an EDP switch sw-x (after the SNAP
    /// header): Display, Info (slot 8, port 0: "9/1"), NULL.
    const LLDPD_EDP: &str = "010000412b1400020000fa591924e9f29901000973772d78009902002400080000000000000000000007060463ffffffff00000000000000000000000099000004";

    #[test]
    fn lldpd_s_edp_decodes_as_lldpd_shows_it() {
        let p = parse(&unhex(LLDPD_EDP)).unwrap();
        let n = p.neighbor();
        assert_eq!(n.protocol, Protocol::Edp);
        assert_eq!(n.chassis_id.value, "fa:59:19:24:e9:f2");
        assert_eq!(n.system_name.as_deref(), Some("sw-x"));
        assert_eq!(n.port_id.value, "9/1");
        assert_eq!(n.port_description.as_deref(), Some("Slot 9 / Port 1"));
        assert_eq!(
            n.system_description.as_deref(),
            Some("EDP enabled device, version 7.6.4.99")
        );
        assert_eq!(n.ttl_seconds, HOLD_SECONDS);
    }

    #[test]
    fn vlans_garbage_and_broken_headers() {
        let mut pdu = unhex(LLDPD_EDP);
        pdu.truncate(pdu.len() - 4); // no NULL TLV: the end will do
        let mut vlan = vec![MARKER, TLV_VLAN, 0, 0];
        vlan.extend([0x80, 0, 0, 100, 0, 0, 0, 0, 192, 0, 2, 9]);
        vlan.extend(b"green\0junk");
        let len = vlan.len() as u16;
        vlan[2..4].copy_from_slice(&len.to_be_bytes());
        pdu.extend(&vlan);
        pdu.extend([0x55, 0xaa, 0x00]); // trailing garbage
        let p = parse(&pdu).unwrap();
        assert_eq!(
            p.vlans,
            [Vlan {
                id: 100,
                name: Some("green".into())
            }]
        );
        assert_eq!(p.addresses, ["192.0.2.9"]);
        assert_eq!(parse(&pdu[..10]), Err(EdpError::ShortHeader(10)));
        let mut v2 = pdu.clone();
        v2[0] = 2;
        assert_eq!(parse(&v2), Err(EdpError::Version(2)));
        // No Info TLV: no port, no neighbor.
        assert_eq!(parse(&pdu[..HEADER]), Err(EdpError::NoInfo));
        // A TLV claiming more than there is: the rest is dropped, the Info
        // before it stands.
        let mut long = unhex(LLDPD_EDP);
        let at = long.len() - 4;
        long[at + 3] = 200;
        assert!(parse(&long).is_ok());
    }
}
