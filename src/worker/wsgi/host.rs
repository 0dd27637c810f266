//! The embedded interpreter: loading the application, and serving a
//! request through it.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use pyo3::exceptions::{PyModuleNotFoundError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};

use super::WsgiSpec;

use super::super::app::{App, AppError, Request, Response};
use super::super::sink::Sink;
use super::respond::{type_name, write_from_python, Respond, StartResponse, Wrote};
use super::streams::{Errors, Input, TraceLog};

/// Python helpers: `wsgi.file_wrapper`.
const HELPERS: &str = include_str!("helpers.py");

/// A loaded WSGI application.
pub struct WsgiApp {
    app: Py<PyAny>,
    file_wrapper: Py<PyAny>,
}

/// "ExceptionType: message", for one-line errors.
fn describe(py: Python<'_>, e: &PyErr) -> String {
    let name = e
        .get_type(py)
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "Exception".into());
    format!("{name}: {}", e.value(py))
}

/// The full traceback of `e`.
fn traceback(py: Python<'_>, e: &PyErr) -> String {
    let formatted = py.import("traceback").and_then(|tb| {
        tb.call_method1("format_exception", (e.value(py),))?
            .extract::<Vec<String>>()
    });
    match formatted {
        Ok(lines) => lines.concat().trim_end().to_string(),
        Err(_) => describe(py, e),
    }
}

impl WsgiApp {
    /// Start Python, set up `sys.path` (`python_path` first, then the
    /// current directory, and the site-packages of the virtualenv in
    /// `VIRTUAL_ENV`), and load the application. Errors are one line.
    pub fn load(spec: &WsgiSpec, python_path: &[PathBuf]) -> Result<WsgiApp, String> {
        Python::initialize();
        Python::attach(|py| {
            setup_path(py, python_path)?;
            let app = match spec {
                WsgiSpec::Module { module, callable } => load_module(py, module, callable)?,
                WsgiSpec::Paste { file, name } => load_paste(py, file, name)?,
            };
            if !app.is_callable() {
                return Err(format!(
                    "{spec} is a {}, not a WSGI application (not callable)",
                    type_name(&app)
                ));
            }
            let code = CString::new(HELPERS).map_err(|e| e.to_string())?;
            let helpers = PyModule::from_code(
                py,
                &code,
                c"resumelb_wsgi_helpers.py",
                c"resumelb_wsgi_helpers",
            )
            .map_err(|e| describe(py, &e))?;
            let file_wrapper = helpers
                .getattr("FileWrapper")
                .map_err(|e| describe(py, &e))?;
            Ok(WsgiApp {
                app: app.unbind(),
                file_wrapper: file_wrapper.unbind(),
            })
        })
    }

    /// The Python version embedded, e.g. "3.11.2".
    pub fn python_version() -> String {
        Python::version_str()
            .split_whitespace()
            .next()
            .unwrap_or("?")
            .to_string()
    }

