//! Replays the fuzz seed corpora (`fuzz/corpus/TARGET/*`) through the same
//! harness functions the cargo-fuzz targets call (`fuzz/src/lib.rs`,
//! included here as a module), so a plain `cargo test` on stable covers
//! every decoder and parser of untrusted bytes with those inputs, and any
//! crash input added to a corpus stays a regression test.
//!
//! Besides "no panic", it checks that the seeds reach deep: a real
//! ClientHello gives its SNI, the recorded incidents give their diagnoses,
//! and so on. A layout change that makes the seeds stale fails here;
//! regenerate them with
//!
//! ```text
//! NETPROBE_REGENERATE_CORPUS=1 cargo test -p probe-user --test fuzz_corpus
//! ```
//!
//! (the `replay_jsonl` seeds are recorded streams, copied, not generated).

#[allow(dead_code)]
#[path = "../../fuzz/src/lib.rs"]
mod harness;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use harness::{FuzzSegment, Outcome, TARGETS};
use probe_common::{
    AF_INET, AF_INET6, ArpRecord, NeighRecord, PACKET_CAPTURE, PacketRecord, RecordHeader,
    TLS_CAPTURE, TcpRecord, TlsRecord, arp_op, direction, kind, tls_part,
};
use probe_user::pipeline::decode::to_bytes;

fn corpus_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus")
}

/// Every file of one target's corpus, sorted by name.
fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_root().join(target);
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_file())
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let data = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (name, data)
        })
        .collect();
    files.sort();
    files
}

#[test]
fn every_corpus_input_replays_through_its_target() {
    let mut found: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for target in TARGETS {
        let files = corpus(target);
        assert!(!files.is_empty(), "no seeds for {target}");
        for (name, data) in files {
            // A panic names the input; the harness asserts say what broke.
            let outcome: Outcome = std::panic::catch_unwind(|| harness::run(target, &data))
                .unwrap_or_else(|_| panic!("{target}/{name} crashed (see the panic above)"))
                .expect("a known target");
            found.entry(target).or_default().extend(outcome.found);
        }
    }
    let has = |target: &str, needle: &str| {
        let f = &found[target];
        assert!(
            f.iter().any(|s| s.contains(needle)),
            "{target}: no seed produced {needle:?}; got {f:#?}"
        );
    };
    has("decode_record", "retransmit");
    has("decode_record", "reset");
    has("decode_record", "synack_retransmit");
    has("decode_record", "neighbour");
    has("decode_record", "arp gratuitous");
    has("decode_record", "packet");
    has("decode_record", "tls_client_hello sni=example.test");
    has("decode_record", "tls_server_hello");
    has(
        "tls_reassembler",
        "client_hello sni=example.test segments=1",
    );
    has(
        "tls_reassembler",
        "client_hello sni=example.test segments=3",
    );
    has("tls_reassembler", "server_hello selected=0x0304");
    has("arp_ndp_parse", "arp 10.0.0.100 at");
    has("arp_ndp_parse", "advert fd00::100 at");
    has(
        "netlink_conntrack",
        "conntrack tcp 10.0.0.1:40000 -> 10.96.0.10:443 dnat=true",
    );
    has(
        "netlink_conntrack",
        "conntrack udp [fd00::1]:5353 -> [fd00::2]:53 dnat=false",
    );
    has("netlink_route", "link 2 eth0");
    has(
        "netlink_route",
        "neighbour 10.0.0.100 02:6e:70:00:00:03 STALE",
    );
    has("netlink_route", "route unicast");
    has("replay_jsonl", "diagnosis stale_neighbour");
    has("replay_jsonl", "diagnosis stale_conntrack_nat");
    has("btf_parse", "sock.__sk_common.skc_rcv_saddr at 4");
    has(
        "btf_parse",
        "struct sock member __sk_common.skc_family is a bitfield",
    );
}

/// The seeds' depth does not rest on luck: each generated seed on its own.
#[test]
fn generated_seeds_do_what_their_names_say() {
    for (target, name, data) in seeds() {
        let out = harness::run(target, &data).expect("a known target");
        assert!(
            out.accepted > 0,
            "{target}/{name}: nothing accepted: {out:?}"
        );
    }
}

