//! The CNI_* environment, typed and checked.

use std::path::PathBuf;

use super::error::{CniError, INVALID_ENV};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Status,
    Gc,
}

impl Command {
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Version => "VERSION",
            Command::Status => "STATUS",
            Command::Gc => "GC",
        }
    }
}

/// What the runtime said in the environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Env {
    pub command: Command,
    pub container_id: Option<String>,
    pub netns: Option<String>,
    pub ifname: Option<String>,
    pub path: Vec<PathBuf>,
    /// `CNI_ARGS`, as the runtime gave it (`K8S_POD_UID=...;...`).
    pub args: Option<String>,
}

impl Env {
    /// Reads and checks the variables `command` needs, via `var`.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Env, CniError> {
        let get = |k: &str| var(k).filter(|v| !v.is_empty());
        let command = match get("CNI_COMMAND").as_deref() {
            Some("ADD") => Command::Add,
            Some("DEL") => Command::Del,
            Some("CHECK") => Command::Check,
            Some("VERSION") => Command::Version,
            Some("STATUS") => Command::Status,
            Some("GC") => Command::Gc,
            other => {
                return Err(CniError::new(
                    INVALID_ENV,
                    format!(
                        "unknown CNI_COMMAND {:?} (ADD, DEL, CHECK, VERSION, STATUS or GC)",
                        other.unwrap_or("")
                    ),
                ));
            }
        };
        let env = Env {
            command,
            container_id: get("CNI_CONTAINERID"),
            netns: get("CNI_NETNS"),
            ifname: get("CNI_IFNAME"),
            path: get("CNI_PATH")
                .map(|p| std::env::split_paths(&p).collect())
                .unwrap_or_default(),
            args: get("CNI_ARGS"),
        };
        let needs = |name: &str, value: bool| {
            if value {
                Ok(())
            } else {
                Err(CniError::new(
                    INVALID_ENV,
                    format!("{name} is required for {}", command.as_str()),
                ))
            }
        };
        match command {
            Command::Add | Command::Check => {
                needs("CNI_CONTAINERID", env.container_id.is_some())?;
                needs("CNI_NETNS", env.netns.is_some())?;
                needs("CNI_IFNAME", env.ifname.is_some())?;
                needs("CNI_PATH", !env.path.is_empty())?;
            }
            Command::Del => {
                needs("CNI_CONTAINERID", env.container_id.is_some())?;
                needs("CNI_IFNAME", env.ifname.is_some())?;
                needs("CNI_PATH", !env.path.is_empty())?;
            }
            Command::Gc => needs("CNI_PATH", !env.path.is_empty())?,
            Command::Version | Command::Status => {}
        }
        if let Some(id) = &env.container_id {
            check_container_id(id)?;
        }
        if let Some(ifname) = &env.ifname {
            check_ifname(ifname)?;
        }
        Ok(env)
    }

    /// One `KEY=value` of `CNI_ARGS` (`;`-separated), if given.
    pub fn arg(&self, key: &str) -> Option<&str> {
        self.args
            .as_deref()?
            .split(';')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v)
            .filter(|v| !v.is_empty())
    }

    /// The container ID and interface name (ADD, DEL, CHECK).
    pub fn attachment(&self) -> (&str, &str) {
        (
            self.container_id.as_deref().unwrap_or_default(),
            self.ifname.as_deref().unwrap_or_default(),
        )
    }
}

/// Longest container ID accepted: a cache file name (ID, interface name
/// and suffixes) must fit a file name, and is never truncated into another
/// attachment's. Runtimes use 64 hex digits.
pub const MAX_CONTAINER_ID: usize = 200;

