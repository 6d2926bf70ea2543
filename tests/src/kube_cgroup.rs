//! A cgroup named as the kubelet names a container's (cgroupfs driver:
//! `kubepods/besteffort/pod<uid>/<container id>`), for running a lab
//! process "in a pod" without a kubelet. Removed on drop.

use std::path::PathBuf;

pub struct KubeCgroup {
    pub pod_uid: String,
    pub container_id: String,
    dir: PathBuf,
}

/// Hierarchies to try, first that exists wins (v1 pids, hybrid v2, v2).
const ROOTS: [&str; 3] = [
    "/sys/fs/cgroup/pids",
    "/sys/fs/cgroup/unified",
    "/sys/fs/cgroup",
];

impl KubeCgroup {
    pub fn create(tag: u16) -> KubeCgroup {
        let pod_uid = format!("6e70{tag:04x}-0000-4000-8000-00000000{tag:04x}");
        let container_id = format!("{:0>64}", format!("{tag:x}c0ffee"));
        let root = ROOTS
            .iter()
            .map(PathBuf::from)
            .find(|r| r.join("cgroup.procs").exists())
            .expect("a writable cgroup hierarchy");
        let dir = root
            .join("kubepods")
            .join("besteffort")
            .join(format!("pod{pod_uid}"))
            .join(&container_id);
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("creating cgroup {}: {e}", dir.display()));
        KubeCgroup {
            pod_uid,
            container_id,
            dir,
        }
    }

    /// Moves process `pid` into it (from the test's own mount namespace:
    /// `ip netns exec` remounts /sys, hiding the cgroup tree from inside).
    pub fn adopt(&self, pid: u32) {
        let procs = self.dir.join("cgroup.procs");
        std::fs::write(&procs, pid.to_string())
            .unwrap_or_else(|e| panic!("moving {pid} into {}: {e}", procs.display()));
    }
}

impl Drop for KubeCgroup {
    fn drop(&mut self) {
        // Leaf first; a directory still holding a process stays (and says so).
        let mut d = self.dir.clone();
        for _ in 0..4 {
            for _ in 0..50 {
                if std::fs::remove_dir(&d).is_ok() || !d.exists() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            if !d.pop() || d.ends_with("kubepods") && std::fs::remove_dir(&d).is_ok() {
                break;
            }
        }
    }
}
