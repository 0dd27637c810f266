//! Typed messages of the LB⇄worker protocol, one enum per direction, with
//! their encoders and the shape checks of resumelb-protocol(7).

use std::collections::BTreeMap;

use serde::ser::{SerializeMap, SerializeSeq, Serializer as _};
use serde::Serialize;
use serde_cbor::ser::Serializer;
use serde_cbor::Value;

use super::frame::{decode_raw, encode_with, Decoded, ProtoError, RawFrame, Rno, MAX_CHUNK};

/// A request's CGI/WSGI-style environment: name → value.
pub type Environ = BTreeMap<String, String>;

/// An environ as it came off the wire: its entries in order, repeated keys
/// kept (a CBOR map may repeat a key; the worker refuses such a request
/// rather than pick one of the values).
pub type EnvironPairs = Vec<(String, String)>;

/// A worker's résumé: request class → score (≥ 0).
pub type Resume = BTreeMap<String, f64>;

/// Protocol version spoken by this implementation.
pub const PROTOCOL_VERSION: u32 = 1;

/// A worker's introduction, sent after its first résumé.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Hello {
    pub protocol: u32,
    pub threads: Option<u32>,
    pub pid: Option<u32>,
    pub version: Option<String>,
    /// Requests that failed (5xx) since the worker started, by class: not
    /// in the résumé, counted here (key `failed`, sent when not empty).
    pub failed: BTreeMap<String, u64>,
}

/// The head of a response: status line text (`"200 OK"`) and headers.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ResponseHead {
    pub status: String,
    pub headers: Vec<(String, String)>,
}

impl ResponseHead {
    /// The status code, or 0 when the status does not start with three
    /// digits.
    pub fn code(&self) -> u16 {
        let s = self.status.trim_start();
        match s.get(..3) {
            Some(d) if d.bytes().all(|b| b.is_ascii_digit()) => d.parse().unwrap_or(0),
            _ => 0,
        }
    }
}

/// Messages the LB sends to a worker.
#[derive(Debug, Clone, PartialEq)]
pub enum ToWorker {
    KeepAlive,
    /// The answer to a worker's challenge: HMAC-SHA256 of its nonce.
    Auth(Vec<u8>),
    Environ(Rno, EnvironPairs),
    /// A non-empty piece of the request body.
    Body(Rno, Vec<u8>),
    EndOfBody(Rno),
    Cancel(Rno),
}

/// Messages a worker sends to the LB.
#[derive(Debug, Clone, PartialEq)]
pub enum ToLb {
    /// A worker with a shared secret: prove you have it (its first frame).
    Challenge(Vec<u8>),
    Resume(Resume),
    KeepAlive,
    Hello(Hello),
    Drain,
    /// The worker's application cannot serve now (its upstream is down):
    /// no new requests until `Available`.
    Unavailable,
    /// The application serves again.
    Available,
    Head(Rno, ResponseHead),
    /// A non-empty piece of the response body.
    Body(Rno, Vec<u8>),
    End(Rno),
    Abort(Rno),
    /// A connection-level word this version does not know (ignored, for
    /// forward compatibility).
    Unknown(String),
}

type CborResult = Result<(), serde_cbor::Error>;

fn cbor(out: &mut Vec<u8>) -> Serializer<&mut Vec<u8>> {
    Serializer::new(out)
}

/// Append a `null` frame: keep-alive on rno 0, cancel or abort otherwise.
pub fn encode_null(out: &mut Vec<u8>, rno: Rno) {
    out.extend_from_slice(&rno.to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 1, 0xf6]);
}

/// Append body chunks for `data`, cut at [`MAX_CHUNK`]; nothing for empty data.
pub fn encode_body(out: &mut Vec<u8>, rno: Rno, data: &[u8]) {
    for chunk in data.chunks(MAX_CHUNK) {
        // A byte string of at most 64 KiB always encodes.
        let _ = encode_with(out, rno, |o| cbor(o).serialize_bytes(chunk));
    }
}

