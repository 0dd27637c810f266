//! Frame layer of the LB⇄worker protocol: `rno` (u32 BE), `len` (u32 BE),
//! then exactly one CBOR item of `len` bytes (resumelb-protocol(7), "Frames").
//!
//! Pure: works on byte buffers, never on sockets. The decoder is incremental:
//! it is handed whatever has arrived so far and answers `Partial` until a
//! whole frame is there.

use std::fmt;

/// Bytes in a frame header: request number and payload length.
pub const HEADER_LEN: usize = 8;
/// Default limit on a frame's payload length (16 MiB).
pub const DEFAULT_MAX_FRAME: usize = 16 << 20;
/// Senders cut bodies into chunks of at most this many bytes.
pub const MAX_CHUNK: usize = 64 * 1024;

/// Request number: 0 for connection-level messages, ≥ 1 for a request.
pub type Rno = u32;

/// Outcome of an incremental decode step.
#[derive(Debug, PartialEq)]
pub enum Decoded<T> {
    /// A whole frame, and how many bytes of the buffer it used.
    Complete(T, usize),
    /// More bytes are needed.
    Partial,
}

/// A frame whose payload has not been interpreted yet.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub struct RawFrame<'a> {
    pub rno: Rno,
    pub payload: &'a [u8],
}

/// Why a peer's bytes are a protocol error. Each one closes the connection.
#[derive(Debug, Clone, PartialEq)]
pub enum ProtoError {
    /// The announced payload length is above the receiver's limit.
    TooLong { len: usize, limit: usize },
    /// The payload is empty or not one well-formed CBOR item.
    Malformed(String),
    /// The payload holds one CBOR item and then more bytes.
    TrailingBytes { extra: usize },
    /// Well-formed CBOR, but not a shape allowed for this direction and rno.
    Shape { rno: Rno, what: String },
    /// A frame we were asked to send is larger than the format allows.
    Unencodable(String),
    /// A well-formed frame that cannot come now: `what` for request `rno`
    /// (a second response head, a body before the head, a request number
    /// in use, a second challenge, an answer nobody asked for).
    Sequence { rno: Rno, what: &'static str },
}

impl fmt::Display for ProtoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtoError::TooLong { len, limit } => {
                write!(f, "frame of {len} bytes is over the limit of {limit}")
            }
            ProtoError::Malformed(why) => write!(f, "payload is not one CBOR item: {why}"),
            ProtoError::TrailingBytes { extra } => {
                write!(f, "{extra} bytes after the CBOR item in a frame")
            }
            ProtoError::Shape { rno, what } => write!(f, "unexpected {what} on rno {rno}"),
            ProtoError::Sequence { rno, what } => write!(f, "{what} (request {rno})"),
            ProtoError::Unencodable(why) => write!(f, "cannot encode frame: {why}"),
        }
    }
}

impl std::error::Error for ProtoError {}

/// Decode one frame header and payload from the front of `buf`.
pub fn decode_raw(buf: &[u8], limit: usize) -> Result<Decoded<RawFrame<'_>>, ProtoError> {
    if buf.len() < HEADER_LEN {
        return Ok(Decoded::Partial);
    }
    let rno = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let len = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]) as usize;
    if len > limit {
        return Err(ProtoError::TooLong { len, limit });
    }
    let end = HEADER_LEN + len;
    if buf.len() < end {
        return Ok(Decoded::Partial);
    }
    Ok(Decoded::Complete(
        RawFrame {
            rno,
            payload: &buf[HEADER_LEN..end],
        },
        end,
    ))
}

/// Append a frame to `out`: the header, then whatever `payload` writes.
/// On error `out` is left as it was.
pub fn encode_with<E>(
    out: &mut Vec<u8>,
    rno: Rno,
    payload: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
) -> Result<(), ProtoError>
where
    E: fmt::Display,
{
    let start = out.len();
    out.extend_from_slice(&rno.to_be_bytes());
    out.extend_from_slice(&[0; 4]);
    if let Err(e) = payload(out) {
        out.truncate(start);
        return Err(ProtoError::Unencodable(e.to_string()));
    }
    let len = out.len() - start - HEADER_LEN;
    let Ok(len32) = u32::try_from(len) else {
        out.truncate(start);
        return Err(ProtoError::Unencodable(format!("payload of {len} bytes")));
    };
    out[start + 4..start + HEADER_LEN].copy_from_slice(&len32.to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_needs_eight_bytes() {
        let buf = [0, 0, 0, 1, 0, 0, 0, 1, 0xf6];
        for cut in 0..buf.len() {
            assert_eq!(decode_raw(&buf[..cut], 100), Ok(Decoded::Partial));
        }
        assert_eq!(
            decode_raw(&buf, 100),
            Ok(Decoded::Complete(
                RawFrame {
                    rno: 1,
                    payload: &[0xf6]
                },
                9
            ))
        );
    }

    #[test]
    fn length_over_limit_is_an_error_before_the_payload_arrives() {
        let buf = [0, 0, 0, 1, 0, 0, 1, 0];
        assert_eq!(
            decode_raw(&buf, 255),
            Err(ProtoError::TooLong {
                len: 256,
                limit: 255
            })
        );
        assert_eq!(decode_raw(&buf, 256), Ok(Decoded::Partial));
    }

    #[test]
    fn failed_encode_leaves_buffer_alone() {
        let mut out = vec![1, 2, 3];
        let r = encode_with(&mut out, 5, |o| {
            o.push(9);
            Err("nope")
        });
        assert!(matches!(r, Err(ProtoError::Unencodable(_))));
        assert_eq!(out, vec![1, 2, 3]);
    }
}
