//! `netprobe capture`: one-shot incident bundles (being written).

use crate::cli::CaptureArgs;

pub async fn run(_args: CaptureArgs, _tc_netns: Option<u32>) -> anyhow::Result<()> {
    anyhow::bail!("netprobe capture is not available in this build")
}
