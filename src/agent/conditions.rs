//! NodeSurvey conditions: Ready, LLDPActive, Degraded, and with DRA
//! DeviceSharing (how the ResourceSlice offers devices) and KubeletPlugin
//! (whether the kubelet registered the plugin). Pure; a condition's
//! lastTransitionTime moves only when its status or reason does, so an
//! unchanged node keeps an unchanged status.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::condition::condition;
use crate::dra::DRIVER;
pub use crate::dra::Sharing;
use crate::kubelet::Registration;

/// Where the maps in force came from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MapsFrom {
    /// The maps directory (standalone).
    #[default]
    Dir,
    /// A completed API list.
    Api,
    /// maps.json, until the API answers.
    Saved,
    /// The maps directory, until the API answers.
    DirUntilApi,
}

/// What the conditions are computed from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Facts {
    pub maps_from: MapsFrom,
    /// The Node of this name has not appeared (cluster mode).
    pub node_missing: Option<String>,
    /// Why the state dir cannot be written, while it cannot.
    pub state_error: Option<String>,
    pub networks_resolved: usize,
    pub lldp_enabled: bool,
    pub lldp_listening: usize,
    pub lldp_neighbors: usize,
    /// Refused NetworkMaps (or map files), with why.
    pub malformed: Vec<String>,
    /// Networks selecting this node that have no device here.
    pub unresolved: Vec<String>,
    pub dra: Dra,
    /// What the kubelet says of the DRA plugin (with DRA).
    pub kubelet: Option<Registration>,
}

/// Whether the node's networks are published for DRA, and how.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Dra {
    #[default]
    Off,
    /// On, the cluster not asked yet (after a restart: the condition the
    /// last run left stands, so an unchanged restart changes nothing).
    Asking,
    On(Sharing),
}

/// `previous`: the conditions before; the first of a type, status and
/// reason gives its transition time.
pub fn conditions(previous: &[Condition], facts: &Facts, now: &Time) -> Vec<Condition> {
    let ready = match (&facts.node_missing, facts.maps_from) {
        (Some(node), _) => (
            "False",
            "NodeNotFound",
            format!(
                "no Node named {node:?} exists: the agent's node name (--node-name, else NODE_NAME, else the hostname) must be its Node's name; the DaemonSet sets NODE_NAME from spec.nodeName"
            ),
        ),
        (None, MapsFrom::Dir | MapsFrom::Api) => (
            "True",
            "Resolved",
            format!(
                "{} network(s) resolved on this node",
                facts.networks_resolved
            ),
        ),
        (None, MapsFrom::Saved) => (
            "False",
            "NetworkMapsNotListed",
            "resolving with the last NetworkMaps seen (maps.json) until the API answers"
                .to_string(),
        ),
        (None, MapsFrom::DirUntilApi) => (
            "False",
            "NetworkMapsFromDir",
            "resolving with the NetworkMaps of --maps until the API answers".to_string(),
        ),
    };
    let lldp = match (facts.lldp_enabled, facts.lldp_listening) {
        (false, _) => (
            "False",
            "Disabled",
            "the agent runs with --no-lldp: no neighbor protocol is listened for".to_string(),
        ),
        (true, 0) => (
            "False",
            "NoInterfaceUp",
            "no surveyed interface is up to listen on".to_string(),
        ),
        (true, n) => (
            "True",
            "Listening",
            format!(
                "listening on {n} interface(s), {} with a neighbor",
                facts.lldp_neighbors
            ),
        ),
    };
    let degraded = if let Some(e) = &facts.state_error {
        (
            "True",
            "StateDirUnwritable",
            format!("{e}; the files there keep the last state written, retrying"),
        )
    } else if !facts.malformed.is_empty() {
        ("True", "MalformedNetworkMaps", facts.malformed.join("; "))
    } else if !facts.unresolved.is_empty() {
        (
            "True",
            "UnresolvedNetworks",
            format!(
                "no device on this node for: {}",
                facts.unresolved.join(", ")
            ),
        )
    } else {
        (
            "False",
            "AsExpected",
            "every network selecting this node is resolved".to_string(),
        )
    };
    let sharing = match facts.dra {
        Dra::Off => None,
        Dra::Asking => None,
        Dra::On(sharing @ Sharing::Shared) => Some((
            "True",
            "ConsumableCapacity",
            format!("ResourceSlice: {sharing}; claims ask for bandwidth"),
        )),
        Dra::On(sharing @ Sharing::Numbered(_)) => Some((
            "False",
            "NumberedDevices",
            format!(
                "ResourceSlice: {sharing}, each exclusive (the cluster drops allowMultipleAllocations: feature gate DRAConsumableCapacity off)"
            ),
        )),
    };
    let kubelet = facts.kubelet.as_ref().and_then(kubelet_plugin);
    let kubelet_said = kubelet.is_some();
    let mut out: Vec<Condition> = [
        ("Ready", Some(ready)),
        ("LLDPActive", Some(lldp)),
        ("Degraded", Some(degraded)),
        (DEVICE_SHARING, sharing),
        (KUBELET_PLUGIN, kubelet),
    ]
    .into_iter()
    .filter_map(|(kind, c)| Some((kind, c?)))
    .map(|(kind, (status, reason, message))| {
        condition(previous, kind, (status, reason, message), now)
    })
    .collect();
    if facts.dra == Dra::Asking {
        out.extend(previous.iter().find(|c| c.type_ == DEVICE_SHARING).cloned());
    }
    if facts.kubelet.is_some() && !kubelet_said {
        // Until the kubelet has had its say (after a restart, within a
        // second), the condition the last run left stands.
        let last = previous.iter().find(|c| c.type_ == KUBELET_PLUGIN).cloned();
        out.push(last.unwrap_or_else(|| {
            condition(
                previous,
                KUBELET_PLUGIN,
                (
                    "Unknown",
                    "Waiting",
                    format!("waiting for the kubelet to register DRA driver {DRIVER}"),
                ),
                now,
            )
        }));
    }
    out
}

