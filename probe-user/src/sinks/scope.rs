//! Where a session's verdicts hold: the node, and the network namespace the
//! session runs in (the `--netns` one, or the one netprobe was started in).
//!
//! Diagnoses carry both (`node`, `netns`), and their fix is rewritten here,
//! in one place for every cause, so that it runs as pasted in a shell on
//! the node: `ip neigh del ...` becomes `ip -n NAME neigh del ...`, and
//! other namespace-bound tools (`conntrack`, `ss`, `nft`, `iptables`,
//! `sysctl`, ...) are run through `nsenter --net=PATH`. Commands that are
//! not bound to a namespace (`kubectl`, `grep`, ...) are left as they are,
//! and so is the comment after `#`.

use std::os::unix::fs::MetadataExt as _;

use crate::model::event::{Diagnosis, NetnsLabel};

/// The session's network namespace, when it is not the node's own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Netns {
    /// Its name under /run/netns, when it has one.
    pub name: Option<String>,
    /// A path that opens it: /run/netns/NAME, or what `--netns` named
    /// (e.g. /proc/PID/ns/net).
    pub path: String,
    pub inode: Option<u32>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scope {
    pub node: String,
    /// None: the node's own namespace (fixes run there as they are).
    pub netns: Option<Netns>,
    /// The session's namespace inode, whichever it is.
    pub inode: Option<u32>,
}

const RUN_NETNS: &str = "/run/netns";

/// The name under /run/netns of the namespace with this inode, if any.
fn name_of(inode: u32) -> Option<String> {
    // Namespace files live on nsfs: the same device as our own, so a plain
    // file left in /run/netns cannot pass for one by its inode number.
    let nsfs = std::fs::metadata("/proc/thread-self/ns/net").ok()?.dev();
    let dir = std::fs::read_dir(RUN_NETNS).ok()?;
    let mut names: Vec<String> = dir
        .flatten()
        .filter(|e| {
            std::fs::metadata(e.path()).is_ok_and(|m| m.ino() as u32 == inode && m.dev() == nsfs)
        })
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    names.into_iter().next()
}

/// The node's name: $NODE_NAME (set from spec.nodeName in the DaemonSet),
/// else the host name.
pub fn node_name() -> String {
    if let Some(n) = std::env::var("NODE_NAME").ok().filter(|n| !n.is_empty()) {
        return n;
    }
    uname().0
}

/// (nodename, release) from uname(2).
pub fn uname() -> (String, String) {
    // SAFETY: uname fills the zeroed struct; its fields are NUL-terminated.
    unsafe {
        let mut u: libc::utsname = std::mem::zeroed();
        if libc::uname(&mut u) != 0 {
            return ("unknown".into(), "unknown".into());
        }
        let s = |f: &[libc::c_char]| {
            std::ffi::CStr::from_ptr(f.as_ptr())
                .to_string_lossy()
                .into_owned()
        };
        (s(&u.nodename), s(&u.release))
    }
}

impl Scope {
    /// The scope of a session started with `--netns spec` (or none) now
    /// running in the namespace of inode `current`. The node's own
    /// namespace is PID 1's; when that cannot be read (no host PID
    /// namespace), only an explicit `--netns` counts as another one.
    pub fn detect(spec: Option<&str>, current: Option<u32>) -> Self {
        let init = std::fs::metadata("/proc/1/ns/net")
            .ok()
            .map(|m| m.ino() as u32);
        let foreign = match (init, current) {
            (Some(init), Some(current)) => init != current,
            _ => spec.is_some(),
        };
        let netns = foreign.then(|| {
            let name = match spec {
                Some(s) if !s.contains('/') => Some(s.to_string()),
                _ => current.and_then(name_of),
            };
            let path = match (&name, spec) {
                (Some(n), _) => format!("{RUN_NETNS}/{n}"),
                (None, Some(s)) => s.to_string(),
                // Started inside it (nsenter, a pod): a path that opens it
                // from the node while netprobe runs.
                (None, None) => format!("/proc/{}/ns/net", std::process::id()),
            };
            Netns {
                name,
                path,
                inode: current,
            }
        });
        Scope {
            node: node_name(),
            netns,
            inode: current,
        }
    }

    /// How a diagnosis names the session's namespace.
    pub fn label(&self) -> Option<NetnsLabel> {
        match &self.netns {
            Some(Netns {
                name: Some(name), ..
            }) => Some(NetnsLabel::Name(name.clone())),
            _ => self.inode.map(NetnsLabel::Inode),
        }
    }

    /// Stamps the diagnosis with the node and namespace, and makes its fix
    /// act in that namespace.
    pub fn apply(&self, d: &mut Diagnosis) {
        d.node = Some(self.node.clone());
        d.netns = self.label();
        if let (Some(ns), Some(fix)) = (&self.netns, &d.fix) {
            d.fix = Some(in_netns(fix, ns));
        }
    }
}

