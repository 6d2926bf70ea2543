//! Crafted Ethernet frames for BPF_PROG_TEST_RUN of the classifier. They
//! never reach a wire; TEST-NET addresses, checksums left at zero (the
//! classifier does not check them).

const SRC_MAC: [u8; 6] = [0x02, 0x6e, 0x70, 0, 0, 1];
const DST_MAC: [u8; 6] = [0x02, 0x6e, 0x70, 0, 0, 2];
const SRC_IP: [u8; 4] = [192, 0, 2, 1];
const DST_IP: [u8; 4] = [192, 0, 2, 2];
/// How netprobe prints them.
pub const SRC_ENDPOINT: &str = "192.0.2.1:40000";
pub const DST_ADDR: &str = "192.0.2.2";

fn ethernet(ethertype: u16) -> Vec<u8> {
    let mut f = DST_MAC.to_vec();
    f.extend(SRC_MAC);
    f.extend(ethertype.to_be_bytes());
    f
}

/// IPv4 + TCP (ACK|PSH) from port 40000 to `dport` carrying `payload`.
pub fn tcp(dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = ethernet(0x0800);
    let total = u16::try_from(20 + 20 + payload.len()).expect("small frame");
    f.extend([0x45, 0]);
    f.extend(total.to_be_bytes());
    f.extend([0, 1, 0x40, 0, 64, 6, 0, 0]); // id, DF, TTL, TCP, checksum
    f.extend(SRC_IP);
    f.extend(DST_IP);
    f.extend(40000u16.to_be_bytes());
    f.extend(dport.to_be_bytes());
    f.extend(1u32.to_be_bytes()); // seq
    f.extend(1u32.to_be_bytes()); // ack
    f.extend([0x50, 0x18]); // 20-byte header, ACK|PSH
    f.extend(64240u16.to_be_bytes());
    f.extend([0, 0, 0, 0]); // checksum, urgent
    f.extend(payload);
    f
}

/// An ARP reply: DST_IP is at DST_MAC, to SRC.
pub fn arp_reply() -> Vec<u8> {
    let mut f = ethernet(0x0806);
    f.extend([0, 1, 0x08, 0, 6, 4, 0, 2]); // Ethernet, IPv4, reply
    f.extend(DST_MAC);
    f.extend(DST_IP);
    f.extend(SRC_MAC);
    f.extend(SRC_IP);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(tcp(80, &[0; 100]).len(), 14 + 40 + 100);
        assert_eq!(arp_reply().len(), 14 + 28);
        let f = tcp(6443, b"x");
        assert_eq!(&f[36..38], &6443u16.to_be_bytes());
        assert_eq!(u16::from_be_bytes([f[16], f[17]]), 41);
    }
}
