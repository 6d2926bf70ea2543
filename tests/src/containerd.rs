//! A private containerd with its CRI plugin, standing for a Kubernetes
//! node's runtime: its own root, state, socket and config in a temporary
//! directory, running inside a lab namespace that stands for the node
//! (`nsenter --net`, so its CNI bridge and pod veths are made there and the
//! root namespace gets no test addresses or routes). Pods get their
//! network from Debian's CNI bridge and host-local plugins on a /24 of the
//! lab's address block; the sandbox image is [`crate::pause_image`],
//! imported with `ctr`. Pods are made over CRI, as a kubelet makes them,
//! with netprobe's own CRI client.
//!
//! Dropping it stops and removes every pod, ends containerd and any shim
//! it left, unmounts what it mounted under its directory and removes the
//! directory, the pods' cgroups and the namespace.

use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use probe_user::state::cri::{Runtime, proto};

use crate::background::Background;
use crate::cmd::{self, DEFAULT_TIMEOUT};
use crate::netns::Netns;
use crate::subnet::{self, Lease};
use crate::tmp::TempDir;
use crate::{pause_image, poll_until};

/// Third octet of the pods' /24 inside the lab block 10.<octet>.0.0/16.
const POD_NET: u8 = 77;
const BRIDGE: &str = "npcri0";
/// Each CRI call (RunPodSandbox includes the CNI set-up).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Where the kubelet's cgroupfs driver puts best-effort pods.
const CGROUP_PARENT: &str = "/kubepods/besteffort";

static PODS: AtomicU32 = AtomicU32::new(0);

pub struct Containerd {
    /// The namespace standing for the node: containerd, the CNI bridge and
    /// the pods' host-side veths live here (and netprobe should too).
    pub node: Netns,
    subnet: Lease,
    dir: TempDir,
    socket: PathBuf,
    daemon: Option<Background>,
    rt: tokio::runtime::Runtime,
    client: Runtime,
    sandboxes: Mutex<Vec<String>>,
    pod_uids: Mutex<Vec<String>>,
    /// containerd 1.6 puts shim sockets under /run/containerd/s whatever
    /// its config says: removed at the end if this lab made it.
    made_run_dir: bool,
}

const RUN_DIR: &str = "/run/containerd";

/// A pod sandbox made over CRI.
pub struct Pod {
    pub id: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub ip: Ipv4Addr,
    /// The sandbox's pause process.
    pub pid: u32,
    /// Inode of the pod's network namespace.
    pub netns: u64,
    config: proto::PodSandboxConfig,
}

impl Pod {
    /// `nsenter --net=/proc/PAUSE/ns/net -- args...`: a command run in the
    /// pod's network (not in its cgroup or mounts).
    pub fn command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/proc/{}/ns/net", self.pid))
            .arg("--")
            .args(args);
        c
    }
}

impl Containerd {
    /// Starts containerd in a new node namespace and imports the pause
    /// image; returns once CRI answers.
    pub fn start(label: &str) -> Containerd {
        let made_run_dir = !Path::new(RUN_DIR).exists();
        let node = Netns::new(label);
        let subnet = subnet::lease();
        let dir = TempDir::new();
        let socket = dir.join("containerd.sock");
        let pod_net = format!("10.{}.{POD_NET}.0/24", subnet.octet());
        std::fs::create_dir_all(dir.join("cni")).expect("creating the CNI conf dir");
        std::fs::write(
            dir.join("cni/10-netprobe-lab.conflist"),
            cni_conf(&pod_net, &dir.join("ipam")).to_string(),
        )
        .expect("writing the CNI config");
        std::fs::write(dir.join("config.toml"), config(dir.path(), &socket))
            .expect("writing the containerd config");
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", node.path().display()))
            .args(["--", "containerd", "--config"])
            .arg(dir.join("config.toml"));
        let daemon = Background::spawn(c, "containerd");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime for CRI calls");
        let client = poll_until(Duration::from_secs(20), Duration::from_millis(100), || {
            if !socket.exists() {
                return None;
            }
            let rt_client = rt.block_on(Runtime::connect(&socket, CALL_TIMEOUT)).ok()?;
            rt.block_on(rt_client.list_pod_sandboxes()).ok()?;
            Some(rt_client)
        });
        let Some(client) = client else {
            let mut daemon = daemon;
            panic!(
                "containerd's CRI did not answer within 20 s: {}",
                daemon.report()
            );
        };
        let image = pause_image::build(&dir.join("image"));
        cmd::run(
            Command::new("ctr")
                .arg("-a")
                .arg(&socket)
                .args([
                    "-n",
                    "k8s.io",
                    "images",
                    "import",
                    "--snapshotter",
                    "native",
                ])
                .arg(&image),
            DEFAULT_TIMEOUT,
        );
        Containerd {
            node,
            subnet,
            dir,
            socket,
            daemon: Some(daemon),
            rt,
            client,
            sandboxes: Mutex::default(),
            pod_uids: Mutex::default(),
            made_run_dir,
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The bridge's address in the node namespace: the pods' gateway.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, self.subnet.octet(), POD_NET, 1)
    }

