//! Whether the kubelet took the plugin. The kubelet finds the registration
//! socket, asks what is there (GetInfo), and says whether it registered it
//! (NotifyRegistrationStatus). A kubelet that cannot ask (a wrong
//! `--kubelet-registry-dir`, a kubelet too old for the DRA API, a gRPC
//! failure on its side) says nothing at all, so silence past a grace
//! period is reported as loudly as a refusal: a log line, the NodeSurvey's
//! `KubeletPlugin` condition, the `surveyor_kubelet_plugin_registered`
//! metric and `/readyz`.

use std::time::Duration;

use tokio::sync::watch;

use super::proto::RegistrationStatus;
use crate::dra::DRIVER;

/// How long the kubelet gets to register the plugin before its silence is
/// reported. Its plugin watcher sees a new socket within a second or so.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(60);

/// What the kubelet has said of the plugin.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Registration {
    /// Listening; the kubelet has not asked yet.
    #[default]
    Waiting,
    /// The kubelet asked what the plugin is, and has not said yet whether
    /// it took it.
    Asked,
    /// The grace period ran out before the kubelet said anything.
    Silent {
        /// Whether it asked at all.
        asked: bool,
        /// The registration socket, for the message.
        socket: String,
        grace: Duration,
    },
    Registered,
    /// The kubelet refused the plugin, saying why.
    Refused(String),
}

impl Registration {
    /// Whether the agent should still report ready (`/readyz`).
    pub fn is_healthy(&self) -> bool {
        !matches!(self, Registration::Silent { .. } | Registration::Refused(_))
    }
}

/// Keeps the plugin's [`Registration`] as the kubelet's calls come.
pub struct Tracker {
    state: watch::Sender<Registration>,
    socket: String,
}

impl Tracker {
    pub fn new(state: watch::Sender<Registration>, socket: String) -> Self {
        state.send_replace(Registration::Waiting);
        Tracker { state, socket }
    }

    /// GetInfo: the kubelet found the socket.
    pub fn asked(&self) {
        self.state.send_if_modified(|s| match s {
            Registration::Waiting => {
                *s = Registration::Asked;
                true
            }
            Registration::Silent { asked, .. } if !*asked => {
                *asked = true;
                true
            }
            // A kubelet restarting asks again; its answer follows.
            _ => false,
        });
    }

    /// NotifyRegistrationStatus: the kubelet's word.
    pub fn answered(&self, status: &RegistrationStatus) {
        let next = if status.plugin_registered {
            tracing::info!("the kubelet registered DRA driver {DRIVER}");
            Registration::Registered
        } else {
            tracing::error!(
                "the kubelet refused DRA driver {DRIVER}: {}; claims of {DRIVER} devices cannot be prepared on this node",
                status.error
            );
            Registration::Refused(status.error.clone())
        };
        self.state.send_if_modified(|s| {
            let changed = *s != next;
            *s = next;
            changed
        });
    }

    /// The grace period ran out: silence from here on is reported.
    pub fn overdue(&self, grace: Duration) {
        let socket = self.socket.clone();
        self.state.send_if_modified(|s| {
            let asked = match s {
                Registration::Waiting => false,
                Registration::Asked => true,
                _ => return false,
            };
            if asked {
                tracing::warn!(
                    "the kubelet asked for DRA driver {DRIVER}'s info on {socket} but has not said within {grace:?} whether it registered it; see the kubelet's log (RegisterPlugin)"
                );
            } else {
                tracing::warn!(
                    "the kubelet has not asked for DRA driver {DRIVER}'s info on {socket} within {grace:?}: is --kubelet-registry-dir the kubelet's plugins_registry (under its --root-dir), and is the kubelet 1.34+? Its log says why a plugin does not register (RegisterPlugin)"
                );
            }
            *s = Registration::Silent {
                asked,
                socket,
                grace,
            };
            true
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker() -> (Tracker, watch::Receiver<Registration>) {
        let (tx, rx) = watch::channel(Registration::Registered);
        (Tracker::new(tx, "/reg.sock".into()), rx)
    }

    fn status(ok: bool, error: &str) -> RegistrationStatus {
        RegistrationStatus {
            plugin_registered: ok,
            error: error.into(),
        }
    }

    #[test]
    fn asked_then_registered_and_a_late_deadline_changes_nothing() {
        let (t, rx) = tracker();
        assert_eq!(*rx.borrow(), Registration::Waiting);
        t.asked();
        assert_eq!(*rx.borrow(), Registration::Asked);
        t.answered(&status(true, ""));
        assert_eq!(*rx.borrow(), Registration::Registered);
        t.overdue(DEFAULT_GRACE);
        t.asked();
        assert_eq!(*rx.borrow(), Registration::Registered);
        assert!(rx.borrow().is_healthy());
    }

    #[test]
    fn silence_and_refusal_are_unhealthy() {
        let (t, rx) = tracker();
        t.overdue(Duration::from_secs(5));
        assert_eq!(
            *rx.borrow(),
            Registration::Silent {
                asked: false,
                socket: "/reg.sock".into(),
                grace: Duration::from_secs(5)
            }
        );
        assert!(!rx.borrow().is_healthy());
        // Asked late: still silent on the outcome.
        t.asked();
        assert!(matches!(
            *rx.borrow(),
            Registration::Silent { asked: true, .. }
        ));
        t.answered(&status(false, "no supported versions"));
        assert_eq!(
            *rx.borrow(),
            Registration::Refused("no supported versions".into())
        );
        assert!(!rx.borrow().is_healthy());
        // A kubelet restart that takes it: registered.
        t.answered(&status(true, ""));
        assert!(rx.borrow().is_healthy());
    }
}
