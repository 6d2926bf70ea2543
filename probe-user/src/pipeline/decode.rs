//! Ring-buffer bytes to typed kernel records.
//!
//! Untrusted input in the sense that a mismatched eBPF object or a kernel
//! change can hand us anything: every record is length-checked against its
//! header and its type before it is read, unknown kinds are reported as
//! errors for the caller to count, and nothing here panics.

use std::mem::size_of;

use probe_common::{
    ArpRecord, DropRecord, IcmpRecord, NeighRecord, PacketRecord, RecordHeader, ResetRecord,
    TcpRecord, TlsRecord, kind,
};
use thiserror::Error;

/// One kernel record, copied out of the ring buffer.
#[derive(Clone, Debug)]
pub enum Record {
    Retransmit(TcpRecord),
    Reset(TcpRecord),
    SynackRetransmit(TcpRecord),
    Neighbour(NeighRecord),
    Tls(Box<TlsRecord>),
    Arp(ArpRecord),
    Packet(Box<PacketRecord>),
    Drop(DropRecord),
    IcmpSent(IcmpRecord),
    ResetSent(ResetRecord),
}

impl Record {
    pub fn header(&self) -> &RecordHeader {
        match self {
            Record::Retransmit(r) | Record::Reset(r) | Record::SynackRetransmit(r) => &r.header,
            Record::Neighbour(r) => &r.header,
            Record::Tls(r) => &r.header,
            Record::Arp(r) => &r.header,
            Record::Packet(r) => &r.header,
            Record::Drop(r) => &r.header,
            Record::IcmpSent(r) => &r.header,
            Record::ResetSent(r) => &r.header,
        }
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {0} bytes is shorter than its header")]
    Short(usize),
    #[error("record kind {kind} says {claimed} bytes, got {got}")]
    SizeMismatch { kind: u16, claimed: u16, got: usize },
    #[error("unknown record kind {0}")]
    UnknownKind(u16),
}

/// Reads a `T` from the start of `bytes` after checking the length.
fn read<T: Copy>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < size_of::<T>() {
        return None;
    }
    // SAFETY: length checked above; `T` is a repr(C) record of integers and
    // byte arrays, valid for any bit pattern; read_unaligned needs no alignment.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

pub fn decode(bytes: &[u8]) -> Result<Record, DecodeError> {
    let header: RecordHeader = read(bytes).ok_or(DecodeError::Short(bytes.len()))?;
    let expect = match header.kind {
        kind::RETRANSMIT | kind::RESET | kind::SYNACK_RETRANSMIT => size_of::<TcpRecord>(),
        kind::NEIGHBOUR => size_of::<NeighRecord>(),
        kind::TLS => size_of::<TlsRecord>(),
        kind::ARP => size_of::<ArpRecord>(),
        kind::PACKET => size_of::<PacketRecord>(),
        kind::DROP => size_of::<DropRecord>(),
        kind::ICMP_SENT => size_of::<IcmpRecord>(),
        kind::RESET_SENT => size_of::<ResetRecord>(),
        other => return Err(DecodeError::UnknownKind(other)),
    };
    // The ring buffer may round up; the header must still agree with the type.
    if usize::from(header.size) != expect || bytes.len() < expect {
        return Err(DecodeError::SizeMismatch {
            kind: header.kind,
            claimed: header.size,
            got: bytes.len(),
        });
    }
    let mismatch = || DecodeError::SizeMismatch {
        kind: header.kind,
        claimed: header.size,
        got: bytes.len(),
    };
    Ok(match header.kind {
        kind::RETRANSMIT => Record::Retransmit(read(bytes).ok_or_else(mismatch)?),
        kind::RESET => Record::Reset(read(bytes).ok_or_else(mismatch)?),
        kind::SYNACK_RETRANSMIT => Record::SynackRetransmit(read(bytes).ok_or_else(mismatch)?),
        kind::NEIGHBOUR => Record::Neighbour(read(bytes).ok_or_else(mismatch)?),
        kind::TLS => Record::Tls(Box::new(read(bytes).ok_or_else(mismatch)?)),
        kind::PACKET => Record::Packet(Box::new(read(bytes).ok_or_else(mismatch)?)),
        kind::DROP => Record::Drop(read(bytes).ok_or_else(mismatch)?),
        kind::ICMP_SENT => Record::IcmpSent(read(bytes).ok_or_else(mismatch)?),
        kind::RESET_SENT => Record::ResetSent(read(bytes).ok_or_else(mismatch)?),
        _ => Record::Arp(read(bytes).ok_or_else(mismatch)?),
    })
}

/// Test and fuzz helper: the raw bytes of a record, as the kernel writes them.
pub fn to_bytes<T: Copy>(record: &T) -> Vec<u8> {
    // SAFETY: any initialised `T` can be viewed as bytes; records have no
    // implicit padding (layout asserts in probe-common).
    unsafe { std::slice::from_raw_parts((record as *const T).cast::<u8>(), size_of::<T>()) }
        .to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retransmit() -> TcpRecord {
        TcpRecord {
            header: RecordHeader::new(kind::RETRANSMIT, size_of::<TcpRecord>(), 42),
            skaddr: 0xffff_0000,
            netns: 4026531840,
            state: 1,
            family: probe_common::AF_INET,
            has_seq: 0,
            not_sent: 0,
            sport: 40000,
            dport: 8000,
            snd_una: 0,
            snd_nxt: 0,
            pid: 0,
            saddr: [10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            daddr: [10, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            comm: [0; 16],
        }
    }

    #[test]
    fn decodes_a_retransmit() {
        let bytes = to_bytes(&retransmit());
        match decode(&bytes).unwrap() {
            Record::Retransmit(r) => {
                assert_eq!(r.sport, 40000);
                assert_eq!(r.header.ts_ns, 42);
            }
            other => panic!("wrong record {other:?}"),
        }
    }

    #[test]
    fn decodes_icmp_and_reset_records() {
        let mut icmp = IcmpRecord {
            header: RecordHeader::new(kind::ICMP_SENT, size_of::<IcmpRecord>(), 7),
            ..Default::default()
        };
        icmp.key.code = 13;
        icmp.count = 4;
        match decode(&to_bytes(&icmp)).unwrap() {
            Record::IcmpSent(r) => assert_eq!((r.key.code, r.count), (13, 4)),
            other => panic!("wrong record {other:?}"),
        }
        let mut rst = ResetRecord {
            header: RecordHeader::new(kind::RESET_SENT, size_of::<ResetRecord>(), 8),
            ..Default::default()
        };
        rst.key.reason = 1;
        match decode(&to_bytes(&rst)).unwrap() {
            Record::ResetSent(r) => assert_eq!(r.key.reason, 1),
            other => panic!("wrong record {other:?}"),
        }
        // A reset record claiming a drop's size is refused.
        rst.header.size = size_of::<DropRecord>() as u16;
        assert!(decode(&to_bytes(&rst)).is_err());
    }

    #[test]
    fn rejects_short_and_lying_records() {
        let bytes = to_bytes(&retransmit());
        assert_eq!(decode(&bytes[..8]).unwrap_err(), DecodeError::Short(8));
        assert!(matches!(
            decode(&bytes[..40]),
            Err(DecodeError::SizeMismatch { .. })
        ));
        let mut lying = bytes.clone();
        lying[2] = 200; // size field
        assert!(matches!(
            decode(&lying),
            Err(DecodeError::SizeMismatch { .. })
        ));
        let mut unknown = bytes;
        unknown[0] = 99;
        assert_eq!(decode(&unknown).unwrap_err(), DecodeError::UnknownKind(99));
    }

    #[test]
    fn never_panics_on_noise() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for len in 0..700 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = decode(&bytes);
        }
    }
}
