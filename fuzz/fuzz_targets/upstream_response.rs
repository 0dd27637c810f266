//! The upstream app's reading of an HTTP response (head, then a sized,
//! chunked or close-delimited body): arbitrary bytes as the upstream's
//! answer. What it passes on to the LB must be a head without line breaks
//! or hop-by-hop headers and non-empty body pieces, and the LB's planning
//! of that head must not fail on anything but the worker's own rules.
#![no_main]

use libfuzzer_sys::fuzz_target;
use resumelb::http::response::{plan, Ask};
use resumelb::http::HOP_BY_HOP;
use resumelb::proto::ResponseHead;
use resumelb::worker::upstream::read_response;

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let Ok(r) = read_response(rest.to_vec(), first & 1 == 1) else {
        return;
    };
    let (status, headers, pieces) = (r.status, r.headers, r.pieces);
    assert!(!status.contains(['\r', '\n', '\0']), "{status:?}");
    let code: u16 = status[..3].parse().expect("a three-digit status");
    assert!((200..1000).contains(&code) || code == 101, "{status:?}");
    for (name, value) in &headers {
        assert!(!name.is_empty() && !name.contains([':', ' ', '\r', '\n']));
        assert!(!value.contains(['\r', '\n', '\0']), "{value:?}");
        assert!(!HOP_BY_HOP.contains(&name.to_ascii_lowercase().as_str()));
    }
    for piece in pieces.into_iter().flatten() {
        assert!(!piece.is_empty(), "an empty body piece would end the response");
    }
    let ask = Ask {
        minor: 1,
        head_only: first & 1 == 1,
        keep_alive: true,
    };
    let _ = plan(ask, &ResponseHead { status, headers });
});