/// The `KubeletPlugin` condition, once the kubelet has had its say.
fn kubelet_plugin(registration: &Registration) -> Option<(&'static str, &'static str, String)> {
    Some(match registration {
        Registration::Waiting | Registration::Asked => return None,
        Registration::Registered => (
            "True",
            "Registered",
            format!(
                "the kubelet registered DRA driver {DRIVER}: it prepares claims of its devices on this node"
            ),
        ),
        Registration::Refused(why) => (
            "False",
            "Refused",
            format!("the kubelet refused DRA driver {DRIVER}: {why}"),
        ),
        Registration::Silent {
            asked: false,
            socket,
            grace,
        } => (
            "False",
            "NotRegistered",
            format!(
                "the kubelet has not asked for the plugin's info on {socket} within {}s, so claims of {DRIVER} devices cannot be prepared here: is --kubelet-registry-dir the kubelet's plugins_registry (under its --root-dir), and is the kubelet 1.34+? Its log says why (RegisterPlugin)",
                grace.as_secs()
            ),
        ),
        Registration::Silent {
            asked: true,
            socket,
            grace,
        } => (
            "False",
            "NotConfirmed",
            format!(
                "the kubelet read the plugin's info on {socket} but has not said within {}s whether it registered it; its log says why (RegisterPlugin)",
                grace.as_secs()
            ),
        ),
    })
}

