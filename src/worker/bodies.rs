//! Request bodies on the worker: in memory up to the spill threshold, past
//! it in an unlinked temporary file that the body thread writes, so that
//! the I/O thread never waits on the disk (unless the disk falls far
//! behind: the queue to the body thread is bounded). When a spilled body is
//! complete, the body thread rewinds its file and hands the request to the
//! app threads itself, after its last write.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::sync::Arc;

use crossbeam_channel::{bounded, Sender};

use super::shared::{Job, Out, Shared};
use crate::proto::{encode_end, encode_head, ResponseHead};
use crate::util::spill::{anonymous_file, BodyReader};

/// Commands queued for the body thread before the I/O thread waits.
const QUEUE: usize = 256;

enum Cmd {
    Write(u64, Vec<u8>),
    /// The body is complete: hand the job to the app threads.
    Finish(u64, Box<Job>),
    /// The request is gone (cancelled, connection closed).
    Drop(u64),
}

/// The I/O thread's handle on the body thread.
#[derive(Clone)]
pub(crate) struct BodyIo {
    tx: Sender<Cmd>,
}

impl BodyIo {
    /// Start the thread. Jobs go to `jobs`; a body that cannot be stored
    /// is answered 500 through `shared` (as an app thread would).
    pub(crate) fn start(jobs: Sender<Job>, shared: Arc<Shared>) -> io::Result<BodyIo> {
        let (tx, rx) = bounded::<Cmd>(QUEUE);
        std::thread::Builder::new()
            .name("worker-bodies".into())
            .spawn(move || {
                let mut files: HashMap<u64, io::Result<(File, u64)>> = HashMap::new();
                for cmd in rx {
                    match cmd {
                        Cmd::Write(id, data) => write(&mut files, id, &data),
                        Cmd::Finish(id, job) => {
                            let file = files.remove(&id).unwrap_or_else(|| {
                                Err(io::Error::new(io::ErrorKind::NotFound, "no spill file"))
                            });
                            if !finish(file, *job, &jobs, &shared) {
                                return;
                            }
                        }
                        Cmd::Drop(id) => {
                            files.remove(&id);
                        }
                    }
                }
            })?;
        Ok(BodyIo { tx })
    }
}

fn write(files: &mut HashMap<u64, io::Result<(File, u64)>>, id: u64, data: &[u8]) {
    let entry = files
        .entry(id)
        .or_insert_with(|| anonymous_file().map(|f| (f, 0)));
    if let Ok((f, len)) = entry {
        match f.write_all(data) {
            Ok(()) => *len += data.len() as u64,
            Err(e) => *entry = Err(e),
        }
    }
}

/// Rewind the file and send the job on; on failure answer 500. False when
/// the app threads are gone.
fn finish(
    file: io::Result<(File, u64)>,
    mut job: Job,
    jobs: &Sender<Job>,
    shared: &Shared,
) -> bool {
    let reader = file.and_then(|(mut f, len)| {
        f.seek(SeekFrom::Start(0))?;
        Ok(BodyReader::File(
            io::BufReader::with_capacity(64 * 1024, f),
            len,
        ))
    });
    match reader {
        Ok(body) => {
            if let Some(r) = job.request.as_mut() {
                r.body = body;
            }
            jobs.send(job).is_ok()
        }
        Err(e) => {
            log::error!("cannot store a request body: {e}");
            let mut bytes = Vec::new();
            internal_error(&mut bytes, job.rno);
            // Counted like an app thread's frames (the I/O thread releases
            // them as they go into the socket's buffer).
            // Cancelled meanwhile: nothing to send, but the job is done.
            if !job.flow.reserve(bytes.len(), &job.request_cancel) {
                bytes.clear();
            }
            let out = Out {
                conn_id: job.conn_id,
                rno: job.rno,
                req_id: job.req_id,
                bytes,
                done: true,
            };
            if shared.out.send(out).is_err() {
                return false;
            }
            shared.wake();
            true
        }
    }
}

/// A bodiless response frame pair with `status`.
pub(crate) fn status_response(out: &mut Vec<u8>, rno: crate::proto::Rno, status: &str) {
    let head = ResponseHead {
        status: status.into(),
        headers: vec![("Content-Length".into(), "0".into())],
    };
    let _ = encode_head(out, rno, &head);
    encode_end(out, rno);
}

fn internal_error(out: &mut Vec<u8>, rno: crate::proto::Rno) {
    status_response(out, rno, "500 Internal Server Error");
}

/// A request body being received.
pub(crate) enum Body {
    Memory(Vec<u8>),
    /// In the body thread's file `id`, this long so far.
    Spilled {
        id: u64,
        len: u64,
    },
}

impl Body {
    pub(crate) fn new() -> Body {
        Body::Memory(Vec::new())
    }

    pub(crate) fn len(&self) -> u64 {
        match self {
            Body::Memory(m) => m.len() as u64,
            Body::Spilled { len, .. } => *len,
        }
    }

    /// Add bytes; past `threshold` they go to the body thread under `id`.
    pub(crate) fn write(&mut self, data: Vec<u8>, threshold: usize, id: u64, io: &BodyIo) {
        match self {
            Body::Memory(m) if m.len() + data.len() <= threshold => m.extend_from_slice(&data),
            Body::Memory(m) => {
                let mut first = std::mem::take(m);
                first.extend_from_slice(&data);
                let len = first.len() as u64;
                let _ = io.tx.send(Cmd::Write(id, first));
                *self = Body::Spilled { id, len };
            }
            Body::Spilled { id, len } => {
                *len += data.len() as u64;
                let _ = io.tx.send(Cmd::Write(*id, data));
            }
        }
    }

    /// The body is complete: a job with an in-memory body is returned to be
    /// sent at once; one with a spilled body goes through the body thread.
    pub(crate) fn finish(self, mut job: Job, io: &BodyIo) -> Option<Job> {
        match self {
            Body::Memory(m) => {
                if let Some(r) = job.request.as_mut() {
                    r.body = BodyReader::Memory(io::Cursor::new(m));
                }
                Some(job)
            }
            Body::Spilled { id, .. } => {
                let _ = io.tx.send(Cmd::Finish(id, Box::new(job)));
                None
            }
        }
    }

    /// The request is gone before its body was complete.
    pub(crate) fn discard(self, io: &BodyIo) {
        if let Body::Spilled { id, .. } = self {
            let _ = io.tx.send(Cmd::Drop(id));
        }
    }
}
