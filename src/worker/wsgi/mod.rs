//! WSGI applications (PEP 3333) hosted in the worker: CPython embedded, the
//! application loaded at start-up (`--app wsgi:MODULE:CALLABLE` or
//! `--app paste:FILE.ini#NAME`), called by the app threads.
//!
//! Each app thread holds the GIL while Python runs and lets go of it while
//! it waits: reading the request body, handing response chunks to the I/O
//! thread. So `--threads N` behaves like a threaded WSGI server's threads.

#[cfg(feature = "wsgi")]
mod host;
#[cfg(feature = "wsgi")]
mod respond;
#[cfg(feature = "wsgi")]
mod streams;

use std::path::PathBuf;

#[cfg(feature = "wsgi")]
pub use host::WsgiApp;

/// Whether this build hosts WSGI applications (the cargo feature `wsgi`).
pub const BUILT_IN: bool = cfg!(feature = "wsgi");

/// Which application to load.
#[derive(Debug, Clone, PartialEq)]
pub enum WsgiSpec {
    /// `MODULE[:CALLABLE]` (CALLABLE may be dotted; default `application`).
    Module { module: String, callable: String },
    /// A PasteDeploy file and the application's name in it (default `main`).
    Paste { file: PathBuf, name: String },
}

impl WsgiSpec {
    /// `MODULE[:CALLABLE]`, as after `wsgi:`.
    pub fn module(s: &str) -> Result<WsgiSpec, String> {
        let (module, callable) = s.split_once(':').unwrap_or((s, "application"));
        let dotted = |p: &str| {
            !p.is_empty()
                && p.split('.').all(|w| {
                    !w.is_empty()
                        && !w.starts_with(|c: char| c.is_ascii_digit())
                        && w.chars().all(|c| c.is_alphanumeric() || c == '_')
                })
        };
        if !dotted(module) || !dotted(callable) {
            return Err(format!(
                "bad WSGI application {s:?} (expected MODULE[:CALLABLE], e.g. myapp.wsgi:application)"
            ));
        }
        Ok(WsgiSpec::Module {
            module: module.into(),
            callable: callable.into(),
        })
    }

    /// `FILE.ini[#NAME]`, as after `paste:`.
    pub fn paste(s: &str) -> Result<WsgiSpec, String> {
        let (file, name) = s.split_once('#').unwrap_or((s, "main"));
        if file.is_empty() || name.is_empty() {
            return Err(format!(
                "bad paste application {s:?} (expected FILE.ini[#NAME])"
            ));
        }
        Ok(WsgiSpec::Paste {
            file: file.into(),
            name: name.into(),
        })
    }
}

impl std::fmt::Display for WsgiSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WsgiSpec::Module { module, callable } => write!(f, "wsgi:{module}:{callable}"),
            WsgiSpec::Paste { file, name } => write!(f, "paste:{}#{name}", file.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        assert_eq!(
            WsgiSpec::module("myapp.wsgi:application"),
            Ok(WsgiSpec::Module {
                module: "myapp.wsgi".into(),
                callable: "application".into()
            })
        );
        assert_eq!(
            WsgiSpec::module("app").unwrap().to_string(),
            "wsgi:app:application"
        );
        assert_eq!(
            WsgiSpec::module("app:make.wsgi").unwrap().to_string(),
            "wsgi:app:make.wsgi"
        );
        for bad in ["", ":x", "a:", "a..b", "1a", "a-b:c", "a:b:c"] {
            assert!(WsgiSpec::module(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            WsgiSpec::paste("site.ini#api").unwrap().to_string(),
            "paste:site.ini#api"
        );
        assert_eq!(
            WsgiSpec::paste("site.ini").unwrap().to_string(),
            "paste:site.ini#main"
        );
        assert!(WsgiSpec::paste("#x").is_err());
        assert!(WsgiSpec::paste("a.ini#").is_err());
    }
}
