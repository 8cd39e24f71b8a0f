//! What the CNI plugin tells the agent of an attachment made on a DRA
//! allocation, or shaped: which pod, which network and master, what the
//! pod's interface got (name, MAC, IPs) and what it is held to. The
//! agent's kubelet plugin reports it on the pod's ResourceClaim
//! (`status.devices[]`: `networkData`, KEP-4817, and the bandwidth in
//! `data`); the agent's metrics sum what is shaped.
//!
//! One file per attachment in the state dir, `attachments/<containerID>:
//! <ifname>.json` (the CNI cache's key, checked before it gets here), written
//! after a successful ADD and removed at DEL and GC. The state dir is on
//! tmpfs: after a reboot every sandbox is made again, and so are these.

use std::fs::{self, File};
use std::io::{self, Read as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::cni::bandwidth::Direction;

/// The directory, in the state dir.
pub const DIR: &str = "attachments";

/// The largest file read: a record is a few hundred bytes.
const MAX_FILE: u64 = 64 * 1024;

/// The most files read in one scan (a node runs a few hundred pods).
pub const MAX_FILES: usize = 4096;

/// The most IPs the API takes per device.
pub const MAX_IPS: usize = 16;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    /// `K8S_POD_UID` from the runtime's CNI_ARGS.
    pub pod_uid: String,
    #[serde(default)]
    pub pod_namespace: String,
    #[serde(default)]
    pub pod_name: String,
    /// The semantic network and the master it was attached on.
    pub network: String,
    pub device: String,
    /// The pod's interface.
    pub interface: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// In CIDR notation, as the API wants them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<String>,
    /// Made on a DRA allocation (`deviceID`): the pod's claim shows it.
    /// Records from before shaping were all made so.
    #[serde(default = "yes")]
    pub claimed: bool,
    /// What the pod's interface is held to, when shaped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shaped: Option<crate::cni::bandwidth::Limits>,
}

fn yes() -> bool {
    true
}

/// The file of one attachment.
pub fn file_name(container_id: &str, ifname: &str) -> String {
    format!("{container_id}:{ifname}.json")
}

/// The pod interface's MAC and addresses from a delegate's CNI result
/// (0.3.0 and later): the interface named `ifname` that is in a sandbox,
/// and the IPs that name it (or name no interface at all). A result in
/// another shape gives none.
pub fn from_result(result: &Value, ifname: &str) -> (Option<String>, Vec<String>) {
    let interfaces = result
        .get("interfaces")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let pod = interfaces.iter().position(|i| {
        i.get("name").and_then(Value::as_str) == Some(ifname)
            && i.get("sandbox")
                .and_then(Value::as_str)
                .is_some_and(|s| !s.is_empty())
    });
    let mac = pod
        .and_then(|p| interfaces[p].get("mac"))
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty() && m.len() <= 128)
        .map(str::to_string);
    let mut ips: Vec<String> = Vec::new();
    let all = result
        .get("ips")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    for ip in all {
        let on = ip
            .get("interface")
            .and_then(Value::as_u64)
            .and_then(|i| usize::try_from(i).ok());
        if on.is_some() && on != pod {
            continue;
        }
        let Some(address) = ip.get("address").and_then(Value::as_str) else {
            continue;
        };
        // The API takes CIDRs only: anything else is left out, not fixed.
        if address.parse::<ipnet::IpNet>().is_ok()
            && !ips.iter().any(|a| a == address)
            && ips.len() < MAX_IPS
        {
            ips.push(address.to_string());
        }
    }
    (mac, ips)
}

/// What the shaped attachments add up to.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ShapedTotals {
    pub attachments: usize,
    /// Bits per second, by network and direction.
    pub bandwidth: std::collections::BTreeMap<(String, Direction), u64>,
}

/// Sums what `records` are held to.
pub fn shaped_totals(records: &[Attachment]) -> ShapedTotals {
    let mut out = ShapedTotals::default();
    for r in records {
        let Some(limits) = r.shaped.filter(|l| !l.is_empty()) else {
            continue;
        };
        out.attachments += 1;
        for d in Direction::BOTH {
            if let Some(l) = limits.get(d) {
                let sum = out.bandwidth.entry((r.network.clone(), d)).or_default();
                *sum = sum.saturating_add(l.rate);
            }
        }
    }
    out
}

/// What a scan found: the records, and the files that could not be read
/// (path, why).
#[derive(Debug, Default)]
pub struct Scan {
    pub attachments: Vec<Attachment>,
    pub unreadable: Vec<(PathBuf, String)>,
}