/// Append the end-of-body marker (an empty byte string).
pub fn encode_end(out: &mut Vec<u8>, rno: Rno) {
    out.extend_from_slice(&rno.to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 1, 0x40]);
}

/// Append an environ frame.
pub fn encode_environ<'a, I>(out: &mut Vec<u8>, rno: Rno, environ: I) -> Result<(), ProtoError>
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
    I::IntoIter: ExactSizeIterator,
{
    encode_with(out, rno, |o| -> CborResult {
        let items = environ.into_iter();
        let mut ser = cbor(o);
        let mut map = ser.serialize_map(Some(items.len()))?;
        for (k, v) in items {
            map.serialize_entry(k, v)?;
        }
        SerializeMap::end(map)
    })
}

/// Append a résumé frame (rno 0).
pub fn encode_resume(out: &mut Vec<u8>, resume: &Resume) -> Result<(), ProtoError> {
    encode_with(out, 0, |o| resume.serialize(&mut cbor(o)))
}

/// Append a response head frame.
pub fn encode_head(out: &mut Vec<u8>, rno: Rno, head: &ResponseHead) -> Result<(), ProtoError> {
    encode_with(out, rno, |o| -> CborResult {
        let mut ser = cbor(o);
        let mut seq = ser.serialize_seq(Some(2))?;
        seq.serialize_element(&head.status)?;
        seq.serialize_element(&head.headers)?;
        SerializeSeq::end(seq)
    })
}

/// Append a hello frame (rno 0).
pub fn encode_hello(out: &mut Vec<u8>, hello: &Hello) -> Result<(), ProtoError> {
    encode_with(out, 0, |o| -> CborResult {
        let mut ser = cbor(o);
        let mut seq = ser.serialize_seq(Some(2))?;
        seq.serialize_element("hello")?;
        let mut fields: BTreeMap<&str, Value> = BTreeMap::new();
        fields.insert("protocol", Value::Integer(hello.protocol.into()));
        if let Some(t) = hello.threads {
            fields.insert("threads", Value::Integer(t.into()));
        }
        if let Some(p) = hello.pid {
            fields.insert("pid", Value::Integer(p.into()));
        }
        if let Some(v) = &hello.version {
            fields.insert("version", Value::Text(v.clone()));
        }
        if !hello.failed.is_empty() {
            let failed = hello
                .failed
                .iter()
                .map(|(class, n)| (Value::Text(class.clone()), Value::Integer((*n).into())))
                .collect();
            fields.insert("failed", Value::Map(failed));
        }
        seq.serialize_element(&fields)?;
        SerializeSeq::end(seq)
    })
}

/// Append `[word, {field: bytes}]` on rno 0 (challenge and auth).
fn encode_word_bytes(out: &mut Vec<u8>, word: &str, field: &str, bytes: &[u8]) {
    // Text and a short byte string always encode.
    let _ = encode_with(out, 0, |o| -> CborResult {
        let mut ser = cbor(o);
        let mut seq = ser.serialize_seq(Some(2))?;
        seq.serialize_element(word)?;
        let mut fields = BTreeMap::new();
        fields.insert(field, Value::Bytes(bytes.to_vec()));
        seq.serialize_element(&fields)?;
        SerializeSeq::end(seq)
    });
}

/// Append a challenge (rno 0): `["challenge", {"nonce": BYTES}]`.
pub fn encode_challenge(out: &mut Vec<u8>, nonce: &[u8]) {
    encode_word_bytes(out, "challenge", "nonce", nonce);
}

/// Append the answer to a challenge (rno 0): `["auth", {"mac": BYTES}]`.
pub fn encode_auth(out: &mut Vec<u8>, mac: &[u8]) {
    encode_word_bytes(out, "auth", "mac", mac);
}

/// Append the `"drain"` word (rno 0).
pub fn encode_drain(out: &mut Vec<u8>) {
    encode_word(out, "drain");
}

