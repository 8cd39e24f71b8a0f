//! The CNI plugin (`type: surveyor`): resolves the semantic network to this
//! node's device from the agent's snapshot and delegates to macvlan or
//! ipvlan with `master` set to it.
//!
//! This path runs on every pod attachment: no async runtime, no
//! Kubernetes API, one small file read and one netlink lookup before the
//! delegate is exec'd. stdout carries only the result or the error JSON.

pub mod cache;
pub mod config;
pub mod delegate;
pub mod env;
pub mod error;
pub mod node_config;
pub mod version;

use std::collections::HashSet;
use std::io::{Read as _, Write as _};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::atomic::{self, Durability};
use crate::attachment::{self, Attachment};
use crate::discovery::lookup::{LinkKey, lookup};
use crate::snapshot::{Snapshot, SnapshotError, SnapshotNetwork, read_networks};

use self::cache::{Cache, Entry};
use self::config::NetConf;
use self::env::{Command, Env};
use self::error::*;
use self::node_config::NodeConfig;

/// GC leaves alone entries younger than this: their ADD may still be in
/// flight (the runtime lists attachments it knows, and may not know one
/// it is making).
const GC_GRACE: Duration = Duration::from_secs(60);

/// The master given to a delegate's DEL when the real one is gone: macvlan
/// and ipvlan only check on DEL that the master exists, then release the
/// IPAM lease and delete the pod's interface, neither of which needs it.
const STAND_IN_MASTER: &str = "lo";

/// Runs one CNI command from the process environment and stdin.
pub fn main() -> ExitCode {
    let mut stdin = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut stdin) {
        return fail(
            &CniError::new(UNDECODABLE, format!("cannot read stdin: {e}")),
            None,
        );
    }
    let result = Env::from_vars(|k| std::env::var(k).ok()).and_then(|env| {
        let node = if env.command == Command::Version {
            NodeConfig::default()
        } else {
            NodeConfig::load(std::env::var(node_config::ENV).ok().as_deref())?
        };
        run(&env, &node, &stdin)
    });
    match result {
        Ok(out) => {
            let mut stdout = std::io::stdout().lock();
            if stdout
                .write_all(&out)
                .and_then(|()| stdout.flush())
                .is_err()
            {
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e, config::cni_version(&stdin).as_deref()),
    }
}

fn fail(e: &CniError, version: Option<&str>) -> ExitCode {
    eprintln!("surveyor: {e}");
    println!("{}", e.to_json(version));
    ExitCode::FAILURE
}

/// One command's inputs: the runtime's environment, the network
/// configuration, the node's settings.
struct Ctx<'a> {
    env: &'a Env,
    conf: NetConf,
    node: &'a NodeConfig,
}

impl Ctx<'_> {
    fn cache(&self) -> Cache {
        Cache::new(&self.node.cache_dir)
    }
}

/// Dispatches one command; the bytes for stdout on success.
pub fn run(env: &Env, node: &NodeConfig, stdin: &[u8]) -> Result<Vec<u8>, CniError> {
    if env.command == Command::Version {
        return Ok(version_answer(stdin));
    }
    let ctx = Ctx {
        env,
        conf: NetConf::parse(stdin)?,
        node,
    };
    match env.command {
        Command::Add => add(&ctx),
        Command::Del => del(&ctx),
        Command::Check => check(&ctx),
        Command::Status => status(&ctx),
        Command::Gc => gc(&ctx),
        Command::Version => Ok(version_answer(stdin)),
    }
}

fn version_answer(stdin: &[u8]) -> Vec<u8> {
    let asked = config::cni_version(stdin).filter(|v| version::is_supported(v));
    serde_json::json!({
        "cniVersion": asked.as_deref().unwrap_or(version::LATEST),
        "supportedVersions": version::SUPPORTED,
    })
    .to_string()
    .into_bytes()
}

fn this_node() -> String {
    crate::node::node_name(None, std::env::var("NODE_NAME").ok().as_deref())
        .unwrap_or_else(|_| "this node".into())
}

