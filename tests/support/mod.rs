//! Test support: uniquely named network namespaces that delete themselves,
//! running code or commands inside them, and clear failures when the
//! machine lacks root or a package.
#![allow(dead_code)]

pub mod bench;
pub mod controller;
pub mod fake_api;
pub mod green;
pub mod kubelet;
pub mod pcap;

use std::fs::File;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Fails the test, naming what is missing, unless we are root.
pub fn require_root() {
    if !nix::unistd::geteuid().is_root() {
        panic!("this test needs root (network namespaces); run it as root, e.g. via .ci/run");
    }
}

/// Fails the test unless `program` is installed, naming the package.
pub fn require_program(program: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|p| p.join(program).is_file()))
        .unwrap_or(false);
    if !found {
        panic!(
            "this test needs `{program}` from the Debian package `{package}`: apt-get install -y {package} (.ci/run does)"
        );
    }
}

/// Runs a command and returns its output, failing the test with the
/// command line and stderr when it does not succeed.
pub fn run(program: &str, args: &[&str]) -> Output {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    if !out.status.success() {
        panic!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// `ip -n NS ARGS...` by namespace name (for threads that hold only the
/// name, not the guard).
pub fn ip_in(ns: &str, args: &[&str]) -> Output {
    let mut full = vec!["-n", ns];
    full.extend_from_slice(args);
    run("ip", &full)
}

/// A network namespace that exists for the lifetime of the guard, deleted
/// on drop even when the test panics.
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// A fresh namespace named after the test, this process and a counter,
    /// so parallel tests and leftover runs never collide.
    pub fn new(tag: &str) -> Netns {
        require_root();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("svt-{tag}-{}-{n}", std::process::id());
        run("ip", &["netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// A handle on a namespace another guard owns (not deleted on drop).
    pub fn existing(name: &str) -> std::mem::ManuallyDrop<Netns> {
        std::mem::ManuallyDrop::new(Netns {
            name: name.to_string(),
        })
    }

    /// `ip -n NS ARGS...`
    pub fn ip(&self, args: &[&str]) -> Output {
        ip_in(&self.name, args)
    }

    /// `ip -n NS ARGS...`, returning whether it succeeded.
    pub fn try_ip(&self, args: &[&str]) -> Output {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        Command::new("ip").args(&full).output().expect("run ip")
    }

    /// A command run inside the namespace (`ip netns exec`, which also
    /// mounts a sysfs that shows this namespace).
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    /// Runs `f` on a new thread that has entered this namespace, with a
    /// current-thread tokio runtime. Sockets opened there belong to it.
    pub fn spawn<T, F, Fut>(&self, f: F) -> std::thread::JoinHandle<T>
    where
        T: Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = T>,
    {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            enter(&path);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            rt.block_on(f())
        })
    }

    /// Runs `f` to completion inside the namespace.
    pub fn block_on<T, F, Fut>(&self, f: F) -> T
    where
        T: Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = T>,
    {
        match self.spawn(f).join() {
            Ok(v) => v,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Moves the calling thread into the namespace at `path`.
pub fn enter(path: &str) {
    let file = File::open(path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET)
        .unwrap_or_else(|e| panic!("setns {path}: {e}"));
}

/// Waits (up to 5 s) until link `dev` in `ns` is operationally up: the
/// kernel settles operstate asynchronously (linkwatch), after carrier.
pub fn wait_oper_up(ns: &Netns, dev: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let out = ns.ip(&["-j", "link", "show", "dev", dev]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ip -j output");
        if v[0]["operstate"] == "UP" {
            return;
        }
        if std::time::Instant::now() > deadline {
            panic!("{dev} in {} never came up: {v}", ns.name);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A tmpfs of `kib` KiB mounted on a fresh directory (a full disk on
/// demand), unmounted on drop.
pub struct Tmpfs {
    pub path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    pub fn new(kib: u32) -> Tmpfs {
        require_root();
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("fs");
        std::fs::create_dir(&path).expect("mount point");
        run(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={kib}k"),
                "tmpfs",
                path.to_str().expect("utf-8 path"),
            ],
        );
        Tmpfs { path, _dir: dir }
    }

    /// Fills the file system to the last byte with `filler`.
    pub fn fill(&self) {
        use std::io::Write as _;
        let mut f = File::create(self.path.join("filler")).expect("filler");
        let block = [0u8; 512];
        while f.write_all(&block).is_ok() {}
        let _ = f.write_all(&[0]);
        while f.write_all(&[0]).is_ok() {}
        let _ = f.sync_all();
    }

    pub fn free(&self) {
        std::fs::remove_file(self.path.join("filler")).expect("remove filler");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).output();
    }
}

/// Creates a veth pair `a` in `ns` and `b` in `peer`, both up.
pub fn cable(ns: &Netns, a: &str, peer: &Netns, b: &str) {
    ns.ip(&[
        "link", "add", a, "type", "veth", "peer", "name", b, "netns", &peer.name,
    ]);
    ns.ip(&["link", "set", a, "up"]);
    peer.ip(&["link", "set", b, "up"]);
    wait_oper_up(ns, a);
}

/// The surveyor binary under test.
pub fn surveyor() -> &'static str {
    env!("CARGO_BIN_EXE_surveyor")
}

/// The p-th percentile (0..=100) of `samples`, nearest-rank.
pub fn percentile(samples: &[std::time::Duration], p: f64) -> std::time::Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    if sorted.is_empty() {
        return std::time::Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn median(samples: &[std::time::Duration]) -> std::time::Duration {
    percentile(samples, 50.0)
}

/// Milliseconds with three decimals, for benchmark reports.
pub fn ms(d: std::time::Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

/// Creates `pairs` veth pairs named `{prefix}{n}` / `{peer}{n}` in one
/// `ip -batch` call.
pub fn veth_pairs(ns: &str, prefix: &str, peer: &str, pairs: usize) {
    let batch: String = (0..pairs)
        .map(|n| format!("link add {prefix}{n} type veth peer name {peer}{n}\n"))
        .collect();
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), batch).expect("write batch");
    ip_in(
        ns,
        &["-batch", file.path().to_str().expect("utf-8 temp path")],
    );
}

/// Debian's lldpd acting as a switch (or a receiving host) in a namespace,
/// with its own control socket; killed on drop.
pub struct Lldpd {
    pub ns: String,
    child: Option<std::process::Child>,
    dir: tempfile::TempDir,
}

impl Lldpd {
    /// Starts lldpd on `interfaces` of namespace `ns` with a 1 s transmit
    /// interval and the `config` lines (lldpcli commands). `args` are extra
    /// lldpd flags (`-r` receive-only, ...).
    ///
    /// Configuration goes in a file read before lldpd starts sending:
    /// reconfiguring a running lldpd (tx-interval in particular) sometimes
    /// leaves its transmit timer stalled for a whole default interval.
    pub fn start(ns: &Netns, interfaces: &str, args: &[&str], config: &[&str]) -> Lldpd {
        let mut lines = vec!["configure lldp tx-interval 1"];
        lines.extend_from_slice(config);
        Self::start_configured(ns, interfaces, args, &lines)
    }

    /// [`Lldpd::start`] with exactly `config` (lldpd's own defaults
    /// otherwise: a 30 s transmit interval, TTL 120 s).
    pub fn start_configured(ns: &Netns, interfaces: &str, args: &[&str], config: &[&str]) -> Lldpd {
        require_program("lldpd", "lldpd");
        let dir = tempfile::tempdir().expect("temp dir");
        // lldpd runs lldpcli unprivileged at start-up; it must reach the socket.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("chmod");
        let sock = dir.path().join("lldpd.sock");
        let conf = dir.path().join("lldpd.conf");
        std::fs::write(&conf, config.join("\n") + "\n").expect("write lldpd.conf");
        let log = File::create(dir.path().join("lldpd.log")).expect("log file");
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name, "lldpd", "-d", "-I", interfaces])
            .arg("-u")
            .arg(&sock)
            .arg("-p")
            .arg(dir.path().join("lldpd.pid"))
            .arg("-O")
            .arg(&conf)
            .args(args)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start lldpd");
        let lldpd = Lldpd {
            ns: ns.name.clone(),
            child: Some(child),
            dir,
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !sock.exists() {
            if std::time::Instant::now() > deadline {
                panic!("lldpd did not create its socket: {}", lldpd.log());
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        lldpd
    }

    /// `lldpcli -u SOCK ARGS...`, failing the test when it does.
    pub fn cli(&self, args: &[&str]) -> Output {
        let sock = self.dir.path().join("lldpd.sock");
        let mut full = vec!["-u", sock.to_str().expect("utf-8 path")];
        full.extend_from_slice(args);
        let out = run("lldpcli", &full);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains("unknown command") || stderr.contains("[WARN") {
            panic!("lldpcli {}: {stderr}", args.join(" "));
        }
        out
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("lldpd.log")).unwrap_or_default()
    }

    /// Stops lldpd with SIGTERM: it sends a shutdown (TTL 0) LLDPDU.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = child.wait();
        }
    }

    /// Freezes or thaws lldpd and its unprivileged child (SIGSTOP/SIGCONT):
    /// a switch that falls silent without saying goodbye.
    pub fn freeze(&self, frozen: bool) {
        let signal = if frozen { "-STOP" } else { "-CONT" };
        if let Some(child) = &self.child {
            let pid = child.id().to_string();
            let _ = Command::new("pkill").args([signal, "-P", &pid]).output();
            let _ = Command::new("kill").args([signal, &pid]).output();
        }
    }
}

impl Drop for Lldpd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = child.id().to_string();
            let _ = Command::new("pkill").args(["-KILL", "-P", &pid]).output();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A switch namespace cabled to `node` by a veth (`node_if` on the node,
/// `swp1` on the switch), running lldpd as `hostname` with `port_id` as a
/// locally assigned port ID, plus `config` lines. The switch namespace is
/// returned with lldpd so both live as long as the caller keeps them.
pub fn switch(
    node: &Netns,
    node_if: &str,
    hostname: &str,
    port_id: &str,
    config: &[&str],
) -> (Netns, Lldpd) {
    let sw = Netns::new("sw");
    cable(node, node_if, &sw, "swp1");
    let host = format!("configure system hostname {hostname}");
    let port = format!("configure ports swp1 lldp portidsubtype local {port_id}");
    let mut lines = vec![host.as_str(), port.as_str()];
    lines.extend_from_slice(config);
    let lldpd = Lldpd::start(&sw, "swp1", &[], &lines);
    (sw, lldpd)
}

/// What one finished `surveyor` run cost, from wait4's rusage of it.
pub struct Measured {
    pub wall: std::time::Duration,
    pub cpu: std::time::Duration,
    pub max_rss_kib: i64,
}

/// Runs `surveyor ARGS` inside namespace `ns` (stdout and stderr
/// discarded) and measures it. `ip netns exec` execs surveyor, so the
/// child measured is surveyor itself. Note that a child inherits the
/// peak RSS of the process it was forked from: measure RSS early, while
/// the calling process is small.
// Reaped by wait4 below, which clippy cannot see.
#[allow(clippy::zombie_processes)]
pub fn measure(ns: &str, args: &[&str]) -> Measured {
    let started = std::time::Instant::now();
    let child = Command::new("ip")
        .args(["netns", "exec", ns, surveyor()])
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn surveyor");
    let pid = child.id() as nix::libc::pid_t;
    let mut status = 0;
    // SAFETY: plain FFI call with valid out-pointers; reaping the child here
    // (not through `Child::wait`) is what yields its own rusage.
    let mut usage: nix::libc::rusage = unsafe { std::mem::zeroed() };
    let got = unsafe { nix::libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(got, pid, "wait4 failed");
    assert_eq!(status, 0, "surveyor {} failed", args.join(" "));
    let tv = |t: nix::libc::timeval| {
        std::time::Duration::from_secs(t.tv_sec as u64)
            + std::time::Duration::from_micros(t.tv_usec as u64)
    };
    Measured {
        wall: started.elapsed(),
        cpu: tv(usage.ru_utime) + tv(usage.ru_stime),
        max_rss_kib: usage.ru_maxrss,
    }
}

/// `surveyor agent --standalone` (or, with a kubeconfig, in a cluster)
/// running in a namespace, killed on drop.
pub struct AgentProcess {
    child: Option<std::process::Child>,
    pub state: std::path::PathBuf,
    pub maps: std::path::PathBuf,
    log: std::path::PathBuf,
    ns: String,
    extra: Vec<String>,
    /// Cluster mode: the API's kubeconfig instead of --standalone.
    kubeconfig: Option<std::path::PathBuf>,
    /// The binary, with what runs it (qemu); the test build by default.
    program: Vec<String>,
    _dir: tempfile::TempDir,
}

impl AgentProcess {
    /// Starts the agent in `ns` with maps dir and state dir of its own;
    /// `maps` are (file name, content) written before it starts.
    /// The state dir lives on tmpfs (/dev/shm) when there is one, as
    /// /run/surveyor does on a node.
    pub fn start(ns: &Netns, maps: &[(&str, &str)], extra: &[&str]) -> AgentProcess {
        let dir = tempfile::Builder::new()
            .prefix("surveyor-agent")
            .tempdir_in("/dev/shm")
            .or_else(|_| tempfile::tempdir())
            .expect("temp dir");
        let state = dir.path().join("state");
        Self::start_with_state(ns, dir, state, maps, extra)
    }

    /// [`AgentProcess::start`] with the state dir at `state` (which may be
    /// a test's own mount); `dir` holds the maps dir and the log.
    pub fn start_with_state(
        ns: &Netns,
        dir: tempfile::TempDir,
        state: std::path::PathBuf,
        maps: &[(&str, &str)],
        extra: &[&str],
    ) -> AgentProcess {
        let (maps_dir, log) = (dir.path().join("maps"), dir.path().join("agent.log"));
        std::fs::create_dir(&maps_dir).expect("maps dir");
        for (name, text) in maps {
            std::fs::write(maps_dir.join(name), text).expect("write map");
        }
        let mut agent = AgentProcess {
            child: None,
            state,
            maps: maps_dir,
            log,
            ns: ns.name.clone(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            kubeconfig: None,
            program: vec![surveyor().to_string()],
            _dir: dir,
        };
        agent.restart();
        agent
    }

    /// [`AgentProcess::start`] of another program: `program` is the
    /// command that runs the binary (`qemu-aarch64-static PATH`).
    pub fn start_program(
        ns: &Netns,
        program: &[&str],
        maps: &[(&str, &str)],
        extra: &[&str],
    ) -> AgentProcess {
        let dir = tempfile::tempdir().expect("temp dir");
        let state = dir.path().join("state");
        let (maps_dir, log) = (dir.path().join("maps"), dir.path().join("agent.log"));
        std::fs::create_dir(&maps_dir).expect("maps dir");
        for (name, text) in maps {
            std::fs::write(maps_dir.join(name), text).expect("write map");
        }
        let mut agent = AgentProcess {
            child: None,
            state,
            maps: maps_dir,
            log,
            ns: ns.name.clone(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            kubeconfig: None,
            program: program.iter().map(|s| s.to_string()).collect(),
            _dir: dir,
        };
        agent.restart();
        agent
    }

    /// The agent in cluster mode against the API of `kubeconfig` (maps
    /// from the API), with its own state dir.
    pub fn start_cluster(ns: &Netns, kubeconfig: &std::path::Path, extra: &[&str]) -> AgentProcess {
        let dir = tempfile::tempdir().expect("temp dir");
        let (maps, log) = (dir.path().join("maps"), dir.path().join("agent.log"));
        let mut agent = AgentProcess {
            child: None,
            state: dir.path().join("state"),
            maps,
            log,
            ns: ns.name.clone(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            kubeconfig: Some(kubeconfig.to_path_buf()),
            program: vec![surveyor().to_string()],
            _dir: dir,
        };
        agent.restart();
        agent
    }

    /// Starts the agent (again, after it stopped) with the same dirs and
    /// arguments; its log is appended to.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "the agent is still running");
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log");
        self.child = Some(
            self.command()
                .stderr(log_file)
                .spawn()
                .expect("start agent"),
        );
    }

    /// The agent's command line, to run by hand (a second agent, ...).
    pub fn command(&self) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns])
            .args(&self.program)
            .args(["agent", "--node-name", "node1"]);
        match &self.kubeconfig {
            Some(kubeconfig) => cmd.arg("--kubeconfig").arg(kubeconfig),
            None => cmd.arg("--standalone").arg("--maps").arg(&self.maps),
        };
        cmd.arg("--state-dir")
            .arg(&self.state)
            .args(&self.extra)
            .env("SURVEYOR_LOG", "debug");
        cmd
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    /// The current networks.json, if there is one.
    pub fn snapshot(&self) -> Option<serde_json::Value> {
        self.state_file("networks.json")
    }

    /// A state file, parsed; `None` before it is written. A torn or
    /// invalid one fails the test (files are replaced whole).
    fn state_file(&self, file: &str) -> Option<serde_json::Value> {
        let bytes = std::fs::read(self.state.join(file)).ok()?;
        Some(serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "torn or invalid {file}: {e}: {}",
                String::from_utf8_lossy(&bytes)
            )
        }))
    }

    /// Waits (up to `secs`) until networks.json satisfies `want`; returns it.
    pub fn wait_for(
        &self,
        secs: u64,
        what: &str,
        want: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        self.wait_for_file("networks.json", secs, what, want)
    }

    /// [`AgentProcess::wait_for`] for survey.json, which the agent writes
    /// after networks.json in the same publish.
    pub fn wait_for_survey(
        &self,
        secs: u64,
        what: &str,
        want: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        self.wait_for_file("survey.json", secs, what, want)
    }

    fn wait_for_file(
        &self,
        file: &str,
        secs: u64,
        what: &str,
        want: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            if let Some(s) = self.state_file(file) {
                if want(&s) {
                    return s;
                }
            }
            if std::time::Instant::now() > deadline {
                panic!(
                    "{what}: not reached within {secs} s; {file}: {:?}\nagent log:\n{}",
                    self.state_file(file),
                    self.log()
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
    }

    /// The device of `network` in the current snapshot.
    pub fn device(&self, network: &str) -> Option<String> {
        self.snapshot()?["networks"][network]["device"]
            .as_str()
            .map(str::to_string)
    }

    /// The state dir's survey.json, if written.
    pub fn survey(&self) -> Option<serde_json::Value> {
        self.state_file("survey.json")
    }

    /// Sends `signal` and waits for the agent to exit; returns its status.
    pub fn signal(&mut self, signal: nix::sys::signal::Signal) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("agent running");
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal);
        child.wait().expect("wait agent")
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A NetworkMap matching interfaces whose LLDP neighbor's system name
/// matches `glob`.
pub fn lldp_map(name: &str, glob: &str) -> String {
    format!(
        "apiVersion: surveyor.dev/v1alpha1\nkind: NetworkMap\nmetadata:\n  name: {name}\nspec:\n  match:\n    lldp:\n      systemName: \"{glob}\"\n"
    )
}

/// Runs `cmd` with `stdin` piped in; stdout and stderr are captured.
pub fn run_with_stdin(cmd: &mut Command, stdin: &[u8]) -> Output {
    use std::io::Write as _;
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    if let Some(mut input) = child.stdin.take() {
        // A program that exits without reading stdin is judged by its exit
        // status, not by the broken pipe.
        let _ = input.write_all(stdin);
    }
    child.wait_with_output().expect("wait")
}

/// `surveyor discover -o json --node-name node1 ARGS...` inside `ns`, which
/// must succeed; its JSON.
pub fn discover_json(ns: &Netns, args: &[&str]) -> serde_json::Value {
    let out = ns
        .command(surveyor())
        .args(["discover", "-o", "json", "--node-name", "node1"])
        .args(args)
        .output()
        .expect("run surveyor discover");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("discover -o json output")
}

/// Sends whole Ethernet frames out of `ifname` in namespace `ns` through an
/// AF_PACKET socket, as a switch would put them on the wire.
pub fn send_frames(ns: &Netns, ifname: &str, frames: Vec<Vec<u8>>) {
    let ifname = ifname.to_string();
    ns.block_on(move || async move {
        use socket2::{Domain, Protocol, SockAddr, Socket, Type};
        let index = nix::net::if_::if_nametoindex(ifname.as_str())
            .unwrap_or_else(|e| panic!("no {ifname}: {e}"));
        let socket = Socket::new(Domain::PACKET, Type::RAW, Some(Protocol::from(0)))
            .expect("AF_PACKET socket (needs root)");
        // SAFETY: zeroed storage large enough for a sockaddr_ll, filled in
        // and sized here.
        let ((), address) = unsafe {
            SockAddr::try_init(|storage, len| {
                let sll = storage.cast::<nix::libc::sockaddr_ll>();
                (*sll).sll_family = nix::libc::AF_PACKET as nix::libc::sa_family_t;
                (*sll).sll_ifindex = index as i32;
                *len = std::mem::size_of::<nix::libc::sockaddr_ll>() as nix::libc::socklen_t;
                Ok(())
            })
        }
        .expect("sockaddr_ll");
        socket.bind(&address).expect("bind to the interface");
        for frame in frames {
            socket
                .send(&frame)
                .unwrap_or_else(|e| panic!("send a {}-byte frame: {e}", frame.len()));
        }
    });
}

/// Debian's ladvd speaking LLDP on `interface` of namespace `ns` as system
/// `hostname`: a second, independent LLDP implementation. It runs in
/// mount and UTS namespaces of its own (its socket directory on a private
/// tmpfs, its own hostname), so it touches nothing of the machine's.
/// Killed on drop.
pub struct Ladvd {
    child: Option<std::process::Child>,
}

impl Ladvd {
    pub fn start(ns: &Netns, interface: &str, hostname: &str) -> Ladvd {
        require_program("ladvd", "ladvd");
        // ladvd chroots into /run/ladvd (root-owned, 0755) and limits its
        // child's file size, so its log must be a pipe, not a file.
        let script = format!(
            "hostname {hostname} && mount -t tmpfs -o mode=755 none /run && mkdir -m 755 /run/ladvd && exec ladvd -f -L -t {interface}"
        );
        let child = Command::new("ip")
            .args([
                "netns", "exec", &ns.name, "unshare", "-m", "-u", "sh", "-c", &script,
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start ladvd");
        Ladvd { child: Some(child) }
    }
}

impl Drop for Ladvd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = child.id().to_string();
            let _ = Command::new("pkill").args(["-KILL", "-P", &pid]).output();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The static build of the binary, as shipped in the image and installed
/// on hosts: `$SURVEYOR_STATIC_BIN` (.ci/run sets it), else the musl debug
/// build in target/. Fails naming the command that makes it.
pub fn static_binary() -> std::path::PathBuf {
    if let Some(path) = std::env::var_os("SURVEYOR_STATIC_BIN") {
        let path = std::path::PathBuf::from(path);
        assert!(
            path.is_file(),
            "SURVEYOR_STATIC_BIN names {}, which is not there",
            path.display()
        );
        return path;
    }
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/x86_64-unknown-linux-musl/debug/surveyor");
    assert!(
        path.is_file(),
        "this test needs the static binary: cargo build --bin surveyor --target x86_64-unknown-linux-musl (.ci/run builds it and sets SURVEYOR_STATIC_BIN)"
    );
    path
}

/// `GET path` on 127.0.0.1:`port` (HTTP/1.0): the status code and body.
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("connect 127.0.0.1:{port}: {e}"));
    write!(s, "GET {path} HTTP/1.0\r\n\r\n").expect("send request");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read response");
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {text}"));
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (code, body.to_string())
}

/// A loopback port free right now (in the calling thread's namespace).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The aarch64 binary (static musl, run under qemu-aarch64-static): from
/// SURVEYOR_AARCH64_BIN (.ci/run sets it), else the debug build's path.
pub fn aarch64_binary() -> std::path::PathBuf {
    require_program("qemu-aarch64-static", "qemu-user-static");
    let path = std::env::var_os("SURVEYOR_AARCH64_BIN").map_or_else(
        || {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("target/aarch64-unknown-linux-musl/debug/surveyor")
        },
        std::path::PathBuf::from,
    );
    assert!(
        path.is_file(),
        "this test needs the aarch64 binary at {}: cargo build --bin surveyor --target aarch64-unknown-linux-musl (needs gcc-aarch64-linux-gnu; .ci/run builds it and sets SURVEYOR_AARCH64_BIN)",
        path.display()
    );
    path
}

/// A CNI call that succeeded: its result (`null` when it prints none).
pub fn cni_ok(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.stdout.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

/// A CNI call that failed as the spec says (exit 1): its error.
pub fn cni_error(out: &std::process::Output) -> serde_json::Value {
    assert_eq!(
        out.status.code(),
        Some(1),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not a CNI error ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}
