//! Bounded polling: every wait in the lab has a deadline.

use std::thread;
use std::time::{Duration, Instant};

/// Calls `f` until it returns Some or `timeout` passes (at least once).
pub fn poll_until<T>(
    timeout: Duration,
    interval: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        thread::sleep(interval.min(deadline - now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gives_up_at_the_deadline() {
        let start = Instant::now();
        let mut calls = 0;
        let r: Option<()> = poll_until(
            Duration::from_millis(100),
            Duration::from_millis(10),
            || {
                calls += 1;
                None
            },
        );
        assert!(r.is_none());
        assert!((2..=12).contains(&calls), "{calls}");
        assert!(start.elapsed() < Duration::from_millis(500));
    }

    #[test]
    fn returns_first_value() {
        let mut n = 0;
        let r = poll_until(Duration::from_secs(5), Duration::from_millis(1), || {
            n += 1;
            (n == 3).then_some(n)
        });
        assert_eq!(r, Some(3));
    }
}
