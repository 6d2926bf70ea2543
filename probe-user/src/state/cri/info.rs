//! The sandbox's network namespace, from the verbose `info` of
//! PodSandboxStatus: containerd and CRI-O both put a JSON document under
//! the key `info` holding the OCI runtime spec of the sandbox
//! (`runtimeSpec.linux.namespaces[type=network].path`) and the pid of its
//! pause process (`pid`).

use std::collections::HashMap;

use serde::Deserialize;

/// Where the sandbox's network namespace can be opened.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SandboxNetns {
    /// Bind mount of the namespace (`/var/run/netns/cni-...`).
    pub path: Option<String>,
    /// The sandbox's pause process (`/proc/PID/ns/net`).
    pub pid: Option<u32>,
}

#[derive(Deserialize)]
struct Info {
    #[serde(default)]
    pid: Option<u32>,
    #[serde(default, rename = "runtimeSpec")]
    runtime_spec: Option<Spec>,
}

#[derive(Deserialize)]
struct Spec {
    #[serde(default)]
    linux: Option<Linux>,
}

#[derive(Deserialize)]
struct Linux {
    #[serde(default)]
    namespaces: Vec<Namespace>,
}

#[derive(Deserialize)]
struct Namespace {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    path: Option<String>,
}

/// Reads every value of the info map that parses as such a document; the
/// first network namespace path and pid found win.
pub fn sandbox_netns(info: &HashMap<String, String>) -> SandboxNetns {
    let mut out = SandboxNetns::default();
    // "info" first, then the rest in a fixed order.
    let mut keys: Vec<&String> = info.keys().collect();
    keys.sort_by_key(|k| (k.as_str() != "info", k.as_str()));
    for key in keys {
        let Ok(doc) = serde_json::from_str::<Info>(&info[key]) else {
            continue;
        };
        if out.pid.is_none() {
            out.pid = doc.pid.filter(|p| *p > 0);
        }
        if out.path.is_none() {
            out.path = doc
                .runtime_spec
                .and_then(|s| s.linux)
                .and_then(|l| {
                    l.namespaces
                        .into_iter()
                        .find(|n| n.kind == "network")
                        .and_then(|n| n.path)
                })
                .filter(|p| !p.is_empty());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containerd_info_gives_path_and_pid() {
        let json = r#"{"pid":4242,"processStatus":"running","netNamespaceClosed":false,
            "image":"k8s.io/pause:3.6","runtimeSpec":{"ociVersion":"1.0.2-dev",
            "linux":{"namespaces":[{"type":"pid"},{"type":"ipc"},{"type":"uts"},{"type":"mount"},
            {"type":"network","path":"/var/run/netns/cni-5b0e6f0b-9d0c-2c1f-6a53-4b1f0e0c2d7e"}]}}}"#;
        let info = HashMap::from([("info".to_string(), json.to_string())]);
        let got = sandbox_netns(&info);
        assert_eq!(
            got.path.as_deref(),
            Some("/var/run/netns/cni-5b0e6f0b-9d0c-2c1f-6a53-4b1f0e0c2d7e")
        );
        assert_eq!(got.pid, Some(4242));
    }

    #[test]
    fn host_network_sandbox_or_junk_gives_nothing_but_the_pid() {
        let json = r#"{"pid":7,"runtimeSpec":{"linux":{"namespaces":[{"type":"pid"}]}}}"#;
        let info = HashMap::from([
            ("info".to_string(), json.to_string()),
            ("other".to_string(), "not json".to_string()),
        ]);
        assert_eq!(
            sandbox_netns(&info),
            SandboxNetns {
                path: None,
                pid: Some(7)
            }
        );
        assert_eq!(sandbox_netns(&HashMap::new()), SandboxNetns::default());
    }
}
