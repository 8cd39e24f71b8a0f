//! Reading classic pcap files (the public LLDP captures): each record is
//! one whole Ethernet frame.

use std::path::{Path, PathBuf};

/// The captures shared beside the project (`../shared/lldp-captures`, or
/// `SURVEYOR_LLDP_CAPTURES` for a checkout elsewhere), read in place; a
/// test that needs them fails naming the directory.
pub fn captures_dir() -> PathBuf {
    let dir = match std::env::var_os("SURVEYOR_LLDP_CAPTURES") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/lldp-captures"),
    };
    if !dir.is_dir() {
        panic!(
            "this test reads the public LLDP captures in {}; that directory is missing \
             (set SURVEYOR_LLDP_CAPTURES to where they are)",
            dir.display()
        );
    }
    dir
}

/// Every capture file, sorted by name.
pub fn captures() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(captures_dir())
        .expect("read the captures directory")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "pcap"))
        .collect();
    files.sort();
    files
}

/// The frames of a pcap file (microsecond or nanosecond, either byte
/// order, Ethernet link type).
pub fn frames(path: &Path) -> Vec<Vec<u8>> {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(data.len() >= 24, "{}: no pcap header", path.display());
    let magic = [data[0], data[1], data[2], data[3]];
    let little = match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
        _ => panic!("{}: not a pcap file", path.display()),
    };
    let u32_at = |at: usize| {
        let b = [data[at], data[at + 1], data[at + 2], data[at + 3]];
        if little {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        }
    };
    assert_eq!(u32_at(20), 1, "{}: not an Ethernet capture", path.display());
    let mut out = Vec::new();
    let mut at = 24;
    while at + 16 <= data.len() {
        let len = u32_at(at + 8) as usize;
        let start = at + 16;
        let frame = data
            .get(start..start + len)
            .unwrap_or_else(|| panic!("{}: record cut short", path.display()));
        out.push(frame.to_vec());
        at = start + len;
    }
    out
}

/// Whether a frame is LLDP (ethertype 0x88cc, after at most one VLAN tag).
pub fn is_lldp(frame: &[u8]) -> bool {
    match frame.get(12..14) {
        Some([0x88, 0xcc]) => true,
        Some([0x81, 0x00]) => frame.get(16..18) == Some(&[0x88, 0xcc]),
        _ => false,
    }
}
