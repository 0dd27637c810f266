//! The LB's response path: worker → LB frames in any order (heads, bodies,
//! ends, aborts, for up to four requests at once) through the LB's frame
//! decoder, its head planning (`http::response::plan`) and its body framer,
//! applied with the LB's rules. Every response the LB would present to its
//! client as complete must parse as HTTP/1.x and carry exactly the body
//! the worker sent, framed as announced.
#![no_main]

use libfuzzer_sys::fuzz_target;
use resumelb::http::chunked::ChunkedDecoder;
use resumelb::http::response::{chunk, plan, Ask, BodyFramer, BodyPiece, Framing};
use resumelb::proto::{Decoded, ToLb};

#[derive(Default)]
struct Exchange {
    /// The head arrived (a second one is a protocol error).
    head: bool,
    /// Ended one way or another; later frames for it are ignored.
    done: bool,
    /// Ended as complete (not cut off, not a 502).
    complete: bool,
    framing: Option<Framing>,
    framer: Option<BodyFramer>,
    /// What the client gets.
    out: Vec<u8>,
    /// The body bytes the worker sent.
    sent: Vec<u8>,
}

fn check(ask: Ask, ex: &Exchange) {
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(&ex.out) {
        Ok(httparse::Status::Complete(n)) => n,
        other => panic!("the client cannot parse the response head: {other:?}"),
    };
    let code = resp.code.expect("a status code");
    assert!((200..600).contains(&code));
    assert_eq!(resp.version, Some(ask.minor));
    let named = |n: &str| resp.headers.iter().filter(|h| h.name.eq_ignore_ascii_case(n)).count();
    assert!(named("content-length") <= 1);
    assert!(named("content-length") == 0 || named("transfer-encoding") == 0);
    let body = &ex.out[head_len..];
    match ex.framing.expect("planned") {
        Framing::None => assert!(body.is_empty()),
        Framing::Sized(n) => {
            assert_eq!(body.len() as u64, n);
            assert_eq!(body, &ex.sent[..]);
        }
        Framing::UntilClose => assert_eq!(body, &ex.sent[..]),
        Framing::Chunked => {
            let mut dec = ChunkedDecoder::new();
            let mut got = Vec::new();
            let used = dec
                .feed(body, &mut |d| got.extend_from_slice(d))
                .expect("valid chunked framing");
            assert!(dec.is_done() && used == body.len());
            assert_eq!(got, ex.sent);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, mut buf)) = data.split_first() else {
        return;
    };
    let ask = Ask {
        minor: first & 1,
        head_only: first & 2 != 0,
        keep_alive: first & 4 != 0,
    };
    let mut exs: Vec<Exchange> = (0..5).map(|_| Exchange::default()).collect();
    let get = |exs: &mut Vec<Exchange>, rno: u32| -> Option<usize> {
        let i = rno as usize;
        (1..exs.len()).contains(&i).then_some(i).filter(|&i| !exs[i].done)
    };
    loop {
        let msg = match ToLb::decode(buf, 1 << 20) {
            Ok(Decoded::Complete(m, used)) => {
                buf = &buf[used..];
                m
            }
            // A protocol error closes the connection: nothing more.
            Ok(Decoded::Partial) | Err(_) => break,
        };
        match msg {
            ToLb::Head(rno, head) => {
                let Some(i) = get(&mut exs, rno) else { continue };
                let ex = &mut exs[i];
                if ex.head {
                    break; // a second head: protocol error
                }
                ex.head = true;
                match plan(ask, &head) {
                    Ok(p) => {
                        ex.out.extend_from_slice(&p.head);
                        ex.framing = Some(p.framing);
                        ex.framer = Some(BodyFramer::new(p.framing));
                    }
                    Err(_) => ex.done = true, // 502 instead
                }
            }
            ToLb::Body(rno, data) => {
                let Some(i) = get(&mut exs, rno) else { continue };
                let ex = &mut exs[i];
                let Some(framer) = ex.framer.as_mut() else {
                    break; // a body before the head: protocol error
                };
                match framer.piece(data.len()) {
                    Err(_) => ex.done = true, // cut off
                    Ok(BodyPiece::Drop) => {}
                    Ok(BodyPiece::Raw) => {
                        ex.sent.extend_from_slice(&data);
                        ex.out.extend_from_slice(&data);
                    }
                    Ok(BodyPiece::Chunk) => {
                        ex.sent.extend_from_slice(&data);
                        chunk(&mut ex.out, &data);
                    }
                }
            }
            ToLb::End(rno) => {
                let Some(i) = get(&mut exs, rno) else { continue };
                let ex = &mut exs[i];
                ex.done = true;
                if let Some(Ok(closing)) = ex.framer.map(|f| f.end()) {
                    ex.out.extend_from_slice(closing);
                    ex.complete = true;
                }
            }
            ToLb::Abort(rno) => {
                if let Some(i) = get(&mut exs, rno) {
                    exs[i].done = true;
                }
            }
            _ => {}
        }
    }
    for ex in exs.iter().filter(|e| e.complete) {
        check(ask, ex);
    }
});
