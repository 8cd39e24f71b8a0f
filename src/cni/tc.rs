//! The rtnetlink messages that shape a pod's interface, and what a dump
//! of them says back (pure; [`super::shaper`] sends them).
//!
//! Egress: a tbf qdisc at the interface's root. Ingress: the interface's
//! `ingress` qdisc with one u32 filter matching every frame and a mirred
//! action redirecting it to an ifb, whose root tbf holds it to the rate,
//! after which the ifb hands it back to the interface's receive path.
//! Built from the route crate's types; tbf has none there, so its options
//! (`struct tc_tbf_qopt`) are laid out here.

use rtnetlink::packet_core::{DefaultNla, Nla as _, NlasIterator};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::link::{
    InfoKind, LinkAttribute, LinkExtentMask, LinkFlags, LinkInfo, LinkMessage,
};
use rtnetlink::packet_route::tc::{
    TcAction, TcActionAttribute, TcActionGeneric, TcActionMirrorOption, TcActionOption,
    TcActionType, TcAttribute, TcFilterU32Option, TcHandle, TcMessage, TcMirror,
    TcMirrorActionType, TcOption, TcU32Key, TcU32Selector, TcU32SelectorFlags,
};

use super::bandwidth::Bucket;

const TCA_OPTIONS: u16 = 2;
const TCA_TBF_PARMS: u16 = 1;
const TCA_TBF_RATE64: u16 = 4;
const TCA_TBF_BURST: u16 = 6;
/// `struct tc_ratespec`'s link layer: the kernel computes transmit times
/// itself (no rate table needed).
const TC_LINKLAYER_ETHERNET: u8 = 1;
/// `struct tc_tbf_qopt`: two ratespecs of 12 bytes, limit, buffer, mtu.
const QOPT_LEN: usize = 36;
/// The kernel's tick of qdisc time: 64 ns (`PSCHED_SHIFT` 6).
const PSCHED_SHIFT: u32 = 6;
const ETH_P_ALL: u16 = 0x0003;
/// Our filter's priority and handle on the ingress qdisc: first, and
/// one fixed node so that a repeated ADD replaces it.
const FILTER_PRIO: u16 = 1;
const FILTER_HANDLE: TcHandle = TcHandle {
    major: 0x8000,
    minor: 0x0800,
};
/// The ingress qdisc's handle (`ffff:`), which its filters name as parent.
pub const INGRESS_HANDLE: TcHandle = TcHandle {
    major: 0xffff,
    minor: 0,
};

/// A tbf qdisc at the root of link `index`.
pub fn tbf(index: u32, bucket: &Bucket) -> RouteNetlinkMessage {
    let mut msg = TcMessage::default();
    msg.header.index = index as i32;
    msg.header.parent = TcHandle::ROOT;
    msg.attributes.push(TcAttribute::Kind("tbf".into()));
    let mut options = vec![TcOption::Other(DefaultNla::new(
        TCA_TBF_PARMS,
        qopt(bucket).to_vec(),
    ))];
    if bucket.rate_bytes > u64::from(u32::MAX) {
        options.push(TcOption::Other(DefaultNla::new(
            TCA_TBF_RATE64,
            bucket.rate_bytes.to_ne_bytes().to_vec(),
        )));
    }
    options.push(TcOption::Other(DefaultNla::new(
        TCA_TBF_BURST,
        bucket.burst_bytes.to_ne_bytes().to_vec(),
    )));
    msg.attributes.push(TcAttribute::Options(options));
    RouteNetlinkMessage::NewQueueDiscipline(msg)
}

/// `struct tc_tbf_qopt`. The buffer (the burst as time at the rate) is
/// for kernels that predate `TCA_TBF_BURST`; newer ones take the burst.
fn qopt(bucket: &Bucket) -> [u8; QOPT_LEN] {
    let mut out = [0u8; QOPT_LEN];
    out[1] = TC_LINKLAYER_ETHERNET;
    let rate32 = u32::try_from(bucket.rate_bytes).unwrap_or(u32::MAX);
    out[8..12].copy_from_slice(&rate32.to_ne_bytes());
    out[24..28].copy_from_slice(&bucket.limit_bytes.to_ne_bytes());
    let ns = u128::from(bucket.burst_bytes) * 1_000_000_000 / u128::from(bucket.rate_bytes.max(1));
    let ticks = u32::try_from(ns.min(u128::from(u32::MAX)) >> PSCHED_SHIFT).unwrap_or(u32::MAX);
    out[28..32].copy_from_slice(&ticks.to_ne_bytes());
    out
}

