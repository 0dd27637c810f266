//! Codec tests: byte-exact vectors, round trips, split input, bad input.

use super::*;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn enc_w(m: &ToWorker) -> Vec<u8> {
    let mut out = Vec::new();
    m.encode(&mut out).unwrap();
    out
}

fn enc_l(m: &ToLb) -> Vec<u8> {
    let mut out = Vec::new();
    m.encode(&mut out).unwrap();
    out
}

#[test]
fn vector_lb_keepalive() {
    assert_eq!(enc_w(&ToWorker::KeepAlive), hex("00000000 00000001 f6"));
}

#[test]
fn vector_end_of_body_rno_7() {
    assert_eq!(enc_w(&ToWorker::EndOfBody(7)), hex("00000007 00000001 40"));
}

#[test]
fn vector_body_chunk_hi() {
    assert_eq!(
        enc_w(&ToWorker::Body(1, b"hi".to_vec())),
        hex("00000001 00000003 42 68 69")
    );
}

#[test]
fn vector_resume_a_1_5() {
    // RFC 8949: a1 = map of 1 pair; 61 61 = text(1) "a"; f9 3e00 = half
    // float 0 01111 1000000000 = +1.1b × 2^0 = 1.5 (preferred serialization,
    // §4.2.2: the shortest float that keeps the value).
    let r: Resume = [("a".to_string(), 1.5)].into_iter().collect();
    assert_eq!(
        enc_l(&ToLb::Resume(r)),
        hex("00000000 00000006 a1 61 61 f9 3e 00")
    );
}

#[test]
fn vector_drain_and_abort() {
    // 65 = text(5), then "drain".
    assert_eq!(enc_l(&ToLb::Drain), hex("00000000 00000006 65 647261696e"));
    assert_eq!(enc_l(&ToLb::Abort(3)), hex("00000003 00000001 f6"));
    // 6b = text(11), 69 = text(9).
    assert_eq!(
        enc_l(&ToLb::Unavailable),
        hex("00000000 0000000c 6b 756e617661696c61626c65")
    );
    assert_eq!(
        enc_l(&ToLb::Available),
        hex("00000000 0000000a 69 617661696c61626c65")
    );
}

fn sample_to_worker() -> Vec<ToWorker> {
    let env = vec![
        ("REQUEST_METHOD".into(), "GET".into()),
        ("PATH_INFO".into(), "/caf\u{e9}".into()),
        ("resumelb.request_class".into(), "example.com".into()),
    ];
    vec![
        ToWorker::KeepAlive,
        ToWorker::Environ(1, env),
        ToWorker::Environ(2, Vec::new()),
        ToWorker::Body(1, vec![0, 1, 2, 255]),
        ToWorker::EndOfBody(1),
        ToWorker::Cancel(u32::MAX),
        ToWorker::Auth(vec![7; 32]),
    ]
}

fn sample_to_lb() -> Vec<ToLb> {
    let r: Resume = [("a".to_string(), 1.5), ("b".to_string(), 0.1)]
        .into_iter()
        .collect();
    vec![
        ToLb::Challenge(vec![1, 2, 3]),
        ToLb::Resume(r),
        ToLb::Resume(Resume::new()),
        ToLb::KeepAlive,
        ToLb::Hello(Hello {
            protocol: 1,
            threads: Some(4),
            pid: Some(1234),
            version: Some("2.1".into()),
            failed: [("a.com".to_string(), 3)].into_iter().collect(),
        }),
        ToLb::Hello(Hello {
            protocol: 1,
            threads: Some(1),
            pid: Some(9),
            version: None,
            failed: Default::default(),
        }),
        ToLb::Drain,
        ToLb::Unavailable,
        ToLb::Available,
        ToLb::Head(
            5,
            ResponseHead {
                status: "200 OK".into(),
                headers: vec![
                    ("Content-Type".into(), "text/plain".into()),
                    ("Set-Cookie".into(), "a=1".into()),
                    ("Set-Cookie".into(), "b=2".into()),
                ],
            },
        ),
        ToLb::Body(5, b"hello".to_vec()),
        ToLb::End(5),
        ToLb::Abort(6),
    ]
}

#[test]
fn round_trip_every_message() {
    for m in sample_to_worker() {
        let bytes = enc_w(&m);
        assert_eq!(
            ToWorker::decode(&bytes, DEFAULT_MAX_FRAME).unwrap(),
            Decoded::Complete(m, bytes.len())
        );
    }
    for m in sample_to_lb() {
        let bytes = enc_l(&m);
        assert_eq!(
            ToLb::decode(&bytes, DEFAULT_MAX_FRAME).unwrap(),
            Decoded::Complete(m, bytes.len())
        );
    }
}

#[test]
fn integer_scores_are_accepted() {
    // {"x": 2} with an integer score.
    let bytes = hex("00000000 00000004 a1 61 78 02");
    let Decoded::Complete(ToLb::Resume(r), 12) = ToLb::decode(&bytes, 100).unwrap() else {
        panic!("not a résumé");
    };
    assert_eq!(r.get("x"), Some(&2.0));
}

