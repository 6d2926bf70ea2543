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
