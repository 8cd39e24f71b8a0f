//! Which neighbor protocol an Ethernet frame speaks, and what it said
//! (pure): LLDP by its ethertype; CDP, FDP, EDP and SONMP, which are 802.3
//! frames with an LLC/SNAP header, by their multicast address, OUI and
//! protocol ID. Frames of no protocol that is listened for are nobody's
//! business (`None`); a frame of one that does not decode is a
//! [`Rejection`], counted and reported like LLDP's.

use std::fmt;

use super::frame::{self, ETHERTYPE_LLDP, NEAREST_BRIDGE, be16};
use super::{cdp, edp, sonmp};
use crate::inventory::{Neighbor, Protocol};

const ETHERTYPE_VLAN: u16 = 0x8100;
/// 802.3 frames carry a length, up to this, where Ethernet II has a type.
const MAX_LENGTH: u16 = 1500;
const LLC_SNAP: [u8; 3] = [0xaa, 0xaa, 0x03];

/// A set of neighbor protocols.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Protocols(u8);

impl Protocols {
    pub const NONE: Protocols = Protocols(0);

    pub fn all() -> Protocols {
        Protocol::ALL.into_iter().collect()
    }

    pub fn contains(self, p: Protocol) -> bool {
        self.0 & bit(p) != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Protocol> {
        Protocol::ALL.into_iter().filter(move |p| self.contains(*p))
    }

    /// Whether any of them is an LLC/SNAP protocol (another socket).
    pub fn any_llc(self) -> bool {
        self.iter().any(|p| p != Protocol::Lldp)
    }
}

/// The group address a protocol is sent to.
pub fn group(p: Protocol) -> [u8; 6] {
    match p {
        Protocol::Lldp => NEAREST_BRIDGE,
        Protocol::Cdp => cdp::CDP_MULTICAST,
        Protocol::Fdp => cdp::FDP_MULTICAST,
        Protocol::Edp => edp::EDP_MULTICAST,
        Protocol::Sonmp => sonmp::SONMP_MULTICAST,
    }
}

fn bit(p: Protocol) -> u8 {
    1 << (p as u8)
}

impl FromIterator<Protocol> for Protocols {
    fn from_iter<I: IntoIterator<Item = Protocol>>(iter: I) -> Self {
        Protocols(iter.into_iter().fold(0, |acc, p| acc | bit(p)))
    }
}

impl fmt::Display for Protocols {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.iter().map(Protocol::as_str).collect();
        f.write_str(&names.join(","))
    }
}

/// A neighbor heard, with the optional parts its frame had that were left
/// out as malformed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Announcement {
    pub neighbor: Neighbor,
    pub skipped: Vec<String>,
}

/// A frame of a protocol listened for that did not decode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub protocol: Protocol,
    /// Short and stable, for metrics labels.
    pub reason: &'static str,
    pub message: String,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}",
            self.protocol.as_str().to_uppercase(),
            self.message
        )
    }
}

/// One frame, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decoded {
    pub source: [u8; 6],
    pub protocol: Protocol,
    pub result: Result<Announcement, Rejection>,
}

/// Decodes `frame` if it speaks one of `enabled`.
pub fn decode(frame: &[u8], enabled: Protocols) -> Option<Decoded> {
    let dst: [u8; 6] = frame.get(..6)?.try_into().ok()?;
    let source: [u8; 6] = frame.get(6..12)?.try_into().ok()?;
    let mut at = 12;
    let mut kind = be16(frame, at)?;
    if kind == ETHERTYPE_VLAN {
        at += 4;
        kind = be16(frame, at)?;
    }
    if kind == ETHERTYPE_LLDP {
        if !enabled.contains(Protocol::Lldp) {
            return None;
        }
        let result = match frame::parse_frame(frame) {
            Ok((_, pdu)) => Ok(Announcement {
                neighbor: pdu.neighbor(),
                skipped: pdu.skipped.iter().map(ToString::to_string).collect(),
            }),
            Err(e) => Err(rejection(Protocol::Lldp, e.reason(), &e)),
        };
        return Some(Decoded {
            source,
            protocol: Protocol::Lldp,
            result,
        });
    }
    if kind > MAX_LENGTH {
        return None;
    }
    // 802.3: the length counts the LLC/SNAP header and the PDU; what
    // follows is padding.
    let body = frame.get(at + 2..)?;
    let body = &body[..body.len().min(usize::from(kind))];
    if body.get(..3)? != LLC_SNAP {
        return None;
    }
    let oui: [u8; 3] = body.get(3..6)?.try_into().ok()?;
    let pid = be16(body, 6)?;
    let pdu = body.get(8..)?;
    let protocol = match (dst, oui, pid) {
        (cdp::CDP_MULTICAST, cdp::OUI_CISCO, cdp::PID_CDP) => Protocol::Cdp,
        (cdp::FDP_MULTICAST, cdp::OUI_FOUNDRY, cdp::PID_CDP) => Protocol::Fdp,
        (edp::EDP_MULTICAST, edp::OUI_EXTREME, edp::PID_EDP) => Protocol::Edp,
        (sonmp::SONMP_MULTICAST, sonmp::OUI_NORTEL, sonmp::PID_SONMP_HELLO) => Protocol::Sonmp,
        _ => return None,
    };
    if !enabled.contains(protocol) {
        return None;
    }
    let result = match protocol {
        Protocol::Cdp | Protocol::Fdp => cdp::parse(pdu, protocol)
            .map(|p| Announcement {
                neighbor: p.neighbor(),
                skipped: p.skipped.iter().map(ToString::to_string).collect(),
            })
            .map_err(|e| rejection(protocol, e.reason(), &e)),
        Protocol::Edp => edp::parse(pdu)
            .map(|p| Announcement {
                neighbor: p.neighbor(),
                skipped: p.skipped.iter().map(ToString::to_string).collect(),
            })
            .map_err(|e| rejection(protocol, e.reason(), &e)),
        Protocol::Sonmp => sonmp::parse(pdu)
            .map(|p| Announcement {
                neighbor: p.neighbor(),
                skipped: Vec::new(),
            })
            .map_err(|e| rejection(protocol, e.reason(), &e)),
        Protocol::Lldp => return None,
    };
    Some(Decoded {
        source,
        protocol,
        result,
    })
}

