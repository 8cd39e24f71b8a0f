//! Link speed and duplex over the ethtool generic-netlink family, or,
//! where the kernel has none (before 5.6) or it cannot be reached (qemu's
//! user-mode emulation has no generic netlink), over the older SIOCETHTOOL
//! ioctl.
//!
//! Every failure (EOPNOTSUPP from a driver, a link that vanished) means
//! "unknown": the facts are omitted, never fatal.

use ethtool::{EthtoolAttr, EthtoolHandle, EthtoolLinkModeAttr, EthtoolLinkModeDuplex};
use futures::StreamExt;

use crate::inventory::Duplex;

/// The kernel's SPEED_UNKNOWN.
const SPEED_UNKNOWN: u32 = u32::MAX;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkSpeed {
    pub speed_mbps: Option<u32>,
    pub duplex: Option<Duplex>,
}

/// An ethtool connection in the calling thread's network namespace.
#[derive(Clone)]
pub struct Ethtool {
    /// None: no ethtool netlink here; the ioctl answers.
    handle: Option<EthtoolHandle>,
}

impl Ethtool {
    /// Connects; without the ethtool family queries go through the ioctl.
    pub fn connect() -> Self {
        match ethtool::new_connection() {
            Ok((conn, handle, _)) => {
                tokio::spawn(conn);
                Ethtool {
                    handle: Some(handle),
                }
            }
            Err(e) => {
                tracing::debug!("ethtool netlink unavailable ({e}); asking SIOCETHTOOL");
                Ethtool { handle: None }
            }
        }
    }

    /// Speed and duplex of link `name`.
    pub async fn speed(&self, name: &str) -> LinkSpeed {
        let Some(mut handle) = self.handle.clone() else {
            return ioctl::speed(name);
        };
        let mut replies = match handle.link_mode().get(Some(name)).execute().await {
            Ok(replies) => replies,
            Err(e) => {
                // The family is not registered (an old kernel): the ioctl.
                tracing::debug!("ethtool {name}: {e}; asking SIOCETHTOOL");
                return ioctl::speed(name);
            }
        };
        let mut speed = LinkSpeed::default();
        while let Some(reply) = replies.next().await {
            let msg = match reply {
                Ok(msg) => msg,
                // EOPNOTSUPP, ENODEV, ...: unknown.
                Err(e) => {
                    tracing::debug!("ethtool {name}: {e}");
                    continue;
                }
            };
            for attr in &msg.payload.nlas {
                if let EthtoolAttr::LinkMode(mode) = attr {
                    apply(&mut speed, mode);
                }
            }
        }
        speed
    }
}

/// The legacy ethtool ioctl: `ETHTOOL_GSET` through `SIOCETHTOOL` on any
/// socket of the namespace. Its structures are fixed-width and laid out
/// the same on every 64-bit Linux; a test checks it under qemu-aarch64.
pub mod ioctl {
    use nix::libc;

    use super::{LinkSpeed, SPEED_UNKNOWN, from_duplex};

    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    const ETHTOOL_GSET: u32 = 0x1;

    /// `struct ethtool_cmd` (linux/ethtool.h).
    #[repr(C)]
    #[derive(Default)]
    struct EthtoolCmd {
        cmd: u32,
        supported: u32,
        advertising: u32,
        speed: u16,
        duplex: u8,
        port: u8,
        phy_address: u8,
        transceiver: u8,
        autoneg: u8,
        mdio_support: u8,
        maxtxpkt: u32,
        maxrxpkt: u32,
        speed_hi: u16,
        eth_tp_mdix: u8,
        eth_tp_mdix_ctrl: u8,
        lp_advertising: u32,
        reserved: [u32; 2],
    }

    /// `struct ifreq` with `ifr_data` (linux/if.h).
    #[repr(C)]
    struct IfreqData {
        name: [libc::c_char; libc::IFNAMSIZ],
        data: *mut libc::c_void,
        /// The rest of the union (a `struct ifmap` is the largest member).
        _pad: [u8; 16],
    }

    /// Speed and duplex of link `name`; unknown on any failure.
    pub fn speed(name: &str) -> LinkSpeed {
        let bytes = name.as_bytes();
        if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ {
            return LinkSpeed::default();
        }
        let mut cmd = EthtoolCmd {
            cmd: ETHTOOL_GSET,
            ..EthtoolCmd::default()
        };
        let mut req = IfreqData {
            name: [0; libc::IFNAMSIZ],
            data: (&mut cmd as *mut EthtoolCmd).cast(),
            _pad: [0; 16],
        };
        for (d, s) in req.name.iter_mut().zip(bytes) {
            *d = *s as libc::c_char;
        }
        // SAFETY: a datagram socket is only created and closed here.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return LinkSpeed::default();
        }
        // SAFETY: `req` is a valid ifreq whose data points at a live
        // ethtool_cmd the kernel fills, both outliving the call.
        let rc = unsafe { libc::ioctl(fd, SIOCETHTOOL as _, &mut req as *mut IfreqData) };
        // SAFETY: `fd` is ours and closed once.
        unsafe { libc::close(fd) };
        if rc != 0 {
            tracing::debug!("SIOCETHTOOL {name}: {}", std::io::Error::last_os_error());
            return LinkSpeed::default();
        }
        let speed = u32::from(cmd.speed_hi) << 16 | u32::from(cmd.speed);
        LinkSpeed {
            speed_mbps: (speed != 0 && speed != SPEED_UNKNOWN && speed != 0xffff).then_some(speed),
            duplex: from_duplex(cmd.duplex),
        }
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn the_structures_have_the_kernel_s_sizes() {
            assert_eq!(std::mem::size_of::<super::EthtoolCmd>(), 44);
            assert_eq!(std::mem::size_of::<super::IfreqData>(), 40);
        }
    }
}

/// The kernel's DUPLEX_HALF (0) and DUPLEX_FULL (1); else unknown.
fn from_duplex(d: u8) -> Option<Duplex> {
    match d {
        0 => Some(Duplex::Half),
        1 => Some(Duplex::Full),
        _ => None,
    }
}

fn apply(speed: &mut LinkSpeed, attr: &EthtoolLinkModeAttr) {
    match attr {
        EthtoolLinkModeAttr::Speed(s) if *s != 0 && *s != SPEED_UNKNOWN => {
            speed.speed_mbps = Some(*s)
        }
        EthtoolLinkModeAttr::Duplex(EthtoolLinkModeDuplex::Full) => {
            speed.duplex = Some(Duplex::Full)
        }
        EthtoolLinkModeAttr::Duplex(EthtoolLinkModeDuplex::Half) => {
            speed.duplex = Some(Duplex::Half)
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_speed_and_duplex_are_omitted() {
        let mut s = LinkSpeed::default();
        apply(&mut s, &EthtoolLinkModeAttr::Speed(SPEED_UNKNOWN));
        apply(&mut s, &EthtoolLinkModeAttr::Speed(0));
        apply(
            &mut s,
            &EthtoolLinkModeAttr::Duplex(EthtoolLinkModeDuplex::Unknown),
        );
        assert_eq!(s, LinkSpeed::default());
        apply(&mut s, &EthtoolLinkModeAttr::Speed(25000));
        apply(
            &mut s,
            &EthtoolLinkModeAttr::Duplex(EthtoolLinkModeDuplex::Full),
        );
        assert_eq!(
            s,
            LinkSpeed {
                speed_mbps: Some(25000),
                duplex: Some(Duplex::Full)
            }
        );
    }
}
