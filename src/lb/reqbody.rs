//! A request body the LB reads whole before a worker gets the request:
//! memory up to a threshold, then an unlinked temporary file kept by the
//! spill thread, so that the I/O thread never waits on the disk. Read back
//! piece by piece as the worker connection has room.

use super::spill::SpillIo;

/// Spill ids of request bodies have this bit; response spills use the bare
/// client id.
pub const BODY_BIT: u64 = 1 << 63;

/// The next piece of a body for the worker.
pub enum Piece {
    Data(Vec<u8>),
    /// Being read back from the spill file; it comes with `read_back`.
    Pending,
    Done,
}

pub struct ReqBody {
    io: SpillIo,
    id: u64,
    threshold: usize,
    mem: Vec<u8>,
    spilled: bool,
    len: u64,
    /// Bytes handed to the worker so far.
    sent: u64,
    reading: bool,
    ready: Option<Vec<u8>>,
}

impl ReqBody {
    /// `client_id` names the spill file (with [`BODY_BIT`]).
    pub fn new(io: SpillIo, client_id: u64, threshold: usize) -> ReqBody {
        ReqBody {
            io,
            id: client_id | BODY_BIT,
            threshold,
            mem: Vec::new(),
            spilled: false,
            len: 0,
            sent: 0,
            reading: false,
            ready: None,
        }
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn write(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        self.len += data.len() as u64;
        if !self.spilled && self.mem.len() + data.len() <= self.threshold {
            self.mem.extend_from_slice(data);
            return;
        }
        if !self.spilled {
            self.spilled = true;
            let held = std::mem::take(&mut self.mem);
            if !held.is_empty() {
                self.io.write(self.id, held);
            }
        }
        self.io.write(self.id, data.to_vec());
    }

    /// Up to `max` more bytes for the worker.
    pub fn next_piece(&mut self, max: usize) -> Piece {
        if self.sent >= self.len {
            return Piece::Done;
        }
        if !self.spilled {
            let start = self.sent as usize;
            let end = (start + max).min(self.mem.len());
            self.sent = end as u64;
            return Piece::Data(self.mem[start..end].to_vec());
        }
        if let Some(d) = self.ready.take() {
            self.sent += d.len() as u64;
            if d.is_empty() {
                // The file ended early: nothing more can come.
                self.sent = self.len;
            }
            return Piece::Data(d);
        }
        if !self.reading {
            self.reading = true;
            self.io.read(self.id, max);
        }
        Piece::Pending
    }

    /// Bytes read back from the spill file arrived.
    pub fn read_back(&mut self, data: Vec<u8>) {
        self.reading = false;
        self.ready = Some(data);
    }

    /// Start again from the first byte (a retry). Only bodies that were not
    /// spilled can: requests with bodies are never retried.
    pub fn rewind(&mut self) {
        if !self.spilled {
            self.sent = 0;
        }
    }
}

impl Drop for ReqBody {
    fn drop(&mut self) {
        if self.spilled {
            self.io.close(self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn spilled_body_comes_back_whole_through_the_spill_thread() {
        let poll = mio::Poll::new().unwrap();
        let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).unwrap());
        let (io, done) = SpillIo::start(waker).unwrap();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
        let mut body = ReqBody::new(io, 5, 1000);
        for piece in data.chunks(7000) {
            body.write(piece);
        }
        assert_eq!(body.len(), data.len() as u64);
        let mut got = Vec::new();
        let mut waits = 0;
        loop {
            match body.next_piece(64 * 1024) {
                Piece::Data(d) => got.extend(d),
                Piece::Pending => {
                    let r = done.recv_timeout(Duration::from_secs(5)).unwrap();
                    assert_eq!(r.id, 5 | BODY_BIT);
                    body.read_back(r.data.unwrap());
                    waits += 1;
                }
                Piece::Done => break,
            }
        }
        assert!(waits >= 5, "not read back in pieces: {waits}");
        assert_eq!(got, data);
    }

    #[test]
    fn small_body_stays_in_memory_and_rewinds() {
        let mut body = ReqBody::new(SpillIoForTest::io(), 1, 1000);
        body.write(b"hello");
        let Piece::Data(d) = body.next_piece(3) else {
            panic!()
        };
        assert_eq!(d, b"hel");
        body.rewind();
        let Piece::Data(d) = body.next_piece(100) else {
            panic!()
        };
        assert_eq!(d, b"hello");
        assert!(matches!(body.next_piece(100), Piece::Done));
    }

    struct SpillIoForTest;

    impl SpillIoForTest {
        fn io() -> SpillIo {
            let poll = mio::Poll::new().unwrap();
            let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).unwrap());
            SpillIo::start(waker).unwrap().0
        }
    }
}
