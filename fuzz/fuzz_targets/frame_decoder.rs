//! The frame decoder, both directions, on arbitrary bytes fed in arbitrary
//! pieces: never a panic, and a split never changes what is decoded.
#![no_main]

use libfuzzer_sys::fuzz_target;
use resumelb::proto::{Decoded, ToLb, ToWorker};

const LIMIT: usize = 1 << 16;

fn whole<T: PartialEq + std::fmt::Debug>(
    data: &[u8],
    decode: fn(&[u8], usize) -> Result<Decoded<T>, resumelb::proto::ProtoError>,
) -> Vec<Result<T, String>> {
    let mut out = Vec::new();
    let mut pos = 0;
    loop {
        match decode(&data[pos..], LIMIT) {
            Ok(Decoded::Complete(m, used)) => {
                assert!(used > 0 && pos + used <= data.len());
                pos += used;
                out.push(Ok(m));
            }
            Ok(Decoded::Partial) => return out,
            Err(e) => {
                out.push(Err(e.to_string()));
                return out;
            }
        }
    }
}

fn pieces<T: PartialEq + std::fmt::Debug>(
    data: &[u8],
    step: usize,
    decode: fn(&[u8], usize) -> Result<Decoded<T>, resumelb::proto::ProtoError>,
) -> Vec<Result<T, String>> {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    for piece in data.chunks(step) {
        buf.extend_from_slice(piece);
        loop {
            match decode(&buf, LIMIT) {
                Ok(Decoded::Complete(m, used)) => {
                    buf.drain(..used);
                    out.push(Ok(m));
                }
                Ok(Decoded::Partial) => break,
                Err(e) => {
                    out.push(Err(e.to_string()));
                    return out;
                }
            }
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&step, data)) = data.split_first() else {
        return;
    };
    let step = usize::from(step).max(1);
    assert_eq!(whole(data, ToLb::decode), pieces(data, step, ToLb::decode));
    assert_eq!(whole(data, ToWorker::decode), pieces(data, step, ToWorker::decode));
});