/// The `ingress` qdisc of link `index`.
pub fn ingress(index: u32) -> RouteNetlinkMessage {
    let mut msg = TcMessage::default();
    msg.header.index = index as i32;
    msg.header.parent = TcHandle::INGRESS;
    msg.header.handle = INGRESS_HANDLE;
    msg.attributes.push(TcAttribute::Kind("ingress".into()));
    RouteNetlinkMessage::NewQueueDiscipline(msg)
}

/// A qdisc to delete: link `index`'s at `parent`.
pub fn del_qdisc(index: u32, parent: TcHandle) -> RouteNetlinkMessage {
    let mut msg = TcMessage::default();
    msg.header.index = index as i32;
    msg.header.parent = parent;
    if parent == TcHandle::INGRESS {
        msg.header.handle = INGRESS_HANDLE;
    }
    RouteNetlinkMessage::DelQueueDiscipline(msg)
}

/// The filter on link `index`'s ingress qdisc sending every frame to the
/// ifb `to`.
pub fn redirect(index: u32, to: u32) -> RouteNetlinkMessage {
    let mut msg = TcMessage::default();
    msg.header.index = index as i32;
    msg.header.parent = INGRESS_HANDLE;
    msg.header.handle = FILTER_HANDLE;
    msg.header.info = (u32::from(FILTER_PRIO) << 16) | u32::from(ETH_P_ALL.to_be());
    // Every frame: one key matching 32 bits at offset 0 under mask 0.
    let mut selector = TcU32Selector::default();
    selector.flags = TcU32SelectorFlags::Terminal;
    selector.nkeys = 1;
    selector.keys = vec![TcU32Key::default()];
    let mut generic = TcActionGeneric::default();
    generic.action = TcActionType::Stolen;
    let mut parms = TcMirror::default();
    parms.generic = generic;
    parms.eaction = TcMirrorActionType::EgressRedir;
    parms.ifindex = to;
    let mut mirred = TcAction::default();
    mirred.tab = 1;
    mirred.attributes = vec![
        TcActionAttribute::Kind("mirred".into()),
        TcActionAttribute::Options(vec![TcActionOption::Mirror(TcActionMirrorOption::Parms(
            parms,
        ))]),
    ];
    msg.attributes.push(TcAttribute::Kind("u32".into()));
    msg.attributes.push(TcAttribute::Options(vec![
        TcOption::U32(TcFilterU32Option::Selector(selector)),
        TcOption::U32(TcFilterU32Option::Action(vec![mirred])),
    ]));
    RouteNetlinkMessage::NewTrafficFilter(msg)
}

/// A dump of the namespace's qdiscs (the reader keeps the links' it
/// wants).
pub fn get_qdiscs() -> RouteNetlinkMessage {
    RouteNetlinkMessage::GetQueueDiscipline(TcMessage::default())
}

/// A dump of the filters on link `index`'s ingress qdisc.
pub fn get_ingress_filters(index: u32) -> RouteNetlinkMessage {
    let mut msg = TcMessage::default();
    msg.header.index = index as i32;
    msg.header.parent = INGRESS_HANDLE;
    RouteNetlinkMessage::GetTrafficFilter(msg)
}

/// An ifb named `name`, in link group `group`, with an alias saying whose
/// it is. Down: a qdisc set on a device that is down is set without
/// waiting for the device's traffic to stop (an RCU grace period).
pub fn new_ifb(name: &str, group: u32, mtu: u32, alias: &str) -> RouteNetlinkMessage {
    let mut msg = LinkMessage::default();
    msg.attributes = vec![
        LinkAttribute::IfName(name.into()),
        LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Ifb)]),
        LinkAttribute::Group(group),
        LinkAttribute::Mtu(mtu),
        LinkAttribute::IfAlias(alias.into()),
    ];
    RouteNetlinkMessage::NewLink(msg)
}

/// Puts link `index` in link group `group`.
pub fn set_group(index: u32, group: u32) -> RouteNetlinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    msg.attributes.push(LinkAttribute::Group(group));
    RouteNetlinkMessage::SetLink(msg)
}

/// Deletes link `index`.
pub fn del_link(index: u32) -> RouteNetlinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    RouteNetlinkMessage::DelLink(msg)
}

