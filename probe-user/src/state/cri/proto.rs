//! The few messages of CRI `runtime.v1` (k8s.io/cri-api, api.proto) that
//! netprobe sends or reads, declared by hand with their field numbers: no
//! protoc, and fields netprobe does not read are skipped on decode.

use std::collections::HashMap;

/// `PodSandboxMetadata`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandboxMetadata {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub uid: String,
    #[prost(string, tag = "3")]
    pub namespace: String,
    #[prost(uint32, tag = "4")]
    pub attempt: u32,
}

/// `ListPodSandboxRequest` (no filter: every sandbox).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ListPodSandboxRequest {}

/// `PodSandbox`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandbox {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(message, optional, tag = "2")]
    pub metadata: Option<PodSandboxMetadata>,
    /// 0 ready, 1 not ready.
    #[prost(int32, tag = "3")]
    pub state: i32,
    #[prost(int64, tag = "4")]
    pub created_at: i64,
}

/// `ListPodSandboxResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ListPodSandboxResponse {
    #[prost(message, repeated, tag = "1")]
    pub items: Vec<PodSandbox>,
}

/// `PodSandboxStatusRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandboxStatusRequest {
    #[prost(string, tag = "1")]
    pub pod_sandbox_id: String,
    #[prost(bool, tag = "2")]
    pub verbose: bool,
}

/// `PodIP`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PodIp {
    #[prost(string, tag = "1")]
    pub ip: String,
}

/// `PodSandboxNetworkStatus`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandboxNetworkStatus {
    #[prost(string, tag = "1")]
    pub ip: String,
    #[prost(message, repeated, tag = "2")]
    pub additional_ips: Vec<PodIp>,
}

/// `PodSandboxStatus`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandboxStatus {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(message, optional, tag = "2")]
    pub metadata: Option<PodSandboxMetadata>,
    #[prost(int32, tag = "3")]
    pub state: i32,
    #[prost(message, optional, tag = "5")]
    pub network: Option<PodSandboxNetworkStatus>,
}

/// `PodSandboxStatusResponse`: `info` holds JSON strings (verbose only).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandboxStatusResponse {
    #[prost(message, optional, tag = "1")]
    pub status: Option<PodSandboxStatus>,
    #[prost(map = "string, string", tag = "2")]
    pub info: HashMap<String, String>,
}

/// `ListContainersRequest` (no filter).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ListContainersRequest {}

/// `ContainerMetadata`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ContainerMetadata {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(uint32, tag = "2")]
    pub attempt: u32,
}

/// `Container`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Container {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(string, tag = "2")]
    pub pod_sandbox_id: String,
    #[prost(message, optional, tag = "3")]
    pub metadata: Option<ContainerMetadata>,
}

/// `ListContainersResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ListContainersResponse {
    #[prost(message, repeated, tag = "1")]
    pub containers: Vec<Container>,
}

// What a kubelet sends to make pods: the lab tests create real sandboxes
// and containers with these.

/// `LinuxPodSandboxConfig` (cgroup parent only).
#[derive(Clone, PartialEq, prost::Message)]
pub struct LinuxPodSandboxConfig {
    #[prost(string, tag = "1")]
    pub cgroup_parent: String,
}

/// `PodSandboxConfig`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandboxConfig {
    #[prost(message, optional, tag = "1")]
    pub metadata: Option<PodSandboxMetadata>,
    #[prost(string, tag = "2")]
    pub hostname: String,
    #[prost(string, tag = "3")]
    pub log_directory: String,
    #[prost(message, optional, tag = "8")]
    pub linux: Option<LinuxPodSandboxConfig>,
}

/// `RunPodSandboxRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RunPodSandboxRequest {
    #[prost(message, optional, tag = "1")]
    pub config: Option<PodSandboxConfig>,
}

/// `RunPodSandboxResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RunPodSandboxResponse {
    #[prost(string, tag = "1")]
    pub pod_sandbox_id: String,
}

/// `StopPodSandboxRequest` and `RemovePodSandboxRequest` (same shape).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandboxIdRequest {
    #[prost(string, tag = "1")]
    pub pod_sandbox_id: String,
}

/// `ImageSpec`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ImageSpec {
    #[prost(string, tag = "1")]
    pub image: String,
}

/// `ContainerConfig` (metadata, image, command and arguments).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ContainerConfig {
    #[prost(message, optional, tag = "1")]
    pub metadata: Option<ContainerMetadata>,
    #[prost(message, optional, tag = "2")]
    pub image: Option<ImageSpec>,
    #[prost(string, repeated, tag = "3")]
    pub command: Vec<String>,
    #[prost(string, repeated, tag = "4")]
    pub args: Vec<String>,
    #[prost(string, tag = "11")]
    pub log_path: String,
}

/// `CreateContainerRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CreateContainerRequest {
    #[prost(string, tag = "1")]
    pub pod_sandbox_id: String,
    #[prost(message, optional, tag = "2")]
    pub config: Option<ContainerConfig>,
    #[prost(message, optional, tag = "3")]
    pub sandbox_config: Option<PodSandboxConfig>,
}

/// `CreateContainerResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CreateContainerResponse {
    #[prost(string, tag = "1")]
    pub container_id: String,
}

/// `StartContainerRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StartContainerRequest {
    #[prost(string, tag = "1")]
    pub container_id: String,
}

/// Replies with no fields (`StopPodSandboxResponse`, ...).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Empty {}

#[cfg(test)]
mod tests {
    //! Replies recorded from containerd 1.6.20 (Debian 12) over its CRI
    //! socket, as they came off the wire (gRPC-framed): one pod sandbox
    //! `shop/cart-0` made by the lab harness, with one container `web`.
    use super::*;
    use crate::state::cri::{grpc::unframe, info};

    #[test]
    fn recorded_containerd_replies_decode() {
        let list: ListPodSandboxResponse =
            unframe(include_bytes!("fixtures/list_pod_sandbox.bin")).unwrap();
        assert_eq!(list.items.len(), 1);
        let sb = &list.items[0];
        let meta = sb.metadata.as_ref().unwrap();
        assert_eq!(
            (meta.namespace.as_str(), meta.name.as_str()),
            ("shop", "cart-0")
        );
        assert_eq!(meta.uid.len(), 36);
        assert_eq!(sb.state, 0);
        assert_eq!(sb.id.len(), 64);

        let status: PodSandboxStatusResponse =
            unframe(include_bytes!("fixtures/pod_sandbox_status.bin")).unwrap();
        let st = status.status.as_ref().unwrap();
        assert_eq!(st.id, sb.id);
        assert_eq!(st.network.as_ref().unwrap().ip, "10.231.77.2");
        let ns = info::sandbox_netns(&status.info);
        assert!(
            ns.path
                .as_deref()
                .is_some_and(|p| p.contains("/io.containerd.grpc.v1.cri/netns/cni-")),
            "{ns:?}"
        );
        assert_eq!(ns.pid, Some(4268));

        let containers: ListContainersResponse =
            unframe(include_bytes!("fixtures/list_containers.bin")).unwrap();
        assert_eq!(containers.containers.len(), 1);
        let c = &containers.containers[0];
        assert_eq!(c.pod_sandbox_id, sb.id);
        assert_eq!(c.metadata.as_ref().unwrap().name, "web");
        assert_eq!(c.id.len(), 64);
    }
}
