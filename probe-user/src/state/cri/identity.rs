//! Which pod and container a socket belongs to. Two sources, both on the
//! node itself (no API server):
//!
//! - the container runtime over CRI ([`crate::state::cri`]): the pod sandbox that
//!   owns the socket's network namespace (or a flow's IP), with the pod's
//!   namespace, name and UID, and container names by ID;
//! - the cgroup path of the process (always there, also without a
//!   runtime socket): the pod UID and container ID. The kubelet names pod
//!   cgroups after the pod UID with either driver:
//!   - cgroupfs: `/kubepods/burstable/pod<uid>/<container id>`
//!   - systemd: `/kubepods.slice/kubepods-burstable.slice/
//!     kubepods-burstable-pod<uid with _>.slice/cri-containerd-<id>.scope`

use std::{
    collections::HashMap,
    net::IpAddr,
    time::{Duration, Instant},
};

pub use crate::model::pod::{Container, Pod};

/// Pod and container of a socket or process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub pod: Pod,
    pub container: Option<Container>,
}

/// Looks sockets and pids up, remembering cgroup answers (a pid's cgroup
/// rarely changes in the time a diagnosis cares about). Bounded.
#[derive(Default)]
pub struct Identities {
    cache: HashMap<u32, Option<Identity>>,
    runtime: Option<crate::state::cri::Handle>,
    /// The node's own namespace: never a pod's, never worth a refresh.
    node_netns: Option<u32>,
    /// What the runtime did not know, and when a refresh was asked for it.
    missed: HashMap<Miss, Instant>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Miss {
    Netns(u32),
    Ip(IpAddr),
    Uid(String),
    Container(String),
}

const MAX_CACHED: usize = 4096;
/// A namespace, IP, pod or container the runtime did not know asks for
/// another refresh after this long at the earliest.
const ASK_AGAIN: Duration = Duration::from_secs(30);

impl Identities {
    /// Names pods with the runtime's help too.
    pub fn with_runtime(runtime: crate::state::cri::Handle, node_netns: Option<u32>) -> Self {
        Self {
            runtime: Some(runtime),
            node_netns,
            ..Default::default()
        }
    }

    /// Pod UID and container ID from the process's cgroup.
    pub fn of_pid(&mut self, pid: u32) -> Option<Identity> {
        if let Some(hit) = self.cache.get(&pid) {
            return hit.clone();
        }
        let found = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .ok()
            .and_then(|t| from_cgroup_file(&t));
        if self.cache.len() >= MAX_CACHED {
            self.cache.clear();
        }
        self.cache.insert(pid, found.clone());
        found
    }

    /// A socket in namespace `netns` whose process is `pid` (either may be
    /// unknown): the pod owning the namespace, else the process's pod;
    /// named by the runtime where it knows them.
    pub fn of_socket(&mut self, pid: Option<u32>, netns: Option<u32>) -> Option<Identity> {
        let cgroup = pid.filter(|p| *p != 0).and_then(|p| self.of_pid(p));
        let netns = netns.filter(|n| Some(*n) != self.node_netns);
        let Some(rt) = self.runtime.clone() else {
            return cgroup;
        };
        let by_netns = netns.and_then(|n| rt.with(|d| d.by_netns(n).cloned()));
        if let (None, Some(n)) = (&by_netns, netns) {
            self.missed(&rt, Miss::Netns(n));
        }
        let (pod, container) = match (by_netns, cgroup) {
            (Some(pod), cg) => {
                // The process's container only if it is of the same pod.
                let c = cg
                    .filter(|c| c.pod.uid == pod.uid)
                    .and_then(|c| c.container);
                (pod, c)
            }
            (None, Some(cg)) => {
                let named = rt.with(|d| d.by_uid(&cg.pod.uid).cloned());
                if named.is_none() {
                    self.missed(&rt, Miss::Uid(cg.pod.uid.clone()));
                }
                (named.unwrap_or(cg.pod), cg.container)
            }
            (None, None) => return None,
        };
        let container = container.map(|mut c| {
            c.name = rt.with(|d| d.container_name(&c.id).map(str::to_string));
            if c.name.is_none() {
                self.missed(&rt, Miss::Container(c.id.clone()));
            }
            c
        });
        Some(Identity { pod, container })
    }