/// The committed seeds are what today's record layouts produce: a layout
/// change must come with fresh seeds. `NETPROBE_REGENERATE_CORPUS=1 cargo
/// test -p probe-user --test fuzz_corpus` writes them.
#[test]
fn seed_corpus_matches_the_record_layouts() {
    let regenerate = std::env::var_os("NETPROBE_REGENERATE_CORPUS").is_some();
    for (target, name, data) in seeds() {
        let dir = corpus_root().join(target);
        let path = dir.join(name);
        if regenerate {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &data).unwrap();
            continue;
        }
        let on_disk = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (NETPROBE_REGENERATE_CORPUS=1 writes it)",
                path.display()
            )
        });
        assert!(
            on_disk == data,
            "{} is stale for the current record layouts (NETPROBE_REGENERATE_CORPUS=1 rewrites it)",
            path.display()
        );
    }
}

// ---------------------------------------------------------------------------
// Seeds
// ---------------------------------------------------------------------------

/// ClientHello from `openssl s_client -servername example.test` (OpenSSL 3),
/// one 318-byte segment; and the server's 761-byte answer (TLS 1.3
/// ServerHello, ChangeCipherSpec, encrypted records).
const CLIENT_HELLO: &str = include_str!("../src/pipeline/tls_fixtures/client_hello_openssl3.hex");
const SERVER_HELLO: &str = include_str!("../src/pipeline/tls_fixtures/server_hello_openssl3.hex");

const MAC_A: [u8; 6] = [0x02, 0x6e, 0x70, 0, 0, 1];
const MAC_B: [u8; 6] = [0x02, 0x6e, 0x70, 0, 0, 2];
const MAC_C: [u8; 6] = [0x02, 0x6e, 0x70, 0, 0, 3];
const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);
const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x100);

fn v4(a: [u8; 4]) -> [u8; 16] {
    let mut o = [0u8; 16];
    o[..4].copy_from_slice(&a);
    o
}

fn tcp(k: u16, ts: u64, family: u8, saddr: [u8; 16], daddr: [u8; 16]) -> Vec<u8> {
    to_bytes(&TcpRecord {
        header: RecordHeader::new(k, size_of::<TcpRecord>(), ts),
        skaddr: 0xffff_8880_0000_1000,
        netns: 4_026_532_000,
        state: 1,
        family,
        has_seq: 1,
        not_sent: 0,
        sport: 40_000,
        dport: 8000,
        snd_una: 1000,
        snd_nxt: 1007,
        pid: 0,
        saddr,
        daddr,
        comm: [0; 16],
    })
}

fn neighbour(ts: u64) -> Vec<u8> {
    let mut dev = [0u8; 16];
    dev[..4].copy_from_slice(b"eth0");
    let mut old_mac = [0u8; 8];
    old_mac[..6].copy_from_slice(&MAC_B);
    let mut new_mac = [0u8; 8];
    new_mac[..6].copy_from_slice(&MAC_C);
    to_bytes(&NeighRecord {
        header: RecordHeader::new(kind::NEIGHBOUR, size_of::<NeighRecord>(), ts),
        family: AF_INET,
        lladdr_len: 6,
        old_state: 0x02, // REACHABLE
        new_state: 0x04, // STALE
        flags: 0,
        dead: 0,
        _pad: [0; 2],
        update_flags: 1, // OVERRIDE
        pid: 0,
        ip: v4(VIP.octets()),
        old_mac,
        new_mac,
        dev,
    })
}

fn gratuitous_arp(ts: u64) -> Vec<u8> {
    to_bytes(&ArpRecord {
        header: RecordHeader::new(kind::ARP, size_of::<ArpRecord>(), ts),
        ifindex: 2,
        direction: direction::INGRESS,
        op: arp_op::REQUEST,
        family: AF_INET,
        flags: 1,
        sender_ip: v4(VIP.octets()),
        target_ip: v4(VIP.octets()),
        sender_mac: MAC_C,
        eth_src: MAC_C,
        eth_dst: [0xff; 6],
        _pad: [0; 6],
    })
}

fn packet(ts: u64, frame: &[u8]) -> Vec<u8> {
    let mut data = [0u8; PACKET_CAPTURE];
    data[..frame.len()].copy_from_slice(frame);
    to_bytes(&PacketRecord {
        header: RecordHeader::new(kind::PACKET, size_of::<PacketRecord>(), ts),
        ifindex: 2,
        direction: direction::EGRESS,
        _pad: [0; 3],
        wire_len: frame.len() as u32,
        captured: frame.len() as u32,
        data,
    })
}