/// Every record in `dir` (the state dir's [`DIR`]); a missing directory
/// holds none. Only regular `.json` files, opened without following links
/// or blocking, at most [`MAX_FILE`] bytes, at most [`MAX_FILES`] of them.
pub fn scan(dir: &Path) -> io::Result<Scan> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Scan::default()),
        Err(e) => return Err(e),
    };
    let mut names: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.ends_with(".json") && !name.starts_with('.')
        })
        .map(|e| e.path())
        .collect();
    names.sort();
    let mut scan = Scan::default();
    if names.len() > MAX_FILES {
        let skipped = names.split_off(MAX_FILES);
        scan.unreadable.push((
            dir.to_path_buf(),
            format!("{} files over the {MAX_FILES} read", skipped.len()),
        ));
    }
    for path in names {
        match read(&path) {
            Ok(a) => scan.attachments.push(a),
            Err(why) => scan.unreadable.push((path, why)),
        }
    }
    Ok(scan)
}

fn read(path: &Path) -> Result<Attachment, String> {
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| e.to_string())?;
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.file_type().is_file() {
        return Err("not a regular file".into());
    }
    if meta.len() > MAX_FILE {
        return Err(format!("{} bytes, over {MAX_FILE}", meta.len()));
    }
    let mut bytes = Vec::new();
    File::take(file, MAX_FILE)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    serde_json::from_slice(&bytes).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_pod_interface_and_its_addresses_are_taken_from_the_result() {
        let result = json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "net1", "mac": "0a:58:0a:01:02:03", "sandbox": "/var/run/netns/p"},
                {"name": "net2", "mac": "0a:58:0a:01:02:04", "sandbox": "/var/run/netns/p"},
            ],
            "ips": [
                {"address": "10.1.2.3/24", "gateway": "10.1.2.1", "interface": 0},
                {"address": "10.9.9.9/24", "interface": 1},
                {"address": "2001:db8::5/64", "interface": 0},
                {"address": "10.1.2.3/24", "interface": 0},
                {"address": "not-an-ip", "interface": 0},
                {"address": "10.1.2.4"},
            ],
        });
        let (mac, ips) = from_result(&result, "net1");
        assert_eq!(mac.as_deref(), Some("0a:58:0a:01:02:03"));
        assert_eq!(ips, ["10.1.2.3/24", "2001:db8::5/64"]);
    }

    #[test]
    fn results_of_other_shapes_give_nothing_and_do_not_panic() {
        for result in [
            json!({}),
            json!({"ip4": {"ip": "10.1.2.3/24"}}),
            json!({"interfaces": "x", "ips": 7}),
            json!({"interfaces": [{"name": "net1"}], "ips": [{"address": 1}]}),
            json!([]),
        ] {
            let (mac, ips) = from_result(&result, "net1");
            assert_eq!((mac, ips.len()), (None, 0), "{result}");
        }
        // An address with no interface index is the pod's (IPAM-only
        // results), even when the interface list lacks a sandbox entry.
        let (_, ips) = from_result(&json!({"ips": [{"address": "10.1.2.3/24"}]}), "net1");
        assert_eq!(ips, ["10.1.2.3/24"]);
        let many: Vec<Value> = (0..40)
            .map(|i| json!({"address": format!("10.0.0.{i}/24")}))
            .collect();
        let (_, ips) = from_result(&json!({"ips": many}), "net1");
        assert_eq!(ips.len(), MAX_IPS);
    }

    #[test]
    fn a_scan_reads_records_and_names_what_it_cannot() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            scan(&dir.path().join("none"))
                .unwrap()
                .attachments
                .is_empty()
        );
        let a = Attachment {
            pod_uid: "p1".into(),
            pod_namespace: "web".into(),
            pod_name: "db".into(),
            network: "green".into(),
            device: "ens4".into(),
            interface: "net1".into(),
            mac: Some("0a:58:0a:01:02:03".into()),
            ips: vec!["10.1.2.3/24".into()],
            claimed: true,
            shaped: None,
        };
        fs::write(
            dir.path().join(file_name("c1", "net1")),
            serde_json::to_vec(&a).unwrap(),
        )
        .unwrap();
        fs::write(dir.path().join("c2:net1.json"), b"{").unwrap();
        fs::write(dir.path().join(".c3:net1.json.x.tmp"), b"{").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("c4:net1.json")).unwrap();
        nix::unistd::mkfifo(
            &dir.path().join("c5:net1.json"),
            nix::sys::stat::Mode::S_IRWXU,
        )
        .unwrap();
        let s = scan(dir.path()).unwrap();
        assert_eq!(s.attachments, [a]);
        let bad: Vec<String> = s
            .unreadable
            .iter()
            .map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(bad, ["c2:net1.json", "c4:net1.json", "c5:net1.json"]);
    }
}
