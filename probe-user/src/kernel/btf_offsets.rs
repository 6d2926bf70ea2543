//! Kernel struct offsets from BTF. aya-ebpf has no CO-RE relocations, so the
//! eBPF programs read through a socket pointer at byte offsets looked up here
//! and handed over as [`KernelOffsets`]. Any error means "netns/sequence
//! enrichment unavailable": callers log it and carry on.

use probe_common::KernelOffsets;

use crate::kernel::btf::{self, Btf, Member, Type, kind};

/// The running kernel's BTF.
pub const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

/// Bounds typedef chains and anonymous nesting: cyclic BTF must not hang us.
const MAX_DEPTH: u32 = 32;

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("cannot read {0}: {1}")]
    Read(String, #[source] std::io::Error),
    #[error("malformed BTF: {0}")]
    Parse(#[from] btf::Error),
    #[error("BTF has no struct {0}")]
    NoStruct(String),
    /// Struct name, then the member path up to the failing step, as in C ("ns.inum").
    #[error("struct {0} has no member {1}")]
    NoMember(String, String),
    #[error("struct {0} member {1} is a bitfield")]
    Bitfield(String, String),
    #[error("struct {0} member {1} is not a struct or union")]
    NotAggregate(String, String),
    #[error("struct {0} member {1} lies beyond 4 GiB")]
    TooFar(String, String),
    #[error("{0}")]
    Format(&'static str),
}

/// Offsets for the running kernel.
pub fn from_vmlinux() -> Result<KernelOffsets, BtfError> {
    from_file(VMLINUX)
}

/// Offsets from a raw BTF file (such as `/sys/kernel/btf/vmlinux`).
pub fn from_file(path: impl AsRef<std::path::Path>) -> Result<KernelOffsets, BtfError> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| BtfError::Read(path.display().to_string(), e))?;
    from_bytes(&bytes)
}

/// Offsets from raw BTF bytes.
pub fn from_bytes(bytes: &[u8]) -> Result<KernelOffsets, BtfError> {
    from_btf(&Btf::parse(bytes)?)
}

/// Offsets from indexed BTF.
pub fn from_btf(btf: &Btf) -> Result<KernelOffsets, BtfError> {
    Ok(KernelOffsets {
        // skc_net is possible_net_t, a struct wrapping the `struct net *`.
        sock_net: member_offset(btf, "sock", &["__sk_common", "skc_net", "net"])?,
        net_inum: member_offset(btf, "net", &["ns", "inum"])?,
        tcp_snd_una: member_offset(btf, "tcp_sock", &["snd_una"])?,
        tcp_snd_nxt: member_offset(btf, "tcp_sock", &["snd_nxt"])?,
        skb_head: member_offset(btf, "sk_buff", &["head"])?,
        skb_network_header: member_offset(btf, "sk_buff", &["network_header"])?,
        skb_transport_header: member_offset(btf, "sk_buff", &["transport_header"])?,
        skb_dev: member_offset(btf, "sk_buff", &["dev"])?,
        skb_sk: member_offset(btf, "sk_buff", &["sk"])?,
        // nd_net is possible_net_t, a struct wrapping the `struct net *`.
        netdev_net: member_offset(btf, "net_device", &["nd_net", "net"])?,
        sock_v6_daddr: sock_v6_daddr(btf),
    })
}

/// Where `sock` keeps its IPv6 addresses, if the head of `sock_common` is
/// laid out as the raw retransmit program reads it in one copy; else 0.
fn sock_v6_daddr(btf: &Btf) -> u32 {
    let at = |field: &str| member_offset(btf, "sock", &["__sk_common", field]).ok();
    let head = [
        ("skc_daddr", 0),
        ("skc_rcv_saddr", 4),
        ("skc_dport", 12),
        ("skc_num", 14),
        ("skc_family", 16),
        ("skc_state", 18),
    ];
    if head.iter().all(|(f, off)| at(f) == Some(*off)) {
        at("skc_v6_daddr").unwrap_or(0)
    } else {
        0
    }
}

/// Byte offset of `struct_name.path[0].path[1]...`, looking through anonymous
/// structs/unions at any depth the way C member access does.
pub fn member_offset(btf: &Btf, struct_name: &str, path: &[&str]) -> Result<u32, BtfError> {
    // Several types may share the name (a fwd declaration, a typedef, a union);
    // this is the first struct of that name.
    let Some(mut cur) = btf.find_struct(struct_name)? else {
        return Err(BtfError::NoStruct(struct_name.to_string()));
    };
    // u64: sums of u32 bit offsets cannot overflow it at any sane depth.
    let mut bits: u64 = 0;
    for (i, name) in path.iter().enumerate() {
        let (s, p) = (struct_name.to_string(), path[..=i].join("."));
        let Some((off, member)) = find_member(btf, &cur, name, 0)? else {
            return Err(BtfError::NoMember(s, p));
        };
        if member.bitfield_size > 0 || off % 8 != 0 {
            return Err(BtfError::Bitfield(s, p));
        }
        bits += off;
        if i + 1 < path.len() {
            cur = match strip(btf, member.type_id)? {
                t if t.kind == kind::STRUCT || t.kind == kind::UNION => t,
                _ => return Err(BtfError::NotAggregate(s, p)),
            };
        }
    }
    u32::try_from(bits / 8).map_err(|_| BtfError::TooFar(struct_name.into(), path.join(".")))
}