/// The spec's container ID: letters, digits, `_`, `.`, `-`, starting with a
/// letter or digit. Anything else could also escape the cache directory.
pub fn check_container_id(id: &str) -> Result<(), CniError> {
    if id.len() > MAX_CONTAINER_ID {
        return Err(CniError::new(
            INVALID_ENV,
            format!(
                "CNI_CONTAINERID is {} bytes long; at most {MAX_CONTAINER_ID} are accepted",
                id.len()
            ),
        ));
    }
    let ok = id.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(CniError::new(
            INVALID_ENV,
            format!(
                "invalid CNI_CONTAINERID {id:?}: only letters, digits, '_', '.' and '-', starting with a letter or digit"
            ),
        ))
    }
}

/// A Linux interface name: 1 to 15 bytes, not `.` or `..`, no `/`, `:`,
/// whitespace or control characters.
pub fn check_ifname(name: &str) -> Result<(), CniError> {
    let ok = (1..=15).contains(&name.len())
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control());
    if ok {
        Ok(())
    } else {
        Err(CniError::new(
            INVALID_ENV,
            format!(
                "invalid CNI_IFNAME {name:?}: 1 to 15 characters, not . or .., without '/', ':' or spaces"
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> Result<Env, CniError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Env::from_vars(|k| map.get(k).cloned())
    }

    const ADD: [(&str, &str); 5] = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "abc123"),
        ("CNI_NETNS", "/run/netns/pod"),
        ("CNI_IFNAME", "net1"),
        ("CNI_PATH", "/opt/cni/bin:/usr/lib/cni"),
    ];

    #[test]
    fn add_needs_everything_del_does_not_need_the_netns() {
        let e = env(&ADD).unwrap();
        assert_eq!(e.command, Command::Add);
        assert_eq!(
            e.path,
            vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")]
        );
        for missing in 1..5 {
            let mut partial = ADD.to_vec();
            let gone = partial.remove(missing).0;
            let err = env(&partial).unwrap_err();
            assert_eq!(err.code, INVALID_ENV);
            assert!(err.msg.contains(gone), "{err}");
        }
        let mut del = ADD.to_vec();
        del[0].1 = "DEL";
        del.remove(2);
        assert!(env(&del).is_ok());
        assert!(env(&[("CNI_COMMAND", "VERSION")]).is_ok());
        assert_eq!(
            env(&[("CNI_COMMAND", "FROB")]).unwrap_err().code,
            INVALID_ENV
        );
    }

    #[test]
    fn cni_args_are_read_by_key() {
        let mut add = ADD.to_vec();
        add.push((
            "CNI_ARGS",
            "IgnoreUnknown=true;K8S_POD_NAMESPACE=web;K8S_POD_UID=0a1b;K8S_POD_NAME=;junk",
        ));
        let e = env(&add).unwrap();
        assert_eq!(e.arg("K8S_POD_UID"), Some("0a1b"));
        assert_eq!(e.arg("K8S_POD_NAMESPACE"), Some("web"));
        assert_eq!(e.arg("K8S_POD_NAME"), None);
        assert_eq!(e.arg("junk"), None);
        assert_eq!(env(&ADD).unwrap().arg("K8S_POD_UID"), None);
    }

    #[test]
    fn ids_and_names_that_could_escape_the_cache_are_refused() {
        for id in ["../../etc", "a/b", ".hidden", "-x", "a b", ""] {
            assert!(check_container_id(id).is_err(), "{id}");
        }
        check_container_id("0123abcdef_x.y-z").unwrap();
        check_container_id(&"a".repeat(MAX_CONTAINER_ID)).unwrap();
        let long = check_container_id(&"a".repeat(MAX_CONTAINER_ID + 1)).unwrap_err();
        assert!(long.msg.contains("at most 200"), "{long}");
        for name in [
            ".",
            "..",
            "net/1",
            "net:1",
            "a b",
            "sixteen-chars-xx",
            "\u{7}",
        ] {
            assert!(check_ifname(name).is_err(), "{name}");
        }
        check_ifname("net1").unwrap();
        check_ifname("eth0.100").unwrap();
        let mut bad = ADD.to_vec();
        bad[1].1 = "../../../tmp/x";
        assert_eq!(env(&bad).unwrap_err().code, INVALID_ENV);
    }
}
