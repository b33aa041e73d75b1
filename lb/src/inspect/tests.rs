use super::*;
use crate::config::ProxyVersion;

#[test]
fn proxy_v1_round_trips_and_reports_its_length() {
    let src: SocketAddr = "198.51.100.7:40000".parse().unwrap();
    let dst: SocketAddr = "192.0.2.1:443".parse().unwrap();
    let mut bytes = encode_proxy_header(ProxyVersion::V1, src, dst);
    assert_eq!(bytes, b"PROXY TCP4 198.51.100.7 192.0.2.1 40000 443\r\n");
    let n = bytes.len();
    bytes.extend_from_slice(b"payload");
    assert_eq!(
        proxy_header(&bytes),
        Inspect::Done {
            value: ProxiedAddrs {
                source: Some(src),
                destination: Some(dst)
            },
            consumed: n
        }
    );
    for cut in 1..n {
        assert_eq!(
            proxy_header(&bytes[..cut]),
            Inspect::NeedMore,
            "cut at {cut}"
        );
    }
}

#[test]
fn proxy_v2_round_trips_ipv6_and_mixed_families() {
    let src: SocketAddr = "[2001:db8::7]:40000".parse().unwrap();
    let dst: SocketAddr = "192.0.2.1:443".parse().unwrap();
    let bytes = encode_proxy_header(ProxyVersion::V2, src, dst);
    let Inspect::Done { value, consumed } = proxy_header(&bytes) else {
        panic!()
    };
    assert_eq!(consumed, bytes.len());
    assert_eq!(value.source, Some(src));
    assert_eq!(
        value.destination,
        Some("[::ffff:192.0.2.1]:443".parse().unwrap())
    );
    for cut in 1..bytes.len() {
        assert_eq!(
            proxy_header(&bytes[..cut]),
            Inspect::NeedMore,
            "cut at {cut}"
        );
    }
}

#[test]
fn proxy_v1_longer_than_107_bytes_is_invalid_even_in_one_read() {
    // Found by fuzz/lb_proxy_header: ppp ends a v1 header at its first CR, so an UNKNOWN
    // line with "\n\r" early passed ppp's 107-byte limit, and the whole line up to the
    // CRLF 150 bytes on was consumed; read in pieces, the same bytes were refused.
    let long = [b"PROXY UNKNOWN \n\r".as_slice(), &[b'W'; 150], b"\r\n"].concat();
    assert_eq!(proxy_header(&long), Inspect::Invalid("bad_proxy_header"));
    // The longest legal header (107 bytes with its CRLF) still reads.
    let max = [b"PROXY UNKNOWN ".as_slice(), &[b'W'; 91], b"\r\n"].concat();
    assert_eq!(max.len(), 107);
    assert!(matches!(
        proxy_header(&max),
        Inspect::Done { consumed: 107, .. }
    ));
}

#[test]
fn proxy_local_headers_carry_no_address() {
    for v in [ProxyVersion::V1, ProxyVersion::V2] {
        let bytes = encode_local_header(v);
        let Inspect::Done { value, consumed } = proxy_header(&bytes) else {
            panic!("{v:?}")
        };
        assert_eq!(consumed, bytes.len());
        assert_eq!(value.source, None);
    }
}

#[test]
fn a_v2_tlv_that_overruns_the_header_is_invalid() {
    let mut bytes = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    bytes.extend_from_slice(&[0x21, 0x11, 0, 12 + 5]);
    bytes.extend_from_slice(&[192, 0, 2, 1, 192, 0, 2, 2, 0x13, 0x88, 0x00, 0x50]);
    // Type 0x04 (NOOP) claiming 16 bytes; 2 follow, and the header ends there.
    bytes.extend_from_slice(&[0x04, 0x00, 0x10, 0xaa, 0xbb]);
    bytes.extend_from_slice(b"GET / HTTP/1.1\r\n");
    assert_eq!(proxy_header(&bytes), Inspect::Invalid("bad_proxy_header"));
    // The same TLV with its true length is fine.
    bytes[12 + 4 + 12 + 2] = 0x02;
    assert!(matches!(
        proxy_header(&bytes),
        Inspect::Done { consumed: 33, .. }
    ));
}

#[test]
fn proxy_garbage_is_invalid_at_once() {
    assert_eq!(
        proxy_header(b"GET / HTTP/1.1\r\n"),
        Inspect::Invalid("bad_proxy_header")
    );
    assert_eq!(
        proxy_header(b"PROXY TCP4 1.2.3.4 nope 1 2\r\n"),
        Inspect::Invalid("bad_proxy_header")
    );
    assert_eq!(
        proxy_header(b"PROXY TCP9 1.2.3.4 5.6.7.8 1 2\r\n"),
        Inspect::Invalid("bad_proxy_header")
    );
    // A v1 header never ends: invalid once it is longer than any header can be.
    let long = [b"PROXY TCP4 ".as_slice(), &[b'1'; MAX_PROXY_HEADER]].concat();
    assert_eq!(proxy_header(&long), Inspect::Invalid("bad_proxy_header"));
}

