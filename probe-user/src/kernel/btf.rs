//! Just enough of a BTF reader to find struct members: one pass over the
//! type section records where each type starts, and lookups read the raw
//! bytes from there. No type is decoded until asked for, so a 5.5 MB
//! vmlinux costs one read and a 600 KB index (a full parse costs 17 MiB
//! and tens of milliseconds). Every read is bounds-checked: malformed
//! input is an error, never a panic.

const MAGIC: u16 = 0xeb9f;
/// `struct btf_type`: name_off, info, size/type.
const TYPE_LEN: usize = 12;

/// BTF kinds (`BTF_KIND_*`) this reader follows.
pub mod kind {
    pub const STRUCT: u8 = 4;
    pub const UNION: u8 = 5;
    pub const TYPEDEF: u8 = 8;
    pub const VOLATILE: u8 = 9;
    pub const CONST: u8 = 10;
    pub const RESTRICT: u8 = 11;
    pub const TYPE_TAG: u8 = 18;
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("not BTF (magic {0:#06x})")]
    Magic(u16),
    #[error("truncated {0}")]
    Truncated(&'static str),
    #[error("unknown kind {kind} at type {id}")]
    Kind { kind: u8, id: u32 },
    #[error("no type {0}")]
    NoType(u32),
    #[error("string at {0} is out of bounds or not terminated")]
    Str(u32),
}

/// One type's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Type {
    pub id: u32,
    pub name_off: u32,
    pub kind: u8,
    pub kind_flag: bool,
    pub vlen: u16,
    /// `size` for structs, unions and ints; the referred type for
    /// typedefs, pointers and qualifiers.
    pub size_or_type: u32,
}

/// A struct or union member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    pub name_off: u32,
    pub type_id: u32,
    pub bit_offset: u32,
    /// Non-zero for a bitfield.
    pub bitfield_size: u8,
}

pub struct Btf<'a> {
    types: &'a [u8],
    strings: &'a [u8],
    /// Byte offset in `types` of type id `i + 1`.
    starts: Vec<u32>,
    /// Name -> id of the first struct of that name, built on first use.
    structs: std::sync::OnceLock<std::collections::HashMap<&'a str, u32>>,
}

fn u32_at(b: &[u8], at: usize, what: &'static str) -> Result<u32, Error> {
    let bytes = b.get(at..at + 4).ok_or(Error::Truncated(what))?;
    Ok(u32::from_ne_bytes(bytes.try_into().expect("4 bytes")))
}

/// Bytes that follow a type's header, by kind (`include/uapi/linux/btf.h`).
fn trailer(kind: u8, vlen: usize) -> Option<usize> {
    Some(match kind {
        0 | 2 | 7..=12 | 16 | 18 => 0, // void, ptr, fwd, typedef, quals, func, float, type_tag
        1 | 14 | 17 => 4,              // int, var, decl_tag
        3 => 12,                       // array
        4 | 5 | 15 | 19 => 12 * vlen,  // struct, union, datasec, enum64
        6 | 13 => 8 * vlen,            // enum, func_proto
        _ => return None,
    })
}

impl<'a> Btf<'a> {
    /// Indexes raw BTF in the machine's byte order (as the kernel exports it).
    pub fn parse(raw: &'a [u8]) -> Result<Self, Error> {
        let magic = raw.get(..2).ok_or(Error::Truncated("header"))?;
        let magic = u16::from_ne_bytes([magic[0], magic[1]]);
        if magic != MAGIC {
            return Err(Error::Magic(magic));
        }
        let field = |i: usize| u32_at(raw, 4 + 4 * i, "header").map(|v| v as usize);
        let (hdr_len, type_off, type_len, str_off, str_len) =
            (field(0)?, field(1)?, field(2)?, field(3)?, field(4)?);
        let section = |off: usize, len: usize, what| {
            let start = hdr_len.checked_add(off).ok_or(Error::Truncated(what))?;
            raw.get(start..start.checked_add(len).ok_or(Error::Truncated(what))?)
                .ok_or(Error::Truncated(what))
        };
        let types = section(type_off, type_len, "type section")?;
        let strings = section(str_off, str_len, "string section")?;
        let mut starts = Vec::with_capacity(type_len / 24);
        let mut at = 0;
        while at < types.len() {
            let id = starts.len() as u32 + 1;
            let info = u32_at(types, at + 4, "type")?;
            let kind = ((info >> 24) & 0x1f) as u8;
            let extra = trailer(kind, (info & 0xffff) as usize).ok_or(Error::Kind { kind, id })?;
            starts.push(at as u32);
            at += TYPE_LEN + extra;
        }
        if at != types.len() {
            return Err(Error::Truncated("type"));
        }
        Ok(Self {
            types,
            strings,
            starts,
            structs: std::sync::OnceLock::new(),
        })
    }

