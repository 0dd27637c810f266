//! Command lines as an operator types them, odd values included: messages
//! and exit codes of the real binaries (no server needed).

use std::process::Command;

fn run(bin: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(bin).args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every duration option, out of range: one usage line naming the option,
/// exit 2; never a panic (`-t 1e20` used to abort with exit 101).
#[test]
fn durations_out_of_range_are_usage_errors() {
    let lb = env!("CARGO_BIN_EXE_resumelb");
    let zklb = env!("CARGO_BIN_EXE_zkresumelb");
    let worker = env!("CARGO_BIN_EXE_resumelb-worker");
    let wargs = ["-a", "127.0.0.1:0", "--app", "demo"];
    let cases: Vec<(&str, Vec<&str>, &str)> = vec![
        (lb, vec!["-t", "1e20", "127.0.0.1:1"], "--socket-timeout"),
        (lb, vec!["-t", "1e19", "127.0.0.1:1"], "--socket-timeout"),
        (lb, vec!["-t", "0", "127.0.0.1:1"], "--socket-timeout"),
        (lb, vec!["-t", "NaN", "127.0.0.1:1"], "--socket-timeout"),
        (lb, vec!["-t", "-5", "127.0.0.1:1"], "--socket-timeout"),
        (
            zklb,
            vec!["-t", "1e20", "127.0.0.1:1", "/x"],
            "--socket-timeout",
        ),
        (
            worker,
            [&wargs[..], &["--upstream-timeout", "1e20"]].concat(),
            "--upstream-timeout",
        ),
        (
            worker,
            [&wargs[..], &["--shutdown-timeout", "1e20"]].concat(),
            "--shutdown-timeout",
        ),
        (
            env!("CARGO_BIN_EXE_get-lb-status"),
            vec!["-t", "1e20", "/nonexistent.sock"],
            "--timeout",
        ),
        (
            env!("CARGO_BIN_EXE_get-worker-resume"),
            vec!["-t", "1e20", "127.0.0.1:1"],
            "--timeout",
        ),
    ];
    for (bin, args, option) in cases {
        let (code, _, err) = run(bin, &args);
        assert_eq!(code, Some(2), "{bin} {args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{bin} {args:?}: {err}");
        assert!(err.contains(option) && err.contains("seconds"), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    // The Nagios plugin says UNKNOWN (exit 3), as for any bad command line.
    let (code, out, err) = run(
        env!("CARGO_BIN_EXE_rlb-nagios"),
        &["-t", "1e20", "-b", "1", "/nonexistent.sock"],
    );
    assert_eq!(code, Some(3), "{out}{err}");
    assert!(
        out.contains("UNKNOWN") && out.contains("--timeout"),
        "{out}"
    );
    assert!(out.contains("seconds"), "{out}");
    assert!(!err.contains("panicked"), "{err}");
}
