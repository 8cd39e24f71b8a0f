//! deploy/ and crds/ against the code: CRDs are what `surveyor crds`
//! prints, names and references agree, RBAC covers every request the agent
//! makes, the DaemonSet's arguments are ones the binary accepts, and the
//! samples are valid for Surveyor.

mod support;

use std::path::{Path, PathBuf};

use clap::Parser as _;
use serde_json::Value;
use surveyor::agent::cluster::API_REQUESTS;
use surveyor::cli::Cli;
use surveyor::controller::API_REQUESTS as CONTROLLER_REQUESTS;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every document of a YAML file.
/// A container's args, checked to be a command line the binary takes.
fn accepted_args(c: &Value) -> Vec<String> {
    let args: Vec<String> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    let argv = std::iter::once("surveyor").chain(args.iter().map(String::as_str));
    Cli::try_parse_from(argv)
        .unwrap_or_else(|e| panic!("{} args {args:?} are not valid: {e}", c["name"]));
    args
}

fn docs(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

/// Every object the kustomization (and the ones it includes) deploys.
fn deployed() -> Vec<Value> {
    fn walk(dir: &Path, out: &mut Vec<Value>) {
        let k = &docs(&dir.join("kustomization.yaml"))[0];
        for r in k["resources"].as_array().unwrap() {
            let path = dir.join(r.as_str().unwrap());
            assert!(
                path.exists(),
                "{} lists a missing resource {}",
                dir.display(),
                path.display()
            );
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.extend(docs(&path));
            }
        }
    }
    let mut out = Vec::new();
    walk(&root().join("deploy"), &mut out);
    out
}

fn find<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

#[test]
fn crds_dir_is_exactly_what_surveyor_crds_prints() {
    let on_disk = std::fs::read_to_string(root().join("crds/surveyor.dev.yaml")).unwrap();
    let printed = surveyor::crd::crds_yaml().unwrap();
    assert!(
        on_disk == printed,
        "crds/surveyor.dev.yaml is stale: run `cargo run -- crds > crds/surveyor.dev.yaml`"
    );
    // And it parses back to the same objects.
    assert_eq!(
        docs(&root().join("crds/surveyor.dev.yaml")),
        surveyor::crd::crds()
    );
}

/// The CRDs are installed apart from the workloads (`kubectl apply -k
/// crds/`), so `kubectl delete -k deploy/` never deletes a NetworkMap.
#[test]
fn the_crds_are_apart_from_the_workloads() {
    assert!(find(&deployed(), "CustomResourceDefinition").is_empty());
    let out = std::process::Command::new("kubectl")
        .arg("kustomize")
        .arg(root().join("crds"))
        .output()
        .expect("this test needs kubectl (with kustomize built in) on PATH");
    assert!(out.status.success());
    let objects: Vec<Value> =
        serde_saphyr::from_multiple(&String::from_utf8(out.stdout).unwrap()).unwrap();
    let names: Vec<&str> = objects
        .iter()
        .filter(|o| o["kind"] == "CustomResourceDefinition")
        .map(|c| c["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["networkmaps.surveyor.dev", "nodesurveys.surveyor.dev"]
    );
}

#[test]
fn the_kustomization_deploys_the_agent_with_exactly_the_rbac_it_uses() {
    let objects = deployed();
    let crds = ["networkmaps.surveyor.dev", "nodesurveys.surveyor.dev"];

    let namespace = find(&objects, "Namespace")[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let sa = named(&objects, "ServiceAccount", "surveyor-agent");
    let ds = find(&objects, "DaemonSet")[0];
    assert_eq!(sa["metadata"]["namespace"], namespace.as_str());
    assert_eq!(ds["metadata"]["namespace"], namespace.as_str());
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], sa["metadata"]["name"]);
    assert_eq!(
        ds["spec"]["selector"]["matchLabels"],
        ds["spec"]["template"]["metadata"]["labels"]
    );
    let role = bound_role(&objects, "ClusterRoleBinding", sa, &namespace);
    assert_grants_exactly(&[role], API_REQUESTS, "the agent", &crds);
    // The agent writes no Node: one node cannot relabel the cluster.
    let agent_verbs = rules_for(&[role], "", "nodes");
    assert!(
        !agent_verbs.contains(&"patch".to_string()),
        "{agent_verbs:?}"
    );
}

