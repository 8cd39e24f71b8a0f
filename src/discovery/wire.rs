//! Route netlink on the wire, pure: link and address messages translated
//! into inventory facts, and the requests that ask for them.
//!
//! Only the attributes the inventory uses are decoded; one that fails to
//! decode is left out instead of ending the stream.

use std::net::IpAddr;

use ipnet::IpNet;
use rtnetlink::packet_core::ParseableParametrized;
use rtnetlink::packet_core::{
    DecodeError, NLM_F_DUMP_INTR, NetlinkBuffer, NetlinkMessage, NlasIterator, Parseable as _,
};
use rtnetlink::packet_route::address::{AddressAttribute, AddressHeader, AddressMessage};
use rtnetlink::packet_route::link::{
    InfoKind, LinkAttribute, LinkExtentMask, LinkFlags, LinkHeader, LinkInfo, LinkLayerType,
    LinkMessage, Prop, State,
};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::inventory::{Interface, Link, LinkKind, OperState, format_mac};

const RTNLGRP_LINK: u32 = 1;
const RTNLGRP_IPV4_IFADDR: u32 = 5;
const RTNLGRP_IPV6_IFADDR: u32 = 9;
/// Multicast groups the event socket joins, as a bind mask (group N is
/// bit N-1).
pub const EVENT_GROUPS: u32 =
    group(RTNLGRP_LINK) | group(RTNLGRP_IPV4_IFADDR) | group(RTNLGRP_IPV6_IFADDR);

const fn group(n: u32) -> u32 {
    1 << (n - 1)
}

const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_OVERRUN: u16 = 4;
/// The link header precedes the attributes in every link message.
const LINK_HEADER_LEN: usize = 16;
/// And the address header in every address message.
const ADDRESS_HEADER_LEN: usize = 8;
/// IFLA_ADDRESS, IFNAME, MTU, MASTER, OPERSTATE, LINKINFO, IFALIAS,
/// PROP_LIST, PERM_ADDRESS.
const WANTED: [u16; 9] = [1, 3, 4, 10, 16, 18, 20, 52, 54];
/// IFA_ADDRESS, IFA_LOCAL.
const WANTED_ADDR: [u16; 2] = [1, 2];

/// What one netlink message means for the inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A link exists with these facts (dump reply or RTM_NEWLINK).
    New(Box<Link>),
    /// The link with this index is gone.
    Removed(u32),
    /// An address was added to (`present`) or removed from link `index`.
    Address {
        index: u32,
        net: IpNet,
        present: bool,
    },
    /// Messages were lost: only a fresh dump tells the truth now.
    Overrun,
}

/// One message of a datagram, classified.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    Event(Event),
    /// End of a dump.
    Done,
    /// An error (or, with 0, an ack) answering a request.
    Error(i32),
    /// Anything else: bridge-family link messages, addresses left out,
    /// other types.
    Skip,
}

/// Classifies every message in one datagram. Bridge-family link messages
/// share the link group but describe bridge port state, not links, so they
/// are skipped (a bridge-family DELLINK only means "left the bridge").
/// Returns whether the kernel flagged the messages as an interrupted dump.
pub fn parse_datagram(mut buf: &[u8], mut f: impl FnMut(Frame)) -> Result<bool, DecodeError> {
    let mut interrupted = false;
    while !buf.is_empty() {
        let msg = NetlinkBuffer::new_checked(buf)?;
        let len = msg.length() as usize;
        interrupted |= msg.flags() & NLM_F_DUMP_INTR != 0;
        let payload = msg.payload();
        f(match msg.message_type() {
            RTM_NEWLINK => match link_from_payload(payload) {
                Some((AddressFamily::Unspec, link)) => Frame::Event(Event::New(Box::new(link))),
                _ => Frame::Skip,
            },
            RTM_DELLINK => match LinkHeader::parse(payload) {
                Ok(h) if h.interface_family == AddressFamily::Unspec => {
                    Frame::Event(Event::Removed(h.index))
                }
                _ => Frame::Skip,
            },
            kind @ (RTM_NEWADDR | RTM_DELADDR) => match address_from_payload(payload) {
                Some((index, net)) => Frame::Event(Event::Address {
                    index,
                    net,
                    present: kind == RTM_NEWADDR,
                }),
                None => Frame::Skip,
            },
            NLMSG_DONE => Frame::Done,
            NLMSG_ERROR => {
                let code = payload
                    .get(..4)
                    .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                    .unwrap_or(0);
                Frame::Error(code)
            }
            NLMSG_OVERRUN => Frame::Event(Event::Overrun),
            _ => Frame::Skip,
        });
        // Messages are 4-byte aligned within a datagram.
        let next = (len + 3) & !3;
        buf = buf.get(next..).unwrap_or_default();
    }
    Ok(interrupted)
}