    /// Number of types (ids 1..=len; id 0 is void).
    pub fn len(&self) -> usize {
        self.starts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    pub fn get(&self, id: u32) -> Result<Type, Error> {
        let at = *id
            .checked_sub(1)
            .and_then(|i| self.starts.get(i as usize))
            .ok_or(Error::NoType(id))? as usize;
        let info = u32_at(self.types, at + 4, "type")?;
        Ok(Type {
            id,
            name_off: u32_at(self.types, at, "type")?,
            kind: ((info >> 24) & 0x1f) as u8,
            kind_flag: info >> 31 == 1,
            vlen: (info & 0xffff) as u16,
            size_or_type: u32_at(self.types, at + 8, "type")?,
        })
    }

    pub fn name(&self, name_off: u32) -> Result<&'a str, Error> {
        let tail = self
            .strings
            .get(name_off as usize..)
            .ok_or(Error::Str(name_off))?;
        let end = tail
            .iter()
            .position(|&b| b == 0)
            .ok_or(Error::Str(name_off))?;
        std::str::from_utf8(&tail[..end]).map_err(|_| Error::Str(name_off))
    }

    /// The first struct named `name` (ids come in declaration order).
    pub fn find_struct(&self, name: &str) -> Result<Option<Type>, Error> {
        if self.structs.get().is_none() {
            let mut index = std::collections::HashMap::new();
            for id in 1..=self.starts.len() as u32 {
                let t = self.get(id)?;
                if t.kind == kind::STRUCT && t.name_off != 0 {
                    index.entry(self.name(t.name_off)?).or_insert(id);
                }
            }
            let _ = self.structs.set(index);
        }
        let index = self.structs.get().expect("set above");
        index.get(name).map(|&id| self.get(id)).transpose()
    }

    /// Members of a struct or union (empty for any other kind).
    pub fn members(&self, t: &Type) -> Result<Vec<Member>, Error> {
        if t.kind != kind::STRUCT && t.kind != kind::UNION {
            return Ok(Vec::new());
        }
        let start = (t.id as usize)
            .checked_sub(1)
            .and_then(|i| self.starts.get(i))
            .ok_or(Error::NoType(t.id))?;
        let at = *start as usize + TYPE_LEN;
        (0..t.vlen as usize)
            .map(|i| {
                let m = at + 12 * i;
                let off = u32_at(self.types, m + 8, "member")?;
                // With kind_flag, the top byte is the bitfield size.
                let (bit_offset, bitfield_size) = if t.kind_flag {
                    (off & 0x00ff_ffff, (off >> 24) as u8)
                } else {
                    (off, 0)
                };
                Ok(Member {
                    name_off: u32_at(self.types, m, "member")?,
                    type_id: u32_at(self.types, m + 4, "member")?,
                    bit_offset,
                    bitfield_size,
                })
            })
            .collect()
    }
}

/// Builds raw BTF for tests: types as (name, info, size_or_type, trailer).
#[cfg(test)]
pub mod build {
    #[derive(Default)]
    pub struct Builder {
        types: Vec<u8>,
        strings: Vec<u8>,
    }

    pub fn info(kind: u8, vlen: u16, kind_flag: bool) -> u32 {
        (u32::from(kind_flag) << 31) | (u32::from(kind) << 24) | u32::from(vlen)
    }

    impl Builder {
        pub fn new() -> Self {
            Self {
                types: Vec::new(),
                strings: vec![0],
            }
        }

