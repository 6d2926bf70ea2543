//! `netprobe top`: live retransmit histograms (being written).

use crate::cli::TopArgs;

pub async fn run(_args: TopArgs, _tc_netns: Option<u32>) -> anyhow::Result<()> {
    anyhow::bail!("netprobe top is not available in this build")
}
