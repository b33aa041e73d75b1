//! Tests of [`super`].

use super::*;

async fn roundtrip(msg: Control) {
    let bytes = msg.encode().unwrap();
    let mut r = &bytes[..];
    let back = Control::read_from(&mut r).await.unwrap().unwrap();
    assert_eq!(back, msg);
    assert!(Control::read_from(&mut r).await.unwrap().is_none());
}

#[tokio::test]
async fn every_control_message_roundtrips() {
    let roster = vec![RosterEntry {
        node_id: "cloud1".into(),
        sni: "cloud1.gw.example.com".into(),
        draining: false,
    }];
    for msg in [
        Control::Hello {
            proto: PROTO_VERSION,
            gateway_id: "onprem1".into(),
            boot_epoch: u64::MAX,
            slot: 3,
            want_node: Some("cloud2".into()),
            exports: vec![ExportState {
                service: "svc-a".into(),
                up: true,
            }],
            consumes: vec!["svc-b".into()],
            features: vec![FEATURE_ROSTER.into(), FEATURE_SERVICES.into()],
        },
        Control::HelloAck {
            node_id: "cloud1".into(),
            boot_epoch: 7,
            roster: roster.clone(),
            accepted: vec!["svc-a".into()],
            rejected: vec![Refused {
                service: "svc-x".into(),
                reason: "unauthorized".into(),
            }],
            ping_ms: 3000,
            dead_ms: 9000,
            features: vec![FEATURE_SERVICES.into()],
        },
        Control::Services {
            exports: vec![ExportState {
                service: "svc-a".into(),
                up: false,
            }],
            consumes: vec!["svc-b".into()],
        },
        Control::Accepted {
            accepted: vec!["svc-b".into()],
            rejected: vec![Refused {
                service: "svc-a".into(),
                reason: "unauthorized".into(),
            }],
        },
        Control::Reject {
            code: RejectCode::Draining,
            message: "draining".into(),
            retry_after_ms: 500,
            roster: roster.clone(),
        },
        Control::Roster { roster },
        Control::ServiceState {
            service: "svc-a".into(),
            up: false,
            reason: "connect refused".into(),
        },
        Control::Drain {
            deadline_ms: 30000,
            reason: "sigterm".into(),
        },
        Control::Ping { seq: 1 },
        Control::Pong { seq: 1 },
        Control::Error {
            code: "unsupported".into(),
            message: "x".into(),
        },
    ] {
        roundtrip(msg).await;
    }
}

#[test]
fn control_golden_bytes() {
    let bytes = Control::Ping { seq: 5 }.encode().unwrap();
    let json = br#"{"type":"PING","seq":5}"#;
    assert_eq!(&bytes[..4], &(json.len() as u32).to_be_bytes());
    assert_eq!(&bytes[4..], json);
    let ack = Control::decode(
        br#"{"type":"REJECT","code":"over_quota","message":"m","retry_after_ms":1,"future":1}"#,
    )
    .unwrap();
    assert!(matches!(
        ack,
        Control::Reject {
            code: RejectCode::OverQuota,
            ..
        }
    ));
}

#[tokio::test]
async fn control_rejects_garbage() {
    let mut huge = &((MAX_CONTROL_LEN + 1) as u32).to_be_bytes()[..];
    assert!(matches!(
        Control::read_from(&mut huge).await,
        Err(ProtoError::TooLong(_))
    ));
    let mut unknown = &b"\0\0\0\x10{\"type\":\"NOPE\"}\x20"[..];
    assert!(matches!(
        Control::read_from(&mut unknown).await,
        Err(ProtoError::Json(_))
    ));
    let mut truncated = &b"\0\0\0\x10{\"ty"[..];
    assert!(matches!(
        Control::read_from(&mut truncated).await,
        Err(ProtoError::Io(_))
    ));
}

#[tokio::test]
async fn preamble_golden_and_roundtrip() {
    let p = Preamble {
        kind: StreamKind::Reverse,
        service: "svc-a".into(),
        client: Some("192.0.2.7:4000".parse().unwrap()),
        trace_id: [0xab; 16],
    };
    let bytes = p.encode().unwrap();
    let mut golden = vec![1, 5];
    golden.extend_from_slice(b"svc-a");
    golden.extend_from_slice(&[4, 192, 0, 2, 7, 0x0f, 0xa0]);
    golden.extend_from_slice(&[0xab; 16]);
    assert_eq!(bytes, golden);
    assert_eq!(Preamble::read_from(&mut &bytes[..]).await.unwrap(), p);

    let p6 = Preamble {
        kind: StreamKind::Forward,
        service: "b".into(),
        client: Some("[2001:db8::1]:80".parse().unwrap()),
        trace_id: [1; 16],
    };
    let bytes = p6.encode().unwrap();
    assert_eq!(bytes.len(), 2 + 1 + 1 + 18 + 16);
    assert_eq!(Preamble::read_from(&mut &bytes[..]).await.unwrap(), p6);
    let none = Preamble {
        kind: StreamKind::Probe,
        client: None,
        ..p6
    };
    assert_eq!(
        Preamble::read_from(&mut &none.encode().unwrap()[..])
            .await
            .unwrap(),
        none
    );
}

#[tokio::test]
async fn preamble_rejects_garbage() {
    for bad in [
        &[9u8, 1, b'a'][..],
        &[1, 0][..],
        &[1, 1, 0xff, 0][..],
        &[1, 1, b'a', 5][..],
        &[1, 3, b'a'][..],
    ] {
        assert!(Preamble::read_from(&mut &bad[..]).await.is_err(), "{bad:?}");
    }
    let long = Preamble {
        kind: StreamKind::Probe,
        service: "x".repeat(256),
        client: None,
        trace_id: [0; 16],
    };
    assert!(long.encode().is_err());
}

#[test]
fn status_bytes() {
    for b in 0..=5u8 {
        assert_eq!(Status::from_u8(b).map(|s| s as u8), Some(b));
    }
    assert_eq!(Status::from_u8(6), None);
}
