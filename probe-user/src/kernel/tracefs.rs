//! tracefs: where the tracepoints live, and a check that their record layout
//! is the one the eBPF programs were written against.

use std::{fs, path::Path};

use anyhow::{Context as _, bail};

pub const ROOT: &str = "/sys/kernel/tracing";

/// A field the programs read: (name, offset, size).
pub type Field = (&'static str, u32, u32);

/// Each tracepoint and the fields the programs read from it.
pub const EXPECTED: &[(&str, &[Field])] = &[
    (
        "tcp/tcp_retransmit_skb",
        &[
            ("skaddr", 16, 8),
            ("state", 24, 4),
            ("sport", 28, 2),
            ("dport", 30, 2),
            ("family", 32, 2),
            ("saddr", 34, 4),
            ("daddr", 38, 4),
            ("saddr_v6", 42, 16),
            ("daddr_v6", 58, 16),
        ],
    ),
    (
        "tcp/tcp_retransmit_synack",
        &[
            ("skaddr", 8, 8),
            ("sport", 24, 2),
            ("dport", 26, 2),
            ("family", 28, 2),
            ("saddr", 30, 4),
            ("daddr", 34, 4),
            ("saddr_v6", 38, 16),
            ("daddr_v6", 54, 16),
        ],
    ),
    (
        "tcp/tcp_receive_reset",
        &[
            ("skaddr", 8, 8),
            ("sport", 16, 2),
            ("dport", 18, 2),
            ("family", 20, 2),
            ("saddr", 22, 4),
            ("daddr", 26, 4),
            ("saddr_v6", 30, 16),
            ("daddr_v6", 46, 16),
        ],
    ),
    (
        "sock/inet_sock_set_state",
        &[("skaddr", 8, 8), ("newstate", 20, 4), ("protocol", 30, 2)],
    ),
    (
        "skb/kfree_skb",
        &[
            ("skbaddr", 8, 8),
            ("location", 16, 8),
            ("protocol", 32, 2),
            ("reason", 36, 4),
        ],
    ),
    (
        "icmp/icmp_send",
        &[
            ("skbaddr", 8, 8),
            ("type", 16, 4),
            ("code", 20, 4),
            ("ulen", 36, 2),
        ],
    ),
    (
        "tcp/tcp_send_reset",
        &[
            ("skbaddr", 8, 8),
            ("skaddr", 16, 8),
            ("state", 24, 4),
            ("reason", 28, 4),
            ("saddr", 32, 28),
            ("daddr", 60, 28),
        ],
    ),
    (
        "neigh/neigh_update",
        &[
            ("family", 8, 4),
            ("dev", 12, 4),
            ("lladdr", 16, 32),
            ("lladdr_len", 48, 1),
            ("flags", 49, 1),
            ("nud_state", 50, 1),
            ("dead", 52, 1),
            ("primary_key4", 60, 4),
            ("primary_key6", 64, 16),
            ("new_lladdr", 104, 32),
            ("new_state", 136, 1),
            ("update_flags", 140, 4),
            ("pid", 144, 4),
        ],
    ),
];

/// Is tracefs mounted where the kernel's tracepoints can be found?
pub fn mounted() -> bool {
    Path::new(ROOT).join("events").is_dir()
}

/// Mounts tracefs in a private mount namespace of this process, so the host's
/// mounts stay as they were. Must run while the process is single-threaded.
pub fn mount_private() -> anyhow::Result<()> {
    // SAFETY: plain syscalls with valid, NUL-terminated arguments.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            bail!(
                "tracefs is not mounted and a private mount namespace could not be made: {}",
                std::io::Error::last_os_error()
            );
        }
        let root = c"/";
        if libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) != 0
        {
            bail!("making mounts private: {}", std::io::Error::last_os_error());
        }
        let (src, dst, fstype) = (c"tracefs", c"/sys/kernel/tracing", c"tracefs");
        if libc::mount(
            src.as_ptr(),
            dst.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        ) != 0
        {
            bail!(
                "mount -t tracefs tracefs {ROOT}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(())
}

/// Field (name, offset, size) triples of a tracepoint's `format` file.
pub fn parse_format(text: &str) -> Vec<(String, u32, u32)> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            let decl = line.strip_prefix("field:")?.split(';').next()?;
            let name = decl.split_whitespace().last()?;
            let name = name.split('[').next()?.to_string();
            let num = |key: &str| -> Option<u32> {
                line.split(';')
                    .find_map(|p| p.trim().strip_prefix(key))
                    .and_then(|v| v.trim().parse().ok())
            };
            Some((name, num("offset:")?, num("size:")?))
        })
        .collect()
}

