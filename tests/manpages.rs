//! Every option a command accepts appears in its man page, and every
//! option the page documents is accepted (read from the real `--help`).

use std::collections::BTreeSet;
use std::process::Command;

fn help_options(bin: &str) -> BTreeSet<String> {
    help_order(bin).into_iter().collect()
}

/// The options of `--help`, in the order it lists them.
fn help_order(bin: &str) -> Vec<String> {
    let out = Command::new(bin).arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for line in text.lines() {
        assert_eq!(line, line.trim_end(), "{bin} --help: trailing space");
    }
    let mut opts: Vec<String> = Vec::new();
    for line in text.lines() {
        let t = line.trim_start();
        if !t.starts_with('-') {
            continue;
        }
        // "-a, --address HOST:PORT" or "    --app APP"
        for word in t.split_whitespace() {
            let w = word.trim_end_matches(',');
            if w.starts_with("--") || (w.len() == 2 && w.starts_with('-')) {
                if !opts.iter().any(|o| o == w) {
                    opts.push(w.to_string());
                }
            } else {
                break;
            }
        }
    }
    opts
}

/// The page as plain text: roff escapes for '-' undone, fonts removed.
fn page_text(name: &str) -> String {
    let path = format!("{}/man/{name}", env!("CARGO_MANIFEST_DIR"));
    let raw = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    raw.replace("\\-", "-")
        .replace("\\fB", "")
        .replace("\\fI", "")
        .replace("\\fR", "")
        .replace("\\fP", "")
}

/// Options named in the OPTIONS section of a page.
fn page_options(text: &str) -> BTreeSet<String> {
    page_order(text).into_iter().collect()
}

/// The options of a page's OPTIONS section, in the order it lists them.
fn page_order(text: &str) -> Vec<String> {
    let mut in_options = false;
    let mut opts: Vec<String> = Vec::new();
    let mut prev_tp = false;
    for line in text.lines() {
        if line.starts_with(".SH") {
            in_options = line.contains("OPTIONS");
            continue;
        }
        if !in_options {
            continue;
        }
        if line.starts_with(".TP") {
            prev_tp = true;
            continue;
        }
        if prev_tp {
            for word in line.split(|c: char| c.is_whitespace() || c == '"' || c == ',') {
                if (word.starts_with("--")
                    || (word.len() == 2 && word.starts_with('-') && word != "--"))
                    && !opts.iter().any(|o| o == word)
                {
                    opts.push(word.to_string());
                }
            }
        }
        prev_tp = false;
    }
    opts
}

fn check(bin: &str, page: &str) {
    let accepted = help_options(bin);
    let text = page_text(page);
    let documented = page_options(&text);
    assert!(accepted.len() >= 3, "{bin}: parsed no options from --help");
    // --help lists the options in the page's order (its groups, -h and -V
    // last), so that an operator finds them where the page has them.
    assert_eq!(
        help_order(bin),
        page_order(&text),
        "{bin}: --help and {page} differ in order"
    );
    let missing: Vec<_> = accepted.difference(&documented).collect();
    assert!(missing.is_empty(), "{page} does not document {missing:?}");
    let unknown: Vec<_> = documented.difference(&accepted).collect();
    assert!(
        unknown.is_empty(),
        "{page} documents {unknown:?}, which {bin} does not accept"
    );
    for section in [
        "NAME",
        "SYNOPSIS",
        "DESCRIPTION",
        "OPTIONS",
        "SIGNALS",
        "FILES",
        "EXIT STATUS",
        "EXAMPLES",
        "SEE ALSO",
    ] {
        assert!(
            text.contains(&format!(".SH {section}")),
            "{page} has no {section} section"
        );
    }
}

#[test]
fn resumelb_worker_page_matches_its_options() {
    check(env!("CARGO_BIN_EXE_resumelb-worker"), "resumelb-worker.1");
}

#[test]
fn get_worker_resume_page_matches_its_options() {
    check(
        env!("CARGO_BIN_EXE_get-worker-resume"),
        "get-worker-resume.1",
    );
}

#[test]
fn protocol_page_exists_with_the_frame_vectors() {
    let text = page_text("resumelb-protocol.7");
    assert!(text.contains("00000000 00000006 a1 6161 f93e00"));
}

#[test]
fn resumelb_page_matches_its_options() {
    check(env!("CARGO_BIN_EXE_resumelb"), "resumelb.1");
}

#[test]
fn get_lb_status_page_matches_its_options() {
    check(env!("CARGO_BIN_EXE_get-lb-status"), "get-lb-status.1");
}

#[test]
fn zkresumelb_page_matches_its_options() {
    check(env!("CARGO_BIN_EXE_zkresumelb"), "zkresumelb.1");
}

#[test]
fn rlb_nagios_page_matches_its_options() {
    check(env!("CARGO_BIN_EXE_rlb-nagios"), "rlb-nagios.1");
}

#[test]
fn usage_errors_are_one_line_and_exit_2() {
    for (bin, args) in [
        (
            env!("CARGO_BIN_EXE_resumelb-worker"),
            &["--threads", "0"][..],
        ),
        (env!("CARGO_BIN_EXE_resumelb"), &["--no-such-option"][..]),
        (env!("CARGO_BIN_EXE_zkresumelb"), &["only-one-argument"][..]),
        (env!("CARGO_BIN_EXE_get-lb-status"), &[][..]),
        (
            env!("CARGO_BIN_EXE_get-worker-resume"),
            &["-t", "x", "h:1"][..],
        ),
    ] {
        let out = Command::new(bin).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{bin} {args:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "{bin}: {err:?}");
    }
}