    fn environ<'py>(
        &self,
        py: Python<'py>,
        request: Request,
        errors: &Bound<'py, Errors>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let env = PyDict::new(py);
        let mut has_length = false;
        for (k, v) in &request.environ {
            has_length |= k == "CONTENT_LENGTH" && !v.is_empty();
            env.set_item(k, v)?;
        }
        // The body is all here: its length is known even when the client
        // sent it chunked.
        if !has_length && !request.body.is_empty() {
            env.set_item("CONTENT_LENGTH", request.body.len().to_string())?;
        }
        if !request.environ.contains_key("wsgi.url_scheme") {
            env.set_item("wsgi.url_scheme", "http")?;
        }
        let started = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        env.set_item("wsgi.version", (1, 0))?;
        env.set_item("wsgi.multithread", true)?;
        env.set_item("wsgi.multiprocess", true)?;
        env.set_item("wsgi.run_once", false)?;
        env.set_item("wsgi.input_terminated", true)?;
        env.set_item("wsgi.errors", errors)?;
        env.set_item("wsgi.file_wrapper", self.file_wrapper.bind(py))?;
        env.set_item("zc.resumelb.request_class", &request.class)?;
        env.set_item("zc.resumelb.time", started)?;
        env.set_item(
            "tracelog",
            Bound::new(py, TraceLog::new(request.trace.clone()))?,
        )?;
        env.set_item("wsgi.input", Bound::new(py, Input::new(request.body))?)?;
        Ok(env)
    }

    /// Serve the request; the sink to end (outside the GIL: ending may wait
    /// on the connection's flow limit) when the response is complete.
    fn serve_py(
        &self,
        py: Python<'_>,
        request: Request,
        sink: Sink,
    ) -> Result<Option<Sink>, AppError> {
        let trace = request.trace.clone();
        let state = Arc::new(Mutex::new(Respond::new(sink)));
        let errors = Bound::new(py, Errors::new(trace.id()))?;
        let environ = self.environ(py, request, &errors)?;
        let start = Bound::new(
            py,
            StartResponse {
                state: state.clone(),
            },
        )?;
        let outcome = match self.app.bind(py).call1((environ, start)) {
            Err(e) => Err(e),
            Ok(result) => {
                let sent = send_body(py, &result, &state);
                // close() is called whatever happened, cancel included.
                let closed = match result.getattr_opt("close") {
                    Ok(Some(close)) => close.call0().map(drop),
                    Ok(None) => Ok(()),
                    Err(e) => Err(e),
                };
                sent.and(closed)
            }
        };
        errors.borrow().flush();
        let mut st = state.lock();
        let head = match &outcome {
            Ok(()) if !st.cancelled() => st.send_head(),
            _ => Ok(()),
        };
        let (sink, remaining) = (st.sink.take(), st.remaining);
        drop(st);
        // From here on, a sink dropped without end() answers 500 or aborts
        // the response; a cancelled one just ends.
        let Some(sink) = sink else {
            return Ok(None);
        };
        if sink.is_cancelled() {
            return Ok(None);
        }
        if let Err(e) = outcome {
            log::error!(
                "{}: the WSGI application raised:\n{}",
                trace.id(),
                traceback(py, &e)
            );
            return Ok(None);
        }
        head?;
        if let Some(left) = remaining.filter(|&l| l > 0 && !sink.is_head_only()) {
            return Err(format!(
                "the WSGI application's body is {left} byte(s) shorter than its Content-Length"
            )
            .into());
        }
        Ok(Some(sink))
    }
}

/// Iterate the application's result, each chunk sent without the GIL. Stops
/// early for a `HEAD` (once the head is known), at the `Content-Length`, and
/// when the request is cancelled.
fn send_body(
    py: Python<'_>,
    result: &Bound<'_, PyAny>,
    state: &Arc<Mutex<Respond>>,
) -> PyResult<()> {
    if let Ok(list) = result.cast::<PyList>() {
        for item in list.iter() {
            if !send_chunk(py, &item, state)? {
                break;
            }
        }
        return Ok(());
    }
    for item in result.try_iter()? {
        if state.lock().cancelled() {
            break;
        }
        if !send_chunk(py, &item?, state)? {
            break;
        }
    }
    Ok(())
}

/// False when no more is wanted.
fn send_chunk(
    py: Python<'_>,
    item: &Bound<'_, PyAny>,
    state: &Arc<Mutex<Respond>>,
) -> PyResult<bool> {
    let bytes = item.cast::<PyBytes>().map_err(|_| {
        PyTypeError::new_err(format!(
            "the application's response holds a {} where bytes are due",
            type_name(item)
        ))
    })?;
    let data = bytes.as_bytes();
    if data.is_empty() {
        return Ok(true);
    }
    let wrote =
        write_from_python(py, state, data).map_err(pyo3::exceptions::PyAssertionError::new_err)?;
    Ok(wrote == Wrote::More)
}