/// The agent's snapshot; without one, "try again" (the agent is starting).
fn snapshot(ctx: &Ctx) -> Result<Snapshot, CniError> {
    let conf = &ctx.conf;
    read_networks(&ctx.node.state_dir).map_err(|e| {
        let node = this_node();
        let msg = match &e {
            SnapshotError::Missing(path) => format!("no network snapshot on node {node} yet ({})", path.display()),
            other => format!("network snapshot on node {node} unreadable: {other}"),
        };
        CniError::new(TRY_AGAIN, format!("network {:?}: {msg}", conf.network)).details(format!(
            "the surveyor agent writes it once running on this node: check kubectl -n surveyor get pods -o wide --field-selector spec.nodeName={node}"
        ))
    })
}

/// The network's entry, resolved, or code 100 saying why not.
fn resolved<'a>(
    conf: &NetConf,
    snapshot: &'a Snapshot,
) -> Result<(&'a SnapshotNetwork, &'a str), CniError> {
    let node = &snapshot.node;
    let Some(net) = snapshot.networks.get(&conf.network) else {
        return Err(CniError::new(NOT_MAPPED, format!("network {:?} is not mapped on node {node}", conf.network)).details(
            format!(
                "no NetworkMap named {:?} has reached this node's agent; check kubectl get networkmap {}, and kubectl get nodesurvey {node} -o yaml",
                conf.network, conf.network
            ),
        ));
    };
    match &net.device {
        Some(device) => Ok((net, device)),
        None => Err(CniError::new(
            NOT_MAPPED,
            format!(
                "network {:?} has no device on node {node}: {}",
                conf.network,
                net.reason.as_deref().unwrap_or("no candidate")
            ),
        )
        .details(format!("kubectl get nodesurvey {node} -o yaml shows each interface, its LLDP neighbor and why it does not match"))),
    }
}

/// The device to use: the snapshot's choice if it is still the same link
/// (same index, name and MAC), else the next candidate that exists.
fn pick_device(conf: &NetConf, snapshot: &Snapshot) -> Result<String, CniError> {
    let (net, device) = resolved(conf, snapshot)?;
    if let Some(index) = net.index {
        if let Ok(Some(link)) = lookup(LinkKey::Index(index)) {
            let same_mac = net.mac.is_none() || link.interface.mac == net.mac;
            if link.interface.name == device && same_mac {
                return Ok(device.to_string());
            }
        }
    }
    for candidate in net.candidates.iter().filter(|c| *c != device) {
        if let Ok(Some(_)) = lookup(LinkKey::Name(candidate)) {
            eprintln!(
                "surveyor: network {:?}: {device} changed since the snapshot; using {candidate}",
                conf.network
            );
            return Ok(candidate.clone());
        }
    }
    Err(CniError::new(
        DEVICE_VANISHED,
        format!(
            "network {:?} on node {}: device {device} and every other candidate are gone",
            conf.network, snapshot.node
        ),
    )
    .details(format!(
        "the agent re-resolves within milliseconds of a link change: retry, or check kubectl get nodesurvey {} -o yaml",
        snapshot.node
    )))
}

/// The version to speak to the delegate: ours, or 1.0.0 for a 1.1.0
/// config when the delegate predates 1.1.0 (asked with one VERSION call,
/// made only then).
fn delegate_version(binary: &Path, conf: &NetConf) -> Result<String, CniError> {
    if version::compare(&conf.cni_version, "1.0.0").is_le() {
        return Ok(conf.cni_version.clone());
    }
    let theirs = delegate::versions(binary, &conf.cni_version)?;
    version::for_delegate(&conf.cni_version, &theirs).ok_or_else(|| {
        CniError::new(
            INCOMPATIBLE_VERSION,
            format!(
                "network {:?}: the {} plugin supports CNI {} but not {}",
                conf.name,
                conf.delegate.as_str(),
                theirs.join(", "),
                conf.cni_version
            ),
        )
    })
}

/// Sets the version the delegate is spoken to in, prevResult included.
fn speak(config: &mut Map<String, Value>, version: &str) {
    config.insert("cniVersion".into(), version.into());
    if let Some(Value::Object(prev)) = config.get_mut("prevResult") {
        prev.insert("cniVersion".into(), version.into());
    }
}

