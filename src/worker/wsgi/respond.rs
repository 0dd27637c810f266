//! `start_response` and `write()`: the response side of PEP 3333. The head
//! an application gives `start_response` goes out with the first body
//! bytes (or at the end, for an empty body), so that it may still replace
//! it with `exc_info` until then.

use std::sync::Arc;

use parking_lot::Mutex;
use pyo3::exceptions::{PyAssertionError, PyOSError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};

use crate::http::header;
use crate::proto::ResponseHead;
use crate::worker::sink::Sink;

/// Headers an application may not set (PEP 3333: the server handles the
/// connection).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
];

/// One request's response while the application makes it.
pub(super) struct Respond {
    /// Taken when the request is over.
    pub(super) sink: Option<Sink>,
    /// Given to `start_response`, not sent yet.
    pub(super) head: Option<ResponseHead>,
    /// `start_response` was called.
    pub(super) started: bool,
    /// Body bytes the application's `Content-Length` still allows.
    pub(super) remaining: Option<u64>,
}

/// What [`Respond::write`] says.
#[derive(Debug, PartialEq)]
pub(super) enum Wrote {
    /// Send more.
    More,
    /// Enough: a `HEAD`, or the `Content-Length` is reached.
    Enough,
    /// The client went away (the request was cancelled).
    Gone,
}

impl Respond {
    pub(super) fn new(sink: Sink) -> Respond {
        Respond {
            sink: Some(sink),
            head: None,
            started: false,
            remaining: None,
        }
    }

    pub(super) fn cancelled(&self) -> bool {
        self.sink.as_ref().is_none_or(Sink::is_cancelled)
    }

    fn head_sent(&self) -> bool {
        self.sink.as_ref().is_none_or(Sink::head_sent)
    }

    /// Send the head if it has not gone yet.
    pub(super) fn send_head(&mut self) -> Result<(), String> {
        let Some(sink) = self.sink.as_mut() else {
            return Err("the request is over".into());
        };
        if !sink.head_sent() {
            let head = self
                .head
                .take()
                .ok_or("the application did not call start_response()")?;
            sink.head(head).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Whether writing `len` bytes may wait (on the connection's flow
    /// limit): only then is it worth releasing the GIL.
    fn may_wait(&self, len: usize) -> bool {
        self.sink.as_ref().is_some_and(|s| s.would_hand_over(len))
    }

    /// Body bytes (the head goes first), cut at the `Content-Length`.
    pub(super) fn write(&mut self, data: &[u8]) -> Result<Wrote, String> {
        self.send_head()?;
        let Some(sink) = self.sink.as_mut() else {
            return Err("the request is over".into());
        };
        if sink.is_head_only() {
            return Ok(Wrote::Enough);
        }
        let data = match &mut self.remaining {
            Some(left) => {
                let n = data.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                *left -= n as u64;
                &data[..n]
            }
            None => data,
        };
        if !data.is_empty() && !sink.body(data) {
            return Ok(Wrote::Gone);
        }
        Ok(if self.remaining == Some(0) {
            Wrote::Enough
        } else {
            Wrote::More
        })
    }
}

/// The `start_response` callable; its `write` method is the `write()`
/// callable it returns.
#[pyclass(module = "resumelb")]
pub(super) struct StartResponse {
    pub(super) state: Arc<Mutex<Respond>>,
}

#[pymethods]
impl StartResponse {
    #[pyo3(signature = (status, headers, exc_info=None))]
    fn __call__<'py>(
        slf: &Bound<'py, Self>,
        status: &Bound<'py, PyAny>,
        headers: &Bound<'py, PyAny>,
        exc_info: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let this = slf.borrow();
        let mut st = this.state.lock();
        let exc_info = exc_info.filter(|e| !e.is_none());
        match exc_info {
            // Too late to change the response: re-raise (PEP 3333).
            Some(exc) if st.head_sent() => {
                let exc = exc.cast::<PyTuple>()?;
                return Err(PyErr::from_value(exc.get_item(1)?));
            }
            None if st.started => {
                return Err(PyAssertionError::new_err(
                    "start_response() was already called (a second call needs exc_info)",
                ));
            }
            _ => {}
        }
        let head = parse_head(status, headers)?;
        st.remaining =
            match header(&head.headers, "content-length") {
                None => None,
                Some(v) => Some(v.trim().parse::<u64>().map_err(|_| {
                    PyValueError::new_err(format!("bad Content-Length header {v:?}"))
                })?),
            };
        st.head = Some(head);
        st.started = true;
        drop(st);
        slf.getattr("write")
    }

    /// PEP 3333's `write()`: the bytes go to the client before it returns
    /// (within the connection's flow limit, waiting without the GIL).
    fn write(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let data = data.cast::<PyBytes>().map_err(|_| {
            PyTypeError::new_err(format!("write() takes bytes, not {}", type_name(data)))
        })?;
        let bytes = data.as_bytes();
        let wrote = write_from_python(py, &self.state, bytes).map_err(PyAssertionError::new_err)?;
        if wrote == Wrote::Gone {
            return Err(PyOSError::new_err("the client went away"));
        }
        Ok(())
    }
}

/// [`Respond::write`] from a thread holding the GIL: buffering a small
/// piece never waits, so the GIL stays (giving it up hands it to another
/// thread, and costs two switches); a write that may wait on the flow
/// limit gives it up meanwhile.
pub(super) fn write_from_python(
    py: Python<'_>,
    state: &Mutex<Respond>,
    data: &[u8],
) -> Result<Wrote, String> {
    let mut respond = state.lock();
    if !respond.may_wait(data.len()) {
        return respond.write(data);
    }
    drop(respond);
    py.detach(|| state.lock().write(data))
}

pub(super) fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into())
}

/// A status and header list as PEP 3333 has them: native strings, ISO-8859-1,
/// no line breaks, no hop-by-hop headers.
fn parse_head(status: &Bound<'_, PyAny>, headers: &Bound<'_, PyAny>) -> PyResult<ResponseHead> {
    let status: String = status.extract().map_err(|_| {
        PyTypeError::new_err(format!(
            "the status must be a str, not {}",
            type_name(status)
        ))
    })?;
    let code_ok = status.len() >= 4
        && status.as_bytes()[..3].iter().all(u8::is_ascii_digit)
        && status.as_bytes()[3] == b' ';
    if !code_ok || !header_text(&status) {
        return Err(PyValueError::new_err(format!(
            "bad status {status:?} (expected e.g. \"200 OK\")"
        )));
    }
    let mut list = Vec::new();
    for item in headers.try_iter()? {
        let item = item?;
        let (name, value): (String, String) = item
            .extract()
            .map_err(|_| PyTypeError::new_err("headers must be (name, value) tuples of str"))?;
        let token = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !token {
            return Err(PyValueError::new_err(format!("bad header name {name:?}")));
        }
        if HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h)) {
            return Err(PyAssertionError::new_err(format!(
                "hop-by-hop header {name:?} is the server's to set (PEP 3333)"
            )));
        }
        if !header_text(&value) {
            return Err(PyValueError::new_err(format!(
                "bad value for header {name}: {value:?} (ISO-8859-1, no control characters)"
            )));
        }
        list.push((name, value));
    }
    Ok(ResponseHead {
        status,
        headers: list,
    })
}

/// ISO-8859-1 text without control characters (tab allowed).
fn header_text(s: &str) -> bool {
    s.chars()
        .all(|c| (c as u32) <= 0xff && (c == '\t' || !c.is_control()))
}
