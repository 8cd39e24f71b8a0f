//! What sysfs knows that netlink does not: whether a link is backed by a
//! device, its driver, its PCI address and its PCI vendor:device ID.
//!
//! sysfs shows the network namespace it was mounted in, which need not be
//! ours (a thread that entered another namespace still sees the old mount),
//! and a link may be renamed between the netlink message and the read. So
//! every lookup first checks that `/sys/class/net/<name>/ifindex` is the
//! index netlink gave; on a mismatch the facts are simply not known.

use std::fs;
use std::path::{Path, PathBuf};

/// Facts of a link backed by a device.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceFacts {
    pub driver: Option<String>,
    pub pci_address: Option<String>,
    /// `vendor:device`, lower-case hex (`8086:1593`).
    pub pci_id: Option<String>,
}

#[derive(Clone, Debug)]
pub struct Sysfs {
    root: PathBuf,
}

impl Default for Sysfs {
    fn default() -> Self {
        Sysfs::new("/sys")
    }
}

impl Sysfs {
    /// `root` is the sysfs mount point; tests point it at a fixture tree.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Sysfs { root: root.into() }
    }

    /// The device behind link `name` (with ifindex `index`), or `None` when
    /// it has none or sysfs cannot vouch for it.
    pub fn device(&self, name: &str, index: u32) -> Option<DeviceFacts> {
        // Kernel names never contain '/' and are never "." or "..", but the
        // name comes from a message: refuse anything that is not one path
        // component.
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return None;
        }
        let link_dir = self.root.join("class/net").join(name);
        let shown_index: u32 = fs::read_to_string(link_dir.join("ifindex"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        if shown_index != index {
            return None;
        }
        let device = link_dir.join("device");
        let device_dir = fs::canonicalize(&device).ok()?;
        let function = pci_function(&device, &device_dir);
        Some(DeviceFacts {
            driver: link_name(&device.join("driver")),
            pci_address: function.and_then(|f| f.file_name()?.to_str().map(str::to_string)),
            pci_id: function.and_then(pci_id),
        })
    }
}

/// The last path component a symlink points at (`.../drivers/ixgbe`).
fn link_name(path: &Path) -> Option<String> {
    let target = fs::read_link(path).ok()?;
    Some(target.file_name()?.to_str()?.to_string())
}

/// The PCI function of a device: itself on the PCI bus, or its parent for
/// a virtio device (virtio-net sits on a PCI function). Other buses (USB,
/// platform) have no PCI function of their own, and the nearest PCI
/// ancestor would be the controller, so none is reported.
fn pci_function<'a>(device: &Path, canonical: &'a Path) -> Option<&'a Path> {
    let candidate = match link_name(&device.join("subsystem")).as_deref() {
        Some("pci") => canonical,
        Some("virtio") => canonical.parent()?,
        _ => return None,
    };
    let name = candidate.file_name()?.to_str()?;
    is_pci_address(name).then_some(candidate)
}

