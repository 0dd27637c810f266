//! The file-like objects of a WSGI environ: `wsgi.input` (the request
//! body), `wsgi.errors` (lines to the worker's log) and `tracelog` (records
//! in the trace log for the request).

use std::io::{BufRead, Read};

use parking_lot::Mutex;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::tracelog::Trace;
use crate::util::spill::BodyReader;

/// `wsgi.input`: the whole request body, in memory or in its spill file.
/// Reads from the file release the GIL.
#[pyclass(module = "resumelb")]
pub(super) struct Input {
    body: Mutex<BodyReader>,
    on_disk: bool,
}

impl Input {
    pub(super) fn new(body: BodyReader) -> Input {
        Input {
            on_disk: body.on_disk(),
            body: Mutex::new(body),
        }
    }

    /// Run `f` without the GIL when it may wait on the disk.
    fn reading<T: Send>(&self, py: Python<'_>, f: impl FnOnce() -> T + Send) -> T {
        if self.on_disk {
            py.detach(f)
        } else {
            f()
        }
    }

    /// Up to `limit` bytes (all with `None`).
    fn read_up_to(&self, limit: Option<usize>) -> std::io::Result<Vec<u8>> {
        let mut body = self.body.lock();
        let mut out = Vec::new();
        match limit {
            None => {
                body.read_to_end(&mut out)?;
            }
            Some(n) => {
                (&mut *body).take(n as u64).read_to_end(&mut out)?;
            }
        }
        Ok(out)
    }

    /// One line, its `\n` included, of at most `limit` bytes.
    fn line(&self, limit: Option<usize>) -> std::io::Result<Vec<u8>> {
        let mut body = self.body.lock();
        let mut out = Vec::new();
        loop {
            let room = limit.map_or(usize::MAX, |l| l - out.len());
            if room == 0 {
                break;
            }
            let buf = body.fill_buf()?;
            if buf.is_empty() {
                break;
            }
            let window = &buf[..buf.len().min(room)];
            let (n, done) = match window.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (window.len(), false),
            };
            out.extend_from_slice(&window[..n]);
            body.consume(n);
            if done {
                break;
            }
        }
        Ok(out)
    }
}

/// A negative or absent size means "no limit", as for Python files.
fn limit(size: Option<isize>) -> Option<usize> {
    size.and_then(|s| usize::try_from(s).ok())
}

#[pymethods]
impl Input {
    #[pyo3(signature = (size=-1))]
    fn read<'py>(&self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        let data = self.reading(py, || self.read_up_to(limit(size)))?;
        Ok(PyBytes::new(py, &data))
    }

    #[pyo3(signature = (size=-1))]
    fn readline<'py>(&self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        let data = self.reading(py, || self.line(limit(size)))?;
        Ok(PyBytes::new(py, &data))
    }

    /// Lines until EOF, or until they add up to `hint` bytes.
    #[pyo3(signature = (hint=-1))]
    fn readlines<'py>(
        &self,
        py: Python<'py>,
        hint: Option<isize>,
    ) -> PyResult<Vec<Bound<'py, PyBytes>>> {
        let hint = limit(hint).filter(|&h| h > 0);
        let lines = self.reading(py, || -> std::io::Result<Vec<Vec<u8>>> {
            let mut lines = Vec::new();
            let mut total = 0;
            loop {
                let line = self.line(None)?;
                if line.is_empty() {
                    break;
                }
                total += line.len();
                lines.push(line);
                if hint.is_some_and(|h| total >= h) {
                    break;
                }
            }
            Ok(lines)
        })?;
        Ok(lines.iter().map(|l| PyBytes::new(py, l)).collect())
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let line = self.reading(py, || self.line(None))?;
        Ok((!line.is_empty()).then(|| PyBytes::new(py, &line)))
    }
}

/// `wsgi.errors`: text written here goes to the worker's log, a line at a
/// time, each with the request's trace id.
#[pyclass(module = "resumelb")]
pub(super) struct Errors {
    id: String,
    partial: Mutex<String>,
}

impl Errors {
    pub(super) fn new(id: &str) -> Errors {
        Errors {
            id: id.to_string(),
            partial: Mutex::new(String::new()),
        }
    }

    fn emit(&self, line: &str) {
        log::warn!("{}: wsgi.errors: {}", self.id, line.trim_end_matches('\r'));
    }
}

#[pymethods]
impl Errors {
    fn write(&self, text: &str) -> usize {
        let mut partial = self.partial.lock();
        partial.push_str(text);
        while let Some(i) = partial.find('\n') {
            let line: String = partial.drain(..=i).collect();
            self.emit(&line[..line.len() - 1]);
        }
        text.chars().count()
    }

    fn writelines(&self, lines: Vec<String>) {
        for l in lines {
            self.write(&l);
        }
    }

    /// Log what is left of an unfinished line.
    pub(super) fn flush(&self) {
        let rest = std::mem::take(&mut *self.partial.lock());
        if !rest.is_empty() {
            self.emit(&rest);
        }
    }
}

/// `environ['tracelog']`: `log(message, code='-')` adds a record for this
/// request to the worker's trace log.
#[pyclass(module = "resumelb")]
pub(super) struct TraceLog {
    trace: Trace,
}

impl TraceLog {
    pub(super) fn new(trace: Trace) -> TraceLog {
        TraceLog { trace }
    }
}

#[pymethods]
impl TraceLog {
    #[pyo3(signature = (message, code="-"))]
    fn log(&self, message: &str, code: &str) -> PyResult<()> {
        if code.is_empty() || code.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(PyValueError::new_err(
                "a trace log code is one word, without spaces",
            ));
        }
        // One record is one line.
        let message: String = message
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        self.trace.record(code, message);
        Ok(())
    }
}
