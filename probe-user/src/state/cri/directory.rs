//! What the runtime said about pods and containers, indexed the ways
//! events need it: network namespace inode, pod IP and pod UID to the pod,
//! container ID to its name. Pods and containers that went away are kept
//! for [`KEEP_GONE`] (the interesting ones often just have), at most
//! [`MAX_GONE`] of each. Pure: time is passed in.

use std::{
    collections::HashMap,
    net::IpAddr,
    time::{Duration, Instant},
};

use crate::model::pod::Pod;

pub const KEEP_GONE: Duration = Duration::from_secs(300);
pub const MAX_GONE: usize = 1024;

/// A pod sandbox as netprobe uses it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sandbox {
    pub id: String,
    pub pod: Pod,
    /// Inode of its network namespace (none for host-network pods, or when
    /// it could not be opened).
    pub netns: Option<u32>,
    pub ips: Vec<IpAddr>,
    /// Its status was read (namespace and IPs are what it said; a
    /// host-network pod has no namespace of its own).
    pub resolved: bool,
}

/// A container's name and the sandbox it belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerName {
    pub id: String,
    pub name: String,
    pub sandbox: String,
}

/// Entries by ID, each with the time it was first found missing.
type Kept<T> = HashMap<String, (T, Option<Instant>)>;

#[derive(Default)]
pub struct Directory {
    sandboxes: Kept<Sandbox>,
    containers: Kept<ContainerName>,
    by_netns: HashMap<u32, String>,
    by_ip: HashMap<IpAddr, String>,
    by_uid: HashMap<String, String>,
    /// Completed refreshes.
    pub refreshes: u64,
}

impl Directory {
    /// A sandbox seen before, still present at the last refresh (its
    /// namespace and IPs need not be asked for again).
    pub fn live_sandbox(&self, id: &str) -> Option<&Sandbox> {
        self.sandboxes
            .get(id)
            .filter(|(_, gone)| gone.is_none())
            .map(|(s, _)| s)
    }

    /// Replaces what is live with a fresh listing; what is no longer listed
    /// is kept as gone for a while.
    pub fn update(
        &mut self,
        now: Instant,
        sandboxes: Vec<Sandbox>,
        containers: Vec<ContainerName>,
    ) {
        merge(
            &mut self.sandboxes,
            sandboxes.into_iter().map(|s| (s.id.clone(), s)),
            now,
        );
        merge(
            &mut self.containers,
            containers.into_iter().map(|c| (c.id.clone(), c)),
            now,
        );
        self.by_netns.clear();
        self.by_ip.clear();
        self.by_uid.clear();
        // Gone first, live after: a namespace inode or IP reused by a live
        // pod names the live one.
        let mut order: Vec<&(Sandbox, Option<Instant>)> = self.sandboxes.values().collect();
        order.sort_by_key(|(_, gone)| std::cmp::Reverse(*gone));
        for (s, _) in order {
            if let Some(inode) = s.netns {
                self.by_netns.insert(inode, s.id.clone());
            }
            for ip in &s.ips {
                self.by_ip.insert(*ip, s.id.clone());
            }
            self.by_uid.insert(s.pod.uid.clone(), s.id.clone());
        }
        self.refreshes += 1;
    }

    fn sandbox(&self, id: Option<&String>) -> Option<&Pod> {
        self.sandboxes.get(id?).map(|(s, _)| &s.pod)
    }

    pub fn by_netns(&self, inode: u32) -> Option<&Pod> {
        self.sandbox(self.by_netns.get(&inode))
    }

    pub fn by_ip(&self, ip: IpAddr) -> Option<&Pod> {
        self.sandbox(self.by_ip.get(&ip))
    }

    pub fn by_uid(&self, uid: &str) -> Option<&Pod> {
        self.sandbox(self.by_uid.get(uid))
    }

    pub fn container_name(&self, id: &str) -> Option<&str> {
        self.containers.get(id).map(|(c, _)| c.name.as_str())
    }