/// The facts of a link message (header + attributes). The kind is
/// provisional for links without a kernel kind: `Other` until sysfs shows
/// a device. `None` without a header or a name.
pub fn link_from_payload(payload: &[u8]) -> Option<(AddressFamily, Link)> {
    let header = LinkHeader::parse(payload).ok()?;
    let mut facts = Facts::new(&header);
    for nla in NlasIterator::new(payload.get(LINK_HEADER_LEN..)?) {
        let Ok(nla) = nla else { break };
        if !WANTED.contains(&nla.kind()) {
            continue;
        }
        if let Ok(attr) = LinkAttribute::parse_with_param(&nla, header.interface_family) {
            facts.apply(&attr);
        }
    }
    Some((header.interface_family, facts.finish(&header)?))
}

/// The same translation from an already parsed message.
pub fn link_from_message(msg: &LinkMessage) -> Option<Link> {
    let mut facts = Facts::new(&msg.header);
    for attr in &msg.attributes {
        facts.apply(attr);
    }
    facts.finish(&msg.header)
}

/// The interface address an address message carries, with its link's
/// index: IFA_LOCAL when given (on a point-to-point link IFA_ADDRESS is the
/// peer's), else IFA_ADDRESS. IPv6 link-local addresses are left out: every
/// IPv6 link has one, derived from its MAC, and none selects a network.
pub fn address_from_payload(payload: &[u8]) -> Option<(u32, IpNet)> {
    let header = AddressHeader::parse(payload).ok()?;
    let (mut local, mut address) = (None, None);
    for nla in NlasIterator::new(payload.get(ADDRESS_HEADER_LEN..)?) {
        let Ok(nla) = nla else { break };
        if !WANTED_ADDR.contains(&nla.kind()) {
            continue;
        }
        match AddressAttribute::parse(&nla) {
            Ok(AddressAttribute::Local(ip)) => local = Some(ip),
            Ok(AddressAttribute::Address(ip)) => address = Some(ip),
            _ => {}
        }
    }
    let ip = local.or(address)?;
    if is_ipv6_link_local(ip) {
        return None;
    }
    let net = IpNet::new(ip, header.prefix_len).ok()?;
    Some((header.index, net))
}

fn is_ipv6_link_local(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80)
}

struct Facts {
    iface: Interface,
    name: Option<String>,
    master_index: Option<u32>,
    info_kind: Option<String>,
}

impl Facts {
    fn new(header: &LinkHeader) -> Self {
        let mut iface = Interface::new("", header.index, LinkKind::Other);
        // IFF_LOWER_UP is "running with carrier": IFLA_CARRIER alone stays
        // set on some links that are administratively down.
        iface.carrier = header.flags.contains(LinkFlags::LowerUp);
        Facts {
            iface,
            name: None,
            master_index: None,
            info_kind: None,
        }
    }

    fn apply(&mut self, attr: &LinkAttribute) {
        let iface = &mut self.iface;
        match attr {
            LinkAttribute::IfName(n) => self.name = Some(n.clone()),
            LinkAttribute::Address(a) if !a.is_empty() => iface.mac = Some(format_mac(a)),
            LinkAttribute::PermAddress(a) if a.iter().any(|b| *b != 0) => {
                iface.permanent_mac = Some(format_mac(a))
            }
            LinkAttribute::Mtu(m) => iface.mtu = *m,
            LinkAttribute::OperState(s) => iface.oper_state = oper_state(*s),
            LinkAttribute::Controller(m) if *m != 0 => self.master_index = Some(*m),
            LinkAttribute::IfAlias(a) if !a.is_empty() => iface.alias = Some(a.clone()),
            LinkAttribute::PropList(props) => {
                iface.alt_names = props
                    .iter()
                    .filter_map(|p| match p {
                        Prop::AltIfName(n) => Some(n.clone()),
                        _ => None,
                    })
                    .collect();
            }
            LinkAttribute::LinkInfo(infos) => {
                self.info_kind = infos.iter().find_map(|i| match i {
                    LinkInfo::Kind(k) => Some(kind_name(k)),
                    _ => None,
                });
            }
            _ => {}
        }
    }

    fn finish(mut self, header: &LinkHeader) -> Option<Link> {
        self.iface.name = self.name?;
        self.iface.kind = match self.info_kind {
            Some(kind) => LinkKind::Virtual(kind),
            None if header.link_layer_type == LinkLayerType::Loopback => LinkKind::Loopback,
            None => LinkKind::Other,
        };
        Some(Link {
            interface: self.iface,
            master_index: self.master_index,
        })
    }
}

