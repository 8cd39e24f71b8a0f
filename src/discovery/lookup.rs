//! One link, looked up by a blocking request: for the CNI plugin, which
//! runs no async runtime.

use std::io;

use rtnetlink::packet_core::NLM_F_REQUEST;
use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::sys::protocols::NETLINK_ROUTE;
use rtnetlink::sys::{Socket, SocketAddr};

use super::netlink::NetlinkError;
use super::wire::{self, Event, Frame};
use crate::inventory::Link;

/// Which link [`lookup`] asks for.
#[derive(Clone, Copy, Debug)]
pub enum LinkKey<'a> {
    Index(u32),
    Name(&'a str),
}

/// Looks up one link: one request, one reply. `None` when there is no
/// such link.
pub fn lookup(key: LinkKey<'_>) -> Result<Option<Link>, NetlinkError> {
    let mut sock = Socket::new(NETLINK_ROUTE)?;
    sock.bind_auto()?;
    let mut request = LinkMessage::default();
    match key {
        LinkKey::Index(index) => request.header.index = index,
        LinkKey::Name(name) => request.attributes.push(LinkAttribute::IfName(name.into())),
    }
    sock.send_to(
        &wire::getlink_request(request, NLM_F_REQUEST),
        &SocketAddr::new(0, 0),
        0,
    )?;
    loop {
        let (buf, _) = sock.recv_from_full()?;
        let mut found = None;
        let mut refused = None;
        wire::parse_datagram(&buf, |frame| match frame {
            Frame::Event(Event::New(link)) => found = Some(*link),
            Frame::Error(code) if code < 0 => refused = Some(-code),
            _ => {}
        })
        .map_err(|e| NetlinkError::Decode(e.to_string()))?;
        match (found, refused) {
            (Some(link), _) => return Ok(Some(link)),
            (None, Some(nix::libc::ENODEV)) => return Ok(None),
            (None, Some(errno)) => {
                return Err(NetlinkError::Refused(io::Error::from_raw_os_error(errno)));
            }
            (None, None) => continue,
        }
    }
}
