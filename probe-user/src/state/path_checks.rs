//! The active path-MTU check, shared: one check per destination at a time,
//! its answer reused for a while, so a storm of a thousand sockets toward
//! one peer sends one series of echo requests, not a thousand.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crate::{model::facts::PathCheck, state::path_mtu};

/// How long a destination's answer is reused.
const REUSE: Duration = Duration::from_secs(10);
/// Destinations remembered at most (then forgotten all at once).
const MAX_REMEMBERED: usize = 1024;

type Slot = Arc<tokio::sync::Mutex<Option<(Instant, PathCheck)>>>;

static SLOTS: Mutex<Option<HashMap<Ipv4Addr, Slot>>> = Mutex::new(None);

fn slot(dst: Ipv4Addr) -> Slot {
    let mut slots = SLOTS.lock().unwrap_or_else(|e| e.into_inner());
    let slots = slots.get_or_insert_with(HashMap::new);
    if slots.len() >= MAX_REMEMBERED && !slots.contains_key(&dst) {
        slots.clear();
    }
    slots.entry(dst).or_default().clone()
}

/// The path toward `dst` (IPv4 only): `None` when not checked, an error
/// text when the check failed.
pub async fn check(dst: IpAddr) -> Option<Result<PathCheck, String>> {
    let IpAddr::V4(dst) = dst else {
        return None;
    };
    let slot = slot(dst);
    // Checks of the same destination wait for the one running.
    let mut cached = slot.lock().await;
    if let Some((at, p)) = cached.as_ref()
        && at.elapsed() < REUSE
    {
        return Some(Ok(p.clone()));
    }
    let result = tokio::task::spawn_blocking(move || path_mtu::check(dst))
        .await
        .map_err(|e| format!("path MTU check task: {e}"))
        .and_then(|r| r.map_err(|e| format!("path MTU check to {dst}: {e}")));
    if let Ok(p) = &result {
        *cached = Some((Instant::now(), p.clone()));
    }
    Some(result)
}