/// A delegate's result, relabelled with the runtime's version when the
/// delegate was spoken to in an older one; untouched otherwise.
fn relabel(out: Vec<u8>, from: &str, to: &str) -> Vec<u8> {
    if from == to {
        return out;
    }
    match serde_json::from_slice::<Value>(&out) {
        Ok(Value::Object(mut result)) => {
            result.insert("cniVersion".into(), to.into());
            serde_json::to_vec(&result).unwrap_or(out)
        }
        _ => out,
    }
}

/// Adds which network, node and device were tried to a delegate's error;
/// its code and message stay as they were.
fn tried(mut e: CniError, conf: &NetConf, node: &str, device: &str) -> CniError {
    let context = format!(
        "surveyor: network {:?} on node {node}, device {device}, delegate {}",
        conf.network,
        conf.delegate.as_str()
    );
    e.details = if e.details.is_empty() {
        context
    } else {
        format!("{context}: {}", e.details)
    };
    e
}

/// With DRA, the claim's allocation names the device (`deviceID`): it
/// must still be the network's device here, or the pod would be attached
/// to a NIC its claim's bandwidth was not counted on.
fn check_allocation(conf: &NetConf, node: &str, device: &str) -> Result<(), CniError> {
    match conf.device_id.as_deref() {
        Some(allocated) if allocated != device => Err(CniError::new(
            ALLOCATION_STALE,
            format!(
                "network {:?} on node {node}: the pod's DRA allocation names device {allocated:?}, but the network's device here is now {device}",
                conf.network
            ),
        )
        .details(format!(
            "the network moved after the claim was allocated: delete the pod so that its claim is allocated again; kubectl get resourceslice {node}-{} -o yaml shows the devices now",
            crate::dra::DRIVER
        ))),
        _ => Ok(()),
    }
}

fn add(ctx: &Ctx) -> Result<Vec<u8>, CniError> {
    let conf = &ctx.conf;
    let snapshot = snapshot(ctx)?;
    let device = pick_device(conf, &snapshot)?;
    check_allocation(conf, &snapshot.node, &device)?;
    let binary = delegate::find(conf.delegate.as_str(), &ctx.env.path)?;
    let version = delegate_version(&binary, conf)?;
    let mut config = conf.delegate_config(&device, &version);
    speak(&mut config, &version);
    let (container_id, ifname) = ctx.env.attachment();
    let cache = ctx.cache();
    let _lock = cache.lock(container_id, ifname)?;
    // A second ADD for one attachment is a runtime bug; if it fails, the
    // first attachment must survive it.
    let previous = match cache.read(container_id, ifname) {
        Ok(previous) => previous,
        Err(unusable) => {
            eprintln!(
                "surveyor: replacing an unusable cache entry {}: {}",
                unusable.path.display(),
                unusable.why
            );
            None
        }
    };
    let entry = Entry {
        container_id: container_id.into(),
        ifname: ifname.into(),
        name: conf.name.clone(),
        network: conf.network.clone(),
        device: device.clone(),
        config,
    };
    let unsynced = cache.write_deferred(&entry)?;
    // The flush to disk happens while the delegate works.
    let flushed = || {
        if let Err(e) = unsynced.sync() {
            eprintln!(
                "surveyor: the ADD cache entry of {container_id}/{ifname} may not survive a power loss: {e}"
            );
        }
    };
    match call_while(&binary, conf, &snapshot.node, &entry.config, flushed) {
        Ok(out) => {
            if conf.device_id.is_some() {
                tell_agent(ctx, &entry, &out);
            }
            Ok(relabel(out, &version, &conf.cni_version))
        }
        Err(e) => {
            match previous {
                Some(previous) => cache.write(&previous)?,
                None => {
                    // Delegates do not always undo a half-done ADD (macvlan
                    // keeps its interface when IPAM returns no address): a
                    // DEL releases whatever it left.
                    let del = [("CNI_COMMAND", Some("DEL"))];
                    let _ = call(&binary, conf, &snapshot.node, &entry.config, &del);
                    cache.remove(container_id, ifname)?;
                }
            }
            Err(e)
        }
    }
}