impl Scope {
    /// The `start` record: schema, version, node, kernel, and what is on
    /// or off in this session.
    pub fn start(
        &self,
        ports: &[u16],
        capabilities: &[(&str, bool)],
    ) -> crate::model::event::Event {
        crate::model::event::Event {
            time: chrono::Utc::now(),
            netns: self.inode,
            body: crate::model::event::EventBody::Start(crate::model::event::Start {
                schema: crate::model::event::SCHEMA,
                netprobe: crate::cli::VERSION.into(),
                node: self.node.clone(),
                kernel: uname().1,
                ports: ports.to_vec(),
                session_netns: self.label(),
                capabilities: capabilities
                    .iter()
                    .map(|(c, on)| (c.to_string(), *on))
                    .collect(),
            }),
        }
    }
}

/// Tools whose effect or answer depends on the network namespace.
const BOUND: &[&str] = &[
    "ip",
    "ss",
    "conntrack",
    "nft",
    "iptables",
    "ip6tables",
    "iptables-save",
    "sysctl",
    "tc",
    "ping",
    "arping",
    "ethtool",
    "bridge",
];

/// A comment that says the command runs elsewhere (on the peer): left alone.
const ELSEWHERE: &str = "# on the server";

fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-:@+=".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// `fix` with every namespace-bound command in it run in `ns`.
pub fn in_netns(fix: &str, ns: &Netns) -> String {
    if fix.contains(ELSEWHERE) {
        return fix.to_string();
    }
    // Byte offsets where a simple command starts, up to the comment.
    let bytes = fix.as_bytes();
    let mut starts = vec![0usize];
    let mut quote: Option<u8> = None;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match quote {
            Some(q) => {
                if b == q {
                    quote = None;
                } else if b == b'\\' && q == b'"' {
                    i += 1;
                }
            }
            None => match b {
                b'\'' | b'"' => quote = Some(b),
                b'\\' => i += 1,
                b'#' if i == 0 || bytes[i - 1].is_ascii_whitespace() => break,
                // `;`, `|`, `||`, `&&` (not the `&` of `2>&1`): the next
                // command starts after it.
                b';' | b'|' => {
                    if b == b'|' && bytes.get(i + 1) == Some(&b'|') {
                        i += 1;
                    }
                    starts.push(i + 1);
                }
                b'&' if bytes.get(i + 1) == Some(&b'&') => {
                    i += 1;
                    starts.push(i + 1);
                }
                _ => {}
            },
        }
        i += 1;
    }
    let mut out = String::with_capacity(fix.len() + 64);
    let mut from = 0;
    for &start in &starts {
        let rest = &fix[start..];
        let lead = rest.len() - rest.trim_start().len();
        let at = start + lead;
        let word_end = fix[at..]
            .find(|c: char| c.is_whitespace())
            .map_or(fix.len(), |e| at + e);
        let word = &fix[at..word_end];
        if !BOUND.contains(&word) {
            continue;
        }
        let args = fix[word_end..].split(['#', ';', '|']).next().unwrap_or("");
        // The conntrack table's size is the node's (read-only in others).
        if word == "sysctl" && args.contains("nf_conntrack_max") {
            continue;
        }
        out.push_str(&fix[from..at]);
        match (&ns.name, word) {
            (Some(name), "ip") => {
                out.push_str("ip -n ");
                out.push_str(&shell_word(name));
                from = word_end;
            }
            _ => {
                out.push_str("nsenter --net=");
                out.push_str(&shell_word(&ns.path));
                out.push(' ');
                from = at;
            }
        }
    }
    out.push_str(&fix[from..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named() -> Netns {
        Netns {
            name: Some("lab-a".into()),
            path: "/run/netns/lab-a".into(),
            inode: Some(4026532000),
        }
    }

    fn by_path() -> Netns {
        Netns {
            name: None,
            path: "/proc/4242/ns/net".into(),
            inode: Some(4026532001),
        }
    }

    #[test]
    fn ip_gets_its_own_namespace_flag_other_tools_nsenter() {
        let ns = named();
        assert_eq!(
            in_netns("ip neigh del 10.0.0.100 dev eth0", &ns),
            "ip -n lab-a neigh del 10.0.0.100 dev eth0"
        );
        assert_eq!(
            in_netns("ip neigh del 10.0.0.100 dev eth0", &by_path()),
            "nsenter --net=/proc/4242/ns/net ip neigh del 10.0.0.100 dev eth0"
        );
        assert_eq!(
            in_netns(
                "conntrack -D -p tcp --orig-src 10.0.0.1 --orig-dst 10.96.0.10",
                &ns
            ),
            "nsenter --net=/run/netns/lab-a conntrack -D -p tcp --orig-src 10.0.0.1 --orig-dst 10.96.0.10"
        );
    }

    #[test]
    fn every_command_of_a_list_and_none_in_the_comment() {
        let ns = named();
        assert_eq!(
            in_netns(
                "ip route get 10.0.0.2; ip neigh show   # the next hop there is down",
                &ns
            ),
            "ip -n lab-a route get 10.0.0.2; ip -n lab-a neigh show   # the next hop there is down"
        );
        assert_eq!(
            in_netns(
                "sysctl -a 2>/dev/null | grep '\\.rp_filter'   # 2 (loose) on the interface; ip link",
                &ns
            ),
            "nsenter --net=/run/netns/lab-a sysctl -a 2>/dev/null | grep '\\.rp_filter'   # 2 (loose) on the interface; ip link"
        );
        // Quoted separators are not separators.
        assert_eq!(
            in_netns("ss -ltnp 'sport = :6443; x'   # Recv-Q", &ns),
            "nsenter --net=/run/netns/lab-a ss -ltnp 'sport = :6443; x'   # Recv-Q"
        );
    }

    #[test]
    fn what_is_not_bound_to_the_namespace_is_left_alone() {
        let ns = by_path();
        for fix in [
            "kubectl get endpointslices -A -o wide | grep -w 10.0.0.2   # is it still listed?",
            "sysctl -w net.netfilter.nf_conntrack_max=2048   # then find what fills it: conntrack -L | head",
            "ss -tnp state all '( sport = :443 )'   # on the server 10.0.0.2: is the process accepting?",
        ] {
            assert_eq!(in_netns(fix, &ns), fix);
        }
    }

    #[test]
    fn odd_names_are_quoted() {
        let ns = Netns {
            name: Some("a b".into()),
            path: "/run/netns/a b".into(),
            inode: None,
        };
        assert_eq!(
            in_netns("ip neigh show 2>&1 && nft -a list ruleset", &ns),
            "ip -n 'a b' neigh show 2>&1 && nsenter --net='/run/netns/a b' nft -a list ruleset"
        );
    }

    #[test]
    fn diagnoses_get_node_namespace_and_fix() {
        let flow = crate::model::event::FlowRef {
            src: "10.0.0.1:40000".parse().unwrap(),
            dst: "10.0.0.100:6443".parse().unwrap(),
        };
        let mut d = Diagnosis::new("tls_handshake_unanswered", "stale_neighbour", flow, "s");
        d.fix = Some("ip neigh del 10.0.0.100 dev eth0".into());
        let scope = Scope {
            node: "node-1".into(),
            netns: Some(named()),
            inode: Some(4026532000),
        };
        scope.apply(&mut d);
        assert_eq!(d.node.as_deref(), Some("node-1"));
        assert_eq!(d.netns, Some(NetnsLabel::Name("lab-a".into())));
        assert_eq!(
            d.fix.as_deref(),
            Some("ip -n lab-a neigh del 10.0.0.100 dev eth0")
        );
        // The node's own namespace: the fix as it is, the inode as the name.
        let mut d2 = Diagnosis::new("tls_handshake_unanswered", "stale_neighbour", flow, "s");
        d2.fix = Some("ip neigh del 10.0.0.100 dev eth0".into());
        let own = Scope {
            node: "node-1".into(),
            netns: None,
            inode: Some(4026531840),
        };
        own.apply(&mut d2);
        assert_eq!(d2.fix.as_deref(), Some("ip neigh del 10.0.0.100 dev eth0"));
        assert_eq!(d2.netns, Some(NetnsLabel::Inode(4026531840)));
        // A JSON line carries one `netns` key, and reads back the same.
        let e = crate::model::event::Event {
            time: chrono::DateTime::parse_from_rfc3339("2026-12-07T12:00:00.123456Z")
                .unwrap()
                .with_timezone(&chrono::Utc),
            netns: None,
            body: crate::model::event::EventBody::Diagnosis(Box::new(d.clone())),
        };
        let line = serde_json::to_string(&e).unwrap();
        assert_eq!(line.matches("\"netns\"").count(), 1, "{line}");
        assert!(line.contains("\"netns\":\"lab-a\""), "{line}");
        assert!(line.contains("\"node\":\"node-1\""), "{line}");
        let back: crate::model::event::Event = serde_json::from_str(&line).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn the_namespace_netprobe_runs_in_is_the_nodes_when_it_is_pid_1s() {
        let me = std::fs::metadata("/proc/thread-self/ns/net")
            .ok()
            .map(|m| m.ino() as u32);
        let init = std::fs::metadata("/proc/1/ns/net")
            .ok()
            .map(|m| m.ino() as u32);
        let s = Scope::detect(None, me);
        if init.is_some() && init == me {
            assert_eq!(s.netns, None);
        }
        let s = Scope::detect(Some("lab-x"), Some(1));
        if init.is_some() {
            let ns = s.netns.unwrap();
            assert_eq!(ns.name.as_deref(), Some("lab-x"));
            assert_eq!(ns.path, "/run/netns/lab-x");
        }
        assert!(!s.node.is_empty());
    }
}
