//! A client's pending output: memory up to a cap, then an unlinked
//! temporary file kept by the spill thread, so that a slow client never
//! holds up a worker, never makes the LB's memory grow, and never makes the
//! I/O thread wait on the disk. Bytes leave in the order they came.

use std::io::{self, Write};

use super::spill::SpillIo;

/// Bytes asked back from the spill file at a time.
const REFILL: usize = 64 * 1024;

#[derive(Debug)]
struct Spill {
    /// Bytes in the file not yet read back (those being read included).
    in_file: u64,
    /// A read-back is on its way.
    reading: bool,
}

/// Output waiting for a socket.
pub struct OutBuf {
    mem: Vec<u8>,
    pos: usize,
    mem_cap: usize,
    io: SpillIo,
    /// The client's id, which names its spill file.
    id: u64,
    spill: Option<Spill>,
    /// Bytes that went through a spill file, for metrics.
    pub spilled: u64,
    /// Bytes pushed and bytes written since the start (for the access log:
    /// a response is delivered once `written` passes its end).
    pub pushed: u64,
    pub written: u64,
}

impl OutBuf {
    pub fn new(mem_cap: usize, io: SpillIo, id: u64) -> OutBuf {
        OutBuf {
            mem: Vec::new(),
            pos: 0,
            mem_cap,
            io,
            id,
            spill: None,
            spilled: 0,
            pushed: 0,
            written: 0,
        }
    }

    /// Bytes waiting.
    pub fn pending(&self) -> u64 {
        (self.mem.len() - self.pos) as u64 + self.spill.as_ref().map_or(0, |s| s.in_file)
    }

    pub fn is_empty(&self) -> bool {
        self.pending() == 0
    }

    #[cfg(test)]
    pub fn is_spilled(&self) -> bool {
        self.spill.is_some()
    }

    pub fn push(&mut self, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        self.pushed += data.len() as u64;
        if self.spill.is_none() && self.mem.len() - self.pos + data.len() <= self.mem_cap {
            self.mem.extend_from_slice(data);
            return Ok(());
        }
        let s = self.spill.get_or_insert(Spill {
            in_file: 0,
            reading: false,
        });
        self.io.write(self.id, data.to_vec());
        s.in_file += data.len() as u64;
        self.spilled += data.len() as u64;
        Ok(())
    }

    /// Write as much as `w` takes. Returns the bytes written; stops at
    /// `WouldBlock` (not an error), when everything is out, or when the next
    /// bytes are still being read back from the spill file (they come with
    /// [`OutBuf::read_back`]).
    pub fn write_to(&mut self, w: &mut impl Write) -> io::Result<usize> {
        let mut total = 0;
        loop {
            if self.pos == self.mem.len() {
                self.mem.clear();
                self.pos = 0;
                if let Some(s) = self.spill.as_mut() {
                    if s.in_file == 0 && !s.reading {
                        // Drained: closing the file frees its space.
                        self.spill = None;
                        self.io.close(self.id);
                    } else if !s.reading {
                        s.reading = true;
                        self.io.read(self.id, REFILL);
                    }
                }
                return Ok(total);
            }
            match w.write(&self.mem[self.pos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.pos += n;
                    total += n;
                    self.written += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(total),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Bytes read back from the spill file arrived.
    pub fn read_back(&mut self, data: Vec<u8>) {
        if let Some(s) = self.spill.as_mut() {
            s.reading = false;
            s.in_file = s.in_file.saturating_sub(data.len() as u64);
            if self.pos == self.mem.len() {
                self.mem.clear();
                self.pos = 0;
            }
            self.mem.extend_from_slice(&data);
        }
    }
}

impl Drop for OutBuf {
    fn drop(&mut self) {
        if self.spill.is_some() {
            self.io.close(self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    /// A writer that takes at most `per_call` bytes per call, then blocks.
    struct Trickle {
        got: Vec<u8>,
        per_call: usize,
        calls_left: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.calls_left == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.calls_left -= 1;
            let n = buf.len().min(self.per_call);
            self.got.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn order_survives_spilling_through_the_spill_thread() {
        let poll = mio::Poll::new().unwrap();
        let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).unwrap());
        let (io, done) = SpillIo::start(waker).unwrap();
        let mut ob = OutBuf::new(1000, io, 7);
        let mut want = Vec::new();
        let mut sink = Trickle {
            got: Vec::new(),
            per_call: 777,
            calls_left: 0,
        };
        // Write, and feed read-backs in, until everything is out.
        let drain = |ob: &mut OutBuf, sink: &mut Trickle, calls: usize| {
            sink.calls_left = calls;
            loop {
                ob.write_to(sink).unwrap();
                if sink.calls_left == 0 || !ob.is_spilled() || ob.pending() == 0 {
                    break;
                }
                let r = done.recv_timeout(Duration::from_secs(5)).unwrap();
                assert_eq!(r.id, 7);
                ob.read_back(r.data.unwrap());
            }
        };
        for i in 0..500u32 {
            let piece: Vec<u8> = (0..(i % 97 + 1)).map(|j| (i + j) as u8).collect();
            ob.push(&piece).unwrap();
            want.extend_from_slice(&piece);
            if i % 50 == 0 {
                drain(&mut ob, &mut sink, 3);
            }
        }
        assert!(ob.spilled > 0);
        drain(&mut ob, &mut sink, usize::MAX);
        ob.write_to(&mut sink).unwrap();
        assert!(ob.is_empty());
        assert!(!ob.is_spilled());
        assert_eq!(sink.got, want);
    }
}