fn kind_name(kind: &InfoKind) -> String {
    match kind {
        InfoKind::Other(s) => s.clone(),
        k => k.to_string(),
    }
}

fn oper_state(s: State) -> OperState {
    match s {
        State::Up => OperState::Up,
        State::Down => OperState::Down,
        State::LowerLayerDown => OperState::LowerLayerDown,
        State::Dormant => OperState::Dormant,
        State::Testing => OperState::Testing,
        State::NotPresent => OperState::NotPresent,
        _ => OperState::Unknown,
    }
}

/// An RTM_GETLINK request without statistics (large, never published).
pub fn getlink_request(mut request: LinkMessage, flags: u16) -> Vec<u8> {
    request
        .attributes
        .push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
    encode(RouteNetlinkMessage::GetLink(request), flags)
}

/// An RTM_GETADDR request for every family.
pub fn getaddr_request(flags: u16) -> Vec<u8> {
    encode(
        RouteNetlinkMessage::GetAddress(AddressMessage::default()),
        flags,
    )
}

fn encode(message: RouteNetlinkMessage, flags: u16) -> Vec<u8> {
    let mut msg = NetlinkMessage::from(message);
    msg.header.flags = flags;
    msg.header.sequence_number = 1;
    msg.finalize();
    let mut out = vec![0; msg.buffer_len()];
    msg.serialize(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn header(family: AddressFamily) -> LinkHeader {
        LinkHeader {
            interface_family: family,
            index: 5,
            link_layer_type: LinkLayerType::Ether,
            flags: LinkFlags::Up | LinkFlags::LowerUp,
            ..Default::default()
        }
    }

    /// A datagram as the kernel would send it.
    fn datagram(msgs: Vec<RouteNetlinkMessage>) -> Vec<u8> {
        let mut out = Vec::new();
        for m in msgs {
            let mut m = NetlinkMessage::from(m);
            m.finalize();
            let mut buf = vec![0; m.buffer_len()];
            m.serialize(&mut buf);
            buf.resize((buf.len() + 3) & !3, 0);
            out.extend(buf);
        }
        out
    }

    fn sv_a(family: AddressFamily) -> LinkMessage {
        let mut msg = LinkMessage::default();
        msg.header = header(family);
        msg.attributes = vec![
            LinkAttribute::IfName("sv-a".into()),
            LinkAttribute::Address(vec![2, 0xaa, 0, 0, 0, 1]),
            LinkAttribute::PermAddress(vec![0; 6]),
            LinkAttribute::Mtu(9000),
            LinkAttribute::OperState(State::Up),
            LinkAttribute::Controller(9),
            LinkAttribute::IfAlias("green-uplink".into()),
            LinkAttribute::PropList(vec![Prop::AltIfName("alt0".into())]),
            LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Veth)]),
            LinkAttribute::TxQueueLen(1000),
        ];
        msg
    }

    fn address(index: u32, prefix: u8, attrs: Vec<AddressAttribute>) -> AddressMessage {
        let mut msg = AddressMessage::default();
        msg.header.index = index;
        msg.header.prefix_len = prefix;
        msg.header.family = match attrs.first() {
            Some(AddressAttribute::Address(IpAddr::V6(_))) => AddressFamily::Inet6,
            _ => AddressFamily::Inet,
        };
        msg.attributes = attrs;
        msg
    }

    fn frames(buf: &[u8]) -> Vec<Frame> {
        let mut out = Vec::new();
        parse_datagram(buf, |f| out.push(f)).unwrap();
        out
    }

    #[test]
    fn facts_come_from_the_wire_bytes() {
        let buf = datagram(vec![RouteNetlinkMessage::NewLink(sv_a(
            AddressFamily::Unspec,
        ))]);
        let [Frame::Event(Event::New(link))] = &frames(&buf)[..] else {
            panic!("{:?}", frames(&buf));
        };
        let i = &link.interface;
        assert_eq!(i.name, "sv-a");
        assert_eq!(i.index, 5);
        assert_eq!(i.mac.as_deref(), Some("02:aa:00:00:00:01"));
        assert_eq!(i.permanent_mac, None, "an all-zero permanent MAC is no MAC");
        assert_eq!(i.mtu, 9000);
        assert!(i.carrier);
        assert_eq!(i.oper_state, OperState::Up);
        assert_eq!(i.alias.as_deref(), Some("green-uplink"));
        assert_eq!(i.alt_names, vec!["alt0".to_string()]);
        assert_eq!(i.kind, LinkKind::Virtual("veth".into()));
        assert_eq!(link.master_index, Some(9));
        // Both translations agree.
        assert_eq!(
            Some(&**link),
            link_from_message(&sv_a(AddressFamily::Unspec)).as_ref()
        );
    }

    #[test]
    fn addresses_come_and_go_and_link_local_ipv6_is_left_out() {
        let v4 = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10));
        let peer = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        let v6: IpAddr = "2001:db8::10".parse().unwrap();
        let ll = IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1));
        let buf = datagram(vec![
            RouteNetlinkMessage::NewAddress(address(
                5,
                24,
                vec![AddressAttribute::Address(v4), AddressAttribute::Local(v4)],
            )),
            // Point-to-point: IFA_ADDRESS is the peer, IFA_LOCAL ours.
            RouteNetlinkMessage::NewAddress(address(
                6,
                32,
                vec![AddressAttribute::Address(peer), AddressAttribute::Local(v4)],
            )),
            RouteNetlinkMessage::NewAddress(address(5, 64, vec![AddressAttribute::Address(v6)])),
            RouteNetlinkMessage::NewAddress(address(5, 64, vec![AddressAttribute::Address(ll)])),
            RouteNetlinkMessage::DelAddress(address(5, 64, vec![AddressAttribute::Address(v6)])),
        ]);
        let net = |s: &str| s.parse::<IpNet>().unwrap();
        assert_eq!(
            frames(&buf),
            vec![
                Frame::Event(Event::Address {
                    index: 5,
                    net: net("192.0.2.10/24"),
                    present: true
                }),
                Frame::Event(Event::Address {
                    index: 6,
                    net: net("192.0.2.10/32"),
                    present: true
                }),
                Frame::Event(Event::Address {
                    index: 5,
                    net: net("2001:db8::10/64"),
                    present: true
                }),
                Frame::Skip,
                Frame::Event(Event::Address {
                    index: 5,
                    net: net("2001:db8::10/64"),
                    present: false
                }),
            ]
        );
        // A prefix longer than the family allows is no address.
        let bad = datagram(vec![RouteNetlinkMessage::NewAddress(address(
            5,
            40,
            vec![AddressAttribute::Local(v4)],
        ))]);
        assert_eq!(frames(&bad), vec![Frame::Skip]);
    }

    #[test]
    fn kindless_links_are_provisional_and_nameless_ones_dropped() {
        let mut msg = LinkMessage::default();
        msg.header = header(AddressFamily::Unspec);
        msg.attributes = vec![LinkAttribute::IfName("ens4".into())];
        assert_eq!(
            link_from_message(&msg).unwrap().interface.kind,
            LinkKind::Other
        );
        msg.header.link_layer_type = LinkLayerType::Loopback;
        assert_eq!(
            link_from_message(&msg).unwrap().interface.kind,
            LinkKind::Loopback
        );
        msg.attributes.clear();
        assert!(link_from_message(&msg).is_none());
    }

    #[test]
    fn bridge_family_messages_are_skipped() {
        let buf = datagram(vec![
            RouteNetlinkMessage::DelLink(sv_a(AddressFamily::Bridge)),
            RouteNetlinkMessage::NewLink(sv_a(AddressFamily::Bridge)),
            RouteNetlinkMessage::DelLink(sv_a(AddressFamily::Unspec)),
        ]);
        assert_eq!(
            frames(&buf),
            vec![Frame::Skip, Frame::Skip, Frame::Event(Event::Removed(5))]
        );
    }

    #[test]
    fn truncated_and_garbage_datagrams_never_panic() {
        let buf = datagram(vec![
            RouteNetlinkMessage::NewLink(sv_a(AddressFamily::Unspec)),
            RouteNetlinkMessage::NewAddress(address(
                5,
                24,
                vec![AddressAttribute::Local(IpAddr::V4(Ipv4Addr::LOCALHOST))],
            )),
        ]);
        for cut in 0..buf.len() {
            let _ = parse_datagram(&buf[..cut], |_| {});
        }
        // A message whose attribute area is cut mid-attribute keeps what parsed.
        let payload = &buf[16..];
        for cut in 0..payload.len() {
            let _ = link_from_payload(&payload[..cut]);
            let _ = address_from_payload(&payload[..cut]);
        }
        let mut seed = 0x2545_f491_u32;
        for _ in 0..2000 {
            let len = (seed % 300) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    seed as u8
                })
                .collect();
            let _ = parse_datagram(&bytes, |_| {});
            let _ = link_from_payload(&bytes);
            let _ = address_from_payload(&bytes);
        }
    }
}
