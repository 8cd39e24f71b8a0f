//! Interface discovery: a netlink dump of links and addresses, then link
//! and address events keeping the inventory current, enriched from sysfs
//! (driver, PCI address and ID, whether a link is physical) and ethtool
//! (speed, duplex).
//!
//! [`Discovery`] owns the inventory; callers read it by reference and pull
//! changes with [`Discovery::changes`], which is cancel-safe so it can sit
//! in a `select!` beside other event sources.

pub mod ethtool;
pub mod lookup;
pub mod netlink;
pub mod sysfs;
pub mod wire;

use std::collections::{BTreeSet, HashMap, VecDeque};

use crate::inventory::{Change, Interface, Inventory, Link, LinkKind};
use crate::survey::SurveyFilter;

use self::ethtool::Ethtool;
use self::netlink::{EventSocket, NetlinkError};
use self::sysfs::Sysfs;
use self::wire::Event;

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("reading links over netlink: {0}")]
    Netlink(#[from] NetlinkError),
    #[error("this discovery was opened without a link-event subscription")]
    NotWatching,
}

/// Counters for metrics and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Link messages applied from the event stream.
    pub events: u64,
    /// Full dumps taken (the first one included).
    pub dumps: u64,
    /// Netlink overruns seen (each forces a dump).
    pub overruns: u64,
}

pub struct Discovery {
    events: Option<EventSocket>,
    ethtool: Ethtool,
    sysfs: Sysfs,
    filter: SurveyFilter,
    inventory: Inventory,
    /// Events taken off the socket but not yet applied. An event leaves the
    /// queue only once applied, so a cancelled `changes()` loses nothing.
    pending: VecDeque<Event>,
    /// Changes applied but not yet handed out, for the same reason.
    unreported: Vec<Change>,
    stats: Stats,
}

impl Discovery {
    /// Dumps the links once, without subscribing to events (`discover`).
    pub async fn dump_once(filter: SurveyFilter) -> Result<Self, DiscoveryError> {
        Self::open(filter, None).await
    }

    /// Subscribes to link events, then dumps: every change after the dump
    /// reaches [`Discovery::changes`].
    pub async fn watch(filter: SurveyFilter) -> Result<Self, DiscoveryError> {
        Self::open(filter, Some(netlink::EVENT_RCVBUF)).await
    }

    /// [`Discovery::watch`] with an event socket buffer of `bytes`; small
    /// buffers overrun sooner (and are re-dumped), large ones cost memory.
    pub async fn watch_with_buffer(
        filter: SurveyFilter,
        bytes: usize,
    ) -> Result<Self, DiscoveryError> {
        Self::open(filter, Some(bytes)).await
    }

    async fn open(filter: SurveyFilter, subscribe: Option<usize>) -> Result<Self, DiscoveryError> {
        // Subscribing before the dump means no event falls between the two.
        // Events queued during the dump are older or newer than it; each
        // carries a link's full state, so applying them in order after the
        // dump converges on the kernel's state.
        let events = subscribe.map(EventSocket::subscribe).transpose()?;
        let mut discovery = Discovery {
            events,
            ethtool: Ethtool::connect(),
            sysfs: Sysfs::default(),
            filter,
            inventory: Inventory::new(),
            pending: VecDeque::new(),
            unreported: Vec::new(),
            stats: Stats::default(),
        };
        discovery.resync().await?;
        discovery.unreported.clear();
        Ok(discovery)
    }

    /// Subscribes again (after the event socket failed) and re-reads every
    /// link: changes meanwhile reach [`Discovery::changes`].
    pub async fn resubscribe(&mut self) -> Result<(), DiscoveryError> {
        self.events = Some(EventSocket::subscribe(netlink::EVENT_RCVBUF)?);
        self.pending.clear();
        self.resync().await
    }

    pub fn inventory(&self) -> &Inventory {
        &self.inventory
    }

