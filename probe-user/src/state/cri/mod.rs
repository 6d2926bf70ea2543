//! Pod names and namespaces from the node's container runtime over CRI
//! (containerd, CRI-O): which pod sandbox owns a network namespace or an
//! IP, and what a container ID is called. One job per file:
//!
//! - [`proto`]: the CRI messages read and sent, declared by hand.
//! - [`grpc`]: unary gRPC over HTTP/2 on a unix socket.
//! - [`client`]: the `RuntimeService` calls.
//! - [`info`]: the sandbox's namespace from its verbose status.
//! - [`socket`]: which socket (flag, environment, defaults).
//! - [`directory`]: the cache, keeping pods that just went away.
//! - [`refresh`]: the background task that fills it.

pub mod client;
pub mod directory;
pub mod grpc;
pub mod identity;
pub mod info;
pub mod proto;
pub mod refresh;
pub mod socket;

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
};

use tokio::sync::Notify;

pub use client::Runtime;
pub use directory::Directory;

/// The shared view of the runtime's pods, and a way to ask for a refresh.
#[derive(Clone)]
pub struct Handle {
    dir: Arc<Mutex<Directory>>,
    nudge: Arc<Notify>,
}

impl Handle {
    /// Starts the background refresh task (on the current tokio runtime).
    pub fn spawn(socket: PathBuf) -> Handle {
        let handle = Handle {
            dir: Default::default(),
            nudge: Arc::new(Notify::new()),
        };
        tokio::spawn(refresh::run(
            socket,
            handle.dir.clone(),
            handle.nudge.clone(),
        ));
        handle
    }

    /// A handle on a directory filled by hand, with no task behind it.
    #[cfg(test)]
    pub fn filled(dir: Directory) -> Handle {
        Handle {
            dir: Arc::new(Mutex::new(dir)),
            nudge: Arc::new(Notify::new()),
        }
    }

    /// Something not known yet was seen: refresh soon (rate limited).
    pub fn nudge(&self) {
        self.nudge.notify_one();
    }

    pub fn with<R>(&self, f: impl FnOnce(&Directory) -> R) -> R {
        f(&refresh::lock(&self.dir))
    }
}

/// `netprobe doctor`'s line: which socket, and whether it answers. An
/// absent socket is fine (pods are then named by cgroup); one that is
/// there and does not answer is not.
pub fn check(socket: Option<PathBuf>) -> Result<String, String> {
    let Some(socket) = socket else {
        return Ok(format!(
            "turned off ({}=none): pods named by cgroup (UID, container ID)",
            socket::ENV
        ));
    };
    if !socket.exists() {
        return Ok(format!(
            "no CRI socket at {}: pods named by cgroup (UID, container ID); --cri-socket PATH on trace, top, capture",
            socket.display()
        ));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("a runtime for the CRI check: {e}"))?;
    rt.block_on(async {
        let client = Runtime::connect(&socket, refresh::CALL_TIMEOUT).await?;
        let pods = client.list_pod_sandboxes().await?;
        let containers = client.list_containers().await?;
        Ok::<_, grpc::Error>((pods.len(), containers.len()))
    })
    .map(|(pods, containers)| {
        format!(
            "CRI at {} answers: {pods} pod sandboxes, {containers} containers; pods named namespace/name",
            socket.display()
        )
    })
    .map_err(|e| {
        format!(
            "CRI at {}: {e}; pods would be named by cgroup only (is the runtime running? --cri-socket none to skip)",
            socket.display()
        )
    })
}