/// Finds `name` in `s` or, as C member access does, in its anonymous
/// struct/union members; returns it with its bit offset from the start of `s`.
fn find_member(
    btf: &Btf,
    s: &Type,
    name: &str,
    depth: u32,
) -> Result<Option<(u64, Member)>, BtfError> {
    if depth > MAX_DEPTH {
        return Err(BtfError::Format("anonymous members nest too deeply"));
    }
    for m in btf.members(s)? {
        let mname = btf.name(m.name_off)?;
        if mname == name {
            return Ok(Some((m.bit_offset.into(), m)));
        } else if !mname.is_empty() {
            continue;
        }
        let inner = strip(btf, m.type_id)?;
        if inner.kind != kind::STRUCT && inner.kind != kind::UNION {
            continue;
        }
        if let Some((off, found)) = find_member(btf, &inner, name, depth + 1)? {
            return Ok(Some((u64::from(m.bit_offset) + off, found)));
        }
    }
    Ok(None)
}

/// Follows typedef and qualifier links to the underlying type.
fn strip(btf: &Btf, mut id: u32) -> Result<Type, BtfError> {
    for _ in 0..MAX_DEPTH {
        let t = btf.get(id)?;
        match t.kind {
            kind::TYPEDEF | kind::VOLATILE | kind::CONST | kind::RESTRICT | kind::TYPE_TAG => {
                id = t.size_or_type
            }
            _ => return Ok(t),
        }
    }
    Err(BtfError::Format("typedef/qualifier chain too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Read and indexed once: vmlinux BTF is several MB.
    fn vmlinux() -> Option<&'static Btf<'static>> {
        static RAW: std::sync::OnceLock<Option<Vec<u8>>> = std::sync::OnceLock::new();
        static BTF: std::sync::OnceLock<Option<Btf<'static>>> = std::sync::OnceLock::new();
        let raw = RAW.get_or_init(|| {
            std::fs::read(VMLINUX)
                .inspect_err(|e| eprintln!("note: {e}; skipping"))
                .ok()
        });
        BTF.get_or_init(|| Btf::parse(raw.as_deref()?).ok())
            .as_ref()
    }

    #[test]
    fn running_kernel_offsets() {
        let Some(btf) = vmlinux() else { return };
        let o = from_btf(btf).unwrap();
        assert!(o.sock_net > 0 && o.sock_net < 200);
        assert!(o.net_inum > 0 && o.tcp_snd_una > 0 && o.tcp_snd_nxt > 0);
        assert_ne!(o.tcp_snd_una, o.tcp_snd_nxt);
        assert_eq!(from_vmlinux().unwrap(), o);
        // skc_num sits in an anonymous struct in an anonymous union at byte 12.
        assert_eq!(member_offset(btf, "sock_common", &["skc_num"]).unwrap(), 14);
        // The head of sock_common as the raw retransmit program reads it;
        // the IPv6 addresses after skc_net.
        assert!(o.sock_v6_daddr > o.sock_net, "{o:?}");
    }

    /// Independent check against bpftool's reading of the same BTF.
    #[test]
    fn matches_bpftool() {
        let Some(btf) = vmlinux() else { return };
        let out = std::process::Command::new("bpftool")
            .args(["btf", "dump", "file", VMLINUX, "format", "raw"])
            .output();
        let Some(out) = out.ok().filter(|o| o.status.success()) else {
            return eprintln!("note: bpftool unavailable, skipping cross-check");
        };
        let out = String::from_utf8_lossy(&out.stdout);
        // Lines like "\t'snd_una' type_id=35 bits_offset=13376" follow the header.
        let block = out.split("] STRUCT 'tcp_sock' ").nth(1).unwrap();
        let block = block.split("\n[").next().unwrap();
        let o = from_btf(btf).unwrap();
        for (name, ours) in [("snd_una", o.tcp_snd_una), ("snd_nxt", o.tcp_snd_nxt)] {
            let line = block.split(&format!("\t'{name}' ")).nth(1).unwrap();
            let want = format!("bits_offset={}", ours * 8);
            assert_eq!(line.split_whitespace().nth(1), Some(&*want), "{name}");
        }
    }

    #[test]
    fn missing_file() {
        let err = from_file("/nonexistent/btf").unwrap_err();
        let want = "cannot read /nonexistent/btf: No such file or directory (os error 2)";
        assert_eq!(err.to_string(), want);
    }

    #[test]
    fn lookup_errors_name_what_is_missing() {
        let Some(btf) = vmlinux() else { return };
        let check = |s, p: &[&str], want: &str| {
            assert_eq!(member_offset(btf, s, p).unwrap_err().to_string(), want)
        };
        check("no_such", &["x"], "BTF has no struct no_such");
        check("net", &["ns", "x"], "struct net has no member ns.x");
        let not_struct = "struct net member ns.inum is not a struct or union";
        check("net", &["ns", "inum", "x"], not_struct);
        let bitfield = "struct sock_common member skc_reuse is a bitfield";
        check("sock_common", &["skc_reuse"], bitfield);
    }
}