#[test]
fn a_header_then_a_close_or_reset_is_a_check_and_nothing_else_is() {
    use Verdict::*;
    // (PROXY header read, payload bytes after it, the socket) -> verdict
    let table = [
        (true, 0, Peer::Here, Connect),
        (true, 0, Peer::Finished, ProxyCheck),
        (true, 0, Peer::Gone, ProxyCheck),
        // Payload came: a client, which may wait for the answer after its close.
        (true, 1, Peer::Here, Connect),
        (true, 1, Peer::Finished, Connect),
        (true, 5, Peer::Gone, ClientGone),
        // No header (a plain frontend): a close is a client waiting for the server.
        (false, 0, Peer::Here, Connect),
        (false, 0, Peer::Finished, Connect),
        (false, 0, Peer::Gone, ClientGone),
        (false, 9, Peer::Finished, Connect),
        (false, 9, Peer::Gone, ClientGone),
    ];
    for (header, payload, peer, want) in table {
        assert_eq!(
            verdict(header, payload, peer),
            want,
            "header {header}, payload {payload}, {peer:?}"
        );
    }
}

/// The lists created at 0 hold every reason the parsers give.
#[test]
fn every_refusal_is_listed() {
    let src = include_str!("../inspect.rs");
    let code = &src[..src.find("#[cfg(test)]").unwrap_or(src.len())];
    let mut found = 0;
    for part in code.split("Inspect::Invalid(\"").skip(1) {
        let reason = &part[..part.find('"').unwrap_or(0)];
        assert!(
            PROXY_REFUSALS.contains(&reason) || HELLO_REFUSALS.contains(&reason),
            "{reason} is not listed"
        );
        found += 1;
    }
    assert!(found > 10, "the parsers' reasons were not found");
}

/// A ClientHello from rustls for `name`, as the bytes a client sends first.
fn hello(name: Option<&str>) -> Vec<u8> {
    use std::sync::Arc;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let mut config = config;
    config.enable_sni = name.is_some();
    let server_name =
        rustls_pki_types::ServerName::try_from(name.unwrap_or("no-sni.invalid").to_string())
            .unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(config), server_name).unwrap();
    let mut out = Vec::new();
    conn.write_tls(&mut out).unwrap();
    out
}

#[test]
fn sni_is_found_in_a_real_client_hello_at_every_split() {
    let bytes = hello(Some("Cloud1.GW.example.com"));
    for cut in 0..bytes.len() {
        assert_eq!(
            client_hello_sni(&bytes[..cut]),
            Inspect::NeedMore,
            "cut at {cut}"
        );
    }
    assert_eq!(
        client_hello_sni(&bytes),
        Inspect::Done {
            value: Some("cloud1.gw.example.com".into()),
            consumed: bytes.len()
        }
    );
}

#[test]
fn a_hello_without_sni_is_done_with_none() {
    let bytes = hello(None);
    assert_eq!(
        client_hello_sni(&bytes),
        Inspect::Done {
            value: None,
            consumed: bytes.len()
        }
    );
}

#[test]
fn a_hello_split_over_two_records_is_reassembled() {
    let bytes = hello(Some("api.example.com"));
    let body = &bytes[5..];
    let (a, b) = body.split_at(40);
    let mut split = Vec::new();
    for part in [a, b] {
        split.extend_from_slice(&[0x16, 3, 1]);
        split.extend_from_slice(&(part.len() as u16).to_be_bytes());
        split.extend_from_slice(part);
    }
    assert_eq!(
        client_hello_sni(&split),
        Inspect::Done {
            value: Some("api.example.com".into()),
            consumed: split.len()
        }
    );
}

#[test]
fn garbage_and_oversized_hellos_are_invalid() {
    assert_eq!(
        client_hello_sni(b"GET / HTTP/1.1\r\n"),
        Inspect::Invalid("not_tls")
    );
    assert_eq!(
        client_hello_sni(&[0x16, 9, 9, 0, 5, 1, 2, 3, 4, 5]),
        Inspect::Invalid("not_tls")
    );
    // A handshake that is not a ClientHello (a ServerHello, type 2).
    assert_eq!(
        client_hello_sni(&[0x16, 3, 1, 0, 4, 2, 0, 0, 0]),
        Inspect::Invalid("not_client_hello")
    );
    // Claims a 16 MiB hello.
    assert_eq!(
        client_hello_sni(&[0x16, 3, 1, 0, 4, 1, 0xff, 0xff, 0xff]),
        Inspect::Invalid("hello_too_large")
    );
    // A complete but corrupt hello.
    let mut bytes = hello(Some("x.example.com"));
    for b in bytes.iter_mut().skip(9).take(40) {
        *b = 0xff;
    }
    assert!(matches!(client_hello_sni(&bytes), Inspect::Invalid(_)));
}