    /// Sandboxes known (live and kept), containers known.
    pub fn len(&self) -> (usize, usize) {
        (self.sandboxes.len(), self.containers.len())
    }
}

/// Live entries become `fresh`; missing ones are marked gone, dropped after
/// [`KEEP_GONE`], and the oldest gone beyond [`MAX_GONE`] are dropped.
fn merge<T>(kept: &mut Kept<T>, fresh: impl Iterator<Item = (String, T)>, now: Instant) {
    for (_, gone) in kept.values_mut() {
        gone.get_or_insert(now);
    }
    for (id, item) in fresh {
        kept.insert(id, (item, None));
    }
    kept.retain(|_, (_, gone)| gone.is_none_or(|t| now.saturating_duration_since(t) < KEEP_GONE));
    let mut gone: Vec<(Instant, String)> = kept
        .iter()
        .filter_map(|(id, (_, g))| g.map(|t| (t, id.clone())))
        .collect();
    if gone.len() > MAX_GONE {
        gone.sort();
        for (_, id) in &gone[..gone.len() - MAX_GONE] {
            kept.remove(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sandbox(id: &str, name: &str, netns: u32, ip: &str) -> Sandbox {
        Sandbox {
            id: id.into(),
            pod: Pod {
                namespace: Some("shop".into()),
                name: Some(name.into()),
                uid: format!("uid-{id}"),
            },
            netns: Some(netns),
            ips: vec![ip.parse().unwrap()],
            resolved: true,
        }
    }

    #[test]
    fn gone_pods_are_kept_for_a_while_and_reused_inodes_name_the_live_pod() {
        let t0 = Instant::now();
        let mut d = Directory::default();
        let c = ContainerName {
            id: "c1".into(),
            name: "web".into(),
            sandbox: "s1".into(),
        };
        d.update(t0, vec![sandbox("s1", "cart-1", 100, "10.0.0.5")], vec![c]);
        assert_eq!(d.by_netns(100).unwrap().name.as_deref(), Some("cart-1"));
        assert_eq!(d.by_ip("10.0.0.5".parse().unwrap()).unwrap().uid, "uid-s1");
        assert_eq!(d.container_name("c1"), Some("web"));
        // s1 went away; s2 got the same namespace inode.
        let t1 = t0 + Duration::from_secs(10);
        d.update(t1, vec![sandbox("s2", "cart-2", 100, "10.0.0.6")], vec![]);
        assert!(d.live_sandbox("s1").is_none());
        assert_eq!(d.by_netns(100).unwrap().name.as_deref(), Some("cart-2"));
        assert_eq!(d.by_uid("uid-s1").unwrap().name.as_deref(), Some("cart-1"));
        assert_eq!(d.by_ip("10.0.0.5".parse().unwrap()).unwrap().uid, "uid-s1");
        assert_eq!(d.container_name("c1"), Some("web"));
        // Still kept just before KEEP_GONE from when it went, gone after.
        d.update(t1 + KEEP_GONE - Duration::from_secs(1), vec![], vec![]);
        assert!(d.by_uid("uid-s1").is_some());
        d.update(t1 + KEEP_GONE, vec![], vec![]);
        assert!(d.by_uid("uid-s1").is_none());
        assert_eq!(d.container_name("c1"), None);
        assert_eq!(d.len(), (1, 0));
    }

    #[test]
    fn at_most_max_gone_are_kept() {
        let t0 = Instant::now();
        let mut kept: Kept<u32> = HashMap::new();
        merge(
            &mut kept,
            (0..MAX_GONE as u32 + 5).map(|i| (i.to_string(), i)),
            t0,
        );
        // All gone, the first five a second earlier than the rest.
        for (i, (_, gone)) in kept.iter_mut() {
            let early = i.parse::<u32>().unwrap() < 5;
            *gone = Some(t0 - Duration::from_secs(u64::from(early)));
        }
        merge(&mut kept, std::iter::empty(), t0 + Duration::from_secs(1));
        assert_eq!(kept.len(), MAX_GONE);
        assert!(!kept.contains_key("0") && kept.contains_key("5"));
    }
}
