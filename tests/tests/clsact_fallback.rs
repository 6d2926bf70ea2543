//! Kernels without tcx (before 6.6): the classifiers go on a clsact qdisc as
//! netlink filters, which outlive a SIGKILLed netprobe. The next netprobe
//! finds its own leftovers by program name, removes them and says so; a
//! clean exit leaves nothing. Forced here with NETPROBE_FORCE_CLSACT=1 (the
//! matrix's 5.10 and 6.1 guests take the path by themselves). Root only.

use std::process::Command;
use std::time::Duration;

use netprobe_tests::{Lab, Netprobe, require_root};

const READY_TIMEOUT: Duration = Duration::from_secs(30);

fn start(ns: &netprobe_tests::netns::Netns, ifname: &str) -> Netprobe {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net={}", ns.path().display()))
        .arg("--")
        .arg(netprobe_tests::netprobe::binary())
        .args(["trace", "--json", "--port", "6443", "--iface", ifname])
        .env("NETPROBE_FORCE_CLSACT", "1");
    let mut np = Netprobe::start_command(c);
    np.wait_ready(READY_TIMEOUT)
        .unwrap_or_else(|e| panic!("netprobe did not get ready: {e:#}\n{}", np.stderr()));
    np
}

/// netprobe's clsact filters on `ifname`, both directions.
fn filters(ns: &netprobe_tests::netns::Netns, ifname: &str) -> usize {
    ["ingress", "egress"]
        .iter()
        .map(|dir| {
            let out = ns.exec(["tc", "filter", "show", "dev", ifname, dir]);
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| l.contains("tc_ingress") || l.contains("tc_egress"))
                .count()
        })
        .sum()
}

#[test]
fn clsact_fallback_removes_a_killed_netprobes_filters_at_start() {
    require_root();
    let mut lab = Lab::new("clsact");
    let (a, _b) = lab.pair();

    let mut first = start(&a.ns, &a.ifname);
    assert_eq!(filters(&a.ns, &a.ifname), 2, "{}", first.stderr());
    first.kill9();
    assert_eq!(
        filters(&a.ns, &a.ifname),
        2,
        "a SIGKILL leaves the netlink filters behind"
    );

    let mut second = start(&a.ns, &a.ifname);
    assert_eq!(filters(&a.ns, &a.ifname), 2, "its own two, not four");
    let stopped = second.stop();
    assert!(stopped.clean_exit(), "{}", stopped.stderr);
    for want in [
        format!(
            "removed netprobe's leftover clsact filter tc_ingress ingress on {}",
            a.ifname
        ),
        format!(
            "removed netprobe's leftover clsact filter tc_egress egress on {}",
            a.ifname
        ),
    ] {
        assert!(
            stopped.stderr.contains(&want),
            "want {want:?} in\n{}",
            stopped.stderr
        );
    }
    assert_eq!(
        filters(&a.ns, &a.ifname),
        0,
        "nothing left after a clean exit"
    );
}
