//! The image, built with Debian's buildah from deploy/Containerfile (FROM
//! scratch: no registry is needed) and run under Debian's containerd the
//! way deploy/daemonset.yaml runs it: the init container's arguments
//! install the plugin and its node-level setting into a bind-mounted host
//! directory; the agent's arguments, capabilities (all dropped but the
//! DaemonSet's), seccomp, read-only root and mounts, in the "host" network
//! namespace. Then the installed plugin, run from the host, attaches a pod
//! on what the containerized agent resolved.
//!
//! Every containerd and buildah path is the test's own (a private
//! containerd on its own socket and root), so it touches nothing of the
//! machine's.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Netns, require_program, require_root, run};

const IMAGE: &str = "localhost/surveyor:test";
/// The image's ENTRYPOINT (deploy/Containerfile).
const ENTRYPOINT: &str = "/surveyor";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The DaemonSet's pod spec, as deployed.
fn daemonset_pod() -> Value {
    let text = std::fs::read_to_string(root().join("deploy/daemonset.yaml")).unwrap();
    let ds: Value = serde_saphyr::from_str(&text).unwrap();
    ds["spec"]["template"]["spec"].clone()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

/// A containerd of the test's own, stopped on drop.
struct Containerd {
    child: std::process::Child,
    socket: PathBuf,
}

impl Containerd {
    fn start(dir: &Path) -> Containerd {
        let socket = dir.join("containerd.sock");
        let log = std::fs::File::create(dir.join("containerd.log")).unwrap();
        let child = Command::new("containerd")
            .arg("--address")
            .arg(&socket)
            .arg("--root")
            .arg(dir.join("root"))
            .arg("--state")
            .arg(dir.join("state"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start containerd");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !socket.exists() {
            assert!(
                Instant::now() < deadline,
                "containerd did not start: {}",
                std::fs::read_to_string(dir.join("containerd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Containerd { child, socket }
    }

    fn ctr(&self) -> Command {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address")
            .arg(&self.socket)
            .args(["--namespace", "surveyor-test"]);
        cmd
    }

    fn ctr_ok(&self, args: &[&str]) -> Output {
        let out = self.ctr().args(args).output().expect("run ctr");
        assert!(
            out.status.success(),
            "ctr {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self
            .ctr()
            .args(["task", "kill", "-s", "SIGKILL", "agent"])
            .output();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// ctr flags for a container spec of the DaemonSet: capabilities,
/// read-only root, seccomp (the pod's RuntimeDefault).
fn security(c: &Value, pod: &Value) -> Vec<String> {
    let sc = &c["securityContext"];
    let mut flags = Vec::new();
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    flags.push("--seccomp".to_string());
    if sc["readOnlyRootFilesystem"] == true {
        flags.push("--read-only".into());
    }
    assert_eq!(strings(&sc["capabilities"]["drop"]), ["ALL"]);
    // containerd's default set, all of it dropped.
    for cap in [
        "CHOWN",
        "DAC_OVERRIDE",
        "FSETID",
        "FOWNER",
        "MKNOD",
        "NET_RAW",
        "SETGID",
        "SETUID",
        "SETFCAP",
        "SETPCAP",
        "NET_BIND_SERVICE",
        "SYS_CHROOT",
        "KILL",
        "AUDIT_WRITE",
    ] {
        flags.push(format!("--cap-drop=CAP_{cap}"));
    }
    for cap in strings(&sc["capabilities"]["add"]) {
        flags.push(format!("--cap-add=CAP_{cap}"));
    }
    assert_eq!(
        sc["runAsUser"], 0,
        "the image runs as root, as the DaemonSet says"
    );
    flags
}

/// Bind mounts of a container's volumeMounts, each hostPath placed under
/// `host` (the test's stand-in for the node's root).
fn mounts(c: &Value, pod: &Value, host: &Path) -> Vec<String> {
    let volumes = pod["volumes"].as_array().unwrap();
    c["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            let vol = volumes.iter().find(|v| v["name"] == m["name"]).unwrap();
            let on_host = host.join(
                vol["hostPath"]["path"]
                    .as_str()
                    .unwrap()
                    .trim_start_matches('/'),
            );
            std::fs::create_dir_all(&on_host).unwrap();
            format!(
                "--mount=type=bind,src={},dst={},options=rbind:rw",
                on_host.display(),
                m["mountPath"].as_str().unwrap()
            )
        })
        .collect()
}

/// An argument that names a path on the host, placed under `host`.
fn on_host(host: &Path, path: &str) -> String {
    host.join(path.trim_start_matches('/'))
        .display()
        .to_string()
}

#[test]
fn the_image_runs_as_the_daemonset_says_and_installs_a_working_plugin() {
    require_root();
    require_program("buildah", "buildah");
    require_program("containerd", "containerd");
    require_program("ctr", "containerd");
    require_program("strip", "binutils");
    let dir = tempfile::tempdir().unwrap();
    let host = dir.path().join("host");

    // The image: the static binary, stripped, FROM scratch.
    let context = dir.path().join("context");
    std::fs::create_dir(&context).unwrap();
    let binary = support::static_binary();
    run(
        "strip",
        &[
            "-o",
            context.join("surveyor").to_str().unwrap(),
            binary.to_str().unwrap(),
        ],
    );
    let storage = [
        "--storage-driver".to_string(),
        "vfs".into(),
        "--root".into(),
        dir.path().join("buildah/root").display().to_string(),
        "--runroot".into(),
        dir.path().join("buildah/run").display().to_string(),
    ];
    let buildah = |args: &[&str]| {
        let mut full: Vec<&str> = storage.iter().map(String::as_str).collect();
        full.extend_from_slice(args);
        run("buildah", &full)
    };
    let containerfile = root().join("deploy/Containerfile");
    let recipe = std::fs::read_to_string(&containerfile).unwrap();
    assert!(
        recipe.contains("FROM scratch")
            && recipe.contains(&format!("ENTRYPOINT [\"{ENTRYPOINT}\"]")),
        "{recipe}"
    );
    buildah(&[
        "bud",
        "--isolation",
        "chroot",
        "-f",
        containerfile.to_str().unwrap(),
        "-t",
        IMAGE,
        context.to_str().unwrap(),
    ]);
    let archive = dir.path().join("image.tar");
    buildah(&[
        "push",
        IMAGE,
        &format!("docker-archive:{}:{IMAGE}", archive.display()),
    ]);

    let containerd = Containerd::start(dir.path());
    containerd.ctr_ok(&[
        "images",
        "import",
        "--snapshotter",
        "native",
        archive.to_str().unwrap(),
    ]);

    let pod = daemonset_pod();
    let image_name = |c: &Value| assert_eq!(c["image"], "surveyor", "{}", c["name"]);

    // 1. The init container: install-cni, with its host paths under `host`.
    let init = &pod["initContainers"][0];
    image_name(init);
    let mut args = strings(&init["args"]);
    for flag in ["--state-dir", "--cache-dir"] {
        let i = args.iter().position(|a| a == flag).unwrap();
        args[i + 1] = on_host(&host, &args[i + 1]);
    }
    let mut cmd = containerd.ctr();
    cmd.args(["run", "--rm", "--snapshotter", "native"])
        .args(security(init, &pod))
        .args(mounts(init, &pod, &host))
        // ctr takes the whole command line; Kubernetes's args follow the
        // image's entrypoint.
        .args([IMAGE, "install-cni", ENTRYPOINT])
        .args(&args);
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "install-cni: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let installed = host.join("opt/cni/bin/surveyor");
    let node_config = host.join("etc/cni/net.d/surveyor.d/surveyor.json");
    assert!(installed.exists() && node_config.exists());
    let segments = run("readelf", &["-l", "-W", installed.to_str().unwrap()]);
    assert!(
        !String::from_utf8_lossy(&segments.stdout).contains("INTERP"),
        "the installed plugin is static"
    );

    // 2. The agent, in the "host" network namespace, as the DaemonSet runs
    // it; standalone here (no API), with a map dir mounted read-only.
    let node = Netns::new("image");
    let peer = Netns::new("image-p");
    let pod_ns = Netns::new("image-pod");
    support::cable(&node, "sv-a", &peer, "p0");
    let maps = dir.path().join("maps");
    std::fs::create_dir(&maps).unwrap();
    std::fs::write(
        maps.join("green.yaml"),
        "apiVersion: surveyor.dev/v1alpha1\nkind: NetworkMap\nmetadata: {name: green}\nspec: {match: {names: [sv-a]}}\n",
    )
    .unwrap();
    let agent = &pod["containers"][0];
    image_name(agent);
    let agent_args = strings(&agent["args"]);
    let mut cmd = containerd.ctr();
    cmd.args(["run", "-d", "--snapshotter", "native"])
        .arg(format!("--with-ns=network:/run/netns/{}", node.name))
        .args(security(agent, &pod))
        .args(mounts(agent, &pod, &host))
        .arg(format!(
            "--mount=type=bind,src={},dst=/maps,options=rbind:ro",
            maps.display()
        ))
        .args(["--env", "NODE_NAME=imagenode", "--env", "SURVEYOR_LOG=info"])
        .args([IMAGE, "agent", ENTRYPOINT])
        .args(&agent_args)
        .args(["--standalone", "--maps", "/maps", "--include", "sv-*"]);
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "agent: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let snapshot = host.join("run/surveyor/networks.json");
    let deadline = Instant::now() + Duration::from_secs(20);
    let snap = loop {
        if let Some(snap) = std::fs::read(&snapshot)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .filter(|s| s["networks"]["green"]["device"] == "sv-a")
        {
            break snap;
        }
        assert!(
            Instant::now() < deadline,
            "the agent in the image never wrote green on sv-a to {}",
            snapshot.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(snap["node"], "imagenode");
    // Its health endpoint on the namespace's loopback, as the probes ask.
    let listen = agent_args[agent_args.iter().position(|a| a == "--listen").unwrap() + 1].clone();
    let health = node.block_on(move || async move {
        use std::io::{Read as _, Write as _};
        let mut s = std::net::TcpStream::connect(listen.as_str()).unwrap();
        write!(s, "GET /readyz HTTP/1.0\r\n\r\n").unwrap();
        let mut r = String::new();
        s.read_to_string(&mut r).unwrap();
        r
    });
    assert!(
        health.starts_with("HTTP/1.0 200") || health.starts_with("HTTP/1.1 200"),
        "{health}"
    );

    // 3. The plugin installed on the host attaches a pod on green, reading
    // the setting install-cni wrote and the snapshot the agent wrote.
    let conf = json!({"cniVersion": "1.0.0", "name": "green", "type": "surveyor", "network": "green",
        "ipam": {"type": "static", "addresses": [{"address": "10.50.0.2/24"}]}});
    let cni = |command: &str| {
        let mut cmd = node.command(installed.to_str().unwrap());
        cmd.env_clear()
            .env("SURVEYOR_CNI_CONFIG", &node_config)
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", "image-pod")
            .env("CNI_NETNS", format!("/run/netns/{}", pod_ns.name))
            .env("CNI_IFNAME", "net1")
            .env("CNI_PATH", "/usr/lib/cni")
            .stdin(Stdio::piped());
        support::run_with_stdin(&mut cmd, conf.to_string().as_bytes())
    };
    let added = cni("ADD");
    assert!(
        added.status.success(),
        "{}{}",
        String::from_utf8_lossy(&added.stdout),
        String::from_utf8_lossy(&added.stderr)
    );
    let result: Value = serde_json::from_slice(&added.stdout).unwrap();
    assert_eq!(result["ips"][0]["address"], "10.50.0.2/24");
    assert!(cni("DEL").status.success());

    // 4. SIGTERM stops it cleanly (and it saved its neighbors on the way).
    containerd.ctr_ok(&["task", "kill", "-s", "SIGTERM", "agent"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = containerd.ctr_ok(&["task", "ls"]);
        let listing = String::from_utf8_lossy(&out.stdout).to_string();
        if !listing.contains("RUNNING") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the agent ignored SIGTERM: {listing}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(host.join("run/surveyor/neighbors.json").exists());
    let _ = containerd.ctr().args(["task", "delete", "agent"]).output();
    let _ = containerd
        .ctr()
        .args(["container", "delete", "agent"])
        .output();
}

/// The shell blocks of README.md marked as run by this file, in order.
fn readme_blocks() -> Vec<String> {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let mut blocks = Vec::new();
    let mut lines = readme.lines();
    while let Some(line) = lines.next() {
        if !line.starts_with("<!-- tests/image.rs runs this block as written") {
            continue;
        }
        assert_eq!(lines.next(), Some("```sh"), "a marked block is a sh block");
        let block: Vec<&str> = lines.by_ref().take_while(|l| *l != "```").collect();
        blocks.push(block.join("\n"));
    }
    blocks
}

/// The settings CI builds release binaries with (.ci/release-env): they
/// change how long the README's `cargo build`s take, not what they do.
fn release_env() -> Vec<(String, String)> {
    std::fs::read_to_string(root().join(".ci/release-env"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap();
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// The README's Deploy section builds what it says, as written, on this
/// machine: the two static binaries, one image for linux/amd64 and
/// linux/arm64 named as `deploy/` names it, an OCI archive that a node's
/// containerd imports with both platforms; each platform's image holds
/// the binary for its architecture.
#[test]
fn the_readme_builds_the_multi_arch_image_it_describes() {
    require_root();
    require_program("buildah", "buildah");
    require_program("containerd", "containerd");
    let blocks = readme_blocks();
    assert_eq!(blocks.len(), 3, "{blocks:#?}");
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("storage.conf");
    std::fs::write(
        &storage,
        format!(
            "[storage]\ndriver = \"vfs\"\nrunroot = \"{0}/run\"\ngraphroot = \"{0}/root\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let containerd = Containerd::start(dir.path());
    let image = "localhost/surveyor:0.1.0";
    let archive = Path::new("/tmp/surveyor-0.1.0.tar");
    for block in &blocks {
        let out = Command::new("bash")
            .args(["-euo", "pipefail", "-c", block])
            .current_dir(root())
            .envs(release_env())
            .env("CONTAINERS_STORAGE_CONF", &storage)
            .env("CONTAINERD_ADDRESS", &containerd.socket)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "the README's\n{block}\nfailed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let _ = std::fs::remove_file(archive);
    let buildah = |args: &[&str]| {
        let out = Command::new("buildah")
            .args(args)
            .env("CONTAINERS_STORAGE_CONF", &storage)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "buildah {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let list: Value = serde_json::from_str(&buildah(&["manifest", "inspect", image])).unwrap();
    let platforms: Vec<String> = list["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| format!("{}/{}", m["platform"]["os"], m["platform"]["architecture"]))
        .map(|p| p.replace('"', ""))
        .collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"]);
    for (arch, triple, machine) in [
        (
            "amd64",
            "x86_64-unknown-linux-musl",
            "Advanced Micro Devices X86-64",
        ),
        ("arm64", "aarch64-unknown-linux-musl", "AArch64"),
    ] {
        let container = buildah(&["from", "--platform", &format!("linux/{arch}"), image]);
        let mount = PathBuf::from(buildah(&["mount", &container]));
        let inside = std::fs::read(mount.join("surveyor")).unwrap();
        let built = root().join("target").join(triple).join("release/surveyor");
        assert!(
            inside == std::fs::read(&built).unwrap(),
            "linux/{arch} does not hold {}",
            built.display()
        );
        let header = run("readelf", &["-h", mount.join("surveyor").to_str().unwrap()]);
        let header = String::from_utf8_lossy(&header.stdout).to_string();
        assert!(header.contains(machine), "linux/{arch}: {header}");
        assert!(header.contains("DYN (Position-Independent"), "{header}");
        buildah(&["umount", &container]);
        buildah(&["rm", &container]);
    }
    // The node's containerd took both platforms, under deploy/'s name.
    let out = Command::new("ctr")
        .args(["-n", "k8s.io", "images", "ls"])
        .env("CONTAINERD_ADDRESS", &containerd.socket)
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    let line = listing
        .lines()
        .find(|l| l.starts_with(image))
        .unwrap_or_else(|| panic!("{image} not imported: {listing}"));
    assert!(line.contains("linux/amd64,linux/arm64"), "{line}");
    let rendered = run(
        "kubectl",
        &["kustomize", root().join("deploy").to_str().unwrap()],
    );
    let rendered = String::from_utf8_lossy(&rendered.stdout);
    assert!(rendered.contains(&format!("image: {image}")), "{rendered}");
}