/// Append the `"unavailable"` or `"available"` word (rno 0).
pub fn encode_available(out: &mut Vec<u8>, available: bool) {
    encode_word(
        out,
        if available {
            "available"
        } else {
            "unavailable"
        },
    );
}

fn encode_word(out: &mut Vec<u8>, word: &str) {
    let _ = encode_with(out, 0, |o| cbor(o).serialize_str(word));
}

impl ToWorker {
    /// Append this message as one frame.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), ProtoError> {
        match self {
            ToWorker::KeepAlive => encode_null(out, 0),
            ToWorker::Auth(mac) => encode_auth(out, mac),
            ToWorker::Environ(rno, env) => {
                encode_environ(out, *rno, env.iter().map(|(k, v)| (k.as_str(), v.as_str())))?
            }
            ToWorker::Body(rno, data) => encode_body(out, *rno, data),
            ToWorker::EndOfBody(rno) => encode_end(out, *rno),
            ToWorker::Cancel(rno) => encode_null(out, *rno),
        }
        Ok(())
    }

    /// Interpret a raw frame sent by an LB.
    pub fn from_frame(frame: RawFrame<'_>) -> Result<ToWorker, ProtoError> {
        let rno = frame.rno;
        if rno != 0 && is_map(frame.payload) {
            return parse_environ(rno, frame.payload).map(|env| ToWorker::Environ(rno, env));
        }
        let value = parse_item(frame.payload)?;
        match (rno, value) {
            (0, Value::Null) => Ok(ToWorker::KeepAlive),
            (0, Value::Array(items)) => match word_bytes(items, "mac")? {
                (word, Some(mac)) if word == "auth" => Ok(ToWorker::Auth(mac)),
                (word, _) => Err(ProtoError::Shape {
                    rno: 0,
                    what: format!("array with the word {word:?}"),
                }),
            },
            (0, other) => Err(shape(0, &other)),
            (rno, Value::Null) => Ok(ToWorker::Cancel(rno)),
            (rno, Value::Bytes(b)) if b.is_empty() => Ok(ToWorker::EndOfBody(rno)),
            (rno, Value::Bytes(b)) => Ok(ToWorker::Body(rno, b)),
            (rno, other) => Err(shape(rno, &other)),
        }
    }

    /// Decode one message from the front of `buf` (see [`decode_raw`]).
    pub fn decode(buf: &[u8], limit: usize) -> Result<Decoded<ToWorker>, ProtoError> {
        decode_typed(buf, limit, ToWorker::from_frame)
    }
}

