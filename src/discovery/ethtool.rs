//! Link speed and duplex over the ethtool generic-netlink family.
//!
//! Every failure (no ethtool family, EOPNOTSUPP from a driver, a link that
//! vanished) means "unknown": the facts are omitted, never fatal.

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
    handle: Option<EthtoolHandle>,
}

impl Ethtool {
    /// Connects; without the ethtool family every query answers "unknown".
    pub fn connect() -> Self {
        match ethtool::new_connection() {
            Ok((conn, handle, _)) => {
                tokio::spawn(conn);
                Ethtool {
                    handle: Some(handle),
                }
            }
            Err(e) => {
                tracing::debug!("ethtool netlink unavailable, speeds omitted: {e}");
                Ethtool { handle: None }
            }
        }
    }

    /// Speed and duplex of link `name`.
    pub async fn speed(&self, name: &str) -> LinkSpeed {
        let Some(mut handle) = self.handle.clone() else {
            return LinkSpeed::default();
        };
        let mut replies = match handle.link_mode().get(Some(name)).execute().await {
            Ok(replies) => replies,
            Err(e) => {
                tracing::debug!("ethtool {name}: {e}");
                return LinkSpeed::default();
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
