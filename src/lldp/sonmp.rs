//! SONMP (SynOptics/Nortel Network Management Protocol, "autotopology"):
//! a pure decoder of the fixed 11-byte hello after the LLC/SNAP header.
//! It names the switch by its IP address and the port by its segment
//! (slot and port); it has no name, no description and no hold time: a
//! neighbor stands [`HOLD_SECONDS`] without a refresh (lldpd's default).
//!
//! What is published follows lldpd: the IP is the chassis ID, the system
//! name and the management address; the segment is the port ID
//! (`00-00-02`) and "port 2" (or "port 1/2" with a slot).

use std::net::Ipv4Addr;

use crate::inventory::{Neighbor, Protocol, TypedId};

/// The hello's address, OUI and protocol ID (the "flatnet" copy sent to
/// `...:01:01` with PID 0x01a1 says the same and is ignored, as lldpd does).
pub const SONMP_MULTICAST: [u8; 6] = [0x01, 0x00, 0x81, 0x00, 0x01, 0x00];
pub const OUI_NORTEL: [u8; 3] = [0x00, 0x00, 0x81];
pub const PID_SONMP_HELLO: u16 = 0x01a2;
pub const HOLD_SECONDS: u16 = 120;

const SIZE: usize = 11;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SonmpError {
    #[error("a SONMP hello is {SIZE} bytes, this one {0}")]
    Short(usize),
}

impl SonmpError {
    /// A short, stable name for metrics labels.
    pub fn reason(&self) -> &'static str {
        "short_frame"
    }
}

/// What one SONMP hello said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SonmpPdu {
    pub ip: Ipv4Addr,
    /// Slot-and-port, three bytes.
    pub segment: [u8; 3],
    pub chassis_type: u8,
    pub backplane: u8,
}

impl SonmpPdu {
    /// The neighbor as published, the way lldpd shows it.
    pub fn neighbor(&self) -> Neighbor {
        let [a, b, c] = self.segment;
        let port = match (a, b) {
            (0, 0) => format!("port {c}"),
            (0, _) => format!("port {b}/{c}"),
            _ => format!("port {a:x}:{b:x}:{c:x}"),
        };
        let ip = self.ip.to_string();
        Neighbor {
            protocol: Protocol::Sonmp,
            chassis_id: TypedId {
                subtype: "networkaddress".into(),
                value: ip.clone(),
            },
            port_id: TypedId {
                subtype: "local".into(),
                value: format!("{a:02x}-{b:02x}-{c:02x}"),
            },
            system_name: Some(ip.clone()),
            port_description: Some(port),
            system_description: Some(format!(
                "SONMP chassis type {}, backplane {}",
                self.chassis_type, self.backplane
            )),
            management_addresses: vec![ip],
            pvid: None,
            vlans: Vec::new(),
            ttl_seconds: HOLD_SECONDS,
        }
    }
}

/// Decodes a hello: IPv4 address (4), segment (3), chassis type (1),
/// backplane (1), state (1), links (1). Trailing padding is ignored.
pub fn parse(pdu: &[u8]) -> Result<SonmpPdu, SonmpError> {
    let b = pdu.get(..SIZE).ok_or(SonmpError::Short(pdu.len()))?;
    Ok(SonmpPdu {
        ip: Ipv4Addr::new(b[0], b[1], b[2], b[3]),
        segment: [b[4], b[5], b[6]],
        chassis_type: b[7],
        backplane: b[8],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lldpd_s_hello_and_slots() {
        // lldpd 1.0.16, no management address: 0.0.0.0, segment 00 00 02.
        let p = parse(&[0, 0, 0, 0, 0, 0, 2, 1, 0x0c, 3, 1]).unwrap();
        let n = p.neighbor();
        assert_eq!(n.protocol, Protocol::Sonmp);
        assert_eq!(n.system_name.as_deref(), Some("0.0.0.0"));
        assert_eq!(n.port_id.value, "00-00-02");
        assert_eq!(n.port_description.as_deref(), Some("port 2"));
        let slot = parse(&[192, 0, 2, 4, 0, 3, 17, 12, 0x0c, 3, 1, 0, 0]).unwrap();
        assert_eq!(
            slot.neighbor().port_description.as_deref(),
            Some("port 3/17")
        );
        assert_eq!(slot.neighbor().chassis_id.value, "192.0.2.4");
        assert_eq!(parse(&[1, 2, 3]), Err(SonmpError::Short(3)));
    }
}
