//! Running the delegate plugin (macvlan, ipvlan) from CNI_PATH.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use super::error::{CniError, DELEGATE_FAILED};

/// Finds the plugin `name` in the CNI_PATH directories, in order.
pub fn find(name: &str, path: &[PathBuf]) -> Result<PathBuf, CniError> {
    use std::os::unix::fs::PermissionsExt as _;
    path.iter()
        .map(|dir| dir.join(name))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .ok_or_else(|| {
            let dirs: Vec<String> = path.iter().map(|p| p.display().to_string()).collect();
            CniError::new(
                DELEGATE_FAILED,
                format!("the {name} plugin is not on CNI_PATH ({})", dirs.join(":")),
            )
            .details(format!(
                "install the CNI reference plugins so that {name} is in one of those directories"
            ))
        })
}

/// What one delegate run gave: stdout on success, its CNI error otherwise.
pub fn run(binary: &Path, env: &[(&str, Option<&str>)], stdin: &[u8]) -> Result<Vec<u8>, CniError> {
    start(binary, env, stdin)?.wait()
}

/// A delegate running, its stdin given.
pub struct Running {
    child: std::process::Child,
    binary: PathBuf,
}

/// Starts the delegate: the caller may work while it runs, then waits.
pub fn start(
    binary: &Path,
    env: &[(&str, Option<&str>)],
    stdin: &[u8],
) -> Result<Running, CniError> {
    let mut cmd = Command::new(binary);
    // The runtime's environment as is (CNI_ARGS and all), with overrides.
    for (key, value) in env {
        match value {
            Some(v) => cmd.env(key, v),
            None => cmd.env_remove(key),
        };
    }
    let spawned = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn();
    let mut child = spawned.map_err(|e| {
        CniError::new(
            DELEGATE_FAILED,
            format!("cannot run {}: {e}", binary.display()),
        )
    })?;
    if let Some(mut input) = child.stdin.take() {
        // A delegate that exits without reading is judged by its exit
        // status and output, not by a broken pipe here.
        let _ = input.write_all(stdin);
    }
    Ok(Running {
        child,
        binary: binary.to_path_buf(),
    })
}

impl Running {
    /// Waits for the delegate: stdout on success, its CNI error otherwise.
    pub fn wait(self) -> Result<Vec<u8>, CniError> {
        let binary = self.binary;
        let out = self.child.wait_with_output().map_err(|e| {
            CniError::new(
                DELEGATE_FAILED,
                format!("waiting for {}: {e}", binary.display()),
            )
        })?;
        judge(&binary, out)
    }
}

fn judge(binary: &Path, out: std::process::Output) -> Result<Vec<u8>, CniError> {
    if out.status.success() {
        return Ok(out.stdout);
    }
    Err(match serde_json::from_slice::<CniError>(&out.stdout) {
        Ok(e) => e,
        Err(_) => CniError::new(
            DELEGATE_FAILED,
            format!(
                "{} failed ({}) without a CNI error",
                binary.display(),
                out.status
            ),
        )
        .details(String::from_utf8_lossy(&out.stdout).into_owned()),
    })
}

/// The versions a delegate supports, from its VERSION answer.
pub fn versions(binary: &Path, asked: &str) -> Result<Vec<String>, CniError> {
    let stdin = serde_json::json!({ "cniVersion": asked }).to_string();
    let out = run(
        binary,
        &[("CNI_COMMAND", Some("VERSION"))],
        stdin.as_bytes(),
    )?;
    let v: Value = serde_json::from_slice(&out).map_err(|e| {
        CniError::new(
            DELEGATE_FAILED,
            format!("{} answered VERSION with non-JSON: {e}", binary.display()),
        )
    })?;
    Ok(v["supportedVersions"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    #[test]
    fn finds_on_cni_path_in_order_and_says_where_it_looked() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        std::fs::write(a.path().join("macvlan"), "not executable").unwrap();
        let exe = script(b.path(), "macvlan", "exit 0");
        let path = vec![a.path().to_path_buf(), b.path().to_path_buf()];
        assert_eq!(find("macvlan", &path).unwrap(), exe);
        let e = find("ipvlan", &path).unwrap_err();
        assert!(
            e.msg.contains("ipvlan") && e.msg.contains(&a.path().display().to_string()),
            "{e}"
        );
    }

    #[test]
    fn passes_stdin_and_env_and_keeps_the_delegates_error() {
        let dir = tempfile::tempdir().unwrap();
        let ok = script(dir.path(), "ok", "cat; printf ' %s' \"$CNI_COMMAND\"");
        let out = run(&ok, &[("CNI_COMMAND", Some("ADD"))], b"{\"a\":1}").unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "{\"a\":1} ADD");
        let failing = script(
            dir.path(),
            "bad",
            r#"echo '{"cniVersion":"1.0.0","code":11,"msg":"busy","details":"d"}'; exit 1"#,
        );
        let e = run(&failing, &[], b"").unwrap_err();
        assert_eq!(
            (e.code, e.msg.as_str(), e.details.as_str()),
            (11, "busy", "d")
        );
        let garbage = script(dir.path(), "garbage", "echo oops; exit 3");
        let e = run(&garbage, &[], b"").unwrap_err();
        assert_eq!(e.code, DELEGATE_FAILED);
        assert!(e.details.contains("oops"));
        let v = script(
            dir.path(),
            "v",
            r#"echo '{"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0"]}'"#,
        );
        assert_eq!(versions(&v, "1.1.0").unwrap(), vec!["0.4.0", "1.0.0"]);
    }
}