/// Errors out, naming the field, if the kernel's layout differs from ours.
pub fn check_layout(
    tracepoint: &str,
    format: &str,
    expected: &[(&str, u32, u32)],
) -> anyhow::Result<()> {
    let fields = parse_format(format);
    for (name, off, size) in expected {
        match fields.iter().find(|(n, _, _)| n == name) {
            Some((_, o, s)) if o == off && s == size => {}
            Some((_, o, s)) => bail!(
                "tracepoint {tracepoint}: field {name} is at offset {o} size {s} on this kernel, netprobe expects {off}/{size}"
            ),
            None => bail!("tracepoint {tracepoint}: this kernel has no field {name}"),
        }
    }
    Ok(())
}

/// Where tracefs describes `tp` ("category/name").
pub fn format_path(tp: &str) -> std::path::PathBuf {
    Path::new(ROOT).join("events").join(tp).join("format")
}

/// `tp`'s format file ("category/name").
pub fn format(tp: &str) -> std::io::Result<String> {
    fs::read_to_string(format_path(tp))
}

/// Checks every tracepoint netprobe uses exists and has the expected layout.
pub fn check_all() -> anyhow::Result<()> {
    for (tp, fields) in EXPECTED {
        let path = format_path(tp);
        let text = fs::read_to_string(&path).with_context(|| {
            format!("tracepoint {tp} is missing ({} unreadable)", path.display())
        })?;
        check_layout(tp, &text, fields)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "name: tcp_retransmit_skb\nID: 2281\nformat:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\n\tfield:const void * skaddr;\toffset:16;\tsize:8;\tsigned:0;\n\tfield:__u8 saddr[4];\toffset:34;\tsize:4;\tsigned:0;\n\tfield:__data_loc char[] dev;\toffset:12;\tsize:4;\tsigned:0;\n";

    #[test]
    fn parses_fields() {
        let f = parse_format(SAMPLE);
        assert!(f.contains(&("skaddr".to_string(), 16, 8)));
        assert!(f.contains(&("saddr".to_string(), 34, 4)));
        assert!(f.contains(&("dev".to_string(), 12, 4)));
        assert!(f.contains(&("common_type".to_string(), 0, 2)));
    }

    #[test]
    fn layout_mismatch_names_the_field() {
        assert!(check_layout("tp", SAMPLE, &[("skaddr", 16, 8)]).is_ok());
        let err = check_layout("tp", SAMPLE, &[("skaddr", 24, 8)])
            .unwrap_err()
            .to_string();
        assert!(err.contains("skaddr") && err.contains("24"), "{err}");
        let err = check_layout("tp", SAMPLE, &[("nope", 1, 1)])
            .unwrap_err()
            .to_string();
        assert!(err.contains("no field nope"), "{err}");
    }
}

/// `enum skb_drop_reason` names by value, from the `__print_symbolic` list in
/// a tracepoint's format (`{ 12, "NETFILTER_DROP" }, ...`).
pub fn symbolic_names(format: &str) -> std::collections::HashMap<u32, String> {
    let mut out = std::collections::HashMap::new();
    let Some(start) = format.find("__print_symbolic(") else {
        return out;
    };
    for part in format[start..].split('{').skip(1) {
        let Some((num, rest)) = part.split_once(',') else {
            continue;
        };
        let Ok(n) = num.trim().parse::<u32>() else {
            continue;
        };
        if let Some(name) = rest.split('"').nth(1) {
            out.insert(n, name.to_string());
        }
    }
    out
}

/// The names of one field's `__print_symbolic` list (`REC->reason`), when a
/// format prints several.
pub fn symbolic_names_of(format: &str, field: &str) -> std::collections::HashMap<u32, String> {
    let marker = format!("__print_symbolic({field}");
    match format.find(&marker) {
        Some(at) => {
            let rest = &format[at..];
            // Up to the next list, if any.
            let end = rest[1..]
                .find("__print_symbolic(")
                .map_or(rest.len(), |e| e + 1);
            symbolic_names(&rest[..end])
        }
        None => Default::default(),
    }
}

/// `tcp_send_reset` reason names of this kernel (`enum sk_rst_reason`;
/// empty when tracefs is unreadable).
pub fn reset_reasons() -> std::collections::HashMap<u32, String> {
    format("tcp/tcp_send_reset")
        .map(|f| symbolic_names_of(&f, "REC->reason"))
        .unwrap_or_default()
}

/// Where `tcp_retransmit_skb` carries the attempt's error: newer kernels
/// fire it for attempts that sent nothing too, with `err` at this offset of
/// the record and as the raw tracepoint's third argument.
pub const RETRANSMIT_ERR: Field = ("err", 76, 4);

/// Whether this kernel's `tcp_retransmit_skb` passes the attempt's error
/// where the programs read it (false when tracefs is unreadable: then
/// every attempt is reported, as on kernels without the field).
pub fn retransmit_has_err() -> bool {
    format("tcp/tcp_retransmit_skb").is_ok_and(|f| format_has(&f, RETRANSMIT_ERR))
}

/// The format has `field` at exactly its offset and size.
pub fn format_has(format: &str, (name, off, size): Field) -> bool {
    parse_format(format)
        .iter()
        .any(|(n, o, s)| n == name && *o == off && *s == size)
}

/// Drop reason names of this kernel (empty when tracefs is unreadable).
pub fn drop_reasons() -> std::collections::HashMap<u32, String> {
    format("skb/kfree_skb")
        .map(|f| symbolic_names(&f))
        .unwrap_or_default()
}

/// The bitmap of path drop reasons for the kernel program: this kernel's
/// values of [`crate::model::facts::PATH_DROP_REASONS`]. Every reason when the
/// names cannot be read (nothing is missed; drops just cost more).
pub fn path_reason_bitmap(
    names: &std::collections::HashMap<u32, String>,
) -> [u64; probe_common::REASON_WORDS] {
    if names.is_empty() {
        return [u64::MAX; probe_common::REASON_WORDS];
    }
    probe_common::reason_bitmap(
        names
            .iter()
            .filter(|(_, n)| crate::model::facts::PATH_DROP_REASONS.contains(&n.as_str()))
            .map(|(v, _)| *v),
    )
}

#[cfg(test)]
mod symbolic_tests {
    #[test]
    fn retransmit_err_field_is_found_only_where_expected() {
        let with = "\tfield:__u8 daddr_v6[16];\toffset:58;\tsize:16;\tsigned:0;\n\tfield:int err;\toffset:76;\tsize:4;\tsigned:1;\n";
        assert!(super::format_has(with, super::RETRANSMIT_ERR));
        let moved = with.replace("offset:76", "offset:80");
        assert!(!super::format_has(&moved, super::RETRANSMIT_ERR));
        let without = "\tfield:__u8 daddr_v6[16];\toffset:58;\tsize:16;\tsigned:0;\n";
        assert!(!super::format_has(without, super::RETRANSMIT_ERR));
    }

    #[test]
    fn drop_reason_names_are_read_from_the_format() {
        let f = r#"print fmt: "reason: %s", __print_symbolic(REC->reason, { 2, "NOT_SPECIFIED" }, { 12, "NETFILTER_DROP" }, { 129, "MAX" })"#;
        let m = super::symbolic_names(f);
        assert_eq!(m.get(&12).map(String::as_str), Some("NETFILTER_DROP"));
        assert_eq!(m.len(), 3);
        assert!(super::symbolic_names("no list").is_empty());
    }

    #[test]
    fn reset_reasons_come_from_their_own_list() {
        let f = r#"print fmt: "state=%s reason=%s", REC->state ? __print_symbolic(REC->state, { TCP_ESTABLISHED, "TCP_ESTABLISHED" }, { 7, "TCP_CLOSE" }) : "UNKNOWN", __print_symbolic(REC->reason, { 0, "NOT_SPECIFIED" }, { 1, "NO_SOCKET" })"#;
        let m = super::symbolic_names_of(f, "REC->reason");
        assert_eq!(m.get(&1).map(String::as_str), Some("NO_SOCKET"));
        assert_eq!(m.len(), 2);
        assert!(super::symbolic_names_of(f, "REC->nope").is_empty());
    }

    #[test]
    fn only_path_reasons_are_counted_and_all_when_unknown() {
        let f = r#"print fmt: "%s", __print_symbolic(REC->reason, { 2, "NOT_SPECIFIED" }, { 3, "NO_SOCKET" }, { 12, "NETFILTER_DROP" }, { 70, "TCP_LISTEN_OVERFLOW" })"#;
        let bits = super::path_reason_bitmap(&super::symbolic_names(f));
        assert_eq!(bits, [1 << 12, 1 << 6, 0, 0]);
        let all = super::path_reason_bitmap(&Default::default());
        assert_eq!(all, [u64::MAX; 4]);
    }
}
