//! The worker's handling of what an LB sends for one request: an arbitrary
//! frame payload interpreted as LB → worker, the environ checked as the
//! worker checks it, then turned into a request, its accessors and the
//! upstream app's request head.
#![no_main]

use libfuzzer_sys::fuzz_target;
use resumelb::proto::{RawFrame, ToWorker};
use resumelb::worker::BodyReader;
use resumelb::worker::upstream::request_head;
use resumelb::worker::{validate, Request};

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fuzz_target!(|data: &[u8]| {
    let rno = u32::from(data.first().copied().unwrap_or(1) % 4);
    let frame = RawFrame {
        rno,
        payload: data.get(1..).unwrap_or(&[]),
    };
    let Ok(ToWorker::Environ(_, pairs)) = ToWorker::from_frame(frame) else {
        return;
    };
    // What the worker refuses never reaches an application.
    let Ok(env) = validate::environ(pairs) else {
        return;
    };
    let req = Request::new(env, BodyReader::empty());
    let _ = (req.method(), req.path(), req.query(), req.header("host"));
    let head = request_head(&req, 0);
    // One request: a request line of three parts, then header lines
    // `token: value`, then the empty line, and nothing after it.
    assert!(head.ends_with(b"\r\n\r\n"));
    let body = &head[..head.len() - 4];
    assert!(!body.windows(4).any(|w| w == b"\r\n\r\n"));
    let mut lines = body.split(|&b| b == b'\n');
    let first = lines.next().unwrap_or_default();
    let first = first.strip_suffix(b"\r").expect("request line ends with CRLF");
    assert_eq!(first.iter().filter(|&&b| b == b' ').count(), 2, "{first:?}");
    assert!(!first.iter().any(|&b| b < 0x20 || b == 0x7f));
    for line in lines {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        assert!(!line.contains(&b'\r'));
        let colon = line.iter().position(|&b| b == b':').expect("header line");
        assert!(colon > 0 && line[..colon].iter().all(|&b| is_tchar(b)), "{line:?}");
        assert!(!line[colon + 1..].iter().any(|&b| b == 0 || (b < 0x20 && b != b'\t')));
    }
});