/// Deletes every link of group `group`, in one batch: the kernel waits
/// out one RCU grace period for the batch, not one per link.
pub fn del_group(group: u32) -> RouteNetlinkMessage {
    let mut msg = LinkMessage::default();
    msg.attributes.push(LinkAttribute::Group(group));
    RouteNetlinkMessage::DelLink(msg)
}

/// One link, by name, without its statistics.
pub fn get_link(name: &str) -> RouteNetlinkMessage {
    let mut msg = LinkMessage::default();
    msg.attributes.push(LinkAttribute::IfName(name.into()));
    msg.attributes
        .push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
    RouteNetlinkMessage::GetLink(msg)
}

/// Sets link `index` up.
pub fn set_up(index: u32) -> RouteNetlinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    msg.header.flags = LinkFlags::Up;
    msg.header.change_mask = LinkFlags::Up;
    RouteNetlinkMessage::SetLink(msg)
}

/// A link, as a dump shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub kind: Option<String>,
    pub group: u32,
    pub mtu: u32,
}

pub fn link(msg: &RouteNetlinkMessage) -> Option<Link> {
    let RouteNetlinkMessage::NewLink(l) = msg else {
        return None;
    };
    let mut out = Link {
        index: l.header.index,
        name: String::new(),
        kind: None,
        group: 0,
        mtu: 0,
    };
    for a in &l.attributes {
        match a {
            LinkAttribute::IfName(n) => out.name = n.clone(),
            LinkAttribute::Group(g) => out.group = *g,
            LinkAttribute::Mtu(m) => out.mtu = *m,
            LinkAttribute::LinkInfo(infos) => {
                out.kind = infos.iter().find_map(|i| match i {
                    LinkInfo::Kind(k) => Some(k.to_string()),
                    _ => None,
                });
            }
            _ => {}
        }
    }
    Some(out)
}

/// A qdisc, as a dump shows it; a tbf's bucket as far as the kernel
/// reports it (rate and limit: the burst comes back only as time).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Qdisc {
    pub index: u32,
    pub parent: TcHandle,
    pub kind: String,
    /// Bytes per second and limit, for a tbf.
    pub tbf: Option<(u64, u32)>,
}

pub fn qdisc(msg: &RouteNetlinkMessage) -> Option<Qdisc> {
    let RouteNetlinkMessage::NewQueueDiscipline(q) = msg else {
        return None;
    };
    let kind = q.attributes.iter().find_map(|a| match a {
        TcAttribute::Kind(k) => Some(k.clone()),
        _ => None,
    })?;
    let tbf = (kind == "tbf").then(|| tbf_of(q)).flatten();
    Some(Qdisc {
        index: u32::try_from(q.header.index).ok()?,
        parent: q.header.parent,
        kind,
        tbf,
    })
}

/// The rate (`TCA_TBF_RATE64` over the 32-bit one) and limit of a tbf.
fn tbf_of(q: &TcMessage) -> Option<(u64, u32)> {
    // An unknown kind's options come back as one attribute holding the
    // nest: the tbf's own attributes are inside.
    let nest = q.attributes.iter().find_map(|a| match a {
        TcAttribute::Options(options) => options.iter().find_map(|o| match o {
            TcOption::Other(nla) if nla.kind() & 0x3fff == TCA_OPTIONS => {
                let mut value = vec![0u8; nla.value_len()];
                nla.emit_value(&mut value);
                Some(value)
            }
            _ => None,
        }),
        _ => None,
    })?;
    let mut rate = None;
    let mut rate64 = None;
    let mut limit = None;
    for nla in NlasIterator::new(&nest[..]).flatten() {
        let value = nla.value();
        match nla.kind() {
            TCA_TBF_PARMS if value.len() >= QOPT_LEN => {
                rate = Some(u64::from(u32::from_ne_bytes(value[8..12].try_into().ok()?)));
                limit = Some(u32::from_ne_bytes(value[24..28].try_into().ok()?));
            }
            TCA_TBF_RATE64 if value.len() == 8 => {
                rate64 = Some(u64::from_ne_bytes(value.try_into().ok()?));
            }
            _ => {}
        }
    }
    Some((rate64.or(rate)?, limit?))
}

