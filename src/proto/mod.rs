//! The LB⇄worker wire protocol (man/resumelb-protocol.7): frames, typed messages for
//! each direction, encoders and an incremental decoder. Pure: no sockets.

pub mod auth;
mod frame;
mod message;
#[cfg(test)]
mod tests;

pub use frame::{
    decode_raw, encode_with, Decoded, ProtoError, RawFrame, Rno, DEFAULT_MAX_FRAME, HEADER_LEN,
    MAX_CHUNK,
};
pub use message::{
    encode_auth, encode_available, encode_body, encode_challenge, encode_drain, encode_end,
    encode_environ, encode_head, encode_hello, encode_null, encode_resume, Environ, EnvironPairs,
    Hello, ResponseHead, Resume, ToLb, ToWorker, PROTOCOL_VERSION,
};