/// A TLS record as the classifier writes it for one piece of a segment.
fn tls(ts: u64, part: u8, chunk: u8, seq: u32, wire: &[u8], from_client: bool) -> Vec<u8> {
    let captured = wire.len().min(TLS_CAPTURE);
    let mut payload = [0u8; TLS_CAPTURE];
    payload[..captured].copy_from_slice(&wire[..captured]);
    let (client, server) = (v4([10, 0, 0, 1]), v4([10, 0, 0, 100]));
    let (saddr, daddr, sport, dport, src_mac, dst_mac) = if from_client {
        (client, server, 40_000, 6443, MAC_A, MAC_C)
    } else {
        (server, client, 6443, 40_000, MAC_C, MAC_A)
    };
    to_bytes(&TlsRecord {
        header: RecordHeader::new(kind::TLS, size_of::<TlsRecord>(), ts),
        ifindex: 2,
        direction: if from_client {
            direction::EGRESS
        } else {
            direction::INGRESS
        },
        family: AF_INET,
        part,
        chunk,
        sport,
        dport,
        seq,
        payload_len: wire.len() as u16,
        captured: captured as u16,
        saddr,
        daddr,
        src_mac,
        dst_mac,
        netns: 0,
        _pad: 0,
        payload,
    })
}

type Seed = (&'static str, &'static str, Vec<u8>);