#[test]
fn the_controller_is_deployed_with_exactly_the_rbac_it_uses() {
    let objects = deployed();
    let crds = ["networkmaps.surveyor.dev", "nodesurveys.surveyor.dev"];
    let namespace = "surveyor";
    let sa = named(&objects, "ServiceAccount", "surveyor-controller");
    let cluster_role = bound_role(&objects, "ClusterRoleBinding", sa, namespace);
    let role = bound_role(&objects, "RoleBinding", sa, namespace);
    assert_eq!(
        role["metadata"]["namespace"], namespace,
        "its Lease role is namespaced"
    );
    assert_grants_exactly(
        &[cluster_role, role],
        CONTROLLER_REQUESTS,
        "the controller",
        &crds,
    );
    // Leases only in its own namespace.
    assert!(rules_for(&[cluster_role], "coordination.k8s.io", "leases").is_empty());
    let deploy = named(&objects, "Deployment", "surveyor-controller");
    assert_eq!(
        deploy["spec"]["template"]["spec"]["serviceAccountName"],
        "surveyor-controller"
    );
    // The Lease's namespace is the pod's, which is the Role's.
    let env = &deploy["spec"]["template"]["spec"]["containers"][0]["env"];
    let from = |name: &str| {
        env.as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .map(|e| e["valueFrom"]["fieldRef"]["fieldPath"].clone())
    };
    assert_eq!(
        from("POD_NAMESPACE"),
        Some(Value::from("metadata.namespace"))
    );
    assert_eq!(from("POD_NAME"), Some(Value::from("metadata.name")));
    assert_eq!(deploy["metadata"]["namespace"], namespace);
}

fn named<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} deployed"))
}

/// The role a binding of `kind` grants to service account `sa`.
fn bound_role<'a>(objects: &'a [Value], kind: &str, sa: &Value, namespace: &str) -> &'a Value {
    let binding = find(objects, kind)
        .into_iter()
        .find(|b| {
            b["subjects"].as_array().unwrap().iter().any(|s| {
                s["kind"] == "ServiceAccount"
                    && s["name"] == sa["metadata"]["name"]
                    && s["namespace"] == namespace
            })
        })
        .unwrap_or_else(|| panic!("no {kind} for {}", sa["metadata"]["name"]));
    let role_kind = binding["roleRef"]["kind"].as_str().unwrap();
    named(
        objects,
        role_kind,
        binding["roleRef"]["name"].as_str().unwrap(),
    )
}

/// The verbs `roles` grant on group/resource.
fn rules_for(roles: &[&Value], group: &str, resource: &str) -> Vec<String> {
    let mut verbs = Vec::new();
    for role in roles {
        for r in role["rules"].as_array().unwrap() {
            let has = |k: &str, v: &str| r[k].as_array().unwrap().iter().any(|x| x == v);
            if has("apiGroups", group) && has("resources", resource) {
                verbs.extend(
                    r["verbs"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|v| v.as_str().unwrap().to_string()),
                );
            }
        }
    }
    verbs
}

/// RBAC grants every request `who` makes (the CRDs exist for them), and
/// nothing else.
fn assert_grants_exactly(
    roles: &[&Value],
    requests: &[(&str, &str, &[&str])],
    who: &str,
    crds: &[&str],
) {
    for (group, resource, verbs) in requests {
        let granted = rules_for(roles, group, resource);
        for verb in *verbs {
            assert!(
                granted.iter().any(|g| g == verb),
                "{who}'s roles do not grant {verb} on {group}/{resource}"
            );
        }
        let base = resource.split('/').next().unwrap();
        if *group == "surveyor.dev" {
            assert!(
                crds.contains(&format!("{base}.surveyor.dev").as_str()),
                "{base} has no CRD"
            );
        }
    }
    for role in roles {
        for r in role["rules"].as_array().unwrap() {
            for verb in r["verbs"].as_array().unwrap() {
                for resource in r["resources"].as_array().unwrap() {
                    let asked = requests.iter().any(|(g, res, verbs)| {
                        r["apiGroups"].as_array().unwrap().iter().any(|x| x == g)
                            && resource == res
                            && verbs.contains(&verb.as_str().unwrap())
                    });
                    assert!(
                        asked,
                        "{who}'s {} grants {verb} on {resource}, which {who} never asks for",
                        role["kind"].as_str().unwrap()
                    );
                }
            }
        }
    }
}

