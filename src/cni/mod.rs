//! The CNI plugin (`type: surveyor`): resolves the semantic network to this
//! node's device from the agent's snapshot and delegates to macvlan or
//! ipvlan with `master` set to it; then, when the pod asked for a rate
//! (the `bandwidth` capability) or its DRA claim took one, shapes the
//! pod's interface to it ([`shaper`]).
//!
//! This path runs on every pod attachment: no async runtime, no
//! Kubernetes API, one small file read and one netlink lookup before the
//! delegate is exec'd. stdout carries only the result or the error JSON.

pub mod bandwidth;
pub mod cache;
pub mod config;
pub mod delegate;
pub mod env;
pub mod error;
pub mod node_config;
pub mod shaper;
pub mod tc;
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

use self::bandwidth::Request;
use self::cache::{Cache, Entry};
use self::config::NetConf;
use self::env::{Command, Env};
use self::error::*;
use self::node_config::NodeConfig;
use self::shaper::Shaping;
use crate::kubelet::prepare::Prepared;

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
    pick_device_and_mtu(conf, snapshot).map(|(device, _)| device)
}

/// [`pick_device`], and the device's MTU as the lookup found it (0 when
/// unknown).
fn pick_device_and_mtu(conf: &NetConf, snapshot: &Snapshot) -> Result<(String, u32), CniError> {
    let (net, device) = resolved(conf, snapshot)?;
    if let Some(index) = net.index {
        if let Ok(Some(link)) = lookup(LinkKey::Index(index)) {
            let same_mac = net.mac.is_none() || link.interface.mac == net.mac;
            if link.interface.name == device && same_mac {
                return Ok((device.to_string(), link.interface.mtu));
            }
        }
    }
    for candidate in net.candidates.iter().filter(|c| *c != device) {
        if let Ok(Some(link)) = lookup(LinkKey::Name(candidate)) {
            eprintln!(
                "surveyor: network {:?}: {device} changed since the snapshot; using {candidate}",
                conf.network
            );
            return Ok((candidate.clone(), link.interface.mtu));
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

/// What the pod's interface is to be held to: the `bandwidth`
/// capability's request and, on the DRA path, the claim's share, the
/// lower of the two in each direction. Checked before anything is made.
fn planned_shaping(
    ctx: &Ctx,
    node: &str,
    device: &str,
    mtu: u32,
) -> Result<Option<Shaping>, CniError> {
    let conf = &ctx.conf;
    let invalid = |e: bandwidth::BandwidthError| {
        CniError::new(
            INVALID_CONFIG,
            format!("network {:?} on node {node}: {e}", conf.network),
        )
    };
    let mut request = bandwidth::requested(conf.runtime_config()).map_err(invalid)?;
    if conf.device_id.is_some() {
        request = request.lower(claimed(ctx, node, device)?);
    }
    if request.is_empty() {
        return Ok(None);
    }
    // A burst must hold a frame of the master's MTU, which the pod's
    // interface takes (or less, when the config sets one).
    let limits = request.settle(effective_mtu(mtu)).map_err(invalid)?;
    let (_, ifname) = ctx.env.attachment();
    Ok(Some(Shaping::planned(limits, ifname)))
}

/// The bandwidth the pod's claim took of `device`, as the agent's kubelet
/// plugin recorded it when it prepared the claim (`claims.json`). Several
/// devices of this network for the pod: the least of them, as which
/// attachment is which cannot be told here.
fn claimed(ctx: &Ctx, node: &str, device: &str) -> Result<Request, CniError> {
    let conf = &ctx.conf;
    let Some(pod) = ctx.env.arg("K8S_POD_UID") else {
        eprintln!(
            "surveyor: network {:?}: CNI_ARGS has no K8S_POD_UID, so the pod's claimed bandwidth cannot be found: its interface is not held to it",
            conf.network
        );
        return Ok(Request::default());
    };
    let path = ctx.node.state_dir.join(crate::kubelet::CLAIMS);
    let prepared: Prepared = match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            CniError::new(
                TRY_AGAIN,
                format!(
                    "network {:?} on node {node}: {} is unreadable: {e}",
                    conf.network,
                    path.display()
                ),
            )
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Prepared::new(),
        Err(e) => {
            return Err(CniError::new(
                TRY_AGAIN,
                format!(
                    "network {:?} on node {node}: cannot read {}: {e}",
                    conf.network,
                    path.display()
                ),
            ));
        }
    };
    let devices: Vec<_> = prepared
        .values()
        .filter(|c| c.pods.iter().any(|p| p == pod))
        .flat_map(|c| &c.devices)
        .filter(|d| d.network == conf.network && d.interface == device)
        .collect();
    let Some(least) = devices
        .iter()
        .min_by_key(|d| d.bandwidth.unwrap_or(u64::MAX))
    else {
        return Err(CniError::new(
            TRY_AGAIN,
            format!(
                "network {:?} on node {node}: the pod's DRA allocation names device {device}, but no claim the agent prepared here names pod {pod} and network {:?}",
                conf.network, conf.network
            ),
        )
        .details(format!(
            "the agent's kubelet plugin records the claims it prepares in {}: check that the agent on this node runs with --dra and has prepared the pod's claim (kubectl -n surveyor get pods -o wide --field-selector spec.nodeName={node}, and that pod's log)",
            path.display()
        )));
    };
    match least.bandwidth {
        Some(rate) if rate >= bandwidth::MIN_RATE => Ok(Request::claimed(rate, &least.directions)),
        _ => {
            eprintln!(
                "surveyor: network {:?}: device {} offers no bandwidth (its link speed is unknown), so the pod's interface is not held to its claim",
                conf.network, least.device
            );
            Ok(Request::default())
        }
    }
}

/// A link's MTU, or Ethernet's when the lookup did not say.
fn effective_mtu(mtu: u32) -> u32 {
    if mtu > 0 { mtu } else { 1500 }
}

/// The first half of shaping ([`shaper::start`]), run while the delegate
/// makes the pod's interface.
fn start_shaping(
    ctx: &Ctx,
    node: &str,
    shaping: &Shaping,
    mtu: u32,
) -> Result<shaper::Started, CniError> {
    let (_, ifname) = ctx.env.attachment();
    let Some(netns) = ctx.env.netns.as_deref() else {
        return Err(CniError::new(
            INVALID_ENV,
            format!(
                "network {:?}: CNI_NETNS is required to shape {ifname}",
                ctx.conf.network
            ),
        ));
    };
    shaper::start(Path::new(netns), shaping, effective_mtu(mtu))
        .map_err(|e| shaping_failed(ctx, node, e))
}

/// A shaping error, naming the network, node and interface, and what the
/// kernel refused.
fn shaping_failed(ctx: &Ctx, node: &str, e: shaper::ShapeError) -> CniError {
    let (_, ifname) = ctx.env.attachment();
    let hint = if e.missing_from_kernel() {
        "the node's kernel lacks part of what shaping needs: the ifb driver (modprobe ifb), the tbf and ingress qdiscs, the u32 classifier and the mirred action (sch_tbf, sch_ingress, cls_u32, act_mirred)"
    } else {
        "the pod's interface is left unshaped and the attachment undone"
    };
    CniError::new(
        SHAPING_FAILED,
        format!(
            "network {:?} on node {node}: cannot shape {ifname}: {e}",
            ctx.conf.network
        ),
    )
    .details(hint)
}

fn add(ctx: &Ctx) -> Result<Vec<u8>, CniError> {
    let conf = &ctx.conf;
    let snapshot = snapshot(ctx)?;
    let (device, mtu) = pick_device_and_mtu(conf, &snapshot)?;
    check_allocation(conf, &snapshot.node, &device)?;
    let shaping = planned_shaping(ctx, &snapshot.node, &device, mtu)?;
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
        shaping,
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
    // The ifb and its bucket are made meanwhile too: their cost hides
    // behind the delegate's.
    let node = snapshot.node.as_str();
    let (attached, started) = call_while(&binary, conf, node, &entry.config, || {
        flushed();
        let shaping = entry.shaping.as_ref()?;
        Some(start_shaping(ctx, node, shaping, mtu))
    });
    let shaped = match (attached, started) {
        (Ok(out), None) => Ok(out),
        (Ok(out), Some(Ok(started))) => started
            .finish(ctx.env.attachment().1)
            .map(|()| out)
            .map_err(|e| shaping_failed(ctx, node, e)),
        (Ok(_), Some(Err(e))) => Err(e),
        (Err(e), Some(Ok(started))) => {
            started.abandon();
            Err(e)
        }
        (Err(e), _) => Err(e),
    };
    match shaped {
        Ok(out) => {
            if conf.device_id.is_some() || entry.shaping.is_some() {
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

/// On the DRA path, or when shaped, tells the agent what the pod's
/// interface got, for the pod's ResourceClaim and the agent's metrics. The
/// pod is attached either way: a record that cannot be written is said on
/// stderr (the runtime's log).
fn tell_agent(ctx: &Ctx, entry: &Entry, result: &[u8]) {
    let pod_uid = ctx.env.arg("K8S_POD_UID").unwrap_or_default();
    if pod_uid.is_empty() && ctx.conf.device_id.is_some() {
        eprintln!(
            "surveyor: network {:?}: CNI_ARGS has no K8S_POD_UID, so the pod's ResourceClaim will not show its network data",
            entry.network
        );
    }
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
        claimed: ctx.conf.device_id.is_some(),
        shaped: entry.shaping.as_ref().map(|s| s.limits),
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

/// How an attachment's interface was shaped at ADD: as recorded, or not
/// known (no usable cache entry).
enum Shaped {
    Recorded(Option<Shaping>),
    Unknown,
}

/// The delegate configuration of an attachment: the one recorded at ADD,
/// else rebuilt from the snapshot (or, for DEL, a stand-in master), saying
/// so on stderr (the runtime's log); and how it was shaped.
fn recorded_or_rebuilt(
    ctx: &Ctx,
    binary: &Path,
    for_del: bool,
) -> Result<(Map<String, Value>, Shaped), CniError> {
    let conf = &ctx.conf;
    let (container_id, ifname) = ctx.env.attachment();
    let why = match ctx.cache().read(container_id, ifname) {
        Ok(Some(entry)) => {
            let shaped = Shaped::Recorded(entry.shaping);
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
            return Ok((config, shaped));
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
    Ok((config, Shaped::Unknown))
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
    let (mut config, shaped) = recorded_or_rebuilt(ctx, &binary, true)?;
    master_or_stand_in(&mut config);
    let node = this_node();
    let unshaped = unshape(ctx, &node, &shaped);
    call(&binary, conf, &node, &config, &[])?;
    // Kept while something of the shaping is left: the runtime's next DEL
    // takes it away.
    unshaped?;
    cache.remove(container_id, ifname)?;
    forget_attachment(ctx, container_id, ifname);
    Ok(Vec::new())
}

/// Takes away what shaping added, before the delegate's DEL: an
/// unshaped attachment costs nothing here; one whose record is lost is
/// looked at for an ifb. A namespace that is gone took everything with it.
fn unshape(ctx: &Ctx, node: &str, shaped: &Shaped) -> Result<(), CniError> {
    let shaping = match shaped {
        Shaped::Recorded(None) => return Ok(()),
        Shaped::Recorded(Some(s)) => Some(s),
        Shaped::Unknown => None,
    };
    let Some(netns) = ctx.env.netns.as_deref().filter(|n| !n.is_empty()) else {
        return Ok(());
    };
    let (_, ifname) = ctx.env.attachment();
    match shaper::remove(Path::new(netns), ifname, shaping) {
        Ok(_) => Ok(()),
        Err(shaper::ShapeError::Netns { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            Ok(())
        }
        Err(e) => Err(CniError::new(
            SHAPING_FAILED,
            format!(
                "network {:?} on node {node}: cannot take away the shaping of {ifname}: {e}",
                ctx.conf.network
            ),
        )),
    }
}

fn check(ctx: &Ctx) -> Result<Vec<u8>, CniError> {
    let binary = delegate::find(ctx.conf.delegate.as_str(), &ctx.env.path)?;
    let (config, shaped) = recorded_or_rebuilt(ctx, &binary, false)?;
    let node = this_node();
    call(&binary, &ctx.conf, &node, &config, &[])?;
    if let (Shaped::Recorded(Some(shaping)), Some(netns)) = (&shaped, ctx.env.netns.as_deref()) {
        let (_, ifname) = ctx.env.attachment();
        shaper::check(Path::new(netns), ifname, shaping).map_err(|e| {
            CniError::new(
                SHAPING_FAILED,
                format!(
                    "network {:?} on node {node}: {ifname} is not shaped as it was at ADD: {e}",
                    ctx.conf.network
                ),
            )
            .details("something changed the pod's qdiscs or filters; recreate the pod to have them set up again")
        })?;
    }
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

/// [`call`], doing `meanwhile` while the delegate runs (not at all when
/// the delegate cannot be started).
fn call_while<T>(
    binary: &Path,
    conf: &NetConf,
    node: &str,
    config: &Map<String, Value>,
    meanwhile: impl FnOnce() -> Option<T>,
) -> (Result<Vec<u8>, CniError>, Option<T>) {
    let started = serde_json::to_vec(config)
        .map_err(|e| CniError::new(DELEGATE_FAILED, e.to_string()))
        .and_then(|stdin| {
            delegate::start(binary, &[], &stdin).map_err(|e| tried(e, conf, node, master(config)))
        });
    let running = match started {
        Ok(running) => running,
        Err(e) => return (Err(e), None),
    };
    let done = meanwhile();
    let out = running
        .wait()
        .map_err(|e| tried(e, conf, node, master(config)));
    (out, done)
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