/// On the DRA path, tells the agent what the pod's interface got, for the
/// pod's ResourceClaim. The pod is attached either way: a record that
/// cannot be written is said on stderr (the runtime's log).
fn tell_agent(ctx: &Ctx, entry: &Entry, result: &[u8]) {
    let Some(pod_uid) = ctx.env.arg("K8S_POD_UID") else {
        eprintln!(
            "surveyor: network {:?}: CNI_ARGS has no K8S_POD_UID, so the pod's ResourceClaim will not show its network data",
            entry.network
        );
        return;
    };
    let parsed = serde_json::from_slice(result).unwrap_or(Value::Null);
    let (mac, ips) = attachment::from_result(&parsed, &entry.ifname);
    let record = Attachment {
        pod_uid: pod_uid.into(),
        pod_namespace: ctx.env.arg("K8S_POD_NAMESPACE").unwrap_or_default().into(),
        pod_name: ctx.env.arg("K8S_POD_NAME").unwrap_or_default().into(),
        network: entry.network.clone(),
        device: entry.device.clone(),
        interface: entry.ifname.clone(),
        mac,
        ips,
    };
    let dir = ctx.node.state_dir.join(attachment::DIR);
    let name = attachment::file_name(&entry.container_id, &entry.ifname);
    let written = std::fs::create_dir_all(&dir).and_then(|()| {
        let bytes = serde_json::to_vec(&record).map_err(std::io::Error::other)?;
        atomic::replace(&dir, &name, &bytes, Durability::Unsynced)
    });
    if let Err(e) = written {
        eprintln!(
            "surveyor: network {:?}: cannot record the attachment in {} ({e}); the pod's ResourceClaim will not show its network data",
            entry.network,
            dir.display()
        );
    }
}

/// Forgets what [`tell_agent`] recorded of an attachment (there may be
/// nothing: it is only made on the DRA path).
fn forget_attachment(ctx: &Ctx, container_id: &str, ifname: &str) {
    let path = ctx
        .node
        .state_dir
        .join(attachment::DIR)
        .join(attachment::file_name(container_id, ifname));
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            eprintln!("surveyor: cannot remove {}: {e}", path.display());
        }
        _ => {}
    }
}

/// The delegate configuration of an attachment: the one recorded at ADD,
/// else rebuilt from the snapshot (or, for DEL, a stand-in master), saying
/// so on stderr (the runtime's log).
fn recorded_or_rebuilt(
    ctx: &Ctx,
    binary: &Path,
    for_del: bool,
) -> Result<Map<String, Value>, CniError> {
    let conf = &ctx.conf;
    let (container_id, ifname) = ctx.env.attachment();
    let why = match ctx.cache().read(container_id, ifname) {
        Ok(Some(entry)) => {
            let mut config = entry.config;
            // The runtime's prevResult is the current one.
            if let Some(prev) = conf.raw.get("prevResult") {
                config.insert("prevResult".into(), prev.clone());
            }
            let version = config
                .get("cniVersion")
                .and_then(Value::as_str)
                .unwrap_or(&conf.cni_version)
                .to_string();
            speak(&mut config, &version);
            return Ok(config);
        }
        Ok(None) => "no cache entry".to_string(),
        Err(unusable) => format!(
            "the cache entry {} is unusable ({})",
            unusable.path.display(),
            unusable.why
        ),
    };
    let version = delegate_version(binary, conf)?;
    let device = match snapshot(ctx).and_then(|s| pick_device(conf, &s)) {
        Ok(device) => device,
        Err(_) if for_del => STAND_IN_MASTER.to_string(),
        Err(e) => return Err(e),
    };
    if for_del {
        eprintln!(
            "surveyor: {container_id}/{ifname}: {why}; releasing with a configuration rebuilt from network {:?} (master {device})",
            conf.network
        );
    }
    let mut config = conf.delegate_config(&device, &version);
    speak(&mut config, &version);
    Ok(config)
}

