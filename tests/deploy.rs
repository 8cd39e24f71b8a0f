//! deploy/ and crds/ against the code: CRDs are what `surveyor crds`
//! prints, names and references agree, RBAC covers every request the agent
//! makes, the DaemonSet's arguments are ones the binary accepts, and the
//! samples are valid for Surveyor.

use std::path::{Path, PathBuf};

use clap::Parser as _;
use serde_json::Value;
use surveyor::agent::cluster::API_REQUESTS;
use surveyor::cli::Cli;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every document of a YAML file.
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

#[test]
fn the_kustomization_deploys_crds_rbac_and_the_daemonset_consistently() {
    let objects = deployed();
    let crds: Vec<&str> = find(&objects, "CustomResourceDefinition")
        .iter()
        .map(|c| c["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        crds,
        ["networkmaps.surveyor.dev", "nodesurveys.surveyor.dev"]
    );

    let namespace = find(&objects, "Namespace")[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let sa = find(&objects, "ServiceAccount")[0];
    let ds = find(&objects, "DaemonSet")[0];
    let role = find(&objects, "ClusterRole")[0];
    let binding = find(&objects, "ClusterRoleBinding")[0];
    assert_eq!(sa["metadata"]["namespace"], namespace.as_str());
    assert_eq!(ds["metadata"]["namespace"], namespace.as_str());
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], sa["metadata"]["name"]);
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    assert_eq!(binding["subjects"][0]["name"], sa["metadata"]["name"]);
    assert_eq!(binding["subjects"][0]["namespace"], namespace.as_str());
    assert_eq!(
        ds["spec"]["selector"]["matchLabels"],
        ds["spec"]["template"]["metadata"]["labels"]
    );

    // RBAC grants every request the agent makes (and the CRDs exist for it).
    let rules = role["rules"].as_array().unwrap();
    for (group, resource, verbs) in API_REQUESTS {
        for verb in *verbs {
            let granted = rules.iter().any(|r| {
                let has = |k: &str, v: &str| r[k].as_array().unwrap().iter().any(|x| x == v);
                has("apiGroups", group) && has("resources", resource) && has("verbs", verb)
            });
            assert!(
                granted,
                "the ClusterRole does not grant {verb} on {group}/{resource}"
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
    // Least privilege: nothing beyond what the agent asks.
    for r in rules {
        for verb in r["verbs"].as_array().unwrap() {
            for resource in r["resources"].as_array().unwrap() {
                let asked = API_REQUESTS.iter().any(|(g, res, verbs)| {
                    r["apiGroups"].as_array().unwrap().iter().any(|x| x == g)
                        && resource == res
                        && verbs.contains(&verb.as_str().unwrap())
                });
                assert!(
                    asked,
                    "the ClusterRole grants {verb} on {resource}, which the agent never asks for"
                );
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
        let args: Vec<&str> = c["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        let argv: Vec<&str> = std::iter::once("surveyor")
            .chain(args.iter().copied())
            .collect();
        Cli::try_parse_from(&argv)
            .unwrap_or_else(|e| panic!("{} args {args:?} are not valid: {e}", c["name"]));
    }
    let caps = &agent["securityContext"]["capabilities"];
    assert_eq!(caps["add"], serde_json::json!(["NET_ADMIN", "NET_RAW"]));
    assert_eq!(caps["drop"], serde_json::json!(["ALL"]));
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
    let port: u64 = listen.rsplit(':').next().unwrap().parse().unwrap();
    assert_eq!(agent["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(agent["readinessProbe"]["httpGet"]["port"], port);
    assert_eq!(agent["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(agent["livenessProbe"]["httpGet"]["port"], port);
    assert!(agent["resources"]["requests"].is_object());

    // Host paths: the state dir where the CNI plugin reads it, the plugin
    // directory, the ADD cache.
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
    let dir = init_args[init_args.iter().position(|a| *a == "--dir").unwrap() + 1];
    assert_eq!(mounted(init, bin).as_deref(), Some(dir));
    assert!(
        host(surveyor::cni::config::DEFAULT_CACHE_DIR).is_some(),
        "ADD cache volume"
    );
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
    let label = format!("{}{}", surveyor::agent::cluster::LABEL_PREFIX, map.name);
    assert_eq!(pod["spec"]["nodeSelector"][label.as_str()], "true");
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
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_surveyor"))
        .args(["install-cni", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let installed = dir.path().join("surveyor");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&installed).unwrap().permissions().mode() & 0o777,
        0o755
    );
    assert_eq!(
        std::fs::read(&installed).unwrap(),
        std::fs::read(env!("CARGO_BIN_EXE_surveyor")).unwrap()
    );
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "no temp file left: {names:?}");
}