    /// Makes a pod sandbox named `namespace/name` (RunPodSandbox, as a
    /// kubelet does) and reads back its pause pid, IP and namespace.
    pub fn run_pod(&self, namespace: &str, name: &str) -> Pod {
        let n = PODS.fetch_add(1, Ordering::Relaxed);
        let uid = format!(
            "{:08x}-0000-4000-8000-{:012x}",
            std::process::id(),
            u64::from(self.subnet.octet()) << 16 | u64::from(n)
        );
        let config = proto::PodSandboxConfig {
            metadata: Some(proto::PodSandboxMetadata {
                name: name.into(),
                uid: uid.clone(),
                namespace: namespace.into(),
                attempt: 0,
            }),
            hostname: name.into(),
            log_directory: self.dir.join("logs").join(&uid).display().to_string(),
            linux: Some(proto::LinuxPodSandboxConfig {
                cgroup_parent: format!("{CGROUP_PARENT}/pod{uid}"),
            }),
        };
        self.pod_uids.lock().unwrap().push(uid.clone());
        let id = self
            .call(self.client.run_pod_sandbox(config.clone()))
            .unwrap_or_else(|e| panic!("RunPodSandbox {namespace}/{name}: {e}\n{}", self.log()));
        self.sandboxes.lock().unwrap().push(id.clone());
        let status = self
            .call(self.client.pod_sandbox_status(&id))
            .unwrap_or_else(|e| panic!("PodSandboxStatus {id}: {e}"));
        let pid = probe_user::state::cri::info::sandbox_netns(&status.info)
            .pid
            .unwrap_or_else(|| panic!("no pause pid in the sandbox's info: {:?}", status.info));
        let ip = status
            .status
            .and_then(|s| s.network)
            .and_then(|n| n.ip.parse().ok())
            .unwrap_or_else(|| panic!("sandbox {id} has no IPv4 address"));
        let netns = std::fs::metadata(format!("/proc/{pid}/ns/net"))
            .expect("the pause process's namespace")
            .ino();
        Pod {
            id,
            namespace: namespace.into(),
            name: name.into(),
            uid,
            ip,
            pid,
            netns,
            config,
        }
    }

    /// Creates and starts container `name` in `pod`, running the image's
    /// binary with `args`; returns the container ID.
    pub fn run_container(&self, pod: &Pod, name: &str, args: &[&str]) -> String {
        let config = proto::ContainerConfig {
            metadata: Some(proto::ContainerMetadata {
                name: name.into(),
                attempt: 0,
            }),
            image: Some(proto::ImageSpec {
                image: pause_image::REF.into(),
            }),
            command: vec!["/pause".into()],
            args: args.iter().map(|a| a.to_string()).collect(),
            log_path: format!("{name}.log"),
        };
        self.call(
            self.client
                .start_container(&pod.id, config, pod.config.clone()),
        )
        .unwrap_or_else(|e| panic!("starting container {name}: {e}\n{}", self.log()))
    }