    /// The pod that has this IP, when the runtime said so (a flow seen on
    /// the wire, with no socket to go by).
    pub fn of_ip(&mut self, ip: IpAddr) -> Option<Pod> {
        let rt = self.runtime.clone()?;
        let pod = rt.with(|d| d.by_ip(ip).cloned());
        if pod.is_none() {
            self.missed(&rt, Miss::Ip(ip));
        }
        pod
    }

    /// Asks the runtime task for a refresh, once per [`ASK_AGAIN`] per miss.
    fn missed(&mut self, rt: &crate::state::cri::Handle, what: Miss) {
        let now = Instant::now();
        if self
            .missed
            .get(&what)
            .is_some_and(|t| now.duration_since(*t) < ASK_AGAIN)
        {
            return;
        }
        if self.missed.len() >= MAX_CACHED {
            self.missed
                .retain(|_, t| now.duration_since(*t) < ASK_AGAIN);
            if self.missed.len() >= MAX_CACHED {
                self.missed.clear();
            }
        }
        self.missed.insert(what, now);
        rt.nudge();
    }
}

/// The first kubepods path in a `/proc/PID/cgroup` file.
pub fn from_cgroup_file(text: &str) -> Option<Identity> {
    text.lines()
        .filter_map(|l| l.splitn(3, ':').nth(2))
        .find_map(from_cgroup_path)
}

/// Pod UID and container ID from one cgroup path.
pub fn from_cgroup_path(path: &str) -> Option<Identity> {
    if !path.contains("kubepods") {
        return None;
    }
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let (i, uid) = parts.iter().enumerate().find_map(|(i, p)| {
        let p = p.strip_suffix(".slice").unwrap_or(p);
        let at = p.rfind("pod")?;
        let uid = p[at + 3..].replace('_', "-");
        looks_like_uid(&uid).then_some((i, uid))
    })?;
    let container = parts.get(i + 1).map(|c| {
        let c = c.strip_suffix(".scope").unwrap_or(c);
        c.rsplit('-').next().unwrap_or(c).to_string()
    });
    Some(Identity {
        pod: Pod::from_uid(uid),
        container: container
            .filter(|c| c.len() >= 12 && c.bytes().all(|b| b.is_ascii_hexdigit()))
            .map(|id| Container { id, name: None }),
    })
}

fn looks_like_uid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| {
            if [8, 13, 18, 23].contains(&i) {
                b == b'-'
            } else {
                b.is_ascii_hexdigit()
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "0f5e2c9a-1b2c-4d3e-8f90-a1b2c3d4e5f6";
    const CID: &str = "3f1e4c5d6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c1d2e3f4a5b6c7d8e9f0a1b2c3d";

    #[test]
    fn cgroupfs_and_systemd_paths_name_the_pod_and_container() {
        let fs = format!("/kubepods/burstable/pod{UID}/{CID}");
        let id = from_cgroup_path(&fs).unwrap();
        assert_eq!(id.pod.uid, UID);
        assert_eq!(id.container.as_ref().map(|c| c.id.as_str()), Some(CID));
        let sd = format!(
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{CID}.scope",
            UID.replace('-', "_")
        );
        let id = from_cgroup_path(&sd).unwrap();
        assert_eq!(id.pod.uid, UID);
        assert_eq!(id.container.as_ref().map(|c| c.id.as_str()), Some(CID));
    }

    #[test]
    fn a_pod_level_path_has_no_container_and_others_no_pod() {
        let id = from_cgroup_path(&format!("/kubepods/pod{UID}")).unwrap();
        assert_eq!(id.container, None);
        assert_eq!(from_cgroup_path("/user.slice/session-1.scope"), None);
        assert_eq!(
            from_cgroup_path("/kubepods/besteffort/podnot-a-uid/x"),
            None
        );
        let file = format!("12:pids:/\n4:memory:/kubepods/pod{UID}/{CID}\n0::/\n");
        assert_eq!(from_cgroup_file(&file).unwrap().pod.uid, UID);
    }

    #[test]
    fn pods_and_containers_in_json_old_and_new() {
        let pod = Pod {
            namespace: Some("shop".into()),
            name: Some("cart-7d9f".into()),
            uid: UID.into(),
        };
        assert_eq!(
            serde_json::to_string(&pod).unwrap(),
            format!(r#"{{"namespace":"shop","name":"cart-7d9f","uid":"{UID}"}}"#)
        );
        assert_eq!(pod.to_string(), "shop/cart-7d9f");
        assert_eq!(Pod::from_uid(UID.into()).to_string(), UID);
        let named: Container =
            serde_json::from_str(&format!(r#"{{"id":"{CID}","name":"web"}}"#)).unwrap();
        assert_eq!(named.name.as_deref(), Some("web"));
        let old: Container = serde_json::from_str(&format!(r#""{CID}""#)).unwrap();
        assert_eq!(
            old,
            Container {
                id: CID.into(),
                name: None
            }
        );
        assert_eq!(old.to_string(), &CID[..13]);
        assert_eq!(
            serde_json::to_string(&old).unwrap(),
            format!(r#"{{"id":"{CID}"}}"#)
        );
    }

    #[test]
    fn the_sockets_namespace_names_the_pod_and_the_runtime_names_cgroups() {
        use crate::state::cri::directory::{ContainerName, Directory, Sandbox};
        let mut dir = Directory::default();
        let named = |ns: &str, name: &str, uid: &str| Pod {
            namespace: Some(ns.into()),
            name: Some(name.into()),
            uid: uid.into(),
        };
        let other_uid = "1f5e2c9a-1b2c-4d3e-8f90-a1b2c3d4e5f6";
        dir.update(
            Instant::now(),
            vec![
                Sandbox {
                    id: "s1".into(),
                    pod: named("shop", "cart-0", UID),
                    netns: Some(4026532001),
                    ips: vec!["10.1.0.5".parse().unwrap()],
                    resolved: true,
                },
                Sandbox {
                    id: "s2".into(),
                    pod: named("billing", "invoice-1", other_uid),
                    netns: Some(4026532002),
                    ips: vec![],
                    resolved: true,
                },
            ],
            vec![ContainerName {
                id: CID.into(),
                name: "web".into(),
                sandbox: "s1".into(),
            }],
        );
        let mut ids =
            Identities::with_runtime(crate::state::cri::Handle::filled(dir), Some(4026531840));
        // pid 7's cgroup: pod UID's container CID.
        ids.cache
            .insert(7, from_cgroup_path(&format!("/kubepods/pod{UID}/{CID}")));
        ids.cache.insert(8, None);

        // By namespace alone (a process outside the pod's cgroup).
        let id = ids.of_socket(Some(8), Some(4026532001)).unwrap();
        assert_eq!(id.pod, named("shop", "cart-0", UID));
        assert_eq!(id.container, None);
        // By cgroup, named by the runtime, container named.
        let id = ids.of_socket(Some(7), None).unwrap();
        assert_eq!(id.pod.to_string(), "shop/cart-0");
        assert_eq!(id.container.unwrap().name.as_deref(), Some("web"));
        // The namespace wins; a container of another pod is not claimed.
        let id = ids.of_socket(Some(7), Some(4026532002)).unwrap();
        assert_eq!(id.pod.to_string(), "billing/invoice-1");
        assert_eq!(id.container, None);
        // The node's own namespace, an unknown one, no process: nobody.
        assert_eq!(ids.of_socket(Some(8), Some(4026531840)), None);
        assert_eq!(ids.of_socket(None, Some(4026539999)), None);
        assert_eq!(
            ids.missed.len(),
            1,
            "the unknown namespace asked for a refresh"
        );
        // By IP, for diagnoses seen on the wire.
        assert_eq!(
            ids.of_ip("10.1.0.5".parse().unwrap()).unwrap().to_string(),
            "shop/cart-0"
        );
        assert_eq!(ids.of_ip("10.1.0.6".parse().unwrap()), None);
    }
}
