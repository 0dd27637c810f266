//! The worker's handling of what an LB sends for one request: an arbitrary
//! frame payload interpreted as LB → worker, and an environ turned into a
//! request, its accessors and the upstream app's request head.
#![no_main]

use libfuzzer_sys::fuzz_target;
use resumelb::proto::{RawFrame, ToWorker};
use resumelb::util::spill::BodyReader;
use resumelb::worker::upstream::request_head;
use resumelb::worker::Request;

fuzz_target!(|data: &[u8]| {
    let rno = u32::from(data.first().copied().unwrap_or(1) % 4);
    let frame = RawFrame {
        rno,
        payload: data.get(1..).unwrap_or(&[]),
    };
    if let Ok(ToWorker::Environ(_, env)) = ToWorker::from_frame(frame) {
        let req = Request::new(env, BodyReader::empty());
        let _ = (req.method(), req.path(), req.query(), req.header("host"));
        let head = request_head(&req, 0);
        // The head never carries a bare line break from a value.
        let text = String::from_utf8_lossy(&head);
        for line in text.split("\r\n") {
            assert!(!line.contains('\n') && !line.contains('\r'));
        }
    }
});