/// For DEL and GC: a master that has vanished is replaced by the stand-in,
/// so the lease and the pod interface are still released.
fn master_or_stand_in(config: &mut Map<String, Value>) {
    let master = config
        .get("master")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if master.is_empty() || matches!(lookup(LinkKey::Name(master)), Ok(None)) {
        config.insert("master".into(), STAND_IN_MASTER.into());
    }
}

fn del(ctx: &Ctx) -> Result<Vec<u8>, CniError> {
    let conf = &ctx.conf;
    let binary = delegate::find(conf.delegate.as_str(), &ctx.env.path)?;
    let (container_id, ifname) = ctx.env.attachment();
    let cache = ctx.cache();
    let _lock = cache.lock(container_id, ifname)?;
    let mut config = recorded_or_rebuilt(ctx, &binary, true)?;
    master_or_stand_in(&mut config);
    call(&binary, conf, &this_node(), &config, &[])?;
    cache.remove(container_id, ifname)?;
    forget_attachment(ctx, container_id, ifname);
    Ok(Vec::new())
}

fn check(ctx: &Ctx) -> Result<Vec<u8>, CniError> {
    let binary = delegate::find(ctx.conf.delegate.as_str(), &ctx.env.path)?;
    let config = recorded_or_rebuilt(ctx, &binary, false)?;
    call(&binary, &ctx.conf, &this_node(), &config, &[])?;
    Ok(Vec::new())
}

/// Runs the delegate with `config` on stdin; its error comes back saying
/// which network, node and device were tried.
fn call(
    binary: &Path,
    conf: &NetConf,
    node: &str,
    config: &Map<String, Value>,
    vars: &[(&str, Option<&str>)],
) -> Result<Vec<u8>, CniError> {
    let stdin =
        serde_json::to_vec(config).map_err(|e| CniError::new(DELEGATE_FAILED, e.to_string()))?;
    delegate::run(binary, vars, &stdin).map_err(|e| tried(e, conf, node, master(config)))
}

/// [`call`], doing `meanwhile` while the delegate runs.
fn call_while(
    binary: &Path,
    conf: &NetConf,
    node: &str,
    config: &Map<String, Value>,
    meanwhile: impl FnOnce(),
) -> Result<Vec<u8>, CniError> {
    let stdin =
        serde_json::to_vec(config).map_err(|e| CniError::new(DELEGATE_FAILED, e.to_string()))?;
    let running =
        delegate::start(binary, &[], &stdin).map_err(|e| tried(e, conf, node, master(config)))?;
    meanwhile();
    running
        .wait()
        .map_err(|e| tried(e, conf, node, master(config)))
}