/// `vendor:device` from a PCI function's `vendor` and `device` files
/// (`0x8086` each).
fn pci_id(function: &Path) -> Option<String> {
    let read = |file: &str| -> Option<String> {
        let text = fs::read_to_string(function.join(file)).ok()?;
        let hex = text.trim().strip_prefix("0x")?.to_ascii_lowercase();
        (hex.len() == 4 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(hex)
    };
    Some(format!("{}:{}", read("vendor")?, read("device")?))
}

/// `DDDD:BB:DD.F` in hex, as PCI functions are named in sysfs.
pub fn is_pci_address(s: &str) -> bool {
    let b = s.as_bytes();
    let hex = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_hexdigit);
    b.len() == 12
        && b[4] == b':'
        && b[7] == b':'
        && b[10] == b'.'
        && hex(0..4)
        && hex(5..7)
        && hex(8..10)
        && hex(11..12)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// Builds a sysfs-shaped tree: a PCI NIC, a virtio NIC, a USB NIC and a
    /// virtual link without a device.
    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        let mk = |p: &str| fs::create_dir_all(r.join(p)).unwrap();
        mk("bus/pci/drivers/ixgbe");
        mk("bus/virtio/drivers/virtio_net");
        mk("bus/usb/drivers/cdc_ether");
        mk("bus/pci");
        mk("bus/virtio");
        mk("bus/usb");
        mk("devices/pci0000:00/0000:3b:00.1/net/ens4");
        mk("devices/pci0000:00/0000:00:03.0/virtio2/net/eth0");
        mk("devices/pci0000:00/0000:00:14.0/usb1/1-1/1-1:1.0/net/usb0");
        mk("devices/virtual/net/veth0");
        mk("class/net");
        let dev = |net: &str, devpath: &str, bus: &str, driver: &str, index: u32| {
            let d = r.join(devpath);
            // Each device has IDs; on virtio they are the virtio ones
            // (1af4:0001), not the PCI function's.
            fs::write(d.join("vendor"), "0x1af4\n").unwrap();
            fs::write(d.join("device"), "0x0001\n").unwrap();
            symlink(
                r.join(format!("bus/{bus}/drivers/{driver}")),
                d.join("driver"),
            )
            .unwrap();
            symlink(r.join(format!("bus/{bus}")), d.join("subsystem")).unwrap();
            let n = d.join("net").join(net);
            symlink(&d, n.join("device")).unwrap();
            fs::write(n.join("ifindex"), format!("{index}\n")).unwrap();
            symlink(&n, r.join("class/net").join(net)).unwrap();
        };
        fs::write(r.join("devices/pci0000:00/0000:00:03.0/vendor"), "0x1AF4\n").unwrap();
        fs::write(r.join("devices/pci0000:00/0000:00:03.0/device"), "0x1041\n").unwrap();
        dev("ens4", "devices/pci0000:00/0000:3b:00.1", "pci", "ixgbe", 4);
        let ens4 = r.join("devices/pci0000:00/0000:3b:00.1");
        fs::write(ens4.join("vendor"), "0x8086\n").unwrap();
        fs::write(ens4.join("device"), "0x1593\n").unwrap();
        dev(
            "eth0",
            "devices/pci0000:00/0000:00:03.0/virtio2",
            "virtio",
            "virtio_net",
            2,
        );
        dev(
            "usb0",
            "devices/pci0000:00/0000:00:14.0/usb1/1-1/1-1:1.0",
            "usb",
            "cdc_ether",
            7,
        );
        let v = r.join("devices/virtual/net/veth0");
        fs::write(v.join("ifindex"), "9\n").unwrap();
        symlink(&v, r.join("class/net/veth0")).unwrap();
        dir
    }

    #[test]
    fn pci_virtio_usb_and_virtual_links() {
        let dir = tree();
        let sysfs = Sysfs::new(dir.path());
        let facts = |driver: &str, pci: Option<(&str, &str)>| DeviceFacts {
            driver: Some(driver.into()),
            pci_address: pci.map(|p| p.0.into()),
            pci_id: pci.map(|p| p.1.into()),
        };
        assert_eq!(
            sysfs.device("ens4", 4),
            Some(facts("ixgbe", Some(("0000:3b:00.1", "8086:1593"))))
        );
        assert_eq!(
            sysfs.device("eth0", 2),
            Some(facts("virtio_net", Some(("0000:00:03.0", "1af4:1041")))),
            "a virtio NIC has its PCI function's address and IDs"
        );
        assert_eq!(sysfs.device("usb0", 7), Some(facts("cdc_ether", None)));
        assert_eq!(sysfs.device("veth0", 9), None, "no device, not physical");
    }

    #[test]
    fn another_namespace_or_a_rename_yields_nothing() {
        let dir = tree();
        let sysfs = Sysfs::new(dir.path());
        assert_eq!(sysfs.device("ens4", 40), None, "ifindex mismatch");
        assert_eq!(sysfs.device("gone", 4), None, "missing entry");
        assert_eq!(sysfs.device("../../etc", 4), None);
        assert_eq!(sysfs.device("..", 4), None);
    }

    #[test]
    fn missing_driver_link_is_omitted_not_fatal() {
        let dir = tree();
        fs::remove_file(dir.path().join("devices/pci0000:00/0000:3b:00.1/driver")).unwrap();
        let got = Sysfs::new(dir.path()).device("ens4", 4).unwrap();
        assert_eq!(got.driver, None);
        assert_eq!(got.pci_address.as_deref(), Some("0000:3b:00.1"));
    }

    #[test]
    fn unreadable_or_odd_pci_ids_are_omitted() {
        let dir = tree();
        let ens4 = dir.path().join("devices/pci0000:00/0000:3b:00.1");
        fs::write(ens4.join("device"), "garbage\n").unwrap();
        let got = Sysfs::new(dir.path()).device("ens4", 4).unwrap();
        assert_eq!(got.pci_id, None);
        assert_eq!(got.pci_address.as_deref(), Some("0000:3b:00.1"));
        fs::remove_file(ens4.join("vendor")).unwrap();
        assert_eq!(
            Sysfs::new(dir.path()).device("ens4", 4).unwrap().pci_id,
            None
        );
    }

    #[test]
    fn pci_address_shape() {
        assert!(is_pci_address("0000:3b:00.1"));
        assert!(!is_pci_address("virtio2"));
        assert!(!is_pci_address("0000:3b:00:1"));
        assert!(!is_pci_address("0000:3b:00.1x"));
    }
}
