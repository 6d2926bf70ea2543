//! The per-node socket hooks: `cgroup_skb` ingress and egress programs on
//! the root of the cgroup v2 hierarchy. They run at every local socket, in
//! the socket's own namespace, so a pod's handshake is seen before any NAT
//! and whatever its CNI does below the socket (a tc program that redirects
//! into the pod hides nothing from them). One attach per direction for the
//! whole node: pod creation costs nothing more.
//!
//! Which namespaces are "this node": when netprobe runs in the initial
//! network namespace, every socket on the machine is the node's. In any
//! other (a lab's node, `--netns`), only its own namespace and those of its
//! pods are: the namespaces at the far end of its pod veths. The others'
//! sockets belong to machines a real node could never see, and the kernel
//! side drops their records (map `NODE_NETNS`).

use std::{
    collections::{HashMap, HashSet},
    fs::File,
    os::{fd::AsRawFd as _, unix::fs::MetadataExt as _},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, anyhow};
use aya::{
    Ebpf,
    programs::{CgroupAttachMode, CgroupSkb, CgroupSkbAttachType},
};
use netlink_packet_core::{NLM_F_REQUEST, NetlinkMessage, NetlinkPayload};
use netlink_packet_route::{
    RouteNetlinkMessage,
    nsid::{NsidAttribute, NsidMessage},
};

/// The socket programs and the cgroup hook each runs on.
pub const PROGRAMS: &[(&str, CgroupSkbAttachType)] = &[
    ("sock_ingress", CgroupSkbAttachType::Ingress),
    ("sock_egress", CgroupSkbAttachType::Egress),
];

/// The mount point of the cgroup v2 hierarchy, from a mountinfo text
/// (`/proc/self/mountinfo`): the first `cgroup2` mount whose root is the
/// hierarchy's own (`/`), so a container's view of its own cgroup is not
/// taken for the node's root.
pub fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let fstype = right.split_whitespace().next()?;
        let mut f = left.split_whitespace();
        let root = f.nth(3)?;
        let mount_point = f.next()?;
        (fstype == "cgroup2" && root == "/").then(|| PathBuf::from(unescape(mount_point)))
    })
}

/// This process's view of the cgroup v2 root (see [`cgroup2_mount`]).
pub fn cgroup2_root() -> anyhow::Result<Option<PathBuf>> {
    let info =
        std::fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    Ok(cgroup2_mount(&info))
}

/// mountinfo escapes spaces and a few others as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Attaches both socket programs (already loaded) to the root cgroup, as
/// bpf links beside whatever else is there (systemd's and a CNI's programs
/// keep running). bpf links go away with the process, even on SIGKILL.
/// Returns the cgroup's path.
pub fn attach(ebpf: &mut Ebpf) -> anyhow::Result<PathBuf> {
    let root = cgroup2_root()?.ok_or_else(|| {
        anyhow!("no cgroup v2 hierarchy is mounted (mount -t cgroup2 none /sys/fs/cgroup/unified)")
    })?;
    let dir = File::open(&root).with_context(|| format!("opening {}", root.display()))?;
    for (name, attach_type) in PROGRAMS {
        let prog: &mut CgroupSkb = ebpf
            .program_mut(name)
            .with_context(|| format!("program {name} missing"))?
            .try_into()?;
        // A bpf link (aya makes one on 5.7+, the floor is 5.10) always
        // runs beside the cgroup's other programs; the kernel refuses any
        // attach flag on it, so the mode is the flagless one.
        prog.attach(&dir, *attach_type, CgroupAttachMode::Single)
            .map_err(anyhow::Error::new)
            .with_context(|| format!("attaching {name} to {}", root.display()))?;
    }
    Ok(root)
}

/// The inode of the initial network namespace: the kernel gives it a
/// fixed number (`PROC_NET_INIT_INO`), so no look at PID 1 is needed.
pub const INITIAL_NETNS: u32 = 0xEFFF_FFF9;

/// Whether this thread is in the initial network namespace (a node agent
/// with the host's network is).
pub fn in_initial_netns() -> bool {
    crate::kernel::netns::current_inode().is_none_or(|i| i == INITIAL_NETNS)
}

/// Network namespaces of the machine that can be named: `ip netns`'s
/// (which may hold no process) and every process's, by inode.
pub fn candidate_namespaces() -> HashMap<u32, PathBuf> {
    let mut out = HashMap::new();
    let mut add = |path: PathBuf| {
        if let Ok(m) = std::fs::metadata(&path) {
            out.entry(m.ino() as u32).or_insert(path);
        }
    };
    for dir in ["/run/netns", "/var/run/netns"] {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                add(e.path());
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let name = e.file_name();
            if name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
                add(Path::new("/proc").join(name).join("ns/net"));
            }
        }
    }
    out
}

/// This namespace's id for the namespace open at `fd`, if it gave it one.
async fn nsid_of(handle: &mut rtnetlink::Handle, fd: u32) -> Option<i32> {
    let mut msg = NsidMessage::default();
    msg.attributes.push(NsidAttribute::Fd(fd));
    let mut req = NetlinkMessage::from(RouteNetlinkMessage::GetNsId(msg));
    req.header.flags = NLM_F_REQUEST;
    let mut replies = handle.request(req).ok()?;
    while let Some(reply) = futures_util::StreamExt::next(&mut replies).await {
        if let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNsId(m)) = reply.payload {
            return m.attributes.iter().find_map(|a| match a {
                NsidAttribute::Id(id) if *id >= 0 => Some(*id),
                _ => None,
            });
        }
    }
    None
}