        pub fn str(&mut self, s: &str) -> u32 {
            if s.is_empty() {
                return 0;
            }
            let off = self.strings.len() as u32;
            self.strings.extend_from_slice(s.as_bytes());
            self.strings.push(0);
            off
        }

        pub fn raw(&mut self, words: &[u32]) {
            for w in words {
                self.types.extend_from_slice(&w.to_ne_bytes());
            }
        }

        pub fn finish(&self) -> Vec<u8> {
            let mut out = Vec::new();
            out.extend_from_slice(&super::MAGIC.to_ne_bytes());
            out.extend_from_slice(&[1, 0]);
            for w in [24, 0, self.types.len() as u32, self.types.len() as u32] {
                out.extend_from_slice(&w.to_ne_bytes());
            }
            out.extend_from_slice(&(self.strings.len() as u32).to_ne_bytes());
            out.extend_from_slice(&self.types);
            out.extend_from_slice(&self.strings);
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::build::{Builder, info};
    use super::*;

    /// int (1), struct pair { int a; int b:3; } (2) with kind_flag.
    fn sample() -> Vec<u8> {
        let mut b = Builder::new();
        let int = b.str("int");
        b.raw(&[int, info(1, 0, false), 4, 32]);
        let (pair, a, bf) = (b.str("pair"), b.str("a"), b.str("b"));
        b.raw(&[pair, info(kind::STRUCT, 2, true), 8]);
        b.raw(&[a, 1, 0, bf, 1, (3 << 24) | 32]);
        b.finish()
    }

    #[test]
    fn reads_types_members_and_bitfields() {
        let raw = sample();
        let btf = Btf::parse(&raw).unwrap();
        assert_eq!(btf.len(), 2);
        let pair = btf.find_struct("pair").unwrap().unwrap();
        assert_eq!((pair.id, pair.size_or_type, pair.vlen), (2, 8, 2));
        let m = btf.members(&pair).unwrap();
        assert_eq!(btf.name(m[0].name_off).unwrap(), "a");
        assert_eq!(
            (m[0].type_id, m[0].bit_offset, m[0].bitfield_size),
            (1, 0, 0)
        );
        assert_eq!((m[1].bit_offset, m[1].bitfield_size), (32, 3));
        assert_eq!(btf.find_struct("int").unwrap(), None);
        assert_eq!(btf.get(3), Err(Error::NoType(3)));
        // A type made up by the caller is an error, not a panic.
        let made_up = Type { id: 0, ..pair };
        assert_eq!(btf.members(&made_up), Err(Error::NoType(0)));
        assert_eq!(btf.get(0), Err(Error::NoType(0)));
    }

    /// Every prefix of a valid blob, and a few corruptions, are errors:
    /// never a panic, never a wrong success.
    #[test]
    fn malformed_input_is_an_error() {
        let raw = sample();
        for n in 0..raw.len() {
            assert!(Btf::parse(&raw[..n]).is_err(), "prefix of {n} bytes");
        }
        let mut bad = raw.clone();
        bad[0] ^= 0xff;
        assert!(matches!(Btf::parse(&bad), Err(Error::Magic(_))));
        let mut bad = raw.clone();
        // The int's kind becomes 31.
        bad[24 + 7] = 31;
        assert_eq!(
            Btf::parse(&bad).err(),
            Some(Error::Kind { kind: 31, id: 1 })
        );
        let mut bad = raw;
        // A header length pointing past the end.
        bad[4] = 0xff;
        assert!(matches!(Btf::parse(&bad), Err(Error::Truncated(_))));
    }

    #[test]
    fn running_kernel_btf_indexes_whole() {
        let Ok(raw) = std::fs::read(crate::kernel::btf_offsets::VMLINUX) else {
            return eprintln!("note: no kernel BTF; skipping");
        };
        let btf = Btf::parse(&raw).unwrap();
        assert!(btf.len() > 10_000, "{}", btf.len());
        let sk = btf.find_struct("sock_common").unwrap().unwrap();
        assert!(sk.vlen > 10 && sk.size_or_type >= 100);
    }
}
