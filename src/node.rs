//! Which node this is: `--node-name`, else `NODE_NAME` (the DaemonSet sets
//! it from the downward API), else the hostname.

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(
        "no node name: pass --node-name or set NODE_NAME (the hostname could not be read: {0})"
    )]
    NoName(#[source] nix::Error),
    #[error("the hostname is not valid UTF-8: pass --node-name or set NODE_NAME")]
    NotUtf8,
}

/// Resolves the node name. An empty flag or variable counts as absent.
pub fn node_name(flag: Option<&str>, env: Option<&str>) -> Result<String, NodeError> {
    if let Some(name) = given(flag).or(given(env)) {
        return Ok(name.to_string());
    }
    let host = nix::unistd::gethostname().map_err(NodeError::NoName)?;
    host.into_string().map_err(|_| NodeError::NotUtf8)
}

fn given(v: Option<&str>) -> Option<&str> {
    v.map(str::trim).filter(|n| !n.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_then_env_then_hostname() {
        assert_eq!(node_name(Some("n1"), Some("n2")).unwrap(), "n1");
        assert_eq!(node_name(None, Some("n2")).unwrap(), "n2");
        assert_eq!(node_name(Some(" "), Some("n2")).unwrap(), "n2");
        let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
        assert_eq!(node_name(None, None).unwrap(), host);
    }
}