#[test]
fn the_daemonset_runs_what_the_binary_accepts_with_least_privilege() {
    let objects = deployed();
    let pod = &find(&objects, "DaemonSet")[0]["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["tolerations"][0]["operator"], "Exists");
    let agent = &pod["containers"][0];
    let init = &pod["initContainers"][0];
    for c in [agent, init] {
        accepted_args(c);
    }
    // Least privilege: seccomp, no privilege escalation, a read-only root,
    // every capability dropped but NET_RAW for the agent (none for the
    // installer).
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    for c in [agent, init] {
        let sc = &c["securityContext"];
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{}", c["name"]);
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{}", c["name"]);
        assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    }
    assert_eq!(
        agent["securityContext"]["capabilities"]["add"],
        serde_json::json!(["NET_RAW"])
    );
    assert!(init["securityContext"]["capabilities"]["add"].is_null());
    assert_eq!(agent["securityContext"]["privileged"], false);
    let env = agent["env"].as_array().unwrap();
    let node_name = env
        .iter()
        .find(|e| e["name"] == "NODE_NAME")
        .expect("NODE_NAME");
    assert_eq!(
        node_name["valueFrom"]["fieldRef"]["fieldPath"],
        "spec.nodeName"
    );

    // Probes hit the port --listen serves.
    let args = agent["args"].as_array().unwrap();
    let listen = args
        .iter()
        .position(|a| a == "--listen")
        .map(|i| args[i + 1].as_str().unwrap())
        .unwrap();
    let (host_addr, port) = listen.rsplit_once(':').unwrap();
    let port: u64 = port.parse().unwrap();
    assert_eq!(
        host_addr, "127.0.0.1",
        "metrics on the node's loopback only"
    );
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        let get = &agent[probe]["httpGet"];
        assert_eq!(get["path"], path);
        assert_eq!(get["port"], port);
        assert_eq!(
            get["host"], host_addr,
            "the kubelet probes the loopback it shares"
        );
    }
    assert!(agent["resources"]["requests"].is_object());

    // Host paths: the state dir where the CNI plugin reads it, the plugin
    // directory, the plugin's node-level setting.
    let volumes = pod["volumes"].as_array().unwrap();
    let host = |path: &str| {
        volumes
            .iter()
            .find(|v| v["hostPath"]["path"] == path)
            .map(|v| v["name"].as_str().unwrap())
    };
    let mounted = |c: &Value, vol: &str| -> Option<String> {
        c["volumeMounts"]
            .as_array()?
            .iter()
            .find(|m| m["name"] == vol)
            .map(|m| m["mountPath"].as_str().unwrap().to_string())
    };
    let state = host(surveyor::snapshot::DEFAULT_STATE_DIR).expect("state dir volume");
    assert_eq!(
        mounted(agent, state).as_deref(),
        Some(surveyor::snapshot::DEFAULT_STATE_DIR)
    );
    let bin = host("/opt/cni/bin").expect("CNI bin volume");
    let init_args: Vec<&str> = init["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let arg = |flag: &str| init_args[init_args.iter().position(|a| *a == flag).unwrap() + 1];
    assert_eq!(mounted(init, bin).as_deref(), Some(arg("--dir")));
    // The setting lands where the plugin looks for it on the host, and
    // names the state dir the agent writes (as the host sees it).
    let conf_vol = host("/etc/cni/net.d/surveyor.d").expect("node config volume");
    let conf_mount = mounted(init, conf_vol).unwrap();
    let written = std::path::Path::new(arg("--node-config"));
    assert_eq!(written.parent().unwrap(), std::path::Path::new(&conf_mount));
    assert_eq!(
        std::path::Path::new("/etc/cni/net.d/surveyor.d").join(written.file_name().unwrap()),
        std::path::Path::new(surveyor::cni::node_config::DEFAULT_PATH)
    );
    assert_eq!(arg("--state-dir"), surveyor::snapshot::DEFAULT_STATE_DIR);
    assert_eq!(
        arg("--cache-dir"),
        surveyor::cni::node_config::DEFAULT_CACHE_DIR
    );
}

#[test]
fn the_controller_runs_what_the_binary_accepts_without_privilege() {
    let objects = deployed();
    let deploy = named(&objects, "Deployment", "surveyor-controller");
    assert_eq!(deploy["spec"]["replicas"], 2, "a standby replica");
    let pod = &deploy["spec"]["template"]["spec"];
    assert!(pod["hostNetwork"].is_null(), "the pod network is enough");
    assert_eq!(
        deploy["spec"]["selector"]["matchLabels"],
        deploy["spec"]["template"]["metadata"]["labels"]
    );
    let c = &pod["containers"][0];
    let args = accepted_args(c);
    // Non-root, no capability at all, a read-only root, seccomp.
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_ne!(pod["securityContext"]["runAsUser"], 0);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let sc = &c["securityContext"];
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert!(sc["capabilities"]["add"].is_null());
    assert!(pod["volumes"].is_null(), "no host paths, no volumes");
    // Probes and the Service reach the port --listen serves.
    let listen = &args[args.iter().position(|a| a == "--listen").unwrap() + 1];
    let port: u64 = listen.rsplit_once(':').unwrap().1.parse().unwrap();
    assert_eq!(c["ports"][0]["containerPort"], port);
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        assert_eq!(c[probe]["httpGet"]["path"], path);
        assert_eq!(c[probe]["httpGet"]["port"], port);
    }
    let svc = named(&objects, "Service", "surveyor-controller");
    assert_eq!(
        svc["spec"]["selector"],
        deploy["spec"]["template"]["metadata"]["labels"]
    );
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], c["ports"][0]["name"]);
    assert!(c["resources"]["limits"]["memory"].is_string());
}

