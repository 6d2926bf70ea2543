//! tracefs: where the tracepoints live, and where this kernel's records keep
//! the fields the eBPF programs read (found by name, never fixed offsets).

use std::{fs, path::Path};

use anyhow::{Context as _, bail};

pub const ROOT: &str = "/sys/kernel/tracing";

/// A field: (name, offset, size).
pub type Field = (&'static str, u32, u32);

/// The tracepoints netprobe's programs read ("category/name"), each once.
pub fn tracepoints() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for (_, tp, ..) in probe_common::tp::FIELDS {
        if !out.contains(tp) {
            out.push(tp);
        }
    }
    out
}

/// The field slots of the programs ([`probe_common::tp`]) from the formats
/// `format_of` gives ("category/name" -> its format, None when the
/// tracepoint does not exist): found by name; a field of another size than
/// the programs read, or none, is absent.
pub fn fields_from(format_of: impl Fn(&str) -> Option<String>) -> probe_common::TpFields {
    let mut out = probe_common::TpFields::ABSENT;
    for tp in tracepoints() {
        let Some(text) = format_of(tp) else { continue };
        let fields = parse_format(&text);
        for (slot, _, name, size) in probe_common::tp::FIELDS.iter().filter(|f| f.1 == tp) {
            if let Some((_, off, _)) = fields
                .iter()
                .find(|(n, _, s)| n == name && s == size)
                .filter(|(_, off, _)| *off < u32::from(probe_common::tp::ABSENT))
            {
                out.off[*slot] = *off as u16;
            }
        }
    }
    out
}

/// This kernel's field slots, from tracefs.
pub fn tp_fields() -> probe_common::TpFields {
    fields_from(|tp| format(tp).ok())
}

/// Whether the tracepoint exists (its format is readable).
pub fn exists(tp: &str) -> bool {
    format_path(tp).is_file()
}

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

/// Where tracefs describes `tp` ("category/name").
pub fn format_path(tp: &str) -> std::path::PathBuf {
    Path::new(ROOT).join("events").join(tp).join("format")
}

/// `tp`'s format file ("category/name").
pub fn format(tp: &str) -> std::io::Result<String> {
    fs::read_to_string(format_path(tp))
}

/// Checks tracefs lists tracepoints at all. Which ones exist, and with
/// which fields, is judged per capability ([`crate::kernel::capability`]).
pub fn check_all() -> anyhow::Result<()> {
    let events = Path::new(ROOT).join("events");
    fs::read_dir(&events).with_context(|| format!("tracefs: {} unreadable", events.display()))?;
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

    /// 6.1's kfree_skb (protocol at 24, reason at 28) and 5.10's (no
    /// reason), 5.10's tcp_retransmit_skb (no family), a missing icmp_send.
    #[test]
    fn fields_are_found_by_name_whatever_the_kernel() {
        use probe_common::tp;
        let kfree_61 = "\tfield:void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;\n\tfield:void * location;\toffset:16;\tsize:8;\tsigned:0;\n\tfield:unsigned short protocol;\toffset:24;\tsize:2;\tsigned:0;\n\tfield:enum skb_drop_reason reason;\toffset:28;\tsize:4;\tsigned:0;\n";
        let kfree_510 = "\tfield:void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;\n\tfield:void * location;\toffset:16;\tsize:8;\tsigned:0;\n\tfield:unsigned short protocol;\toffset:24;\tsize:2;\tsigned:0;\n";
        let rt_510 = "\tfield:const void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;\n\tfield:const void * skaddr;\toffset:16;\tsize:8;\tsigned:0;\n\tfield:int state;\toffset:24;\tsize:4;\tsigned:1;\n\tfield:__u16 sport;\toffset:28;\tsize:2;\tsigned:0;\n\tfield:__u16 dport;\toffset:30;\tsize:2;\tsigned:0;\n\tfield:__u8 saddr[4];\toffset:32;\tsize:4;\tsigned:0;\n\tfield:__u8 daddr[4];\toffset:36;\tsize:4;\tsigned:0;\n\tfield:__u8 saddr_v6[16];\toffset:40;\tsize:16;\tsigned:0;\n\tfield:__u8 daddr_v6[16];\toffset:56;\tsize:16;\tsigned:0;\n";
        let f = fields_from(|t| match t {
            "skb/kfree_skb" => Some(kfree_61.into()),
            "tcp/tcp_retransmit_skb" => Some(rt_510.into()),
            _ => None,
        });
        assert_eq!(f.off[tp::KF_PROTOCOL], 24);
        assert_eq!(f.off[tp::KF_REASON], 28);
        assert_eq!(f.off[tp::RT_SADDR], 32);
        assert_eq!(f.off[tp::RT_DADDR6], 56);
        assert!(!f.has(tp::RT_FAMILY) && !f.has(tp::RT_ERR));
        assert!(!f.has(tp::IC_TYPE) && !f.has(tp::NU_PID));
        let f = fields_from(|t| (t == "skb/kfree_skb").then(|| kfree_510.into()));
        assert!(f.has(tp::KF_PROTOCOL) && !f.has(tp::KF_REASON));
        // A field of another size than the program reads is not read.
        let odd = kfree_61.replace("offset:24;\tsize:2", "offset:24;\tsize:4");
        let f = fields_from(|t| (t == "skb/kfree_skb").then(|| odd.clone()));
        assert!(!f.has(tp::KF_PROTOCOL));
        // No reasons without the field: names empty, every reason counted.
        assert!(symbolic_names(kfree_510).is_empty());
        assert_eq!(
            path_reason_bitmap(&symbolic_names(kfree_510)),
            [u64::MAX; probe_common::REASON_WORDS]
        );
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

/// `tcp_retransmit_skb`'s attempt error: newer kernels fire it for
/// attempts that sent nothing too, with `err` in the record and as the raw
/// tracepoint's third argument.
pub const RETRANSMIT_ERR: Field = ("err", 76, 4);

/// Whether this kernel's `tcp_retransmit_skb` passes the attempt's error
/// (a 4-byte `err` field, found by name; false when tracefs is unreadable:
/// then every attempt is reported, as on kernels without the field).
pub fn retransmit_has_err() -> bool {
    format("tcp/tcp_retransmit_skb").is_ok_and(|f| {
        parse_format(&f)
            .iter()
            .any(|(n, _, s)| n == RETRANSMIT_ERR.0 && *s == RETRANSMIT_ERR.2)
    })
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
