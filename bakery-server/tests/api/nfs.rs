//! NFS on the wire: a real nfs-ganesha on loopback serving what `bakery-server --nfs-backend
//! ganesha` exports, read and written with the libnfs-utils clients (`nfs-ls`, `nfs-cat`,
//! `nfs-cp`) over NFSv3 and NFSv4.
//!
//! Needs `ganesha.nfsd` (nfs-ganesha + nfs-ganesha-vfs), `rpcbind` (ganesha will not start
//! unless it can register with a portmapper) and libnfs-utils, and root (the VFS FSAL opens
//! files by handle). Without them the test says why and passes, unless `CI` is set: there a
//! missing tool is a failure, so a CI that forgot to install them cannot stay green.
//!
//! A client on loopback always comes from 127.0.0.1 (Linux picks that source for every loopback
//! destination) and libnfs cannot bind another. So ganesha and the clients run in a network
//! namespace the test makes (and removes), with one extra local route: connecting to 127.0.0.3
//! there comes from 127.0.0.2. Each Pi's export is then tried from its own address and from the
//! other Pi's. Where no namespace can be made the test says so and runs on the host's loopback,
//! checking "another address" one way only (a Pi at 127.0.0.2 refused to the client at
//! 127.0.0.1); `BAKERY_TEST_NO_NETNS=1` forces that mode.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bakery_client::{Disk, PiInfo};
use reqwest::StatusCode;
use serde_json::json;

use crate::common::*;

/// One ganesha at a time in this binary (rpcbind holds one registration per program).
pub(crate) static GANESHA: Mutex<()> = Mutex::new(());

/// Where `program` is: on PATH or in an sbin directory (rpcbind lives in /usr/sbin).
pub(crate) fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// Why ganesha cannot run here, if it cannot.
pub(crate) fn missing() -> Option<String> {
    for tool in ["ganesha.nfsd", "rpcbind", "nfs-ls", "nfs-cat", "nfs-cp"] {
        if which(tool).is_none() {
            return Some(format!(
                "{tool} not found (apt-get install nfs-ganesha nfs-ganesha-vfs rpcbind libnfs-utils)"
            ));
        }
    }
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root: nfs-ganesha's VFS FSAL needs root".into());
    }
    None
}

/// Skips (loudly) when ganesha cannot run; fails instead under CI.
fn ganesha_or_skip(test: &str) -> bool {
    match missing() {
        None => true,
        Some(reason) if std::env::var_os("CI").is_some() => {
            panic!("{test}: cannot run nfs-ganesha under CI: {reason}")
        }
        Some(reason) => {
            eprintln!("SKIPPED {test}: cannot run nfs-ganesha here: {reason}");
            false
        }
    }
}

pub(crate) fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

fn accepts(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).is_ok()
}

pub(crate) fn terminate(child: &mut Child) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A private network namespace for ganesha and the clients, deleted on drop.
pub(crate) struct Netns(pub(crate) String);

