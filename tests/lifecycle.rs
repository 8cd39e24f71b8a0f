//! The standalone agent's day 2: restarts (kill -9 and SIGTERM), a full
//! state dir, hostile or half-written map files, a second agent, planted
//! symlinks, links enslaved to a bridge.

mod support;

use std::io::Write as _;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use support::{AgentProcess, Lldpd, Netns, lldp_map};

/// The agent surveying the veths `sv-*` as NICs, without LLDP.
const NO_LLDP: [&str; 3] = ["--no-lldp", "--include", "sv-*"];

const GREEN_SV: &str = "apiVersion: surveyor.dev/v1alpha1\nkind: NetworkMap\nmetadata: {name: green}\nspec: {match: {names: ['sv-*']}}\n";

/// The acceptance scenario: a switch with lldpd's defaults (a frame every
/// 30 s, TTL 120 s), `kill -9`, a restart: green is never unresolved,
/// sampled every 50 ms from the kill to 40 s after the restart.
#[test]
fn a_restart_keeps_lldp_knowledge_and_never_unresolves() {
    let node = Netns::new("restart");
    let sw = Netns::new("restart-sw");
    support::cable(&node, "sv-g", &sw, "swp1");
    // The agent listens first: lldpd sends at start, then every 30 s.
    let maps = [("green.yaml", lldp_map("green", "tor-green-*"))];
    let maps: Vec<(&str, &str)> = maps.iter().map(|(n, t)| (*n, t.as_str())).collect();
    let mut agent = AgentProcess::start(&node, &maps, &["--include", "sv-*"]);
    agent.wait_for(10, "first snapshot", |_| true);
    let _lldpd = Lldpd::start_configured(
        &sw,
        "swp1",
        &[],
        &["configure system hostname tor-green-01"],
    );
    agent.wait_for(10, "green on sv-g", |s| {
        s["networks"]["green"]["device"] == "sv-g"
    });
    assert!(agent.state.join("neighbors.json").exists());

    agent.signal(Signal::SIGKILL);
    let sampled = Instant::now();
    agent.restart();
    let restarted = Instant::now();
    let mut samples = 0;
    while restarted.elapsed() < Duration::from_secs(40) {
        let snap = agent.snapshot().expect("networks.json");
        assert_eq!(
            snap["networks"]["green"]["device"],
            "sv-g",
            "unresolved {:?} after the kill: {snap}\n{}",
            sampled.elapsed(),
            agent.log()
        );
        samples += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(samples > 700, "{samples} samples");
    assert!(
        agent
            .log()
            .contains("restored 1 neighbor(s) from neighbors.json"),
        "{}",
        agent.log()
    );
}

/// An agent stopped for longer than the neighbor's TTL does not believe
/// the saved neighbor: it is gone until heard again.
#[test]
fn a_neighbor_that_expired_while_the_agent_was_down_is_heard_again_first() {
    let node = Netns::new("expired");
    let (_sw, lldpd) = support::switch(
        &node,
        "sv-g",
        "tor-green-01",
        "Ethernet1/7",
        &["configure lldp tx-hold 3"], // TTL 3 s
    );
    let maps = [("green.yaml", lldp_map("green", "tor-green-*"))];
    let maps: Vec<(&str, &str)> = maps.iter().map(|(n, t)| (*n, t.as_str())).collect();
    let mut agent = AgentProcess::start(&node, &maps, &["--include", "sv-*"]);
    agent.wait_for(10, "green on sv-g", |s| {
        s["networks"]["green"]["device"] == "sv-g"
    });
    // A clean stop saves the table with its expiries; the switch falls
    // silent, and the TTL runs out while the agent is away.
    assert!(agent.signal(Signal::SIGTERM).success());
    lldpd.freeze(true);
    std::thread::sleep(Duration::from_secs(4));
    agent.restart();
    let snap = agent.wait_for(5, "green unresolved", |s| {
        s["networks"]["green"]["device"].is_null()
    });
    assert!(
        snap["networks"]["green"]["reason"]
            .as_str()
            .unwrap()
            .contains("no neighbor"),
        "{snap}"
    );
    lldpd.freeze(false);
    agent.wait_for(5, "green heard again", |s| {
        s["networks"]["green"]["device"] == "sv-g"
    });
}

/// The state dir on a 64 KiB tmpfs filled to the brim while links flap:
/// the agent keeps running, networks.json is always whole with the last
/// good content, and it catches up once space is freed.
#[test]
fn a_full_state_dir_keeps_the_last_good_files_and_catches_up() {
    let node = Netns::new("full");
    let peer = Netns::new("full-p");
    support::cable(&node, "sv-a", &peer, "p0");
    support::cable(&node, "sv-b", &peer, "p1");
    let fs = support::Tmpfs::new(64);
    let state = fs.path.join("state");
    let dir = tempfile::tempdir().unwrap();
    let agent = AgentProcess::start_with_state(
        &node,
        dir,
        state.clone(),
        &[("green.yaml", GREEN_SV)],
        &NO_LLDP,
    );
    let good = agent.wait_for(10, "green on sv-a", |s| {
        s["networks"]["green"]["device"] == "sv-a"
    });
    fs.fill();
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let reader = {
        let (stop, reads, path) = (stop.clone(), reads.clone(), state.join("networks.json"));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let bytes = std::fs::read(&path).expect("networks.json is always there");
                let v: serde_json::Value = serde_json::from_slice(&bytes)
                    .unwrap_or_else(|e| panic!("torn networks.json ({e}): {bytes:?}"));
                assert!(v["networks"]["green"].is_object());
                reads.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    for n in 0..20 {
        node.ip(&[
            "link",
            "set",
            "sv-a",
            if n % 2 == 0 { "down" } else { "up" },
        ]);
        std::thread::sleep(Duration::from_millis(20));
    }
    node.ip(&["link", "set", "sv-a", "down"]);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(agent.snapshot().unwrap(), good, "the last good file stands");
    assert!(
        agent.log().contains("No space left on device"),
        "{}",
        agent.log()
    );
    fs.free();
    agent.wait_for(10, "caught up: green on sv-b", |s| {
        s["networks"]["green"]["device"] == "sv-b"
    });
    stop.store(true, Ordering::Relaxed);
    reader.join().unwrap();
    assert!(reads.load(Ordering::Relaxed) > 100);
    // And says so: Degraded clears once the files are written again.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let survey: serde_json::Value =
            serde_json::from_slice(&std::fs::read(state.join("survey.json")).unwrap()).unwrap();
        let degraded = &survey["conditions"][2];
        if degraded["status"] == "False" {
            break;
        }
        assert!(Instant::now() < deadline, "still degraded: {degraded}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // No temp file was left to eat the space.
    let names: Vec<String> = std::fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
}

/// `kill -9` at random moments during 1000 link flaps, with a reader
/// parsing networks.json in a tight loop: no torn read, ever; the restarted
/// agent comes back to the state of the links.
#[test]
fn kill_9_during_flaps_never_shows_a_reader_a_torn_file() {
    let node = Netns::new("kill9");
    let peer = Netns::new("kill9-p");
    for n in 0..4 {
        support::cable(&node, &format!("sv-{n}"), &peer, &format!("p{n}"));
    }
    let mut agent = AgentProcess::start(&node, &[("green.yaml", GREEN_SV)], &NO_LLDP);
    agent.wait_for(10, "a snapshot", |s| s["networks"]["green"].is_object());
    let path = agent.state.join("networks.json");
    let stop = Arc::new(AtomicBool::new(false));
    let (reads, torn) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let reader = {
        let (stop, reads, torn, path) = (stop.clone(), reads.clone(), torn.clone(), path.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match std::fs::read(&path) {
                    Ok(bytes) if serde_json::from_slice::<serde_json::Value>(&bytes).is_ok() => {
                        reads.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        torn.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
    };
    let churn = {
        let ns = node.name.clone();
        std::thread::spawn(move || {
            for n in 0..1000 {
                let state = if (n / 4) % 2 == 0 { "down" } else { "up" };
                support::ip_in(&ns, &["link", "set", &format!("sv-{}", n % 4), state]);
            }
        })
    };
    let mut rng = 0x5eed_u64;
    let mut kills = 0;
    while !churn.is_finished() {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_millis(50 + rng % 250));
        agent.signal(Signal::SIGKILL);
        kills += 1;
        agent.restart();
        agent.wait_for(10, "running again", |_| true);
    }
    churn.join().unwrap();
    // Every link ends up: sv-0..3 each set by its last flap.
    let ups: Vec<String> = (0..4)
        .filter(|i| ((996 + i) / 4) % 2 == 1)
        .map(|i| format!("sv-{i}"))
        .collect();
    agent.wait_for(10, "consistent with the links", |s| {
        let first = s["networks"]["green"]["candidates"][0]
            .as_str()
            .unwrap_or("");
        ups.is_empty() || ups.iter().any(|u| u == first)
    });
    stop.store(true, Ordering::Relaxed);
    reader.join().unwrap();
    assert!(kills >= 3, "{kills} kills");
    assert_eq!(torn.load(Ordering::Relaxed), 0, "torn or missing reads");
    assert!(reads.load(Ordering::Relaxed) > 1000);
}

/// A FIFO and a symlink to /dev/zero in the maps dir are refused without
/// blocking the loop or eating memory.
#[test]
fn fifos_and_devices_in_the_maps_dir_do_not_stop_the_agent() {
    let node = Netns::new("fifo");
    let peer = Netns::new("fifo-p");
    support::cable(&node, "sv-a", &peer, "p0");
    support::cable(&node, "sv-b", &peer, "p1");
    let agent = AgentProcess::start(&node, &[("green.yaml", GREEN_SV)], &NO_LLDP);
    agent.wait_for(10, "green on sv-a", |s| {
        s["networks"]["green"]["device"] == "sv-a"
    });
    nix::unistd::mkfifo(&agent.maps.join("fifo.yaml"), nix::sys::stat::Mode::S_IRWXU).unwrap();
    std::os::unix::fs::symlink("/dev/zero", agent.maps.join("zero.yaml")).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // The loop still runs: a link change reaches the snapshot.
    node.ip(&["link", "set", "sv-a", "down"]);
    agent.wait_for(5, "green moves to sv-b", |s| {
        s["networks"]["green"]["device"] == "sv-b"
    });
    let log = agent.log();
    assert!(log.contains("fifo.yaml: a FIFO"), "{log}");
    assert!(log.contains("zero.yaml: a device"), "{log}");
}

/// A map file rewritten in place (truncated, then written; or written in
/// pieces) never loses its network while the write is in progress.
#[test]
fn a_map_file_rewritten_in_place_keeps_its_network() {
    let node = Netns::new("inplace");
    let peer = Netns::new("inplace-p");
    support::cable(&node, "sv-a", &peer, "p0");
    let agent = AgentProcess::start(&node, &[("green.yaml", GREEN_SV)], &NO_LLDP);
    agent.wait_for(10, "green on sv-a", |s| {
        s["networks"]["green"]["device"] == "sv-a"
    });
    let stop = Arc::new(AtomicBool::new(false));
    let misses = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (stop, misses, path) = (
            stop.clone(),
            misses.clone(),
            agent.state.join("networks.json"),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let v: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
                if v["networks"]["green"]["device"] != "sv-a" {
                    misses.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let file = agent.maps.join("green.yaml");
    let (head, tail) = GREEN_SV.split_at(GREEN_SV.len() / 2);
    for _ in 0..5 {
        // `cat > green.yaml` from a slow writer: truncate, pieces, close.
        let mut f = std::fs::File::create(&file).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        f.write_all(head.as_bytes()).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        f.write_all(tail.as_bytes()).unwrap();
        drop(f);
        std::thread::sleep(Duration::from_millis(100));
        // A tool that truncates and closes, then writes in a second open.
        drop(std::fs::File::create(&file).unwrap());
        std::thread::sleep(Duration::from_millis(300));
        std::fs::write(&file, GREEN_SV).unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    assert_eq!(misses.load(Ordering::Relaxed), 0, "{}", agent.log());
    // Emptied for good: gone after the grace.
    std::fs::write(&file, "").unwrap();
    agent.wait_for(5, "green removed", |s| s["networks"].get("green").is_none());
}

/// The maps dir removed: no maps (the agent keeps running and says so);
/// back: its maps again.
#[test]
fn the_maps_dir_can_go_and_come_back() {
    let node = Netns::new("mapsdir");
    let peer = Netns::new("mapsdir-p");
    support::cable(&node, "sv-a", &peer, "p0");
    let mut agent = AgentProcess::start(&node, &[("green.yaml", GREEN_SV)], &NO_LLDP);
    agent.wait_for(10, "green", |s| s["networks"]["green"].is_object());
    std::fs::remove_dir_all(&agent.maps).unwrap();
    agent.wait_for(5, "no maps", |s| s["networks"].get("green").is_none());
    assert!(agent.log().contains("is gone"), "{}", agent.log());
    std::fs::create_dir(&agent.maps).unwrap();
    std::fs::write(agent.maps.join("green.yaml"), GREEN_SV).unwrap();
    agent.wait_for(5, "green back", |s| {
        s["networks"]["green"]["device"] == "sv-a"
    });
    // Still answering SIGTERM, i.e. alive all along.
    assert!(agent.signal(Signal::SIGTERM).success());
}

/// A second agent on the same state dir fails at start naming the dir and
/// the holder's PID; temp files are its own, never a planted symlink.
#[test]
fn one_agent_per_state_dir_and_no_write_through_a_planted_symlink() {
    let node = Netns::new("twice");
    let peer = Netns::new("twice-p");
    support::cable(&node, "sv-a", &peer, "p0");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "keep me").unwrap();
    for name in [".networks.json.tmp", ".survey.json.tmp", ".maps.json.tmp"] {
        std::os::unix::fs::symlink(&victim, state.join(name)).unwrap();
    }
    let maps_dir = tempfile::tempdir().unwrap();
    let agent = AgentProcess::start_with_state(
        &node,
        maps_dir,
        state.clone(),
        &[("green.yaml", GREEN_SV)],
        &NO_LLDP,
    );
    agent.wait_for(10, "green", |s| s["networks"]["green"]["device"] == "sv-a");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");

    let second = agent.command().output().unwrap();
    assert_eq!(second.status.code(), Some(1));
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        err.contains(&state.display().to_string())
            && err.contains(&format!("pid {}", agent.pid()))
            && err.contains("another surveyor agent"),
        "{err}"
    );
    // The first one is untouched by the attempt.
    node.ip(&["link", "set", "sv-a", "mtu", "1400"]);
    agent.wait_for(5, "still running", |_| {
        std::fs::read_to_string(state.join("survey.json"))
            .unwrap()
            .contains("\"mtu\": 1400")
    });
}

/// A link enslaved to a bridge cannot carry a macvlan: never the device.
#[test]
fn a_bridge_port_is_passed_over() {
    let node = Netns::new("bridged");
    let peer = Netns::new("bridged-p");
    support::cable(&node, "sv-a", &peer, "p0");
    support::cable(&node, "sv-b", &peer, "p1");
    node.ip(&["link", "add", "br0", "type", "bridge"]);
    node.ip(&["link", "set", "sv-a", "master", "br0"]);
    let agent = AgentProcess::start(&node, &[("green.yaml", GREEN_SV)], &NO_LLDP);
    let snap = agent.wait_for(10, "green on sv-b", |s| {
        s["networks"]["green"]["device"] == "sv-b"
    });
    assert_eq!(
        snap["networks"]["green"]["candidates"],
        serde_json::json!(["sv-b"])
    );
    node.ip(&["link", "set", "sv-b", "master", "br0"]);
    let snap = agent.wait_for(5, "unresolved", |s| {
        s["networks"]["green"]["device"].is_null()
    });
    let reason = snap["networks"]["green"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("sv-a is a port of bridge br0")
            && reason.contains("sv-b is a port of bridge br0"),
        "{reason}"
    );
    node.ip(&["link", "set", "sv-a", "nomaster"]);
    agent.wait_for(5, "sv-a free again", |s| {
        s["networks"]["green"]["device"] == "sv-a"
    });
}

/// A misspelt field in a map file is refused with its path; the network it
/// would have widened never appears.
#[test]
fn a_misspelt_map_field_is_refused_by_path() {
    let node = Netns::new("typo");
    let peer = Netns::new("typo-p");
    support::cable(&node, "sv-a", &peer, "p0");
    let typo = "apiVersion: surveyor.dev/v1alpha1\nkind: NetworkMap\nmetadata: {name: blue}\nspec:\n  match:\n    lldp: {sytemName: 'tor-blue-*'}\n";
    let all = "apiVersion: surveyor.dev/v1alpha1\nkind: NetworkMap\nmetadata: {name: all}\nspec: {match: {}}\n";
    let agent = AgentProcess::start(
        &node,
        &[
            ("green.yaml", GREEN_SV),
            ("blue.yaml", typo),
            ("all.yaml", all),
        ],
        &NO_LLDP,
    );
    let snap = agent.wait_for(10, "green", |s| s["networks"]["green"].is_object());
    assert!(snap["networks"].get("blue").is_none() && snap["networks"].get("all").is_none());
    let log = agent.log();
    assert!(
        log.contains("unknown field spec.match.lldp.sytemName"),
        "{log}"
    );
    assert!(log.contains("spec.match sets no condition"), "{log}");
    let out = Command::new(support::surveyor())
        .args(["resolve", "blue", "--state-dir"])
        .arg(&agent.state)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}
