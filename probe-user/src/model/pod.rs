//! Who a socket belongs to: a pod and a container, as events and diagnoses
//! carry them (`state::cri::identity` finds them).

use serde::{Deserialize, Serialize};

/// A pod: namespace and name where the runtime told them, UID always.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pod {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub uid: String,
}

impl Pod {
    pub fn from_uid(uid: String) -> Pod {
        Pod {
            namespace: None,
            name: None,
            uid,
        }
    }
}

impl std::fmt::Display for Pod {
    /// `namespace/name`, or the UID when the runtime did not name it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.namespace, &self.name) {
            (Some(ns), Some(name)) => write!(f, "{ns}/{name}"),
            _ => write!(f, "{}", self.uid),
        }
    }
}

/// A container: its ID (from the cgroup), and its name where the runtime
/// told it. Older streams wrote the ID alone as a string; both read back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "ContainerForm")]
pub struct Container {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ContainerForm {
    Id(String),
    Full { id: String, name: Option<String> },
}

impl From<ContainerForm> for Container {
    fn from(f: ContainerForm) -> Self {
        match f {
            ContainerForm::Id(id) => Container { id, name: None },
            ContainerForm::Full { id, name } => Container { id, name },
        }
    }
}

impl std::fmt::Display for Container {
    /// The name, else the ID's first 13 characters (as `crictl ps` shows).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.name {
            Some(name) => write!(f, "{name}"),
            None => write!(f, "{}", &self.id[..self.id.len().min(13)]),
        }
    }
}
