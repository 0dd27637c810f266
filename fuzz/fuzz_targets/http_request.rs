//! The LB's request-head parser and chunked-body decoder on arbitrary
//! bytes: never a panic; the decoder's output does not depend on how the
//! input is split.
#![no_main]

use libfuzzer_sys::fuzz_target;
use resumelb::http::chunked::ChunkedDecoder;
use resumelb::http::request::{parse_head, Limits};

fn decode(data: &[u8], step: usize) -> (Vec<u8>, Option<u16>, bool) {
    let mut d = ChunkedDecoder::new();
    let mut body = Vec::new();
    for piece in data.chunks(step) {
        match d.feed(piece, &mut |b| body.extend_from_slice(b)) {
            Ok(used) => {
                assert!(used <= piece.len());
                if d.is_done() {
                    return (body, None, true);
                }
            }
            Err(e) => return (body, Some(e.status), false),
        }
    }
    (body, None, d.is_done())
}

fuzz_target!(|data: &[u8]| {
    let Some((&step, data)) = data.split_first() else {
        return;
    };
    if let Ok(Some((head, used))) = parse_head(data, &Limits::default()) {
        assert!(used <= data.len());
        assert!(!head.method.is_empty());
    }
    let a = decode(data, data.len().max(1));
    let b = decode(data, usize::from(step).max(1));
    assert_eq!(a.1, b.1);
    assert_eq!(a.2, b.2);
    if a.1.is_none() {
        assert_eq!(a.0, b.0);
    }
});