fn master(config: &Map<String, Value>) -> &str {
    config
        .get("master")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn status(ctx: &Ctx) -> Result<Vec<u8>, CniError> {
    match read_networks(&ctx.node.state_dir) {
        Ok(_) => Ok(Vec::new()),
        Err(e) => Err(CniError::new(
            NOT_AVAILABLE,
            format!(
                "surveyor cannot resolve networks on node {}: {e}",
                this_node()
            ),
        )),
    }
}

/// Releases every cached attachment of this network that the runtime no
/// longer lists as valid: a delegate DEL (which frees the IPAM lease), then
/// the cache entry. Without the list there is nothing to go by: nothing is
/// released. Entries younger than [`GC_GRACE`], or whose lock an ADD or DEL
/// holds, are left alone.
fn gc(ctx: &Ctx) -> Result<Vec<u8>, CniError> {
    let conf = &ctx.conf;
    let Some(listed) = conf.raw.get("cni.dev/valid-attachments") else {
        return Err(CniError::new(
            INVALID_CONFIG,
            format!(
                "network {:?}: GC needs \"cni.dev/valid-attachments\" (the attachments to keep); without it nothing is released",
                conf.name
            ),
        ));
    };
    let Some(listed) = listed.as_array() else {
        return Err(CniError::new(
            INVALID_CONFIG,
            format!(
                "network {:?}: \"cni.dev/valid-attachments\" must be a list",
                conf.name
            ),
        ));
    };
    let valid: HashSet<(String, String)> = listed
        .iter()
        .filter_map(|a| {
            Some((
                a.get("containerID")?.as_str()?.to_string(),
                a.get("ifname")?.as_str()?.to_string(),
            ))
        })
        .collect();
    let cache = ctx.cache();
    let mut stale = Vec::new();
    for l in cache.list()? {
        if valid.contains(&(l.container_id.clone(), l.ifname.clone())) || l.age < GC_GRACE {
            continue;
        }
        match l.entry {
            Ok(entry) if entry.name == conf.name => stale.push(entry),
            Ok(_) => {} // another network's: its own GC's business
            Err(unusable) => eprintln!(
                "surveyor: GC of network {:?}: leaving {} ({}); its DEL releases it",
                conf.name,
                unusable.path.display(),
                unusable.why
            ),
        }
    }
    if stale.is_empty() {
        return Ok(Vec::new());
    }
    let binary = delegate::find(conf.delegate.as_str(), &ctx.env.path)?;
    let node = this_node();
    let mut failed = Vec::new();
    for entry in stale {
        let Some(_lock) = cache.try_lock(&entry.container_id, &entry.ifname)? else {
            continue; // an ADD or DEL is at it
        };
        // Read again under the lock: an ADD may have rewritten it.
        let Ok(Some(entry)) = cache.read(&entry.container_id, &entry.ifname) else {
            continue;
        };
        let mut config = entry.config.clone();
        master_or_stand_in(&mut config);
        config.remove("prevResult");
        let vars = [
            ("CNI_COMMAND", Some("DEL")),
            ("CNI_CONTAINERID", Some(entry.container_id.as_str())),
            ("CNI_IFNAME", Some(entry.ifname.as_str())),
            ("CNI_NETNS", None),
        ];
        match call(&binary, conf, &node, &config, &vars) {
            Ok(_) => {
                cache.remove(&entry.container_id, &entry.ifname)?;
                forget_attachment(ctx, &entry.container_id, &entry.ifname);
            }
            Err(e) => failed.push(format!("{}/{}: {e}", entry.container_id, entry.ifname)),
        }
    }
    if failed.is_empty() {
        Ok(Vec::new())
    } else {
        Err(CniError::new(
            DELEGATE_FAILED,
            format!(
                "network {:?}: GC could not release {} attachment(s)",
                conf.name,
                failed.len()
            ),
        )
        .details(failed.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_answers_the_asked_version_when_supported() {
        let v: Value =
            serde_json::from_slice(&version_answer(br#"{"cniVersion":"0.4.0"}"#)).unwrap();
        assert_eq!(v["cniVersion"], "0.4.0");
        assert_eq!(
            v["supportedVersions"],
            serde_json::json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
        );
        let v: Value = serde_json::from_slice(&version_answer(b"garbage")).unwrap();
        assert_eq!(v["cniVersion"], version::LATEST);
    }

    #[test]
    fn relabel_and_speak() {
        let out = relabel(
            br#"{"cniVersion":"1.0.0","ips":[]}"#.to_vec(),
            "1.0.0",
            "1.1.0",
        );
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["cniVersion"], "1.1.0");
        let same = br#"{"cniVersion":"1.0.0"}"#.to_vec();
        assert_eq!(relabel(same.clone(), "1.0.0", "1.0.0"), same);
        let mut conf: Map<String, Value> =
            serde_json::from_str(r#"{"cniVersion":"1.1.0","prevResult":{"cniVersion":"1.1.0"}}"#)
                .unwrap();
        speak(&mut conf, "1.0.0");
        assert_eq!(
            (
                conf["cniVersion"].as_str(),
                conf["prevResult"]["cniVersion"].as_str()
            ),
            (Some("1.0.0"), Some("1.0.0"))
        );
    }

    #[test]
    fn delegate_errors_keep_code_and_message() {
        let conf =
            NetConf::parse(br#"{"cniVersion":"1.0.0","name":"g","network":"green"}"#).unwrap();
        let e = tried(
            CniError::new(11, "busy").details("ipam"),
            &conf,
            "node1",
            "ens4",
        );
        assert_eq!((e.code, e.msg.as_str()), (11, "busy"));
        assert_eq!(
            e.details,
            "surveyor: network \"green\" on node node1, device ens4, delegate macvlan: ipam"
        );
    }
}
