//! The short chaos soak (≈20 s) of `make test`: workers killed and
//! restarted under a mixed load; no response may look complete and not be,
//! and the LB's descriptors, memory and temporary files come back.

use std::time::Duration;

use resumelb::soak::{run, SoakConfig};

#[test]
fn short_chaos_soak() {
    let report = run(&SoakConfig {
        lb: env!("CARGO_BIN_EXE_resumelb").into(),
        worker: env!("CARGO_BIN_EXE_resumelb-worker").into(),
        duration: Duration::from_secs(20),
        workers: 4,
        connections: 6,
        chaos_every: Duration::from_secs(2),
        seed: 7,
    })
    .unwrap();
    let text = report.text();
    eprintln!("{text}");
    assert!(report.requests > 200, "{text}");
    assert!(report.kills + report.terms >= 5, "{text}");
    assert_eq!(report.truncated_undetected, 0, "{text}");
    assert_eq!(report.temp_files_left, 0, "{text}");
    assert!(report.get_success_rate() >= 0.99, "{text}");
    assert!(report.fds[2] <= report.fds[0] + 8, "{text}");
    assert!(report.rss_kib[2] <= report.rss_kib[0] + 32 * 1024, "{text}");
}