fn rejection(protocol: Protocol, reason: &'static str, e: &dyn fmt::Display) -> Rejection {
    Rejection {
        protocol,
        reason,
        message: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lldp::unhex;

    /// Whole frames lldpd 1.0.16 sent (captured on a veth).
    const CDP: &str = "01000cccccccf6772332864a0085aaaa0300000c2000010444030001000873772d7800030006706100040008000000100005005a44656269616e20474e552f4c696e75782031322028626f6f6b776f726d29204c696e757820362e31382e34342d66632d763132353220233120534d5020505245454d50545f44594e414d4943204030207838365f3634000600094c696e7578";
    const EDP: &str = "00e02b000000fa591924e9f20049aaaa0300e02b00bb010000412b1400020000fa591924e9f29901000973772d78009902002400080000000000000000000007060463ffffffff00000000000000000000000099000004";
    const FDP: &str = "01e052cccccc6ed51c914bda0085aaaa0300e0522000010410a70001000873772d7800030006706100040008486f73740005005a44656269616e20474e552f4c696e75782031322028626f6f6b776f726d29204c696e757820362e31382e34342d66632d763132353220233120534d5020505245454d50545f44594e414d4943204030207838365f3634000600094c696e7578";
    const SONMP: &str = "010081000100c6af28a9707b0013aaaa0300008101a200000000000002010c0301";
    const SONMP_FLATNET: &str =
        "010081000101c6af28a9707b0013aaaa0300008101a100000000000002010c0301";

    #[test]
    fn each_protocol_by_address_oui_and_pid() {
        for (hex, protocol, name) in [
            (CDP, Protocol::Cdp, "sw-x"),
            (EDP, Protocol::Edp, "sw-x"),
            (FDP, Protocol::Fdp, "sw-x"),
            (SONMP, Protocol::Sonmp, "0.0.0.0"),
        ] {
            let d = decode(&unhex(hex), Protocols::all()).unwrap();
            assert_eq!(d.protocol, protocol);
            let a = d.result.unwrap();
            assert_eq!(a.neighbor.protocol, protocol);
            assert_eq!(a.neighbor.system_name.as_deref(), Some(name));
            // Not listened for: not our business.
            let others: Protocols = Protocol::ALL
                .into_iter()
                .filter(|p| *p != protocol)
                .collect();
            assert_eq!(decode(&unhex(hex), others), None);
        }
        assert_eq!(decode(&unhex(SONMP_FLATNET), Protocols::all()), None);
    }

    #[test]
    fn padding_after_the_length_is_not_read_and_strangers_are_ignored() {
        let mut padded = unhex(SONMP);
        padded.extend([0u8; 30]);
        assert!(decode(&padded, Protocols::all()).unwrap().result.is_ok());
        let mut cdp = unhex(CDP);
        cdp.extend([0u8; 16]);
        assert!(decode(&cdp, Protocols::all()).unwrap().result.is_ok());
        // STP (LLC, not SNAP), VTP (Cisco's address, another PID), IPv6.
        let stp = unhex("0180c2000000020000000001002742420300000000");
        assert_eq!(decode(&stp, Protocols::all()), None);
        let mut vtp = unhex(CDP);
        vtp[20..22].copy_from_slice(&[0x20, 0x03]);
        assert_eq!(decode(&vtp, Protocols::all()), None);
        let v6 = unhex("33330000000102000000000186dd6000");
        assert_eq!(decode(&v6, Protocols::all()), None);
        assert_eq!(decode(&[1, 2, 3], Protocols::all()), None);
    }

    #[test]
    fn a_broken_pdu_of_a_protocol_listened_for_is_a_rejection() {
        let mut cdp = unhex(CDP);
        cdp.truncate(24); // the header, no TLV
        let d = decode(&cdp, Protocols::all()).unwrap();
        let r = d.result.unwrap_err();
        assert_eq!((r.protocol, r.reason), (Protocol::Cdp, "short_frame"));
        assert!(r.to_string().starts_with("CDP: "), "{r}");
    }

    #[test]
    fn protocol_sets() {
        let p: Protocols = [Protocol::Lldp, Protocol::Sonmp].into_iter().collect();
        assert!(p.contains(Protocol::Lldp) && !p.contains(Protocol::Cdp));
        assert!(p.any_llc());
        assert_eq!(p.to_string(), "lldp,sonmp");
        assert_eq!(group(Protocol::Sonmp), sonmp::SONMP_MULTICAST);
        assert!(!Protocols(bit(Protocol::Lldp)).any_llc());
        assert!(Protocols::NONE.is_empty());
    }
}
