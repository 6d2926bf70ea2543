//! packets.pcapng: the classifier's frame copies, written with `pcap-file`.
//! One Interface Description Block per interface (name, nanosecond
//! timestamps), added the first time a packet of that interface comes; one
//! Enhanced Packet Block per frame with its time, its length on the wire
//! and its direction (epb_flags inbound/outbound).

use std::{
    borrow::Cow,
    collections::HashMap,
    io::{self, Write},
    time::Duration,
};

use pcap_file::{
    DataLink, Endianness, PcapError,
    pcapng::{
        PcapNgWriter,
        blocks::{
            enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption},
            interface_description::{InterfaceDescriptionBlock, InterfaceDescriptionOption},
            section_header::{SectionHeaderBlock, SectionHeaderOption},
        },
    },
};
use probe_common::direction;

use crate::pipeline::Packet;

/// if_tsresol 9: timestamps count nanoseconds (what pcap-file writes).
const TS_RESOL_NS: u8 = 9;
/// What the IDB says the classifier may copy per frame at most.
const SNAPLEN: u32 = 65535;
/// epb_flags direction bits.
const FLAG_INBOUND: u32 = 0b01;
const FLAG_OUTBOUND: u32 = 0b10;

/// Upper bound on the bytes one packet adds (EPB framing, padding, flags
/// option, and an IDB with its name if the interface is new).
pub fn max_packet_bytes(p: &Packet) -> u64 {
    (p.data.len() + 64 + 64 + p.iface.len()) as u64
}

/// Counts what reaches the underlying writer.
struct Counting<W> {
    inner: W,
    bytes: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

pub struct PcapngWriter<W: Write> {
    writer: PcapNgWriter<Counting<W>>,
    /// (ifindex, name) -> interface id in this section.
    interfaces: HashMap<(u32, String), u32>,
    pub packets: u64,
}

impl<W: Write> PcapngWriter<W> {
    /// Writes the section header.
    pub fn new(out: W) -> io::Result<Self> {
        let section = SectionHeaderBlock {
            endianness: Endianness::native(),
            options: vec![SectionHeaderOption::UserApplication(Cow::Owned(format!(
                "netprobe {} capture",
                env!("CARGO_PKG_VERSION")
            )))],
            ..Default::default()
        };
        let writer = PcapNgWriter::with_section_header(
            Counting {
                inner: out,
                bytes: 0,
            },
            section,
        )
        .map_err(to_io)?;
        Ok(Self {
            writer,
            interfaces: HashMap::new(),
            packets: 0,
        })
    }

    /// Bytes written so far (section header included).
    pub fn bytes(&self) -> u64 {
        self.writer.get_ref().bytes
    }

    /// Interfaces described so far.
    pub fn interfaces(&self) -> usize {
        self.interfaces.len()
    }

    /// Appends one frame; returns the bytes it added.
    pub fn write(&mut self, p: &Packet) -> io::Result<u64> {
        let before = self.bytes();
        let interface_id = self.interface(p.ifindex, &p.iface)?;
        let time = p.time.timestamp_nanos_opt().unwrap_or_default().max(0) as u64;
        let flags = match p.direction {
            direction::INGRESS => FLAG_INBOUND,
            direction::EGRESS => FLAG_OUTBOUND,
            _ => 0,
        };
        let block = EnhancedPacketBlock {
            interface_id,
            timestamp: Duration::from_nanos(time),
            original_len: p.wire_len.max(p.data.len() as u32),
            data: Cow::Borrowed(&p.data),
            options: vec![EnhancedPacketOption::Flags(flags)],
        };
        self.writer.write_pcapng_block(block).map_err(to_io)?;
        self.packets += 1;
        Ok(self.bytes() - before)
    }

    fn interface(&mut self, ifindex: u32, name: &str) -> io::Result<u32> {
        if let Some(id) = self.interfaces.get(&(ifindex, name.to_string())) {
            return Ok(*id);
        }
        let id = self.writer.interfaces().len() as u32;
        let idb = InterfaceDescriptionBlock {
            linktype: DataLink::ETHERNET,
            snaplen: SNAPLEN,
            options: vec![
                InterfaceDescriptionOption::IfName(Cow::Owned(name.to_string())),
                InterfaceDescriptionOption::IfDescription(Cow::Owned(format!("ifindex {ifindex}"))),
                InterfaceDescriptionOption::IfTsResol(TS_RESOL_NS),
            ],
        };
        self.writer.write_pcapng_block(idb).map_err(to_io)?;
        self.interfaces.insert((ifindex, name.to_string()), id);
        Ok(id)
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.writer.get_mut().flush()
    }