#[test]
fn the_samples_are_valid_surveyor_objects_that_reference_each_other() {
    let dir = root().join("deploy/samples");
    let map_text = std::fs::read_to_string(dir.join("networkmap-green.yaml")).unwrap();
    let maps = surveyor::network_map::parse_documents(&map_text).unwrap();
    let map = surveyor::network_map::CompiledMap::compile(&maps[0]).unwrap();

    let nad = &docs(&dir.join("nad-green.yaml"))[0];
    let conf =
        surveyor::cni::config::NetConf::parse(nad["spec"]["config"].as_str().unwrap().as_bytes())
            .unwrap();
    assert_eq!(
        conf.network, map.name,
        "the NAD attaches to the sample map's network"
    );

    let pod = &docs(&dir.join("pod-green.yaml"))[0];
    assert_eq!(
        pod["metadata"]["annotations"]["k8s.v1.cni.cncf.io/networks"],
        nad["metadata"]["name"]
    );
    let label = format!("{}{}", surveyor::crd::LABEL_PREFIX, map.name);
    assert_eq!(pod["spec"]["nodeSelector"][label.as_str()], "true");
}

/// The capped pod's network selection is what Multus hands the plugin as
/// `runtimeConfig.bandwidth`, through a NAD that declares the capability.
#[test]
fn the_capped_pod_sample_asks_for_what_the_plugin_takes() {
    use surveyor::cni::bandwidth::{Request, requested};
    let dir = root().join("deploy/samples");
    let nad = &docs(&dir.join("nad-green.yaml"))[0];
    let conf: serde_json::Value =
        serde_json::from_str(nad["spec"]["config"].as_str().unwrap()).unwrap();
    assert_eq!(conf["capabilities"]["bandwidth"], true);
    let pod = &docs(&dir.join("pod-green-capped.yaml"))[0];
    let selection: serde_json::Value = serde_json::from_str(
        pod["metadata"]["annotations"]["k8s.v1.cni.cncf.io/networks"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(selection[0]["name"], nad["metadata"]["name"]);
    let runtime = serde_json::json!({"bandwidth": selection[0]["bandwidth"]});
    let asked: Request = requested(runtime.as_object()).unwrap();
    let limits = asked.settle(1500).unwrap();
    assert_eq!(limits.egress.map(|l| l.rate), Some(400_000_000));
    assert_eq!(limits.ingress.map(|l| l.rate), Some(300_000_000));
}

#[test]
fn every_sample_network_map_loads() {
    let dir = root().join("deploy/samples");
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !name.starts_with("networkmap-") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for map in
            surveyor::network_map::parse_documents(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
        {
            surveyor::network_map::CompiledMap::compile(&map)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        seen.push(name);
    }
    seen.sort();
    assert_eq!(
        seen,
        [
            "networkmap-fast.yaml",
            "networkmap-green.yaml",
            "networkmap-storage.yaml"
        ]
    );
}

#[test]
fn install_cni_copies_the_binary_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    // A symlink planted at the old fixed temp name is not written through.
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "keep").unwrap();
    std::os::unix::fs::symlink(&victim, bin.join(".surveyor.tmp")).unwrap();
    let node_config = dir.path().join("net.d/surveyor.d/surveyor.json");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_surveyor"))
        .args(["install-cni", "--dir"])
        .arg(&bin)
        .arg("--node-config")
        .arg(&node_config)
        .args(["--state-dir", "/var/run/surveyor"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let installed = bin.join("surveyor");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&installed).unwrap().permissions().mode() & 0o777,
        0o755
    );
    assert_eq!(
        std::fs::read(&installed).unwrap(),
        std::fs::read(env!("CARGO_BIN_EXE_surveyor")).unwrap()
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
    let mut names: Vec<_> = std::fs::read_dir(&bin)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, [".surveyor.tmp", "surveyor"], "no temp file left");
    // The node-level setting the plugin reads.
    let written = surveyor::cni::node_config::NodeConfig::load(node_config.to_str()).unwrap();
    assert_eq!(written.state_dir, std::path::Path::new("/var/run/surveyor"));
    assert_eq!(
        written.cache_dir,
        std::path::Path::new(surveyor::cni::node_config::DEFAULT_CACHE_DIR)
    );
    // Relative host paths make no sense to the plugin: refused.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_surveyor"))
        .args(["install-cni", "--dir"])
        .arg(&bin)
        .arg("--node-config")
        .arg(&node_config)
        .args(["--state-dir", "run/surveyor"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

/// `kubectl kustomize deploy/` renders the whole deployment, as `kubectl
/// apply -k deploy/` would send it.
#[test]
fn kubectl_kustomize_renders_the_deployment() {
    let found = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("kubectl").is_file()));
    assert!(
        found,
        "this test needs kubectl (with kustomize built in) on PATH"
    );
    let out = std::process::Command::new("kubectl")
        .args(["kustomize"])
        .arg(root().join("deploy"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let objects: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
    let objects: Vec<Value> = objects.into_iter().filter(|o| !o.is_null()).collect();
    let kinds: std::collections::BTreeSet<&str> = objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap())
        .collect();
    for kind in [
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "DaemonSet",
        "Deployment",
        "Service",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ] {
        assert!(kinds.contains(kind), "{kind} missing from {kinds:?}");
    }
    // Every namespaced object lands in surveyor, with the tagged image.
    for o in &objects {
        let cluster_scoped = [
            "Namespace",
            "ClusterRole",
            "ClusterRoleBinding",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
        ]
        .contains(&o["kind"].as_str().unwrap());
        if cluster_scoped {
            assert!(o["metadata"].get("namespace").is_none(), "{o}");
        } else {
            assert_eq!(
                o["metadata"]["namespace"], "surveyor",
                "{}",
                o["metadata"]["name"]
            );
        }
    }
    for workload in objects
        .iter()
        .filter(|o| o["kind"] == "DaemonSet" || o["kind"] == "Deployment")
    {
        let pod = &workload["spec"]["template"]["spec"];
        let init = pod["initContainers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for c in pod["containers"].as_array().unwrap().iter().chain(&init) {
            assert_eq!(c["image"], "localhost/surveyor:0.1.0", "{}", c["name"]);
        }
    }
    // And it is what the files say.
    assert_eq!(objects.len(), deployed().len());
}

/// The binary that `install-cni` puts on hosts runs on any of them: no
/// dynamic loader (no INTERP, so no glibc version to match) and position
/// independent (ASLR for a root process fed tenant input).
#[test]
fn the_binary_is_static_and_position_independent() {
    let found = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("readelf").is_file()));
    assert!(
        found,
        "this test needs readelf from the Debian package binutils"
    );
    let bin = support::static_binary();
    let readelf = |flag: &str| {
        let out = std::process::Command::new("readelf")
            .args([flag, "-W"])
            .arg(&bin)
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    };
    let segments = readelf("-l");
    assert!(
        !segments.contains("INTERP"),
        "a dynamic loader is named:\n{segments}"
    );
    assert!(
        segments.contains("DYNAMIC"),
        "static-pie keeps its own relocations"
    );
    let header = readelf("-h");
    assert!(
        header
            .lines()
            .any(|l| l.trim_start().starts_with("Type:") && l.contains("DYN")),
        "not position independent:\n{header}"
    );
    let dynamic = readelf("-d");
    assert!(
        !dynamic.contains("(NEEDED)"),
        "needs shared libraries:\n{dynamic}"
    );
}

/// The DRA component over deploy/ (an overlay as a user writes it):
/// `--dra` for the agent and the controller, the kubelet's directories
/// mounted where the agent's defaults look, and arguments the binary
/// takes. The DRA samples reference what Surveyor creates.
#[test]
fn the_dra_component_and_samples() {
    let overlay = tempfile::tempdir().unwrap();
    let deploy = root().join("deploy");
    // Kustomize takes relative paths only: up to / from the overlay.
    let up = "../".repeat(overlay.path().components().count() - 1);
    let relative = format!(
        "{up}{}",
        deploy.display().to_string().trim_start_matches('/')
    );
    std::fs::write(
        overlay.path().join("kustomization.yaml"),
        format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [{relative}]\ncomponents: [{relative}/dra]\n"
        ),
    )
    .unwrap();
    let out = std::process::Command::new("kubectl")
        .arg("kustomize")
        .arg(overlay.path())
        .output()
        .expect("this test needs kubectl (with kustomize built in) on PATH");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let objects: Vec<Value> =
        serde_saphyr::from_multiple(&String::from_utf8(out.stdout).unwrap()).unwrap();
    let workload = |kind: &str| {
        objects
            .iter()
            .find(|o| o["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind}"))["spec"]["template"]["spec"]
            .clone()
    };
    let agent_pod = workload("DaemonSet");
    let controller_pod = workload("Deployment");
    for pod in [&agent_pod, &controller_pod] {
        let args = accepted_args(&pod["containers"][0]);
        assert!(args.iter().any(|a| a == "--dra"), "{args:?}");
    }
    let mounts: Vec<&str> = agent_pod["containers"][0]["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["mountPath"].as_str().unwrap())
        .collect();
    for dir in [
        surveyor::kubelet::DEFAULT_PLUGINS_DIR,
        surveyor::kubelet::DEFAULT_REGISTRY_DIR,
    ] {
        assert!(mounts.contains(&dir), "{dir} not mounted: {mounts:?}");
        let on_host = agent_pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["hostPath"]["path"] == dir);
        assert!(on_host, "{dir} is not the host's");
    }

    // Samples: the claim names the controller's class for the sample map,
    // the NAD the resource the devices carry, the pod both.
    let dir = deploy.join("samples");
    let map_text = std::fs::read_to_string(dir.join("networkmap-green.yaml")).unwrap();
    let network = surveyor::network_map::parse_documents(&map_text).unwrap()[0]
        .metadata
        .name
        .clone()
        .unwrap();
    let samples = docs(&dir.join("dra-claim-green.yaml"));
    let find = |kind: &str| samples.iter().find(|o| o["kind"] == kind).unwrap();
    let template = find("ResourceClaimTemplate");
    let request = &template["spec"]["spec"]["devices"]["requests"][0]["exactly"];
    assert_eq!(
        request["deviceClassName"],
        surveyor::dra::class_name(&network)
    );
    let asked: surveyor::dra::Bandwidth = request["capacity"]["requests"]["bandwidth"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(asked >= surveyor::dra::Policy::default().min);
    let nad = find("NetworkAttachmentDefinition");
    assert_eq!(
        nad["metadata"]["annotations"]["k8s.v1.cni.cncf.io/resourceName"],
        surveyor::dra::resource_name(&network)
    );
    let conf =
        surveyor::cni::config::NetConf::parse(nad["spec"]["config"].as_str().unwrap().as_bytes())
            .unwrap();
    assert_eq!(conf.network, network);
    let pod = find("Pod");
    assert_eq!(
        pod["metadata"]["annotations"]["k8s.v1.cni.cncf.io/networks"],
        nad["metadata"]["name"]
    );
    assert_eq!(
        pod["spec"]["resourceClaims"][0]["resourceClaimTemplateName"],
        template["metadata"]["name"]
    );
    assert_eq!(
        pod["spec"]["containers"][0]["resources"]["claims"][0]["name"],
        pod["spec"]["resourceClaims"][0]["name"]
    );
}

/// deploy/uninstall: the Job's role grants exactly what `uninstall
/// cluster` asks; the DaemonSet has no API access, mounts the host
/// directories where `uninstall node`'s defaults look (their parents, so
/// Surveyor's own directories can go), and both run arguments the binary
/// takes, from the same image as deploy/.
#[test]
fn the_uninstall_kustomization_cleans_what_the_code_says_with_what_rbac_grants() {
    let out = std::process::Command::new("kubectl")
        .arg("kustomize")
        .arg(root().join("deploy/uninstall"))
        .output()
        .expect("this test needs kubectl (with kustomize built in) on PATH");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let objects: Vec<Value> =
        serde_saphyr::from_multiple(&String::from_utf8(out.stdout).unwrap()).unwrap();
    let objects: Vec<Value> = objects.into_iter().filter(|o| !o.is_null()).collect();
    let sa = named(&objects, "ServiceAccount", "surveyor-uninstall");
    let role = bound_role(&objects, "ClusterRoleBinding", sa, "surveyor-uninstall");
    let crds = ["networkmaps.surveyor.dev", "nodesurveys.surveyor.dev"];
    assert_grants_exactly(
        &[role],
        surveyor::uninstall::cluster::API_REQUESTS,
        "uninstall",
        &crds,
    );
    let job = named(&objects, "Job", "surveyor-uninstall");
    let job_pod = &job["spec"]["template"]["spec"];
    assert_eq!(job_pod["serviceAccountName"], "surveyor-uninstall");
    let args = accepted_args(&job_pod["containers"][0]);
    let ns = &args[args.iter().position(|a| a == "--namespace").unwrap() + 1];
    let deployed_ns = find(&deployed(), "Namespace")[0]["metadata"]["name"].clone();
    assert_eq!(ns.as_str(), deployed_ns, "the workloads' namespace");

    let ds = named(&objects, "DaemonSet", "surveyor-uninstall");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["automountServiceAccountToken"], false);
    let init = &pod["initContainers"][0];
    assert_eq!(accepted_args(init), ["uninstall", "node"]);
    assert_eq!(accepted_args(&pod["containers"][0]), ["uninstall", "wait"]);
    let mounts: Vec<(String, String)> = init["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let vol = pod["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["name"] == m["name"])
                .unwrap();
            (
                m["mountPath"].as_str().unwrap().to_string(),
                vol["hostPath"]["path"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let cli = surveyor::cli::Cli::try_parse_from(["surveyor", "uninstall", "node"]).unwrap();
    let surveyor::cli::Command::Uninstall(u) = cli.command else {
        panic!("not uninstall");
    };
    let surveyor::cli::uninstall::What::Node(paths) = u.what else {
        panic!("not node");
    };
    for (default, on_host) in [
        (&paths.cni_bin_dir, "/opt/cni/bin"),
        (
            &paths.node_config,
            "/etc/cni/net.d/surveyor.d/surveyor.json",
        ),
        (&paths.state_dir, "/run/surveyor"),
        (&paths.cache_dir, "/var/lib/cni/surveyor"),
        (
            &paths.kubelet_plugins_dir,
            surveyor::kubelet::DEFAULT_PLUGINS_DIR,
        ),
        (
            &paths.kubelet_registry_dir,
            surveyor::kubelet::DEFAULT_REGISTRY_DIR,
        ),
    ] {
        let default = default.to_str().unwrap();
        let covered = mounts.iter().any(|(at, host)| {
            default
                .strip_prefix(at.as_str())
                .is_some_and(|rest| format!("{host}{rest}") == on_host)
        });
        assert!(
            covered,
            "{default} is not {on_host} on the host: {mounts:?}"
        );
    }
    for c in [&job_pod["containers"][0], init, &pod["containers"][0]] {
        assert_eq!(c["image"], "localhost/surveyor:0.1.0");
        assert_eq!(
            c["securityContext"]["capabilities"]["drop"],
            serde_json::json!(["ALL"])
        );
        assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    }
}

/// The admission policy that keeps each agent to its own node, evaluated
/// with a CEL implementation other than the apiserver's (cel-interpreter)
/// on the requests an agent makes: for its own node allowed, for another
/// node (or with a token bound to none) denied saying which node; other
/// users are not its business. It covers every write the agent makes to
/// NodeSurveys and ResourceSlices, and names the deployed service account.
#[test]
fn the_admission_policy_lets_an_agent_write_its_own_node_only() {
    use cel_interpreter::{Context, Program, Value as Cel};
    use serde_json::json;
    let objects = deployed();
    let policy = named(
        &objects,
        "ValidatingAdmissionPolicy",
        "surveyor-agent-own-node",
    );
    let binding = named(
        &objects,
        "ValidatingAdmissionPolicyBinding",
        "surveyor-agent-own-node",
    );
    assert_eq!(binding["spec"]["policyName"], "surveyor-agent-own-node");
    assert_eq!(binding["spec"]["validationActions"], json!(["Deny"]));
    let spec = &policy["spec"];
    assert_eq!(spec["failurePolicy"], "Fail");
    // Every write the agent makes to the two resources is matched.
    let rules = spec["matchConstraints"]["resourceRules"]
        .as_array()
        .unwrap();
    for (group, resource, verbs) in API_REQUESTS {
        let base = resource.split('/').next().unwrap();
        if base != "nodesurveys" && base != "resourceslices" {
            continue;
        }
        for verb in verbs
            .iter()
            .filter(|v| ["create", "patch", "update", "delete"].contains(v))
        {
            let ops: &[&str] = match *verb {
                "create" => &["CREATE"],
                "delete" => &["DELETE"],
                // A patch (an apply) creates or updates.
                _ => &["CREATE", "UPDATE"],
            };
            let covered = rules.iter().any(|r| {
                let has = |k: &str, v: &str| r[k].as_array().unwrap().iter().any(|x| x == v);
                has("apiGroups", group)
                    && has("resources", resource)
                    && ops.iter().all(|op| has("operations", op))
            });
            assert!(covered, "{verb} {group}/{resource} is not checked");
        }
    }
    let sa = named(&objects, "ServiceAccount", "surveyor-agent");
    let username = format!(
        "system:serviceaccount:{}:{}",
        sa["metadata"]["namespace"].as_str().unwrap(),
        sa["metadata"]["name"].as_str().unwrap()
    );

    let compile = |e: &Value| {
        Program::compile(e.as_str().unwrap()).unwrap_or_else(|err| panic!("{e}: {err:?}"))
    };
    let conditions: Vec<Program> = spec["matchConditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| compile(&c["expression"]))
        .collect();
    let variables: Vec<(String, Program)> = spec["variables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["name"].as_str().unwrap().to_string(),
                compile(&v["expression"]),
            )
        })
        .collect();
    let validations: Vec<(Program, Program)> = spec["validations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            let message = v.get("messageExpression").cloned().unwrap_or_else(|| {
                json!(format!(
                    "'{}'",
                    v["message"].as_str().unwrap().replace('\'', "\\'")
                ))
            });
            (compile(&v["expression"]), compile(&message))
        })
        .collect();

    // None: not the policy's business; Some(Ok): allowed; Some(Err(why)).
    let admit = |request: Value, object: Value, old: Value| -> Option<Result<(), String>> {
        let mut ctx = Context::default();
        ctx.add_variable("request", request).unwrap();
        ctx.add_variable("object", object).unwrap();
        ctx.add_variable("oldObject", old).unwrap();
        let truth = |p: &Program, ctx: &Context| match p.execute(ctx) {
            Ok(Cel::Bool(b)) => b,
            other => panic!("not a bool: {other:?}"),
        };
        if !conditions.iter().all(|c| truth(c, &ctx)) {
            return None;
        }
        let mut vars = std::collections::HashMap::new();
        for (name, program) in &variables {
            let mut scope = ctx.new_inner_scope();
            scope.add_variable("variables", vars.clone()).unwrap();
            let value = match program.execute(&scope).unwrap() {
                Cel::String(s) => s.to_string(),
                other => panic!("{name}: {other:?}"),
            };
            vars.insert(name.clone(), value);
        }
        ctx.add_variable("variables", vars).unwrap();
        for (expression, message) in &validations {
            if !truth(expression, &ctx) {
                let why = match message.execute(&ctx) {
                    Ok(Cel::String(s)) => s.to_string(),
                    other => panic!("message: {other:?}"),
                };
                return Some(Err(why));
            }
        }
        Some(Ok(()))
    };
    let request = |user: &str, node: Option<&str>, op: &str, resource: &str, name: &str| {
        let extra = match node {
            Some(n) => json!({"authentication.kubernetes.io/node-name": [n]}),
            None => json!({}),
        };
        json!({"operation": op, "name": name,
            "resource": {"group": "", "version": "v1alpha1", "resource": resource},
            "userInfo": {"username": user, "extra": extra}})
    };
    let slice = |node: &str| json!({"spec": {"nodeName": node, "driver": "surveyor.dev"}});
    let agent = username.as_str();

    // Its own NodeSurvey and status: allowed; another node's: denied.
    let survey = json!({"metadata": {"name": "node-a"}});
    // (A status write is resource nodesurveys, subresource status.)
    assert_eq!(
        admit(
            request(agent, Some("node-a"), "UPDATE", "nodesurveys", "node-a"),
            survey.clone(),
            survey.clone()
        ),
        Some(Ok(()))
    );
    assert_eq!(
        admit(
            request(agent, Some("node-a"), "CREATE", "nodesurveys", "node-a"),
            survey.clone(),
            Value::Null
        ),
        Some(Ok(()))
    );
    let denied = admit(
        request(agent, Some("node-a"), "UPDATE", "nodesurveys", "node-b"),
        survey.clone(),
        survey.clone(),
    );
    assert_eq!(
        denied,
        Some(Err(
            "surveyor-agent on node node-a may write NodeSurvey node-a only, not node-b".into()
        ))
    );
    // Slices: create, update, delete of its node's; nothing of another's,
    // nor moving one between nodes.
    let name = "node-a-surveyor.dev";
    assert_eq!(
        admit(
            request(agent, Some("node-a"), "CREATE", "resourceslices", name),
            slice("node-a"),
            Value::Null
        ),
        Some(Ok(()))
    );
    assert_eq!(
        admit(
            request(agent, Some("node-a"), "UPDATE", "resourceslices", name),
            slice("node-a"),
            slice("node-a")
        ),
        Some(Ok(()))
    );
    assert_eq!(
        admit(
            request(agent, Some("node-a"), "DELETE", "resourceslices", name),
            Value::Null,
            slice("node-a")
        ),
        Some(Ok(()))
    );
    for (op, object, old) in [
        ("CREATE", slice("node-b"), Value::Null),
        ("UPDATE", slice("node-a"), slice("node-b")),
        ("UPDATE", slice("node-b"), slice("node-a")),
        ("DELETE", Value::Null, slice("node-b")),
        (
            "CREATE",
            json!({"spec": {"driver": "surveyor.dev"}}),
            Value::Null,
        ),
    ] {
        let got = admit(
            request(
                agent,
                Some("node-a"),
                op,
                "resourceslices",
                "node-b-surveyor.dev",
            ),
            object.clone(),
            old.clone(),
        );
        let Some(Err(why)) = got else {
            panic!("{op} {object} (was {old}) allowed: {got:?}");
        };
        assert!(
            why.contains("on node node-a may write only the ResourceSlices of node node-a"),
            "{why}"
        );
    }
    // A token bound to no node writes nothing.
    let Some(Err(why)) = admit(
        request(agent, None, "UPDATE", "nodesurveys", "node-a"),
        survey.clone(),
        survey.clone(),
    ) else {
        panic!("a token without a node was let through");
    };
    assert!(why.contains("bound to no node"), "{why}");
    // Anyone else (the controller, an admin) is not this policy's matter.
    for user in [
        "system:serviceaccount:surveyor:surveyor-controller",
        "kubernetes-admin",
    ] {
        assert_eq!(
            admit(
                request(user, None, "UPDATE", "nodesurveys", "node-b"),
                survey.clone(),
                survey.clone()
            ),
            None
        );
    }
}