impl ToLb {
    /// Append this message as one frame (bodies as several, cut at 64 KiB).
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), ProtoError> {
        match self {
            ToLb::Challenge(nonce) => encode_challenge(out, nonce),
            ToLb::Resume(r) => encode_resume(out, r)?,
            ToLb::KeepAlive => encode_null(out, 0),
            ToLb::Hello(h) => encode_hello(out, h)?,
            ToLb::Drain => encode_drain(out),
            ToLb::Unavailable => encode_available(out, false),
            ToLb::Available => encode_available(out, true),
            ToLb::Head(rno, head) => encode_head(out, *rno, head)?,
            ToLb::Body(rno, data) => encode_body(out, *rno, data),
            ToLb::End(rno) => encode_end(out, *rno),
            ToLb::Abort(rno) => encode_null(out, *rno),
            ToLb::Unknown(word) => {
                encode_with(out, 0, |o| cbor(o).serialize_str(word))?;
            }
        }
        Ok(())
    }

    /// Interpret a raw frame sent by a worker.
    pub fn from_frame(frame: RawFrame<'_>) -> Result<ToLb, ProtoError> {
        let rno = frame.rno;
        // A response head, decoded straight into its strings; anything
        // that does not decode so takes the general path, for its error.
        if rno != 0 && frame.payload.first().is_some_and(|b| b >> 5 == 4) {
            if let Some((status, headers)) = parse_exact(frame.payload) {
                return Ok(ToLb::Head(rno, ResponseHead { status, headers }));
            }
        }
        let value = parse_item(frame.payload)?;
        if rno == 0 {
            return match value {
                Value::Null => Ok(ToLb::KeepAlive),
                Value::Map(m) => parse_resume(m).map(ToLb::Resume),
                Value::Text(w) if w == "drain" => Ok(ToLb::Drain),
                Value::Text(w) if w == "unavailable" => Ok(ToLb::Unavailable),
                Value::Text(w) if w == "available" => Ok(ToLb::Available),
                Value::Text(w) => Ok(ToLb::Unknown(w)),
                Value::Array(items) => parse_word_array(items),
                other => Err(shape(0, &other)),
            };
        }
        match value {
            Value::Null => Ok(ToLb::Abort(rno)),
            Value::Bytes(b) if b.is_empty() => Ok(ToLb::End(rno)),
            Value::Bytes(b) => Ok(ToLb::Body(rno, b)),
            Value::Array(items) => parse_head(rno, items).map(|h| ToLb::Head(rno, h)),
            other => Err(shape(rno, &other)),
        }
    }

    /// Decode one message from the front of `buf` (see [`decode_raw`]).
    pub fn decode(buf: &[u8], limit: usize) -> Result<Decoded<ToLb>, ProtoError> {
        decode_typed(buf, limit, ToLb::from_frame)
    }
}