#[test]
fn bodies_are_cut_at_64k() {
    let data: Vec<u8> = (0..(MAX_CHUNK * 2 + 10)).map(|i| i as u8).collect();
    let mut out = Vec::new();
    encode_body(&mut out, 9, &data);
    let mut got = Vec::new();
    let mut pos = 0;
    let mut frames = 0;
    while pos < out.len() {
        match ToLb::decode(&out[pos..], DEFAULT_MAX_FRAME).unwrap() {
            Decoded::Complete(ToLb::Body(9, b), used) => {
                assert!(b.len() <= MAX_CHUNK);
                got.extend(b);
                pos += used;
                frames += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(frames, 3);
    assert_eq!(got, data);
}

/// Decode a whole stream of frames, fed `step` bytes at a time.
fn decode_stream(stream: &[u8], step: usize) -> Vec<ToLb> {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    for piece in stream.chunks(step) {
        buf.extend_from_slice(piece);
        while let Decoded::Complete(m, used) = ToLb::decode(&buf, DEFAULT_MAX_FRAME).unwrap() {
            out.push(m);
            buf.drain(..used);
        }
    }
    assert!(buf.is_empty());
    out
}

#[test]
fn decoder_fed_one_byte_at_a_time() {
    let msgs = sample_to_lb();
    let stream: Vec<u8> = msgs.iter().flat_map(enc_l).collect();
    assert_eq!(decode_stream(&stream, 1), msgs);
    assert_eq!(decode_stream(&stream, 7), msgs);
}

#[test]
fn decoder_split_at_every_position() {
    let msgs = sample_to_lb();
    let stream: Vec<u8> = msgs.iter().flat_map(enc_l).collect();
    for cut in 0..=stream.len() {
        let mut buf = stream[..cut].to_vec();
        let mut got = Vec::new();
        while let Decoded::Complete(m, used) = ToLb::decode(&buf, DEFAULT_MAX_FRAME).unwrap() {
            got.push(m);
            buf.drain(..used);
        }
        buf.extend_from_slice(&stream[cut..]);
        while let Decoded::Complete(m, used) = ToLb::decode(&buf, DEFAULT_MAX_FRAME).unwrap() {
            got.push(m);
            buf.drain(..used);
        }
        assert_eq!(got, msgs, "split at {cut}");
    }
}

#[test]
fn over_long_length_is_an_error() {
    let bytes = hex("00000001 01000001");
    assert_eq!(
        ToWorker::decode(&bytes, DEFAULT_MAX_FRAME),
        Err(ProtoError::TooLong {
            len: 0x0100_0001,
            limit: DEFAULT_MAX_FRAME
        })
    );
}

#[test]
fn trailing_bytes_after_the_item() {
    // null, then a stray 0x00.
    let bytes = hex("00000000 00000002 f6 00");
    assert_eq!(
        ToWorker::decode(&bytes, 100),
        Err(ProtoError::TrailingBytes { extra: 1 })
    );
}

#[test]
fn truncated_or_empty_item_is_malformed() {
    // Byte string announcing 3 bytes with only 2 in the frame.
    let bytes = hex("00000001 00000003 43 68 69");
    assert!(matches!(
        ToWorker::decode(&bytes, 100),
        Err(ProtoError::Malformed(_))
    ));
    let empty = hex("00000001 00000000");
    assert!(matches!(
        ToWorker::decode(&empty, 100),
        Err(ProtoError::Malformed(_))
    ));
    // 0xff alone ("break" outside an indefinite item).
    let brk = hex("00000001 00000001 ff");
    assert!(matches!(
        ToLb::decode(&brk, 100),
        Err(ProtoError::Malformed(_))
    ));
}

#[test]
fn wrong_shapes_are_typed_errors() {
    let cases: Vec<(Vec<u8>, bool)> = vec![
        // a map where a byte string or environ must be: map text → integer
        (hex("00000001 00000004 a1 61 61 01"), true),
        // an integer on a request
        (hex("00000001 00000001 01"), true),
        // a byte string on rno 0 (LB → worker)
        (hex("00000000 00000001 40"), true),
        // text on a request
        (hex("00000002 00000002 61 61"), true),
    ];
    for (bytes, _) in &cases {
        assert!(
            matches!(ToWorker::decode(bytes, 100), Err(ProtoError::Shape { .. })),
            "{bytes:02x?}"
        );
    }
    // Worker → LB: a map on a request, a négative score, a bad head.
    for bytes in [
        hex("00000001 00000004 a1 61 61 01"),
        hex("00000000 00000004 a1 61 61 20"),
        hex("00000001 00000003 81 61 61"),
        hex("00000001 00000005 82 01 80 80 80"),
        hex("00000000 00000001 01"),
    ] {
        let r = ToLb::decode(&bytes, 100);
        assert!(
            matches!(
                r,
                Err(ProtoError::Shape { .. }) | Err(ProtoError::TrailingBytes { .. })
            ),
            "{bytes:02x?} gave {r:?}"
        );
    }
}

#[test]
fn unknown_words_are_ignored_not_errors() {
    // ["later", {}]
    let bytes = hex("00000000 00000008 82 65 6c61746572 a0");
    assert_eq!(
        ToLb::decode(&bytes, 100),
        Ok(Decoded::Complete(ToLb::Unknown("later".into()), 16))
    );
}

#[test]
fn garbage_never_panics() {
    // A cheap deterministic sweep; the fuzz targets go further.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..20_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let len = (x % 24) as usize;
        let mut bytes = vec![0, 0, 0, (x >> 8) as u8 & 1, 0, 0, 0, len as u8];
        let mut y = x;
        for _ in 0..len {
            y = y.wrapping_mul(6364136223846793005).wrapping_add(1);
            bytes.push((y >> 33) as u8);
        }
        let _ = ToLb::decode(&bytes, 100);
        let _ = ToWorker::decode(&bytes, 100);
    }
}

#[test]
fn environ_keeps_repeated_keys_in_wire_order() {
    // a2 {"a": "1", "a": "2"}: a map may repeat a key; both reach the worker.
    let bytes = hex("00000001 00000009 a2 6161 6131 6161 6132");
    let Decoded::Complete(ToWorker::Environ(1, env), _) = ToWorker::decode(&bytes, 100).unwrap()
    else {
        panic!("not an environ")
    };
    assert_eq!(
        env,
        vec![("a".into(), "1".into()), ("a".into(), "2".into())]
    );
    // An indefinite-length map (bf … ff) decodes the same way.
    let bytes = hex("00000002 00000006 bf 6161 6131 ff");
    let Decoded::Complete(ToWorker::Environ(2, env), _) = ToWorker::decode(&bytes, 100).unwrap()
    else {
        panic!("not an environ")
    };
    assert_eq!(env, vec![("a".into(), "1".into())]);
    // Bytes after the map are still an error.
    let bytes = hex("00000001 00000002 a0 f6");
    assert_eq!(
        ToWorker::decode(&bytes, 100),
        Err(ProtoError::TrailingBytes { extra: 1 })
    );
}

#[test]
fn vector_challenge_and_auth() {
    // 82 array(2), 69 "challenge", a1 map(1), 65 "nonce", 43 bytes(3).
    assert_eq!(
        enc_l(&ToLb::Challenge(vec![1, 2, 3])),
        hex("00000000 00000016 82 696368616c6c656e6765 a1 656e6f6e6365 43 010203")
    );
    // 82, 64 "auth", a1, 63 "mac", 42 bytes(2).
    assert_eq!(
        enc_w(&ToWorker::Auth(vec![0xab, 0xcd])),
        hex("00000000 0000000e 82 6461757468 a1 636d6163 42 abcd")
    );
    // A challenge without a nonce, an auth without a mac, another word
    // from an LB: shape errors.
    let bytes = hex("00000000 0000000c 82 696368616c6c656e6765 a0");
    assert!(matches!(
        ToLb::decode(&bytes, 100),
        Err(ProtoError::Shape { .. })
    ));
    for bytes in [
        hex("00000000 00000007 82 6461757468 a0"),
        hex("00000000 0000000a 82 6464726f70 a1 6161 40"),
    ] {
        assert!(
            matches!(ToWorker::decode(&bytes, 100), Err(ProtoError::Shape { .. })),
            "{bytes:02x?}"
        );
    }
}

/// Response heads that are not exactly [status, [[name, value], …]] are
/// shape errors, whichever decoding path sees them.
#[test]
fn malformed_response_heads() {
    let frame = |payload: &str| {
        let p = hex(payload);
        let mut out = 7u32.to_be_bytes().to_vec();
        out.extend_from_slice(&(p.len() as u32).to_be_bytes());
        out.extend_from_slice(&p);
        out
    };
    // 82 [ 62 "ok", 80 [] ]: a head with no headers.
    assert_eq!(
        ToLb::decode(&frame("82 626f6b 80"), 100).unwrap(),
        Decoded::Complete(
            ToLb::Head(
                7,
                ResponseHead {
                    status: "ok".into(),
                    headers: vec![]
                }
            ),
            13
        )
    );
    for bad in [
        "83 626f6b 80 00",                // a third element
        "81 626f6b",                      // no headers
        "82 00 80",                       // status not text
        "82 626f6b 81 81 6161",           // a header of one element
        "82 626f6b 81 83 6161 6162 6163", // a header of three
        "82 626f6b 81 82 6161 01",        // a value not text
        "82 626f6b a0",                   // headers as a map
    ] {
        assert!(
            matches!(
                ToLb::decode(&frame(bad), 100),
                Err(ProtoError::Shape { rno: 7, .. })
            ),
            "{bad}: {:?}",
            ToLb::decode(&frame(bad), 100)
        );
    }
}