    fn call<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, probe_user::state::cri::grpc::Error>>,
    ) -> Result<T, probe_user::state::cri::grpc::Error> {
        self.rt.block_on(f)
    }

    /// The end of containerd's log so far (for failure messages).
    pub fn log(&self) -> String {
        let log = self.daemon.as_ref().map(|d| d.stderr()).unwrap_or_default();
        let cut = log.len().saturating_sub(4000);
        let cut = (cut..log.len())
            .find(|i| log.is_char_boundary(*i))
            .unwrap_or(0);
        format!("containerd log (end):\n{}", &log[cut..])
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        for id in std::mem::take(&mut *self.sandboxes.lock().unwrap()) {
            if let Err(e) = self.call(self.client.stop_pod_sandbox(&id)) {
                eprintln!("containerd lab: StopPodSandbox {id}: {e}");
            }
            if let Err(e) = self.call(self.client.remove_pod_sandbox(&id)) {
                eprintln!("containerd lab: RemovePodSandbox {id}: {e}");
            }
        }
        // containerd, then any shim still serving our socket.
        drop(self.daemon.take());
        kill_shims(self.dir.path());
        unmount_under(self.dir.path());
        for uid in std::mem::take(&mut *self.pod_uids.lock().unwrap()) {
            remove_pod_cgroups(&uid);
        }
        if self.made_run_dir {
            // Empty directories only: a socket still in there is not ours.
            for d in ["s", ""] {
                let _ = std::fs::remove_dir(Path::new(RUN_DIR).join(d));
            }
        }
        // The node namespace (bridge, anything left in it) and the
        // directory go when the fields drop.
    }
}

fn config(dir: &Path, socket: &Path) -> String {
    let d = dir.display();
    format!(
        r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]
[grpc]
  address = "{socket}"
[ttrpc]
  address = "{socket}.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{image}"
  netns_mounts_under_state_dir = true
  # Sandboxes ask for oom_score_adj -998; lowering it needs
  # CAP_SYS_RESOURCE, which a lab machine's root may not have.
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = "{d}/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{d}/cni"
"#,
        socket = socket.display(),
        image = pause_image::REF,
    )
}

fn cni_conf(subnet: &str, ipam_dir: &Path) -> serde_json::Value {
    serde_json::json!({
        "cniVersion": "0.4.0",
        "name": "netprobe-lab",
        "plugins": [{
            "type": "bridge",
            "bridge": BRIDGE,
            "isGateway": true,
            "ipMasq": false,
            "ipam": {
                "type": "host-local",
                "dataDir": ipam_dir.display().to_string(),
                "ranges": [[{ "subnet": subnet }]],
                "routes": [{ "dst": "0.0.0.0/0" }],
            },
        }],
    })
}

/// SIGKILLs processes whose command line names `dir` (the shims containerd
/// started for this lab only: they carry its socket path).
fn kill_shims(dir: &Path) {
    let needle = dir.display().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for e in entries.flatten().take(100_000) {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains("containerd-shim") && cmdline.contains(&needle) {
            // SAFETY: plain kill(2) of a pid we just read.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// Lazily unmounts every mount point under `dir`, deepest first.
fn unmount_under(dir: &Path) {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let prefix = dir.display().to_string();
    let mut points: Vec<&str> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(&prefix))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let Ok(c) = std::ffi::CString::new(p) else {
            continue;
        };
        // SAFETY: c is NUL-terminated.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

/// Removes the pod's cgroup (and its emptied parents up to kubepods) in
/// every hierarchy runc made it in.
fn remove_pod_cgroups(uid: &str) {
    let Ok(roots) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    let mut hierarchies: Vec<PathBuf> = roots.flatten().map(|e| e.path()).collect();
    hierarchies.push(PathBuf::from("/sys/fs/cgroup"));
    for h in hierarchies {
        let pod = h
            .join(CGROUP_PARENT.trim_start_matches('/'))
            .join(format!("pod{uid}"));
        if !pod.exists() {
            continue;
        }
        // Container cgroups first (the processes are gone by now).
        if let Ok(children) = std::fs::read_dir(&pod) {
            for c in children.flatten().filter(|c| c.path().is_dir()) {
                let _ = std::fs::remove_dir(c.path());
            }
        }
        let mut d = pod;
        for _ in 0..3 {
            if std::fs::remove_dir(&d).is_err() || !d.pop() {
                break;
            }
        }
    }
}