fn decode_typed<T>(
    buf: &[u8],
    limit: usize,
    interpret: impl FnOnce(RawFrame<'_>) -> Result<T, ProtoError>,
) -> Result<Decoded<T>, ProtoError> {
    match decode_raw(buf, limit)? {
        Decoded::Partial => Ok(Decoded::Partial),
        Decoded::Complete(frame, used) => Ok(Decoded::Complete(interpret(frame)?, used)),
    }
}

/// Parse exactly one CBOR item; anything after it is an error.
fn parse_item(payload: &[u8]) -> Result<Value, ProtoError> {
    use serde::Deserialize;
    let mut de = serde_cbor::Deserializer::from_slice(payload);
    let value = Value::deserialize(&mut de).map_err(|e| ProtoError::Malformed(e.to_string()))?;
    if de.end().is_err() {
        // end() fails only when bytes are left after the item.
        let used = cbor_len(&value, payload);
        return Err(ProtoError::TrailingBytes {
            extra: payload.len().saturating_sub(used),
        });
    }
    Ok(value)
}

/// Exactly one CBOR item of type `T`, or `None`.
fn parse_exact<'de, T: serde::Deserialize<'de>>(payload: &'de [u8]) -> Option<T> {
    let mut de = serde_cbor::Deserializer::from_slice(payload);
    let value = T::deserialize(&mut de).ok()?;
    de.end().ok()?;
    Some(value)
}

/// Whether the item in `payload` is a CBOR map (major type 5).
fn is_map(payload: &[u8]) -> bool {
    payload.first().is_some_and(|b| b >> 5 == 5)
}

/// One key or value of an environ: text is taken as it is decoded (no
/// intermediate CBOR value); anything else is named, for the error.
enum Field {
    Text(String),
    Other(&'static str),
}

impl<'de> serde::Deserialize<'de> for Field {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Field, D::Error> {
        use serde::de::{IgnoredAny, MapAccess, SeqAccess};
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Field;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("text")
            }
            fn visit_str<E>(self, v: &str) -> Result<Field, E> {
                Ok(Field::Text(v.to_string()))
            }
            fn visit_string<E>(self, v: String) -> Result<Field, E> {
                Ok(Field::Text(v))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Field, E> {
                Ok(Field::Other("boolean"))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Field, E> {
                Ok(Field::Other("integer"))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Field, E> {
                Ok(Field::Other("integer"))
            }
            fn visit_i128<E>(self, _: i128) -> Result<Field, E> {
                Ok(Field::Other("integer"))
            }
            fn visit_u128<E>(self, _: u128) -> Result<Field, E> {
                Ok(Field::Other("integer"))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Field, E> {
                Ok(Field::Other("float"))
            }
            fn visit_bytes<E>(self, _: &[u8]) -> Result<Field, E> {
                Ok(Field::Other("byte string"))
            }
            fn visit_unit<E>(self) -> Result<Field, E> {
                Ok(Field::Other("null"))
            }
            fn visit_none<E>(self) -> Result<Field, E> {
                Ok(Field::Other("null"))
            }
            fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Field, D::Error> {
                <Field as serde::Deserialize>::deserialize(d)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Field, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Field::Other("array"))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Field, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Field::Other("map"))
            }
        }
        d.deserialize_any(V)
    }
}

/// An environ's entries as decoded, in wire order, repeated keys included
/// (decoding into a map would keep only the last of them).
struct EnvironEntries(Vec<(Field, Field)>);

impl<'de> serde::Deserialize<'de> for EnvironEntries {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<EnvironEntries, D::Error> {
        struct Entries;
        impl<'de> serde::de::Visitor<'de> for Entries {
            type Value = EnvironEntries;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<EnvironEntries, A::Error> {
                // The size hint comes from the peer: cap what it reserves.
                let mut out = Vec::with_capacity(map.size_hint().unwrap_or(0).min(256));
                while let Some(entry) = map.next_entry::<Field, Field>()? {
                    out.push(entry);
                }
                Ok(EnvironEntries(out))
            }
        }
        d.deserialize_map(Entries)
    }
}

/// An environ frame's payload: a map of text to text, in wire order.
fn parse_environ(rno: Rno, payload: &[u8]) -> Result<EnvironPairs, ProtoError> {
    use serde::Deserialize;
    let mut de = serde_cbor::Deserializer::from_slice(payload);
    let entries =
        EnvironEntries::deserialize(&mut de).map_err(|e| ProtoError::Malformed(e.to_string()))?;
    let used = de.byte_offset();
    if de.end().is_err() {
        return Err(ProtoError::TrailingBytes {
            extra: payload.len().saturating_sub(used),
        });
    }
    let mut env = Vec::with_capacity(entries.0.len());
    for (k, v) in entries.0 {
        match (k, v) {
            (Field::Text(k), Field::Text(v)) => env.push((k, v)),
            (k, v) => {
                let kind = |f: &Field| match f {
                    Field::Text(_) => "text",
                    Field::Other(k) => k,
                };
                return Err(ProtoError::Shape {
                    rno,
                    what: format!("environ entry {} → {}", kind(&k), kind(&v)),
                });
            }
        }
    }
    Ok(env)
}

/// Length of the item at the front of `payload` (for error messages only).
fn cbor_len(value: &Value, payload: &[u8]) -> usize {
    serde_cbor::to_vec(value)
        .map(|v| v.len())
        .unwrap_or(payload.len())
        .min(payload.len())
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Integer(_) => "integer",
        Value::Float(_) => "float",
        Value::Bytes(_) => "byte string",
        Value::Text(_) => "text",
        Value::Array(_) => "array",
        Value::Map(_) => "map",
        _ => "tagged item",
    }
}

fn shape(rno: Rno, v: &Value) -> ProtoError {
    ProtoError::Shape {
        rno,
        what: kind(v).to_string(),
    }
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Integer(i) => Some(*i as f64),
        Value::Float(f) => Some(*f),
        _ => None,
    }
}

fn parse_resume(m: BTreeMap<Value, Value>) -> Result<Resume, ProtoError> {
    let mut resume = Resume::new();
    for (k, v) in m {
        match (k, number(&v)) {
            (Value::Text(class), Some(score)) if score >= 0.0 && score.is_finite() => {
                resume.insert(class, score);
            }
            (k, _) => {
                return Err(ProtoError::Shape {
                    rno: 0,
                    what: format!("résumé entry {} → {}", kind(&k), kind(&v)),
                })
            }
        }
    }
    Ok(resume)
}