/// Namespace inodes for the namespace ids `wanted` (as this namespace
/// numbers them), by asking the id of every namespace that can be named.
pub async fn resolve_nsids(wanted: &HashSet<i32>) -> anyhow::Result<HashMap<i32, u32>> {
    let mut out = HashMap::new();
    if wanted.is_empty() {
        return Ok(out);
    }
    let (conn, mut handle, _) = rtnetlink::new_connection()?;
    let task = tokio::spawn(conn);
    let own = crate::kernel::netns::current_inode();
    for (inode, path) in candidate_namespaces() {
        if Some(inode) == own {
            continue;
        }
        let Ok(file) = File::open(&path) else {
            continue;
        };
        if let Some(id) = nsid_of(&mut handle, file.as_raw_fd() as u32).await
            && wanted.contains(&id)
        {
            out.insert(id, inode);
            if out.len() == wanted.len() {
                break;
            }
        }
    }
    task.abort();
    Ok(out)
}

/// This node's namespaces as the socket hooks see them.
#[derive(Debug, Default)]
pub struct NodeNamespaces {
    /// Filtering at all (netprobe is not in the initial namespace).
    pub filter: bool,
    pub own: Option<u32>,
    /// Pods' namespaces, by the ifindex of the veth that leads there:
    /// (the namespace's id here, its inode).
    pub pods: HashMap<u32, (i32, u32)>,
}

impl NodeNamespaces {
    /// Every namespace inode the kernel should report for.
    pub fn inodes(&self) -> HashSet<u32> {
        self.own
            .into_iter()
            .chain(self.pods.values().map(|(_, inode)| *inode))
            .collect()
    }

    /// Records the namespaces of pod veths `(ifindex, namespace id)`: the
    /// ones that can be named now (a namespace whose id nothing answers to
    /// is left out).
    pub async fn resolve(&mut self, veths: Vec<(u32, i32)>) -> anyhow::Result<()> {
        let wanted: HashSet<i32> = veths.iter().map(|(_, id)| *id).collect();
        let found = resolve_nsids(&wanted).await?;
        for (index, id) in veths {
            if let Some(inode) = found.get(&id) {
                self.pods.insert(index, (id, *inode));
            }
        }
        Ok(())
    }

    /// The inode of namespace id `nsid` if a live pod veth leads there
    /// already (an id is only reused once its namespace, and so every veth
    /// into it, is gone).
    pub fn known(&self, nsid: i32) -> Option<u32> {
        self.pods
            .values()
            .find(|(id, _)| *id == nsid)
            .map(|(_, inode)| *inode)
    }
}

/// Keeps the kernel's `NODE_NETNS` map equal to `want`.
pub fn sync_map(ebpf: &mut Ebpf, want: &HashSet<u32>) -> anyhow::Result<()> {
    let mut map: aya::maps::HashMap<_, u32, u8> = aya::maps::HashMap::try_from(
        ebpf.map_mut("NODE_NETNS")
            .context("map NODE_NETNS missing")?,
    )?;
    let have: HashSet<u32> = map.keys().filter_map(Result::ok).collect();
    for gone in have.difference(want) {
        let _ = map.remove(gone);
    }
    for new in want.difference(&have) {
        map.insert(new, 1, 0)?;
    }
    Ok(())
}

/// The pod veths among `links`: (ifindex, the peer's namespace id).
pub fn pod_veth_nsids(
    links: &[crate::kernel::links::Link],
    addressed: &HashSet<u32>,
) -> Vec<(u32, i32)> {
    links
        .iter()
        .filter(|l| l.pod_veth(addressed.contains(&l.index)))
        .filter_map(|l| Some((l.index, l.peer_netnsid?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup2_mount_is_found_in_a_hybrid_layout() {
        let info = "\
24 30 0:22 / /sys rw,nosuid shared:7 - sysfs sysfs rw
30 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda rw
33 24 0:27 / /sys/fs/cgroup ro,nosuid shared:9 - tmpfs tmpfs ro,mode=755
34 33 0:28 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw,nsdelegate
35 33 0:29 / /sys/fs/cgroup/systemd rw,nosuid shared:11 - cgroup cgroup rw,xattr,name=systemd
";
        assert_eq!(
            cgroup2_mount(info),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
    }

    #[test]
    fn a_containers_own_cgroup_is_not_the_root() {
        let info = "\
40 30 0:30 /kubepods/pod1/abc /sys/fs/cgroup rw - cgroup2 cgroup2 rw
41 30 0:30 / /host/sys/fs/cgroup rw - cgroup2 cgroup2 rw
";
        assert_eq!(
            cgroup2_mount(info),
            Some(PathBuf::from("/host/sys/fs/cgroup"))
        );
        assert_eq!(cgroup2_mount("40 30 0:30 /x /a rw - cgroup2 c rw\n"), None);
        assert_eq!(cgroup2_mount(""), None);
    }

    #[test]
    fn escaped_mount_points() {
        let info = "34 33 0:28 / /mnt/cg\\040two rw - cgroup2 cgroup2 rw\n";
        assert_eq!(cgroup2_mount(info), Some(PathBuf::from("/mnt/cg two")));
    }
}