impl Netns {
    /// Makes one with loopback up and 127.0.0.3 reached from 127.0.0.2; `None` if it can't.
    pub(crate) fn make() -> Option<Netns> {
        static COUNT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if std::env::var_os("BAKERY_TEST_NO_NETNS").is_some() {
            eprintln!("nfs: BAKERY_TEST_NO_NETNS set; running on the host's loopback");
            return None;
        }
        let name = format!("bakery-nfs-{}-{n}", std::process::id());
        let ip = |args: &[&str]| {
            Command::new("ip")
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .output()
        };
        match ip(&["netns", "add", &name]) {
            Ok(out) if out.status.success() => {}
            Ok(out) => {
                eprintln!(
                    "nfs: no network namespace ({}); running on the host's loopback",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                return None;
            }
            Err(e) => {
                eprintln!("nfs: no network namespace (ip: {e}); running on the host's loopback");
                return None;
            }
        }
        let netns = Netns(name);
        for args in [
            vec!["link", "set", "lo", "up"],
            vec![
                "route",
                "add",
                "local",
                "127.0.0.3/32",
                "dev",
                "lo",
                "src",
                "127.0.0.2",
                "table",
                "local",
            ],
        ] {
            let mut all = vec!["netns", "exec", netns.0.as_str(), "ip"];
            all.extend(args);
            let out = ip(&all).unwrap();
            assert!(
                out.status.success(),
                "ip {all:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Some(netns)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.0])
            .stderr(Stdio::null())
            .status();
    }
}

/// A ganesha whose config `%include`s bakery's exports file, in its own network namespace when
/// one can be made; rpcbind on the host too when none runs (ganesha registers through its unix
/// socket). All is stopped and removed on drop, also when the test fails.
pub(crate) struct Ganesha {
    dir: tempfile::TempDir,
    child: Child,
    rpcbind: Option<Child>,
    netns: Option<Netns>,
    nfs_port: u16,
    mnt_port: u16,
}

impl Ganesha {
    /// A command run where ganesha runs (inside its namespace, if any).
    fn command(&self, program: &str) -> Command {
        command_in(self.netns.as_ref(), program)
    }

    fn start() -> Ganesha {
        let netns = Netns::make();
        let ports = free_ports(4);
        let listen_all = netns.is_some();
        Ganesha::launch(netns, listen_all, [ports[0], ports[1], ports[2], ports[3]])
    }

    /// A ganesha in the calling thread's network namespace, listening on every address with
    /// NFS on `nfs_port` and MOUNT on `mnt_port` (the virtual Pis' test, whose thread has
    /// entered a namespace of its own, mounts with those ports: no portmapper is reachable
    /// there).
    pub(crate) fn start_here(nfs_port: u16, mnt_port: u16) -> Ganesha {
        let ports = free_ports(2);
        Ganesha::launch(None, true, [nfs_port, mnt_port, ports[0], ports[1]])
    }

    /// Starts ganesha with NFS, MOUNT, NLM and RQUOTA on `ports`, in `netns` when given.
    fn launch(netns: Option<Netns>, listen_all: bool, ports: [u16; 4]) -> Ganesha {
        let rpcbind = if accepts(111)
            || std::os::unix::net::UnixStream::connect("/run/rpcbind.sock").is_ok()
        {
            None
        } else {
            let child = Command::new(which("rpcbind").unwrap())
                .args(["-f", "-w"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("rpcbind starts");
            assert!(
                eventually(Duration::from_secs(10), || accepts(111)),
                "rpcbind did not listen on port 111"
            );
            Some(child)
        };
        let dir = tempfile::Builder::new()
            .prefix("bakery-ganesha-")
            .tempdir()
            .unwrap();
        let (nfs_port, mnt_port) = (ports[0], ports[1]);
        let p = |n: &str| dir.path().join(n).display().to_string();
        std::fs::write(p("bakery.conf"), "").unwrap();
        std::fs::create_dir_all(p("recovery")).unwrap();
        std::fs::write(
            p("ganesha.conf"),
            format!(
                "NFS_CORE_PARAM {{\n\
                 {}\
                 \tNFS_Port = {nfs_port};\n\
                 \tMNT_Port = {mnt_port};\n\
                 \tNLM_Port = {};\n\
                 \tRquota_Port = {};\n\
                 \tEnable_NLM = false;\n\
                 \tEnable_RQUOTA = false;\n\
                 \tEnable_UDP = false;\n\
                 \tProtocols = 3, 4;\n\
                 }}\n\
                 NFSV4 {{\n\
                 \tGraceless = true;\n\
                 \tRecoveryBackend = fs;\n\
                 \tRecoveryRoot = \"{}\";\n\
                 }}\n\
                 %include \"{}\"\n",
                // In the namespace ganesha listens on every address (only lo is there); it can't
                // be told so: getaddrinfo(AI_ADDRCONFIG) finds no address without a non-lo one.
                if listen_all {
                    ""
                } else {
                    "\tBind_addr = 127.0.0.1;\n"
                },
                ports[2],
                ports[3],
                p("recovery"),
                p("bakery.conf"),
            ),
        )
        .unwrap();
        let child = command_in(netns.as_ref(), "ganesha.nfsd")
            .args(["-F", "-N", "NIV_EVENT", "-f"])
            .arg(p("ganesha.conf"))
            .arg("-L")
            .arg(p("ganesha.log"))
            .arg("-p")
            .arg(p("ganesha.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ganesha.nfsd starts");
        let mut ganesha = Ganesha {
            dir,
            child,
            rpcbind,
            netns,
            nfs_port,
            mnt_port,
        };
        let up = eventually(Duration::from_secs(20), || {
            matches!(ganesha.child.try_wait(), Ok(Some(_)))
                || ganesha.log().contains("NFS SERVER INITIALIZED")
                    && (ganesha.netns.is_some() || (accepts(nfs_port) && accepts(mnt_port)))
        });
        if !up || ganesha.child.try_wait().unwrap().is_some() {
            panic!("nfs-ganesha did not come up:\n{}", ganesha.log());
        }
        ganesha
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Ganesha's log so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.path("ganesha.log")).unwrap_or_default()
    }

    fn reloads(&self) -> usize {
        self.log().matches("initiating export list reload").count()
    }

    /// The URL of `path`, mounted from 127.0.0.1.
    fn url(&self, path: &str, version: u8) -> String {
        self.url_to("127.0.0.1", path, version)
    }

    /// The URL of `path`, mounted from 127.0.0.2 (only inside the namespace).
    fn other_url(&self, path: &str, version: u8) -> String {
        self.url_to("127.0.0.3", path, version)
    }

    fn url_to(&self, server: &str, path: &str, version: u8) -> String {
        format!(
            "nfs://{server}{path}?version={version}&nfsport={}&mountport={}",
            self.nfs_port, self.mnt_port
        )
    }

    /// The bakery flags that point it at this ganesha.
    pub(crate) fn bakery_flags(&self) -> Vec<String> {
        vec![
            "--nfs-backend".into(),
            "ganesha".into(),
            "--nfs-address".into(),
            "127.0.0.1".into(),
            "--exports-file".into(),
            self.path("bakery.conf").display().to_string(),
            "--ganesha-pid-file".into(),
            self.path("ganesha.pid").display().to_string(),
        ]
    }
}

impl Drop for Ganesha {
    fn drop(&mut self) {
        terminate(&mut self.child);
        if let Some(rpcbind) = &mut self.rpcbind {
            terminate(rpcbind);
        }
        // The namespace goes after ganesha (field order would drop it before).
        self.netns.take();
    }
}

/// `program` run inside `netns` (`ip netns exec` execs it: the child's pid is the program's).
pub(crate) fn command_in(netns: Option<&Netns>, program: &str) -> Command {
    let path = which(program).unwrap_or_else(|| program.into());
    match netns {
        Some(ns) => {
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", &ns.0]).arg(path);
            cmd
        }
        None => Command::new(path),
    }
}

/// Runs a libnfs tool where ganesha runs, killing it after 20 s.
fn nfs(g: &Ganesha, tool: &str, args: &[&str]) -> Output {
    let mut child = g
        .command(tool)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{tool} starts: {e}"));
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{tool} {args:?} hung");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut stderr = Vec::new();
    let _ = child.stderr.take().unwrap().read_to_end(&mut stderr);
    Output {
        status,
        stdout: reader.join().unwrap(),
        stderr,
    }
}

fn ok(g: &Ganesha, tool: &str, args: &[&str]) -> Vec<u8> {
    let out = nfs(g, tool, args);
    assert!(
        out.status.success(),
        "{tool} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Whether the export at `path` can be listed (mounted) over NFS `version`.
fn mountable(g: &Ganesha, path: &str, version: u8) -> bool {
    nfs(g, "nfs-ls", &[&g.url(path, version)]).status.success()
}

/// `nfs-ls -R` of an export as (relative path, type letter, size of regular files).
fn remote_tree(g: &Ganesha, path: &str, version: u8) -> Vec<(String, char, u64)> {
    let out = ok(g, "nfs-ls", &["-R", &g.url(path, version)]);
    let mut entries: Vec<(String, char, u64)> = String::from_utf8(out)
        .unwrap()
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 6 {
                return None;
            }
            // nfs-ls (libnfs 4.0) prints a FIFO's type as 'r'.
            let kind = match fields[0].chars().next()? {
                'r' => 'p',
                k => k,
            };
            let size = if kind == '-' {
                fields[4].parse().ok()?
            } else {
                0
            };
            Some((fields[5..].join(" "), kind, size))
        })
        .collect();
    entries.sort();
    entries
}

/// The same view of a local tree, leaving out top-level names in `skip`.
fn local_tree(root: &Path, skip: &[&str]) -> Vec<(String, char, u64)> {
    let mut entries: Vec<(String, char, u64)> = tree(root)
        .into_iter()
        .filter(|rel| {
            !skip
                .iter()
                .any(|s| rel == s || rel.starts_with(&format!("{s}/")))
        })
        .map(|rel| {
            let meta = std::fs::symlink_metadata(root.join(&rel)).unwrap();
            let t = meta.file_type();
            use std::os::unix::fs::FileTypeExt;
            let kind = if t.is_dir() {
                'd'
            } else if t.is_symlink() {
                'l'
            } else if t.is_file() {
                '-'
            } else if t.is_char_device() {
                'c'
            } else if t.is_block_device() {
                'b'
            } else if t.is_fifo() {
                'p'
            } else {
                's'
            };
            let size = if kind == '-' { meta.len() } else { 0 };
            (rel, kind, size)
        })
        .collect();
    entries.sort();
    entries
}

fn plain_name(rel: &str) -> bool {
    rel.chars()
        .all(|c| c.is_ascii_alphanumeric() || "._-/+".contains(c))
}

fn create_disk(server: &Server, size_mib: i64) -> Disk {
    let resp = server.post_json("/disks", &json!({ "size": size_mib }));
    assert_eq!(resp.status(), StatusCode::CREATED);
    resp.json().unwrap()
}

fn attach(server: &Server, pi: &str, disk: &str) {
    let resp = server.post_json(&format!("/oven/{pi}/disks"), &json!({ "diskId": disk }));
    assert_eq!(resp.status(), StatusCode::OK, "{:?}", resp.text());
}

fn detach(server: &Server, pi: &str, disk: &str) {
    let resp = server.delete(&format!("/oven/{pi}/disks/{disk}"));
    assert_eq!(resp.status(), StatusCode::OK, "{:?}", resp.text());
}

fn start_bakery(env: &Env, g: &Ganesha) -> Server {
    let flags = g.bakery_flags();
    let extra: Vec<&str> = flags.iter().map(String::as_str).collect();
    Server::start_custom(env, &["--exportfs-cmd"], &extra)
}

#[test]
fn ganesha_serves_each_pi_only_its_own_disks_over_the_wire() {
    if !ganesha_or_skip("ganesha_serves_each_pi_only_its_own_disks_over_the_wire") {
        return;
    }
    let _one = GANESHA.lock().unwrap_or_else(|e| e.into_inner());
    let started = Instant::now();
    let g = Ganesha::start();
    let env = Env::new();

    // Why bakery writes `Access_Type = None` at the export level: with `RW` there, ganesha lets
    // every client in, whatever the CLIENT blocks say.
    let probe = env.path("probe");
    std::fs::create_dir_all(&probe).unwrap();
    let probe = probe.display().to_string();
    let loose = format!(
        "EXPORT {{ Export_Id = 7; Path = \"{probe}\"; Pseudo = \"{probe}\"; Access_Type = RW; \
         Squash = No_Root_Squash; FSAL {{ Name = VFS; }} \
         CLIENT {{ Clients = 127.0.0.2; Access_Type = RW; }} }}\n"
    );
    std::fs::write(g.path("bakery.conf"), &loose).unwrap();
    let reloads = g.reloads();
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(g.child.id() as i32, libc::SIGHUP);
    }
    assert!(eventually(Duration::from_secs(10), || g.reloads() > reloads));
    assert!(
        eventually(Duration::from_secs(10), || mountable(&g, &probe, 3)),
        "export-level RW no longer lets 127.0.0.1 in: {}",
        g.log()
    );
    std::fs::write(
        g.path("bakery.conf"),
        loose.replacen("Access_Type = RW;", "Access_Type = None;", 1),
    )
    .unwrap();
    let reloads = g.reloads();
    // SAFETY: as above.
    unsafe {
        libc::kill(g.child.id() as i32, libc::SIGHUP);
    }
    assert!(eventually(Duration::from_secs(10), || g.reloads() > reloads));
    assert!(eventually(Duration::from_secs(10), || !mountable(
        &g, &probe, 3
    )));

    let mut server = start_bakery(&env, &g);
    assert_eq!(server.upload_sample(OS).status(), StatusCode::CREATED);
    // Pi 1 boots from the client's address, Pi 2 from another one.
    for (serial, addr) in [("00000001", "127.0.0.1"), ("00000002", "127.0.0.2")] {
        let resp = server.boot_request(serial, "start.elf", Some(addr));
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    }
    let baked: Vec<PiInfo> = (0..2).map(|_| server.bake_ready(false)).collect();
    let pi = |addr: &str| {
        baked
            .iter()
            .find(|p| p.address.as_deref() == Some(addr))
            .unwrap_or_else(|| panic!("no Pi at {addr}: {baked:?}"))
            .clone()
    };
    let (mine, other) = (pi("127.0.0.1"), pi("127.0.0.2"));
    let root = mine.disks[0].location.clone();
    let other_root = other.disks[0].location.clone();
    let exports = std::fs::read_to_string(g.path("bakery.conf")).unwrap();
    assert!(exports.contains(&format!("Path = \"{root}\"")), "{exports}");
    assert!(exports.contains("Clients = 127.0.0.2;"), "{exports}");

    // The baked root over the wire is the bakeform's tree, file for file.
    let bakeform_root = env.data().join("bakeforms").join(OS).join("root");
    let golden = local_tree(&bakeform_root, &[]);
    assert!(golden.len() > 10, "{golden:?}");
    for version in [3, 4] {
        let remote: Vec<_> = remote_tree(&g, &root, version)
            .into_iter()
            .filter(|(rel, _, _)| rel != "piConfig" && !rel.starts_with("piConfig/"))
            .collect();
        assert_eq!(remote, golden, "NFSv{version} listing of {root}");
    }
    let mut compared = 0;
    for (rel, kind, _) in &golden {
        if *kind != '-' || !plain_name(rel) {
            continue;
        }
        let version = if compared % 2 == 0 { 3 } else { 4 };
        let got = ok(&g, "nfs-cat", &[&g.url(&format!("{root}/{rel}"), version)]);
        assert_eq!(
            got,
            std::fs::read(bakeform_root.join(rel)).unwrap(),
            "{rel} over NFSv{version}"
        );
        compared += 1;
    }
    assert!(compared >= 5, "only {compared} files compared");

    // Written through NFS, it lands in the Pi's root on the server.
    let local = env.path("from-client.txt");
    for version in [3, 4] {
        let content = format!("written over NFSv{version}\n");
        std::fs::write(&local, &content).unwrap();
        let name = format!("from-nfs-v{version}.txt");
        ok(
            &g,
            "nfs-cp",
            &[
                local.to_str().unwrap(),
                &g.url(&format!("{root}/{name}"), version),
            ],
        );
        assert_eq!(
            std::fs::read_to_string(Path::new(&root).join(&name)).unwrap(),
            content
        );
    }

    // The other Pi's root is refused to this address, over both versions.
    for version in [3, 4] {
        assert!(
            !mountable(&g, &other_root, version),
            "NFSv{version} {other_root}"
        );
    }
    // From the other Pi's address (inside the namespace) it is the other way round.
    if g.netns.is_some() {
        let from_other = |path: &str, version: u8| {
            nfs(&g, "nfs-ls", &[&g.other_url(path, version)])
                .status
                .success()
        };
        for version in [3, 4] {
            assert!(
                from_other(&other_root, version),
                "NFSv{version} from 127.0.0.2"
            );
            assert!(!from_other(&root, version), "NFSv{version} from 127.0.0.2");
        }
        let hostname = ok(
            &g,
            "nfs-cat",
            &[&g.other_url(&format!("{other_root}/etc/hostname"), 3)],
        );
        assert_eq!(
            hostname,
            std::fs::read(bakeform_root.join("etc/hostname")).unwrap()
        );
    } else {
        eprintln!("nfs: no namespace, so no client at 127.0.0.2: checked one way only");
    }

    // An attached disk shows its disk.img with its size; detached, it is gone.
    let disk = create_disk(&server, 16);
    assert!(
        !mountable(&g, &disk.location, 3),
        "unattached disk exported"
    );
    attach(&server, &mine.id, &disk.id);
    assert!(eventually(Duration::from_secs(10), || mountable(
        &g,
        &disk.location,
        3
    )));
    for version in [3, 4] {
        assert_eq!(
            remote_tree(&g, &disk.location, version),
            vec![("disk.img".to_owned(), '-', 16 << 20)],
            "NFSv{version}"
        );
    }
    detach(&server, &mine.id, &disk.id);
    assert!(
        eventually(Duration::from_secs(10), || !mountable(
            &g,
            &disk.location,
            3
        ) && !mountable(
            &g,
            &disk.location,
            4
        )),
        "detached disk still exported"
    );

    // Reloads while a client reads: every read completes, whole.
    let big = create_disk(&server, 64);
    attach(&server, &mine.id, &big.id);
    let big_url = g.url(&format!("{}/disk.img", big.location), 3);
    assert!(eventually(Duration::from_secs(10), || nfs(
        &g,
        "nfs-ls",
        &[&g.url(&big.location, 3)]
    )
    .status
    .success()));
    let churn = create_disk(&server, 1);
    let reloads_before = g.reloads();
    let reads = std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut reads = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(8);
            while reads.len() < 3 || (Instant::now() < deadline && reads.len() < 20) {
                let start = Instant::now();
                let out = nfs(&g, "nfs-cat", &[&big_url]);
                reads.push((start, Instant::now(), out));
                if Instant::now() > deadline {
                    break;
                }
            }
            reads
        });
        let mut hups = Vec::new();
        for _ in 0..4 {
            attach(&server, &other.id, &churn.id);
            hups.push(Instant::now());
            std::thread::sleep(Duration::from_millis(150));
            detach(&server, &other.id, &churn.id);
            hups.push(Instant::now());
            std::thread::sleep(Duration::from_millis(150));
        }
        (reader.join().unwrap(), hups)
    });
    let (reads, hups) = reads;
    for (_, _, out) in &reads {
        assert!(
            out.status.success(),
            "read during reloads failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.stdout.len(), 64 << 20);
    }
    let overlapped = hups
        .iter()
        .filter(|h| reads.iter().any(|(a, b, _)| a <= *h && *h <= b))
        .count();
    assert!(
        eventually(Duration::from_secs(5), || g.reloads() >= reloads_before + 8),
        "ganesha reloaded {} times",
        g.reloads() - reloads_before
    );
    assert!(overlapped > 0, "no reload happened during a read");
    let busy: Duration = reads.iter().map(|(a, b, _)| *b - *a).sum();
    eprintln!(
        "nfs: {} reads of 64 MiB during {} reloads ({overlapped} mid-read), {:.0} MiB/s over NFSv3",
        reads.len(),
        hups.len(),
        (reads.len() * 64) as f64 / busy.as_secs_f64()
    );

    // A bakery restart keeps export ids and paths: the same file, the Pi's mount still works.
    let before = std::fs::read_to_string(g.path("bakery.conf")).unwrap();
    let reloads_before = g.reloads();
    server.stop();
    let server = start_bakery(&env, &g);
    assert!(eventually(Duration::from_secs(10), || g.reloads() > reloads_before));
    assert_eq!(
        std::fs::read_to_string(g.path("bakery.conf")).unwrap(),
        before
    );
    assert!(mountable(&g, &root, 3) && mountable(&g, &root, 4));

    // Unbaked, its root is no longer exported.
    let resp = server.delete(&format!("/oven/{}", mine.id));
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        eventually(Duration::from_secs(15), || !mountable(&g, &root, 3)
            && !mountable(&g, &root, 4)),
        "unbaked root still exported"
    );
    assert!(
        !std::fs::read_to_string(g.path("bakery.conf"))
            .unwrap()
            .contains(&root)
    );

    // Baked again at once: the new root has a new export id (ganesha would refuse the old one
    // for a new path) and is served.
    let export_id = |text: &str, path: &str| {
        let block = text.split("EXPORT {").find(|b| b.contains(path)).unwrap();
        block
            .lines()
            .find(|l| l.contains("Export_Id"))
            .unwrap()
            .to_owned()
    };
    let again = server.bake_ready(false);
    assert_eq!(again.id, mine.id);
    let new_root = again.disks[0].location.clone();
    let text = std::fs::read_to_string(g.path("bakery.conf")).unwrap();
    assert_ne!(export_id(&text, &new_root), export_id(&before, &root));
    assert!(
        eventually(Duration::from_secs(10), || mountable(&g, &new_root, 3)
            && mountable(&g, &new_root, 4)),
        "new root not served: {}",
        g.log()
    );
    let elapsed = started.elapsed();
    eprintln!("nfs: ganesha end-to-end test took {elapsed:?}");
    assert!(elapsed < Duration::from_secs(60), "took {elapsed:?}");
}

/// What can be proven without nfs-ganesha (this runs everywhere): the exact `EXPORT` block a
/// baked Pi gets, a bake failing with a clear message while ganesha is not running, and the
/// reload signal reaching the process in the pid file.
#[test]
fn ganesha_backend_writes_export_blocks_and_signals_the_pid_file() {
    let env = Env::new();
    let conf = env.path("bakery-ganesha.conf");
    let pid_file = env.path("ganesha.pid");
    let mut server = Server::start_custom(
        &env,
        &["--exportfs-cmd"],
        &[
            "--nfs-backend",
            "ganesha",
            "--exports-file",
            conf.to_str().unwrap(),
            "--ganesha-pid-file",
            pid_file.to_str().unwrap(),
        ],
    );
    assert_eq!(server.upload_sample(OS).status(), StatusCode::CREATED);
    let resp = server.boot_request("0000abcd", "start.elf", Some("10.0.0.21"));
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);

