//! What an application sees: the [`App`] trait, its [`Request`] and the
//! [`Response`] it returns, with a body that may stream.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::sink::Sink;
use crate::proto::Environ;
use crate::tracelog::Trace;
use crate::util::spill::BodyReader;

/// An error an application returns instead of a response (answered `500`).
pub type AppError = Box<dyn std::error::Error + Send + Sync>;

/// An application run by the worker's app threads, one request per call.
pub trait App: Send + Sync + 'static {
    fn call(&self, request: Request) -> Result<Response, AppError>;

    /// Serve one request into `sink`. The default sends what
    /// [`App::call`] returns. An application that produces its response
    /// as it goes (the head first, then body chunks as they come) writes
    /// them to the sink itself and calls [`Sink::end`]; a sink dropped
    /// without `end` answers `500`, or aborts a response already started.
    fn serve(&self, request: Request, sink: Sink) -> Result<(), AppError> {
        sink.respond(self.call(request)?)
    }

    /// Whether the application can serve now. An app that depends on
    /// something that can be down (a server it forwards to) says false
    /// while it is, and may check it here: the worker asks about once a
    /// second and tells its LBs when the answer changes. Always true by
    /// default.
    fn available(&self) -> bool {
        true
    }

    /// For an app that only forwards each request to an HTTP server: where
    /// to. The worker's I/O thread then forwards requests whose bodies are
    /// in memory itself, with no app thread between; the rest still go to
    /// [`App::serve`]. `None` (the default): every request goes to the app
    /// threads.
    fn forwarding(&self) -> Option<super::upstream::Forwarding> {
        None
    }
}

impl<F> App for F
where
    F: Fn(Request) -> Result<Response, AppError> + Send + Sync + 'static,
{
    fn call(&self, request: Request) -> Result<Response, AppError> {
        self(request)
    }
}

/// One request, as the LB forwarded it.
#[derive(Debug)]
pub struct Request {
    /// CGI/WSGI-style environment (resumelb-protocol(7), "Requests").
    pub environ: Environ,
    /// The body, de-chunked; in memory or in a temporary file.
    pub body: BodyReader,
    /// The request class the LB assigned.
    pub class: String,
    /// Trace log records for this request.
    pub trace: Trace,
    pub(crate) cancel: Arc<AtomicBool>,
}

impl Request {
    /// A request built by hand (for tests and embedding).
    pub fn new(environ: Environ, body: BodyReader) -> Request {
        let class = environ
            .get("resumelb.request_class")
            .cloned()
            .unwrap_or_default();
        Request {
            environ,
            body,
            class,
            trace: Trace::default(),
            cancel: Arc::default(),
        }
    }

    fn env(&self, name: &str) -> &str {
        self.environ.get(name).map(String::as_str).unwrap_or("")
    }

    pub fn method(&self) -> &str {
        self.env("REQUEST_METHOD")
    }

    /// The percent-decoded path.
    pub fn path(&self) -> &str {
        self.env("PATH_INFO")
    }

    pub fn query(&self) -> &str {
        self.env("QUERY_STRING")
    }

    /// A request header by name (any case), from its `HTTP_` entry.
    pub fn header(&self, name: &str) -> Option<&str> {
        let key = format!("HTTP_{}", name.to_ascii_uppercase().replace('-', "_"));
        self.environ.get(&key).map(String::as_str)
    }

    /// True once the LB has cancelled the request (the client went away).
    /// A long computation may poll this; streamed bodies stop by themselves.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }
}

/// A response body.
pub enum Body {
    Empty,
    Bytes(Vec<u8>),
    /// Chunks produced as the response is sent. The worker stops pulling
    /// (and drops the iterator) when the request is cancelled; an `Err`
    /// aborts the response.
    Stream(Box<dyn Iterator<Item = io::Result<Vec<u8>>> + Send>),
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Body::Empty => write!(f, "Empty"),
            Body::Bytes(b) => write!(f, "Bytes({})", b.len()),
            Body::Stream(_) => write!(f, "Stream"),
        }
    }
}

/// An application's answer.
#[derive(Debug)]
pub struct Response {
    /// Status line text, e.g. `"200 OK"`.
    pub status: String,
    pub headers: Vec<(String, String)>,
    pub body: Body,
}

impl Response {
    pub fn new(status: impl Into<String>) -> Response {
        Response {
            status: status.into(),
            headers: Vec::new(),
            body: Body::Empty,
        }
    }

    /// A complete response with `Content-Length` set.
    pub fn with_body(status: impl Into<String>, content_type: &str, body: Vec<u8>) -> Response {
        Response::new(status)
            .header("Content-Type", content_type)
            .header("Content-Length", &body.len().to_string())
            .body(Body::Bytes(body))
    }

    pub fn header(mut self, name: &str, value: &str) -> Response {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn body(mut self, body: Body) -> Response {
        self.body = body;
        self
    }

    /// The numeric status code (0 if the status text does not start with one).
    pub fn code(&self) -> u16 {
        status_code(&self.status)
    }

    /// The `Content-Length` header's value, if any.
    pub fn content_length(&self) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .map(|(_, v)| v.as_str())
    }
}

/// The numeric code at the start of a status line text.
pub fn status_code(status: &str) -> u16 {
    status
        .split_whitespace()
        .next()
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}