/// Every generated seed: (target, file name, bytes).
fn seeds() -> Vec<Seed> {
    let ch = harness::unhex(CLIENT_HELLO);
    let sh = harness::unhex(SERVER_HELLO);
    let ms = 1_000_000u64;
    let mut out: Vec<Seed> = Vec::new();

    // decode_record: length-prefixed ring-buffer records.
    let v6 = |last: u8| {
        let mut a = [0u8; 16];
        a[0] = 0xfd;
        a[15] = last;
        a
    };
    out.push((
        "decode_record",
        "retransmit_v4",
        harness::frame_records(&[tcp(
            kind::RETRANSMIT,
            ms,
            AF_INET,
            v4([10, 0, 0, 1]),
            v4([10, 96, 0, 10]),
        )]),
    ));
    out.push((
        "decode_record",
        "retransmit_reset_v6_neighbour_arp",
        harness::frame_records(&[
            tcp(kind::RETRANSMIT, ms, AF_INET6, v6(1), v6(2)),
            tcp(kind::RETRANSMIT, 2 * ms, AF_INET6, v6(1), v6(2)),
            tcp(kind::RESET, 3 * ms, AF_INET6, v6(2), v6(1)),
            neighbour(4 * ms),
            gratuitous_arp(5 * ms),
        ]),
    ));
    out.push((
        "decode_record",
        "synack_retransmit_v4",
        harness::frame_records(&[tcp(
            kind::SYNACK_RETRANSMIT,
            ms,
            AF_INET,
            v4([10, 96, 0, 10]),
            v4([10, 0, 0, 1]),
        )]),
    ));
    out.push((
        "decode_record",
        "packet_arp_frame",
        harness::frame_records(&[packet(ms, &harness::arp_reply(MAC_C, VIP, MAC_A))]),
    ));
    out.push((
        "decode_record",
        "tls_client_and_server_hello",
        harness::frame_records(&[
            tls(ms, tls_part::START, 0, 1000, &ch, true),
            // The same record again on another hook: a duplicate.
            tls(ms + 1, tls_part::START, 0, 1000, &ch, true),
            tls(2 * ms, tls_part::START, 0, 5000, &sh, false),
        ]),
    ));
    out.push((
        "decode_record",
        "tls_client_hello_continuation_first",
        harness::frame_records(&[
            tls(ms, tls_part::CONTINUATION, 0, 1100, &ch[100..], true),
            tls(ms + 10, tls_part::START, 0, 1000, &ch[..100], true),
        ]),
    ));
    let mut lying = tcp(
        kind::RESET,
        ms,
        AF_INET,
        v4([10, 0, 0, 1]),
        v4([10, 0, 0, 2]),
    );
    lying[2] = 200; // header size disagrees with the type
    out.push((
        "decode_record",
        "lying_and_unknown",
        harness::frame_records(&[
            lying,
            vec![99, 0, 16, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0],
            gratuitous_arp(ms),
        ]),
    ));

    // tls_reassembler: segments as the kernel reports them.
    out.push((
        "tls_reassembler",
        "client_hello_one_segment",
        harness::encode_segments(&harness::segments_of(&ch, 0, 1000, &[])),
    ));
    let mut three = harness::segments_of(&ch, 1, 7000, &[40, 200]);
    three.swap(0, 2); // last piece first: the reassembler must wait
    out.push((
        "tls_reassembler",
        "client_hello_three_segments_reordered",
        harness::encode_segments(&three),
    ));
    out.push((
        "tls_reassembler",
        "server_hello_capture_cut",
        harness::encode_segments(&harness::segments_of(&sh, 2, 90_000, &[])),
    ));
    // Overlapping pieces, a retransmitted start, sequence wrap-around.
    let mut overlap = harness::segments_of(&ch, 3, u32::MAX - 50, &[120]);
    let mut again = overlap[0].clone();
    again.captured.truncate(60);
    again.payload_len = 60;
    overlap.insert(1, again);
    overlap.push(FuzzSegment {
        start: true,
        ..overlap[0].clone()
    });
    out.push((
        "tls_reassembler",
        "overlap_retransmit_wrap",
        harness::encode_segments(&overlap),
    ));
    // Four flows' first pieces, one more than the table holds, then expiry.
    let mut evict = Vec::new();
    for flow in 0..4u8 {
        let mut s = harness::segments_of(&ch, flow, 100 * u32::from(flow), &[64]);
        s.truncate(1);
        evict.extend(s);
    }
    evict.push(FuzzSegment {
        expire: true,
        delay_ms: 11_000,
        ..harness::segments_of(&ch, 0, 5, &[])[0].clone()
    });
    out.push((
        "tls_reassembler",
        "eviction_and_expiry",
        harness::encode_segments(&evict),
    ));

    // arp_ndp_parse: a mode byte, then a frame.
    let with_mode = |mode: u8, frame: Vec<u8>| [vec![mode], frame].concat();
    out.push((
        "arp_ndp_parse",
        "arp_reply",
        with_mode(0, harness::arp_reply(MAC_C, VIP, MAC_A)),
    ));
    out.push((
        "arp_ndp_parse",
        "advert_target_option",
        with_mode(0, harness::neighbour_advert(MAC_C, VIP6, MAC_A, true)),
    ));
    out.push((
        "arp_ndp_parse",
        "advert_no_option_checksum_fixed",
        with_mode(
            harness::MODE_FIX_CHECKSUM,
            harness::neighbour_advert(MAC_B, VIP6, MAC_A, false),
        ),
    ));

    // netlink_conntrack: dump datagrams.
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let dnat = harness::ct_new(
        AF_INET,
        (ip("10.0.0.1"), 40_000, ip("10.96.0.10"), 443),
        (ip("10.244.1.7"), 8443, ip("10.0.0.1"), 40_000),
        6,
        0x1ae,
    );
    let udp6 = harness::ct_new(
        AF_INET6,
        (ip("fd00::1"), 5353, ip("fd00::2"), 53),
        (ip("fd00::2"), 53, ip("fd00::1"), 5353),
        17,
        0x0e,
    );
    out.push((
        "netlink_conntrack",
        "dump_dnat_v4_and_udp_v6",
        [dnat.clone(), udp6, harness::nlmsg_done(77)].concat(),
    ));
    let mut cut = dnat.clone();
    let len = cut.len() - 24;
    cut.truncate(len);
    cut[..4].copy_from_slice(&(len as u32).to_ne_bytes());
    out.push((
        "netlink_conntrack",
        "truncated_entry_then_good",
        [cut, dnat].concat(),
    ));

    // netlink_route: what rtnetlink hands netprobe.
    out.push((
        "netlink_route",
        "links_neighbours_route",
        [
            harness::rtnl_message(harness::rtnl_link(2, "eth0", MAC_A), 1),
            harness::rtnl_message(harness::rtnl_neighbour(2, IpAddr::V4(VIP), Some(MAC_C)), 2),
            harness::rtnl_message(harness::rtnl_neighbour(2, IpAddr::V6(VIP6), None), 2),
            harness::rtnl_message(
                harness::rtnl_route(Ipv4Addr::new(10, 50, 1, 1), Ipv4Addr::new(10, 0, 0, 254), 2),
                3,
            ),
        ]
        .concat(),
    ));
    out
}