    /// Flushes and hands back the underlying writer.
    pub fn into_inner(mut self) -> io::Result<W> {
        self.flush()?;
        Ok(self.writer.into_inner().inner)
    }
}

fn to_io(e: PcapError) -> io::Error {
    match e {
        PcapError::IoError(e) => e,
        other => io::Error::other(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use pcap_file::pcapng::{Block, PcapNgReader};

    use super::*;

    fn packet(
        ifindex: u32,
        iface: &str,
        dir: u8,
        secs: i64,
        nanos: u32,
        wire_len: u32,
        data: Vec<u8>,
    ) -> Packet {
        Packet {
            time: chrono::DateTime::from_timestamp(secs, nanos).unwrap(),
            ifindex,
            iface: iface.into(),
            direction: dir,
            wire_len,
            data,
        }
    }

    #[test]
    fn written_file_reads_back_with_interfaces_times_lengths_and_direction() {
        let frame: Vec<u8> = (0..54u8).collect();
        let packets = [
            packet(
                2,
                "eth0",
                direction::EGRESS,
                1_795_262_400,
                123_456_789,
                1514,
                frame.clone(),
            ),
            packet(
                7,
                "br0",
                direction::INGRESS,
                1_795_262_401,
                5,
                60,
                frame[..42].to_vec(),
            ),
            packet(
                2,
                "eth0",
                direction::INGRESS,
                1_795_262_402,
                0,
                54,
                frame.clone(),
            ),
        ];
        let mut w = PcapngWriter::new(Vec::new()).unwrap();
        let mut sum = w.bytes();
        for p in &packets {
            let n = w.write(p).unwrap();
            assert!(n <= max_packet_bytes(p), "{n} > bound");
            sum += n;
        }
        assert_eq!(w.packets, 3);
        let bytes = w.into_inner().unwrap();
        assert_eq!(sum, bytes.len() as u64);

        let mut r = PcapNgReader::new(&bytes[..]).unwrap();
        let mut epbs = Vec::new();
        while let Some(block) = r.next_block() {
            if let Block::EnhancedPacket(epb) = block.unwrap() {
                epbs.push(epb.into_owned());
            }
        }
        let ifaces = r.interfaces();
        assert_eq!(ifaces.len(), 2, "one IDB per interface");
        for (idb, name) in ifaces.iter().zip(["eth0", "br0"]) {
            assert_eq!(idb.linktype, DataLink::ETHERNET);
            assert!(
                idb.options
                    .contains(&InterfaceDescriptionOption::IfName(name.into())),
                "{idb:?}"
            );
            assert!(
                idb.options
                    .contains(&InterfaceDescriptionOption::IfTsResol(9))
            );
        }
        assert_eq!(epbs.len(), 3);
        assert_eq!(
            epbs.iter().map(|e| e.interface_id).collect::<Vec<_>>(),
            [0, 1, 0]
        );
        assert_eq!(epbs[0].timestamp, Duration::new(1_795_262_400, 123_456_789));
        assert_eq!(epbs[1].timestamp, Duration::new(1_795_262_401, 5));
        assert_eq!(epbs[0].original_len, 1514);
        assert_eq!(epbs[0].data.len(), 54);
        assert_eq!(&epbs[1].data[..], &frame[..42]);
        assert_eq!(epbs[1].original_len, 60);
        assert_eq!(
            epbs[0].options,
            [EnhancedPacketOption::Flags(FLAG_OUTBOUND)]
        );
        assert_eq!(epbs[1].options, [EnhancedPacketOption::Flags(FLAG_INBOUND)]);
    }

    #[test]
    fn a_renamed_interface_gets_its_own_description() {
        let mut w = PcapngWriter::new(Vec::new()).unwrap();
        w.write(&packet(3, "veth1", 0, 1, 0, 60, vec![0; 60]))
            .unwrap();
        w.write(&packet(3, "eth9", 0, 2, 0, 60, vec![0; 60]))
            .unwrap();
        w.write(&packet(3, "veth1", 0, 3, 0, 60, vec![0; 60]))
            .unwrap();
        let bytes = w.into_inner().unwrap();
        let mut r = PcapNgReader::new(&bytes[..]).unwrap();
        while r.next_block().is_some() {}
        assert_eq!(r.interfaces().len(), 2);
    }
}