/// Where a filter on an ingress qdisc redirects frames: the link it names
/// in a mirred egress redirect, if it has one.
pub fn redirects_to(msg: &RouteNetlinkMessage) -> Option<(u32, u32)> {
    let RouteNetlinkMessage::NewTrafficFilter(f) = msg else {
        return None;
    };
    let on = u32::try_from(f.header.index).ok()?;
    f.attributes.iter().find_map(|a| match a {
        TcAttribute::Options(options) => options.iter().find_map(|o| match o {
            TcOption::U32(TcFilterU32Option::Action(actions)) => {
                actions.iter().find_map(|action| {
                    action.attributes.iter().find_map(|a| match a {
                        TcActionAttribute::Options(opts) => opts.iter().find_map(|o| match o {
                            TcActionOption::Mirror(TcActionMirrorOption::Parms(m))
                                if m.eaction == TcMirrorActionType::EgressRedir =>
                            {
                                Some((on, m.ifindex))
                            }
                            _ => None,
                        }),
                        _ => None,
                    })
                })
            }
            _ => None,
        }),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtnetlink::packet_core::{Emitable as _, Parseable as _};

    /// Emits a tc message and parses it back, as a dump would show it.
    fn round_trip(msg: RouteNetlinkMessage) -> RouteNetlinkMessage {
        let tc = match msg {
            RouteNetlinkMessage::NewQueueDiscipline(m)
            | RouteNetlinkMessage::NewTrafficFilter(m) => m,
            other => panic!("not a tc message: {other:?}"),
        };
        let mut buf = vec![0u8; tc.buffer_len()];
        tc.emit(&mut buf);
        let parsed = TcMessage::parse(&buf[..]).unwrap();
        if parsed
            .attributes
            .iter()
            .any(|a| matches!(a, TcAttribute::Kind(k) if k == "u32"))
        {
            RouteNetlinkMessage::NewTrafficFilter(parsed)
        } else {
            RouteNetlinkMessage::NewQueueDiscipline(parsed)
        }
    }

    #[test]
    fn a_tbf_says_back_its_rate_and_limit() {
        let bucket = Bucket {
            rate_bytes: 50_000_000,
            burst_bytes: 125_000,
            limit_bytes: 1_375_000,
        };
        let q = qdisc(&round_trip(tbf(7, &bucket))).unwrap();
        assert_eq!(
            q,
            Qdisc {
                index: 7,
                parent: TcHandle::ROOT,
                kind: "tbf".into(),
                tbf: Some((50_000_000, 1_375_000))
            }
        );
        // Over 2^32 bytes/s the 64-bit rate carries it.
        let fast = Bucket {
            rate_bytes: 12_500_000_000,
            ..bucket
        };
        assert_eq!(
            qdisc(&round_trip(tbf(7, &fast))).unwrap().tbf,
            Some((12_500_000_000, 1_375_000))
        );
    }

    #[test]
    fn the_qopt_is_the_kernel_s_layout() {
        let q = qopt(&Bucket {
            rate_bytes: 125_000_000,
            burst_bytes: 250_000,
            limit_bytes: 3_375_000,
        });
        assert_eq!(q[1], TC_LINKLAYER_ETHERNET);
        assert_eq!(
            u32::from_ne_bytes(q[8..12].try_into().unwrap()),
            125_000_000
        );
        assert_eq!(u32::from_ne_bytes(q[24..28].try_into().unwrap()), 3_375_000);
        // 250 kB at 125 MB/s is 2 ms: 31250 ticks of 64 ns.
        assert_eq!(u32::from_ne_bytes(q[28..32].try_into().unwrap()), 31_250);
        assert!(q[12..24].iter().all(|b| *b == 0), "no peak rate");
    }

    #[test]
    fn the_redirect_names_its_ifb() {
        let f = round_trip(redirect(3, 9));
        assert_eq!(redirects_to(&f), Some((3, 9)));
        let RouteNetlinkMessage::NewTrafficFilter(m) = &f else {
            unreachable!()
        };
        assert_eq!(m.header.parent, INGRESS_HANDLE);
        assert_eq!(m.header.info >> 16, 1, "priority 1");
        assert_eq!((m.header.info & 0xffff) as u16, ETH_P_ALL.to_be());
        assert_eq!(qdisc(&f), None);
    }

    #[test]
    fn links_are_read_with_kind_group_and_mtu() {
        let RouteNetlinkMessage::NewLink(mut m) = new_ifb("ifb-net1", 0x5356_0003, 1500, "x")
        else {
            unreachable!()
        };
        m.header.index = 4;
        let l = link(&RouteNetlinkMessage::NewLink(m)).unwrap();
        assert_eq!(
            l,
            Link {
                index: 4,
                name: "ifb-net1".into(),
                kind: Some("ifb".into()),
                group: 0x5356_0003,
                mtu: 1500
            }
        );
    }
}