fn setup_path(py: Python<'_>, python_path: &[PathBuf]) -> Result<(), String> {
    let err = |e: PyErr| describe(py, &e);
    let sys = py.import("sys").map_err(err)?;
    let path = sys.getattr("path").map_err(err)?;
    if let Some(venv) = std::env::var_os("VIRTUAL_ENV") {
        let (major, minor): (u8, u8) = (py.version_info().major, py.version_info().minor);
        let site = Path::new(&venv).join(format!("lib/python{major}.{minor}/site-packages"));
        if !site.is_dir() {
            return Err(format!(
                "VIRTUAL_ENV={}: there is no {} (this worker embeds Python {major}.{minor}; the virtualenv must be for the same version)",
                Path::new(&venv).display(),
                site.display()
            ));
        }
        // The virtualenv's packages (and its .pth files) before the system's.
        let before = path.len().map_err(err)?;
        py.import("site")
            .and_then(|s| s.call_method1("addsitedir", (site.to_string_lossy().as_ref(),)))
            .map_err(err)?;
        let after = path.len().map_err(err)?;
        for i in before..after {
            let entry = path.call_method1("pop", (i,)).map_err(err)?;
            path.call_method1("insert", (i - before, entry))
                .map_err(err)?;
        }
    }
    let cwd = std::env::current_dir().map_err(|e| format!("current directory: {e}"))?;
    let front: Vec<PathBuf> = python_path
        .iter()
        .map(|p| cwd.join(p))
        .chain(std::iter::once(cwd.clone()))
        .collect();
    for (i, dir) in front.iter().enumerate() {
        path.call_method1("insert", (i, dir.to_string_lossy().as_ref()))
            .map_err(err)?;
    }
    Ok(())
}

fn load_module<'py>(
    py: Python<'py>,
    module: &str,
    callable: &str,
) -> Result<Bound<'py, PyAny>, String> {
    let m = py
        .import(module)
        .map_err(|e| format!("cannot import WSGI module {module}: {}", describe(py, &e)))?;
    let mut obj = m.into_any();
    for part in callable.split('.') {
        obj = obj.getattr(part).map_err(|e| {
            format!(
                "no WSGI application {callable} in module {module}: {}",
                describe(py, &e)
            )
        })?;
    }
    Ok(obj)
}

fn load_paste<'py>(py: Python<'py>, file: &Path, name: &str) -> Result<Bound<'py, PyAny>, String> {
    let deploy = py.import("paste.deploy").map_err(|e| {
        if e.is_instance_of::<PyModuleNotFoundError>(py) {
            format!(
                "--app paste: needs PasteDeploy, which this Python ({}) does not have ({}); install it, e.g. in the virtualenv named by VIRTUAL_ENV",
                WsgiApp::python_version(),
                describe(py, &e)
            )
        } else {
            format!("cannot import paste.deploy: {}", describe(py, &e))
        }
    })?;
    let abs = std::fs::canonicalize(file)
        .map_err(|e| format!("cannot read paste file {}: {e}", file.display()))?;
    let kwargs = PyDict::new(py);
    kwargs
        .set_item("name", name)
        .map_err(|e| describe(py, &e))?;
    deploy
        .call_method(
            "loadapp",
            (format!("config:{}", abs.display()),),
            Some(&kwargs),
        )
        .map_err(|e| {
            format!(
                "cannot load application {name} from {}: {}",
                file.display(),
                describe(py, &e)
            )
        })
}

thread_local! {
    /// This thread has a Python thread state of its own for its lifetime.
    static THREAD_STATE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Give the calling thread a Python thread state that lives as long as the
/// thread. Without one, every attach creates a thread state and every
/// detach destroys it, with its 16 KiB frame stack (an mmap and a munmap
/// per request, and the munmap flushes the TLB of every core running the
/// process: a third of the worker's CPU for a trivial application).
fn keep_thread_state() {
    THREAD_STATE.with(|kept| {
        if kept.get() {
            return;
        }
        // SAFETY: the interpreter is initialized (`WsgiApp::load`) and this
        // thread holds no GIL (the app threads call in without it).
        // `PyGILState_Ensure` creates the thread's state and takes the
        // GIL; `PyEval_SaveThread` gives the GIL back and keeps the state,
        // whose use count stays at one: later attaches and detaches only
        // take and give back the GIL. The state is never released (the
        // thread runs until the process ends).
        unsafe {
            let _ = pyo3::ffi::PyGILState_Ensure();
            pyo3::ffi::PyEval_SaveThread();
        }
        kept.set(true);
    });
}

impl App for WsgiApp {
    /// A WSGI application streams as it goes: it answers through
    /// [`App::serve`], and `call` collects what `serve` would send.
    fn call(&self, _request: Request) -> Result<Response, AppError> {
        Err("a WSGI application answers through App::serve".into())
    }

    fn serve(&self, request: Request, sink: Sink) -> Result<(), AppError> {
        keep_thread_state();
        if let Some(sink) = Python::attach(|py| self.serve_py(py, request, sink))? {
            sink.end();
        }
        Ok(())
    }
}