    pub fn filter(&self) -> &SurveyFilter {
        &self.filter
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The surveyed interfaces, sorted by name.
    pub fn interfaces(&self) -> Vec<Interface> {
        let mut out: Vec<Interface> = self
            .inventory
            .links()
            .map(|l| &l.interface)
            .filter(|i| self.filter.surveys(i))
            .cloned()
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// The surveyed interface with this index, if it is surveyed.
    pub fn surveyed(&self, index: u32) -> Option<&Interface> {
        surveyed_in(&self.inventory, &self.filter, index)
    }

    /// Waits for the next change to surveyed interfaces and returns every
    /// change applied since the last call. Events that change nothing
    /// surveyed (an unsurveyed veth flapping) are absorbed silently.
    ///
    /// Cancel-safe: dropping the future loses no event and no change.
    pub async fn changes(&mut self) -> Result<Vec<Change>, DiscoveryError> {
        loop {
            self.apply_pending().await?;
            if !self.unreported.is_empty() {
                return Ok(std::mem::take(&mut self.unreported));
            }
            let events = self.events.as_mut().ok_or(DiscoveryError::NotWatching)?;
            events.recv(&mut self.pending).await?;
            // Take the rest of a burst now so it is applied as one batch.
            events.drain(&mut self.pending)?;
        }
    }

    async fn apply_pending(&mut self) -> Result<(), DiscoveryError> {
        while let Some(event) = self.pending.front() {
            match event {
                Event::New(link) => {
                    let mut link = (**link).clone();
                    // Awaits happen before any mutation: a cancellation
                    // here leaves the event queued and the inventory as is.
                    self.enrich(&mut link).await;
                    self.apply(link);
                    self.stats.events += 1;
                }
                Event::Removed(index) => {
                    let index = *index;
                    self.remove(index);
                    self.stats.events += 1;
                }
                &Event::Address {
                    index,
                    net,
                    present,
                } => {
                    self.mutate(index, |inv| inv.set_address(index, net, present));
                    self.stats.events += 1;
                }
                Event::Overrun => {
                    self.stats.overruns += 1;
                    tracing::warn!("netlink overrun: link events were lost, re-reading every link");
                    self.resync().await?;
                }
            }
            self.pending.pop_front();
        }
        Ok(())
    }

    /// Re-reads every link and address and records what differs from the
    /// inventory.
    pub async fn resync(&mut self) -> Result<(), DiscoveryError> {
        let mut dumped = netlink::dump().await?;
        for link in &mut dumped.links {
            self.classify(link);
        }
        // Ask ethtool about every surveyed link at once: one round trip of
        // latency for the whole dump rather than one per link.
        let surveyed: Vec<(u32, String)> = dumped
            .links
            .iter()
            .filter(|l| self.filter.surveys(&l.interface))
            .map(|l| (l.interface.index, l.interface.name.clone()))
            .collect();
        let speeds = futures::future::join_all(
            surveyed
                .iter()
                .map(|(index, name)| async { (*index, self.ethtool.speed(name).await) }),
        )
        .await;
        let speeds: HashMap<u32, ethtool::LinkSpeed> = speeds.into_iter().collect();
        let mut enriched = Inventory::new();
        for mut link in dumped.links {
            if let Some(speed) = speeds.get(&link.interface.index) {
                link.interface.speed_mbps = speed.speed_mbps;
                link.interface.duplex = speed.duplex;
            }
            enriched.upsert(link);
        }
        for (index, net) in dumped.addresses {
            enriched.set_address(index, net, true);
        }
        let indices: BTreeSet<u32> = self
            .inventory
            .links()
            .chain(enriched.links())
            .map(|l| l.interface.index)
            .collect();
        for index in indices {
            let before = surveyed_in(&self.inventory, &self.filter, index);
            let after = surveyed_in(&enriched, &self.filter, index);
            self.unreported.extend(Change::between(before, after));
        }
        self.inventory = enriched;
        self.stats.dumps += 1;
        Ok(())
    }

    /// Completes a link from a NEWLINK: kind settled by sysfs, and speed
    /// from ethtool when the link is surveyed.
    async fn enrich(&self, link: &mut Link) {
        self.classify(link);
        let iface = &mut link.interface;
        if self.filter.surveys(iface) {
            let old = self.inventory.get(iface.index).map(|l| &l.interface);
            // Speed only moves with the link's state; skip the round trip
            // for events that changed something else.
            match old {
                Some(old)
                    if old.name == iface.name
                        && old.oper_state == iface.oper_state
                        && old.carrier == iface.carrier =>
                {
                    iface.speed_mbps = old.speed_mbps;
                    iface.duplex = old.duplex;
                }
                _ => {
                    let speed = self.ethtool.speed(&iface.name).await;
                    iface.speed_mbps = speed.speed_mbps;
                    iface.duplex = speed.duplex;
                }
            }
        }
    }

    /// A link without a kernel kind is physical when sysfs shows a device.
    fn classify(&self, link: &mut Link) {
        let iface = &mut link.interface;
        if iface.kind != LinkKind::Other {
            return;
        }
        if let Some(device) = self.sysfs.device(&iface.name, iface.index) {
            iface.kind = LinkKind::Physical;
            iface.driver = device.driver;
            iface.pci_address = device.pci_address;
            iface.pci_id = device.pci_id;
        }
    }

    fn apply(&mut self, link: Link) {
        let index = link.interface.index;
        self.mutate(index, |inv| inv.upsert(link));
    }

    fn remove(&mut self, index: u32) {
        self.mutate(index, |inv| {
            inv.remove(index);
        });
    }

    /// Runs one inventory mutation on link `index` and records how the
    /// surveyed view of it, and of its ports (a rename reaches their
    /// `master`), changed.
    fn mutate(&mut self, index: u32, f: impl FnOnce(&mut Inventory)) {
        let mut affected = vec![index];
        affected.extend(self.inventory.ports_of(index));
        let before: Vec<Option<Interface>> = affected
            .iter()
            .map(|i| self.surveyed(*i).cloned())
            .collect();
        f(&mut self.inventory);
        for (i, before) in affected.iter().zip(before) {
            let after = self.surveyed(*i);
            self.unreported
                .extend(Change::between(before.as_ref(), after));
        }
    }
}

fn surveyed_in<'a>(inv: &'a Inventory, filter: &SurveyFilter, index: u32) -> Option<&'a Interface> {
    inv.get(index)
        .map(|l| &l.interface)
        .filter(|i| filter.surveys(i))
}
