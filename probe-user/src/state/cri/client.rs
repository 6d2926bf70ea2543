//! `runtime.v1.RuntimeService` calls: what netprobe reads (sandboxes, their
//! status, containers) and what a kubelet does to make pods (the lab tests
//! use these on a real containerd).

use std::{path::Path, time::Duration};

use super::{
    grpc::{Channel, Error},
    proto::*,
};

const SERVICE: &str = "/runtime.v1.RuntimeService/";

/// A connection to the runtime; every call is bounded by `timeout`.
#[derive(Clone)]
pub struct Runtime {
    channel: Channel,
    timeout: Duration,
}

impl Runtime {
    pub async fn connect(socket: &Path, timeout: Duration) -> Result<Runtime, Error> {
        let channel = tokio::time::timeout(timeout, Channel::connect(socket))
            .await
            .map_err(|_| timed_out("connecting", timeout))??;
        Ok(Runtime { channel, timeout })
    }

    async fn call<Req: prost::Message, Resp: prost::Message + Default>(
        &self,
        method: &str,
        request: &Req,
    ) -> Result<Resp, Error> {
        let path = format!("{SERVICE}{method}");
        tokio::time::timeout(self.timeout, self.channel.call(&path, request))
            .await
            .map_err(|_| timed_out(method, self.timeout))?
    }

    pub async fn list_pod_sandboxes(&self) -> Result<Vec<PodSandbox>, Error> {
        let r: ListPodSandboxResponse = self
            .call("ListPodSandbox", &ListPodSandboxRequest {})
            .await?;
        Ok(r.items)
    }

    /// Status with the runtime's verbose `info` (namespace paths, pid).
    pub async fn pod_sandbox_status(&self, id: &str) -> Result<PodSandboxStatusResponse, Error> {
        self.call(
            "PodSandboxStatus",
            &PodSandboxStatusRequest {
                pod_sandbox_id: id.to_string(),
                verbose: true,
            },
        )
        .await
    }

    pub async fn list_containers(&self) -> Result<Vec<Container>, Error> {
        let r: ListContainersResponse = self
            .call("ListContainers", &ListContainersRequest {})
            .await?;
        Ok(r.containers)
    }

    pub async fn run_pod_sandbox(&self, config: PodSandboxConfig) -> Result<String, Error> {
        let r: RunPodSandboxResponse = self
            .call(
                "RunPodSandbox",
                &RunPodSandboxRequest {
                    config: Some(config),
                },
            )
            .await?;
        Ok(r.pod_sandbox_id)
    }

    pub async fn stop_pod_sandbox(&self, id: &str) -> Result<(), Error> {
        let _: Empty = self.call("StopPodSandbox", &sandbox_id(id)).await?;
        Ok(())
    }

    pub async fn remove_pod_sandbox(&self, id: &str) -> Result<(), Error> {
        let _: Empty = self.call("RemovePodSandbox", &sandbox_id(id)).await?;
        Ok(())
    }

    /// Creates and starts a container in a sandbox; returns its ID.
    pub async fn start_container(
        &self,
        sandbox: &str,
        config: ContainerConfig,
        sandbox_config: PodSandboxConfig,
    ) -> Result<String, Error> {
        let r: CreateContainerResponse = self
            .call(
                "CreateContainer",
                &CreateContainerRequest {
                    pod_sandbox_id: sandbox.to_string(),
                    config: Some(config),
                    sandbox_config: Some(sandbox_config),
                },
            )
            .await?;
        let _: Empty = self
            .call(
                "StartContainer",
                &StartContainerRequest {
                    container_id: r.container_id.clone(),
                },
            )
            .await?;
        Ok(r.container_id)
    }
}

fn sandbox_id(id: &str) -> PodSandboxIdRequest {
    PodSandboxIdRequest {
        pod_sandbox_id: id.to_string(),
    }
}

fn timed_out(what: &str, after: Duration) -> Error {
    Error::Io(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("{what}: no answer within {after:?}"),
    ))
}
