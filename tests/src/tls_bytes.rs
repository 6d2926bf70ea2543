//! Hand-built TLS bytes for the raw sender: a real ClientHello (that
//! openssl s_server answers), cut or garbled variants.

use std::io::Read;

/// Kernel randomness (no rand crate needed for a few test bytes).
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("reading /dev/urandom");
    buf
}

fn u16be(n: usize) -> [u8; 2] {
    u16::try_from(n).expect("fits in u16").to_be_bytes()
}

fn with_len16(body: &[u8]) -> Vec<u8> {
    let mut v = u16be(body.len()).to_vec();
    v.extend_from_slice(body);
    v
}

fn extension(kind: u16, data: &[u8]) -> Vec<u8> {
    let mut v = kind.to_be_bytes().to_vec();
    v.extend(with_len16(data));
    v
}

/// A complete TLS record holding a TLS 1.3 (1.2-compatible) ClientHello,
/// with SNI when given. Valid enough for openssl to answer with a
/// ServerHello: x25519 key share, common suites and signature schemes.
pub fn client_hello(sni: Option<&str>) -> Vec<u8> {
    let mut ext = Vec::new();
    if let Some(name) = sni {
        let mut entry = vec![0u8]; // host_name
        entry.extend(with_len16(name.as_bytes()));
        ext.extend(extension(0x0000, &with_len16(&entry)));
    }
    // supported_groups: x25519, secp256r1
    ext.extend(extension(0x000a, &with_len16(&[0x00, 0x1d, 0x00, 0x17])));
    // ec_point_formats: uncompressed
    ext.extend(extension(0x000b, &[1, 0]));
    // signature_algorithms: ecdsa_p256_sha256, rsa_pss_rsae_sha256, rsa_pkcs1_sha256
    ext.extend(extension(0x000d, &with_len16(&[4, 3, 8, 4, 4, 1])));
    // supported_versions: TLS 1.3, TLS 1.2
    ext.extend(extension(0x002b, &[4, 3, 4, 3, 3]));
    // key_share: one x25519 share (any 32 bytes is a valid public key)
    let mut share = vec![0x00, 0x1d, 0x00, 0x20];
    share.extend(random_bytes(32));
    ext.extend(extension(0x0033, &with_len16(&share)));

    let mut body = vec![0x03, 0x03]; // legacy_version TLS 1.2
    body.extend(random_bytes(32));
    body.push(32); // legacy_session_id (middlebox compatibility mode)
    body.extend(random_bytes(32));
    // TLS_AES_128_GCM_SHA256, TLS_AES_256_GCM_SHA384, TLS_CHACHA20_POLY1305,
    // ECDHE_ECDSA_AES128_GCM, ECDHE_RSA_AES128_GCM
    body.extend(with_len16(&[
        0x13, 0x01, 0x13, 0x02, 0x13, 0x03, 0xc0, 0x2b, 0xc0, 0x2f,
    ]));
    body.extend([1, 0]); // compression: null
    body.extend(with_len16(&ext));

    let mut hs = vec![0x01]; // ClientHello
    hs.extend(&u32::try_from(body.len()).expect("small").to_be_bytes()[1..]);
    hs.extend(body);

    let mut rec = vec![0x16, 0x03, 0x01]; // handshake record, legacy version
    rec.extend(with_len16(&hs));
    rec
}

/// The first `keep` bytes of a ClientHello: a record that never completes.
pub fn truncated_client_hello(sni: Option<&str>, keep: usize) -> Vec<u8> {
    let mut v = client_hello(sni);
    v.truncate(keep);
    v
}

/// True if `reply` starts with a handshake record carrying a ServerHello.
pub fn is_server_hello(reply: &[u8]) -> bool {
    reply.len() >= 6 && reply[0] == 0x16 && reply[1] == 0x03 && reply[5] == 0x02
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_hello_lengths_are_consistent() {
        let rec = client_hello(Some("api.lab"));
        assert_eq!(rec[0], 0x16);
        let rec_len = u16::from_be_bytes([rec[3], rec[4]]) as usize;
        assert_eq!(rec.len(), 5 + rec_len);
        assert_eq!(rec[5], 0x01);
        let hs_len = u32::from_be_bytes([0, rec[6], rec[7], rec[8]]) as usize;
        assert_eq!(rec_len, 4 + hs_len);
        assert!(rec.windows(7).any(|w| w == b"api.lab"));
        assert_ne!(client_hello(None).len(), rec.len());
        assert_eq!(truncated_client_hello(None, 20).len(), 20);
    }

    #[test]
    fn recognises_server_hello() {
        assert!(is_server_hello(&[0x16, 0x03, 0x03, 0x00, 0x7a, 0x02, 0, 0]));
        assert!(!is_server_hello(&[
            0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28
        ]));
        assert!(!is_server_hello(&[0x16]));
    }
}
