//! NodeSurvey conditions: Ready, LLDPActive, Degraded. Pure; a condition's
//! lastTransitionTime moves only when its status or reason does, so an
//! unchanged node keeps an unchanged status.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::condition::condition;

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
}

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
            "the agent runs with --no-lldp".to_string(),
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
    [
        ("Ready", ready),
        ("LLDPActive", lldp),
        ("Degraded", degraded),
    ]
    .into_iter()
    .map(|(kind, (status, reason, message))| {
        condition(previous, kind, (status, reason, message), now)
    })
    .collect()
}

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
}