    // No ganesha: the bake fails and says why.
    let pi = server.bake(false);
    let resp = server.wait_baked(&pi.id);
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    let text = resp.text().unwrap();
    assert!(
        text.contains("cannot signal nfs-ganesha to reload") && text.contains("ganesha.pid"),
        "{text}"
    );

    // A stand-in named like ganesha (so its process name is) that counts the SIGHUPs it gets.
    let fake = env.path("ganesha.nfsd");
    std::fs::copy("/bin/bash", &fake).unwrap();
    let hups = env.path("hups.log");
    let ganesha = KillOnDrop(
        Command::new(&fake)
            .arg("-c")
            .arg(format!(
                "trap 'echo hup >> {}' HUP; while :; do sleep 0.05; done",
                hups.display()
            ))
            .spawn()
            .unwrap(),
    );
    std::fs::write(&pid_file, format!("{}\n", ganesha.0.id())).unwrap();
    let baked = server.bake_ready(false);
    let root = &baked.disks[0].location;
    let written = std::fs::read_to_string(&conf).unwrap();
    let block = written
        .split("\n\n")
        .find(|b| b.contains(root.as_str()))
        .unwrap_or_else(|| panic!("no block for {root}: {written}"));
    let id_line = block.lines().find(|l| l.contains("Export_Id")).unwrap();
    let id: u16 = id_line
        .trim()
        .trim_start_matches("Export_Id = ")
        .trim_end_matches(';')
        .parse()
        .unwrap();
    assert!(id >= 1000, "{id_line}");
    assert_eq!(
        block,
        format!(
            "# pi 0000abcd root: its / (No_Root_Squash: the Pi's root owns its files)\n\
             EXPORT {{\n\
             \tExport_Id = {id};\n\
             \tPath = \"{root}\";\n\
             \tPseudo = \"{root}\";\n\
             \tProtocols = 3, 4;\n\
             \tSecType = sys;\n\
             \tAccess_Type = None;\n\
             \tSquash = No_Root_Squash;\n\
             \tFSAL {{ Name = VFS; }}\n\
             \tCLIENT {{ Clients = 10.0.0.21; Access_Type = RW; }}\n\
             }}\n"
        )
    );
    assert!(!written.contains('*'), "{written}");
    assert!(
        eventually(Duration::from_secs(5), || !read_lines(&hups).is_empty()),
        "no SIGHUP reached the pid in the pid file"
    );

    // Unbaked: the block is gone, and ganesha is told again.
    let before = read_lines(&hups).len();
    assert_eq!(
        server.delete(&format!("/oven/{}", baked.id)).status(),
        StatusCode::OK
    );
    assert!(eventually(Duration::from_secs(10), || {
        !std::fs::read_to_string(&conf)
            .unwrap()
            .contains(root.as_str())
    }));
    assert!(eventually(Duration::from_secs(5), || read_lines(&hups)
        .len()
        > before));
    server.stop();
}

/// A child killed when the test ends, also when it fails.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