/// `[word, {field: bytes}]`: the word, and the field's bytes when the
/// array has that shape (`None` when it has another).
fn word_bytes(items: Vec<Value>, field: &str) -> Result<(String, Option<Vec<u8>>), ProtoError> {
    let mut items = items.into_iter();
    let Some(Value::Text(word)) = items.next() else {
        return Err(ProtoError::Shape {
            rno: 0,
            what: "array without a leading word".into(),
        });
    };
    let bytes = match (items.next(), items.next()) {
        (Some(Value::Map(m)), None) => m.into_iter().find_map(|(k, v)| match (k, v) {
            (Value::Text(k), Value::Bytes(b)) if k == field => Some(b),
            _ => None,
        }),
        _ => None,
    };
    Ok((word, bytes))
}

fn parse_word_array(items: Vec<Value>) -> Result<ToLb, ProtoError> {
    if matches!(items.first(), Some(Value::Text(w)) if w == "challenge") {
        return match word_bytes(items, "nonce")? {
            (_, Some(nonce)) if !nonce.is_empty() => Ok(ToLb::Challenge(nonce)),
            _ => Err(ProtoError::Shape {
                rno: 0,
                what: "challenge without a nonce".into(),
            }),
        };
    }
    let mut items = items.into_iter();
    let word = match items.next() {
        Some(Value::Text(w)) => w,
        _ => {
            return Err(ProtoError::Shape {
                rno: 0,
                what: "array without a leading word".into(),
            })
        }
    };
    if word != "hello" {
        return Ok(ToLb::Unknown(word));
    }
    let Some(Value::Map(fields)) = items.next() else {
        return Err(ProtoError::Shape {
            rno: 0,
            what: "hello without a map".into(),
        });
    };
    let mut hello = Hello::default();
    for (k, v) in fields {
        let Value::Text(k) = k else { continue };
        let int = || match &v {
            Value::Integer(i) => u32::try_from(*i).ok(),
            _ => None,
        };
        match k.as_str() {
            "protocol" => hello.protocol = int().unwrap_or(0),
            "threads" => hello.threads = int(),
            "pid" => hello.pid = int(),
            "version" => {
                hello.version = match &v {
                    Value::Text(t) => Some(t.clone()),
                    Value::Integer(i) => Some(i.to_string()),
                    Value::Float(f) => Some(f.to_string()),
                    _ => None,
                }
            }
            "failed" => {
                let Value::Map(m) = v else { continue };
                for (class, n) in m {
                    if let (Value::Text(class), Value::Integer(n)) = (class, n) {
                        if let Ok(n) = u64::try_from(n) {
                            hello.failed.insert(class, n);
                        }
                    }
                }
            }
            _ => {}
        }
    }
    Ok(ToLb::Hello(hello))
}

fn parse_head(rno: Rno, items: Vec<Value>) -> Result<ResponseHead, ProtoError> {
    let bad = |what: &str| ProtoError::Shape {
        rno,
        what: format!("response head: {what}"),
    };
    let mut items = items.into_iter();
    let (Some(Value::Text(status)), Some(Value::Array(hs)), None) =
        (items.next(), items.next(), items.next())
    else {
        return Err(bad("not [status, headers]"));
    };
    let mut headers = Vec::with_capacity(hs.len());
    for h in hs {
        let Value::Array(pair) = h else {
            return Err(bad("header is not a pair"));
        };
        let mut pair = pair.into_iter();
        match (pair.next(), pair.next(), pair.next()) {
            (Some(Value::Text(n)), Some(Value::Text(v)), None) => headers.push((n, v)),
            _ => return Err(bad("header is not a [name, value] text pair")),
        }
    }
    Ok(ResponseHead { status, headers })
}
