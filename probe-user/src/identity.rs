//! Which pod and container a process belongs to, from its cgroup path: the
//! node's own answer, with no API server or container runtime needed. The
//! kubelet names pod cgroups after the pod UID with either driver:
//!
//! - cgroupfs: `/kubepods/burstable/pod<uid>/<container id>`
//! - systemd: `/kubepods.slice/kubepods-burstable.slice/
//!   kubepods-burstable-pod<uid with _>.slice/cri-containerd-<id>.scope`
//!
//! Names and namespaces of pods need the runtime (CRI) or the API; this
//! gives the UID and the container ID, which `kubectl get pods -A -o
//! custom-columns=...` and `crictl ps` resolve.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// A pod as far as the node's cgroups tell.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pod {
    pub uid: String,
}

/// Pod UID and container ID of a process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub pod: Pod,
    pub container: Option<String>,
}

/// Looks a pid up, remembering answers (a pid's cgroup rarely changes in
/// the time a diagnosis cares about). Bounded.
#[derive(Default)]
pub struct Identities {
    cache: HashMap<u32, Option<Identity>>,
}

const MAX_CACHED: usize = 4096;

impl Identities {
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
        pod: Pod { uid },
        container: container.filter(|c| c.len() >= 12 && c.bytes().all(|b| b.is_ascii_hexdigit())),
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
        assert_eq!(id.container.as_deref(), Some(CID));
        let sd = format!(
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{CID}.scope",
            UID.replace('-', "_")
        );
        let id = from_cgroup_path(&sd).unwrap();
        assert_eq!(id.pod.uid, UID);
        assert_eq!(id.container.as_deref(), Some(CID));
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
}
