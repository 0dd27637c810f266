//! The LB's spill thread: response bytes for slow clients past the memory
//! cap go to unlinked temporary files that this thread writes and reads, so
//! that the I/O thread never waits on the disk (docs/ARCHITECTURE.md,
//! "Threads") unless the disk falls far behind. Each file is named by an id
//! (a client's connection id, with a high bit for request bodies); commands
//! for one id are handled in the order they were sent.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use crossbeam_channel::{bounded, unbounded, Receiver, Sender};

use crate::util::spill::anonymous_file;

/// Commands queued for the spill thread before the I/O thread waits.
const QUEUE: usize = 256;

enum Cmd {
    Write(u64, Vec<u8>),
    Read(u64, usize),
    Close(u64),
}

/// Bytes read back for a client.
pub struct SpillRead {
    pub id: u64,
    pub data: io::Result<Vec<u8>>,
}

/// The I/O thread's handle on the spill thread.
#[derive(Clone)]
pub struct SpillIo {
    tx: Sender<Cmd>,
}

struct Fifo {
    file: File,
    read_at: u64,
    write_at: u64,
}

impl SpillIo {
    /// Start the thread; read-backs arrive on the returned channel, with a
    /// wake of the I/O loop.
    pub fn start(waker: Arc<mio::Waker>) -> io::Result<(SpillIo, Receiver<SpillRead>)> {
        // Bounded: if the disk falls this far behind (commands carry at
        // most 64 KiB … a few hundred KiB each), the I/O thread waits rather
        // than letting memory grow.
        let (tx, rx) = bounded::<Cmd>(QUEUE);
        let (done_tx, done_rx) = unbounded();
        std::thread::Builder::new()
            .name("lb-spill".into())
            .spawn(move || run(rx, done_tx, waker))?;
        Ok((SpillIo { tx }, done_rx))
    }

    pub(super) fn write(&self, id: u64, data: Vec<u8>) {
        let _ = self.tx.send(Cmd::Write(id, data));
    }

    pub(super) fn read(&self, id: u64, max: usize) {
        let _ = self.tx.send(Cmd::Read(id, max));
    }

    pub(super) fn close(&self, id: u64) {
        let _ = self.tx.send(Cmd::Close(id));
    }
}

fn run(rx: Receiver<Cmd>, done: Sender<SpillRead>, waker: Arc<mio::Waker>) {
    let mut files: HashMap<u64, Result<Fifo, io::ErrorKind>> = HashMap::new();
    while let Ok(cmd) = rx.recv() {
        match cmd {
            Cmd::Write(id, data) => {
                let entry = files.entry(id).or_insert_with(|| {
                    anonymous_file()
                        .map(|file| Fifo {
                            file,
                            read_at: 0,
                            write_at: 0,
                        })
                        .map_err(|e| {
                            log::error!("cannot create a spill file: {e}");
                            e.kind()
                        })
                });
                if let Ok(f) = entry {
                    match f.file.write_all_at(&data, f.write_at) {
                        Ok(()) => f.write_at += data.len() as u64,
                        Err(e) => {
                            log::error!("cannot write a spill file: {e}");
                            *entry = Err(e.kind());
                        }
                    }
                }
            }
            Cmd::Read(id, max) => {
                let data = match files.get_mut(&id) {
                    Some(Ok(f)) => {
                        let n = (f.write_at - f.read_at).min(max as u64) as usize;
                        let mut buf = vec![0; n];
                        f.file.read_exact_at(&mut buf, f.read_at).map(|()| {
                            f.read_at += n as u64;
                            buf
                        })
                    }
                    Some(Err(kind)) => Err(io::Error::from(*kind)),
                    None => Err(io::Error::new(io::ErrorKind::NotFound, "no spill file")),
                };
                if done.send(SpillRead { id, data }).is_err() {
                    return;
                }
                let _ = waker.wake();
            }
            Cmd::Close(id) => {
                files.remove(&id);
            }
        }
    }
}