const DEVICE_SHARING: &str = "DeviceSharing";
const KUBELET_PLUGIN: &str = "KubeletPlugin";

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    fn find<'a>(cs: &'a [Condition], kind: &str) -> &'a Condition {
        cs.iter().find(|c| c.type_ == kind).unwrap()
    }

    #[test]
    fn transitions_move_only_with_status_or_reason() {
        let facts = Facts {
            maps_from: MapsFrom::Api,
            networks_resolved: 2,
            lldp_enabled: true,
            lldp_listening: 2,
            lldp_neighbors: 1,
            ..Facts::default()
        };
        let first = conditions(&[], &facts, &at(100));
        assert_eq!(find(&first, "Ready").status, "True");
        assert_eq!(find(&first, "LLDPActive").reason, "Listening");
        assert_eq!(find(&first, "Degraded").status, "False");
        // Same facts later: identical conditions, times included.
        assert_eq!(conditions(&first, &facts, &at(200)), first);
        // A new message with the same status keeps the time.
        let more = Facts {
            lldp_neighbors: 2,
            ..facts.clone()
        };
        let next = conditions(&first, &more, &at(300));
        assert_eq!(find(&next, "LLDPActive").last_transition_time, at(100));
        // A real transition moves it.
        let broken = Facts {
            unresolved: vec!["blue".into()],
            ..facts.clone()
        };
        let next = conditions(&first, &broken, &at(400));
        let d = find(&next, "Degraded");
        assert_eq!(
            (d.status.as_str(), d.reason.as_str()),
            ("True", "UnresolvedNetworks")
        );
        assert_eq!(d.last_transition_time, at(400));
        assert!(d.message.contains("blue"));
        let malformed = Facts {
            malformed: vec!["NetworkMap red: bad glob".into()],
            ..broken
        };
        assert_eq!(
            find(&conditions(&next, &malformed, &at(500)), "Degraded").reason,
            "MalformedNetworkMaps"
        );
        let cached = Facts {
            maps_from: MapsFrom::Saved,
            lldp_enabled: false,
            ..facts.clone()
        };
        let c = conditions(&first, &cached, &at(600));
        assert_eq!(find(&c, "Ready").reason, "NetworkMapsNotListed");
        assert_eq!(find(&c, "LLDPActive").reason, "Disabled");
        let from_dir = Facts {
            maps_from: MapsFrom::DirUntilApi,
            ..facts.clone()
        };
        assert_eq!(
            find(&conditions(&c, &from_dir, &at(700)), "Ready").reason,
            "NetworkMapsFromDir"
        );
        let lost = Facts {
            node_missing: Some("nod01".into()),
            state_error: Some(
                "cannot write /run/surveyor/networks.json: No space left on device".into(),
            ),
            malformed: vec!["NetworkMap red: bad glob".into()],
            ..facts
        };
        let c = conditions(&c, &lost, &at(800));
        let ready = find(&c, "Ready");
        assert_eq!(ready.reason, "NodeNotFound");
        assert!(ready.message.contains("\"nod01\"") && ready.message.contains("NODE_NAME"));
        let degraded = find(&c, "Degraded");
        assert_eq!(
            degraded.reason, "StateDirUnwritable",
            "the state dir comes first"
        );
        assert!(degraded.message.contains("No space left"));
    }

    #[test]
    fn device_sharing_is_said_once_known_and_kept_while_asking() {
        let now = Time(Timestamp::from_second(100).unwrap());
        let kinds =
            |cs: &[Condition]| -> Vec<String> { cs.iter().map(|c| c.type_.clone()).collect() };
        let off = conditions(&[], &Facts::default(), &now);
        assert!(!kinds(&off).contains(&DEVICE_SHARING.to_string()));
        let numbered = Facts {
            dra: Dra::On(Sharing::Numbered(32)),
            ..Facts::default()
        };
        let on = conditions(&[], &numbered, &now);
        let c = on.iter().find(|c| c.type_ == DEVICE_SHARING).unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "NumberedDevices")
        );
        assert!(c.message.contains("32 numbered devices"), "{}", c.message);
        let later = Time(Timestamp::from_second(200).unwrap());
        let asking = Facts {
            dra: Dra::Asking,
            ..Facts::default()
        };
        let kept = conditions(&on, &asking, &later);
        assert_eq!(
            kept, on,
            "a restart changes nothing until the cluster answers"
        );
        let dropped = conditions(&on, &Facts::default(), &later);
        assert!(!kinds(&dropped).contains(&DEVICE_SHARING.to_string()));
    }

    #[test]
    fn kubelet_plugin_says_what_the_kubelet_said_and_a_restart_keeps_it() {
        let with = |r: Registration| Facts {
            kubelet: Some(r),
            ..Facts::default()
        };
        let without = conditions(&[], &Facts::default(), &at(100));
        assert!(without.iter().all(|c| c.type_ != KUBELET_PLUGIN));
        let waiting = conditions(&[], &with(Registration::Waiting), &at(100));
        let c = find(&waiting, KUBELET_PLUGIN);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("Unknown", "Waiting")
        );
        let registered = conditions(&waiting, &with(Registration::Registered), &at(200));
        let c = find(&registered, KUBELET_PLUGIN);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("True", "Registered")
        );
        assert_eq!(c.last_transition_time, at(200));
        // A restart: waiting for the kubelet again keeps the last word.
        let restarted = conditions(&registered, &with(Registration::Asked), &at(300));
        assert_eq!(find(&restarted, KUBELET_PLUGIN), c);
        let silent = Registration::Silent {
            asked: false,
            socket: "/var/lib/kubelet/plugins_registry/surveyor.dev-reg.sock".into(),
            grace: std::time::Duration::from_secs(60),
        };
        let c = conditions(&[], &with(silent), &at(400));
        let c = find(&c, KUBELET_PLUGIN);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "NotRegistered")
        );
        assert!(
            c.message.contains("surveyor.dev-reg.sock within 60s"),
            "{}",
            c.message
        );
        let asked = Registration::Silent {
            asked: true,
            socket: "/r.sock".into(),
            grace: std::time::Duration::from_secs(60),
        };
        assert_eq!(
            find(&conditions(&[], &with(asked), &at(400)), KUBELET_PLUGIN).reason,
            "NotConfirmed"
        );
        let refused = conditions(
            &[],
            &with(Registration::Refused("no version".into())),
            &at(500),
        );
        let c = find(&refused, KUBELET_PLUGIN);
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "Refused"));
        assert!(c.message.ends_with(": no version"));
    }
}
