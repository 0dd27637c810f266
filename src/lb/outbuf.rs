//! A client's pending output: memory up to a cap, then an unlinked
//! temporary file, so that a slow client never holds up a worker and never
//! makes the LB's memory grow. Bytes leave in the order they came.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;

use crate::util::spill::anonymous_file;

const REFILL: usize = 64 * 1024;

#[derive(Debug)]
struct Fifo {
    file: File,
    read_at: u64,
    write_at: u64,
}

/// Output waiting for a socket.
#[derive(Debug)]
pub struct OutBuf {
    mem: Vec<u8>,
    pos: usize,
    mem_cap: usize,
    file: Option<Fifo>,
    /// Bytes that went through a spill file, for metrics.
    pub spilled: u64,
}

impl OutBuf {
    pub fn new(mem_cap: usize) -> OutBuf {
        OutBuf {
            mem: Vec::new(),
            pos: 0,
            mem_cap,
            file: None,
            spilled: 0,
        }
    }

    /// Bytes waiting.
    pub fn pending(&self) -> u64 {
        let in_file = self.file.as_ref().map_or(0, |f| f.write_at - f.read_at);
        (self.mem.len() - self.pos) as u64 + in_file
    }

    pub fn is_empty(&self) -> bool {
        self.pending() == 0
    }

    pub fn is_spilled(&self) -> bool {
        self.file.is_some()
    }

    pub fn push(&mut self, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        if self.file.is_none() && self.mem.len() - self.pos + data.len() <= self.mem_cap {
            self.mem.extend_from_slice(data);
            return Ok(());
        }
        if self.file.is_none() {
            self.file = Some(Fifo {
                file: anonymous_file()?,
                read_at: 0,
                write_at: 0,
            });
        }
        let f = self.file.as_mut().expect("just made");
        f.file.write_all_at(data, f.write_at)?;
        f.write_at += data.len() as u64;
        self.spilled += data.len() as u64;
        Ok(())
    }

    /// Write as much as `w` takes. Returns the bytes written; stops at
    /// `WouldBlock` (not an error) or when everything is out.
    pub fn write_to(&mut self, w: &mut impl Write) -> io::Result<usize> {
        let mut total = 0;
        loop {
            if self.pos == self.mem.len() {
                self.mem.clear();
                self.pos = 0;
                if !self.refill()? {
                    return Ok(total);
                }
            }
            match w.write(&self.mem[self.pos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.pos += n;
                    total += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(total),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Move the next piece of the file into memory; false when there is none.
    fn refill(&mut self) -> io::Result<bool> {
        let Some(f) = self.file.as_mut() else {
            return Ok(false);
        };
        let n = (f.write_at - f.read_at).min(REFILL as u64) as usize;
        if n == 0 {
            // Drained: closing the file frees its space.
            self.file = None;
            return Ok(false);
        }
        self.mem.resize(n, 0);
        f.file.read_exact_at(&mut self.mem, f.read_at)?;
        f.read_at += n as u64;
        if f.read_at == f.write_at {
            self.file = None;
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that takes at most `n` bytes per call, then blocks.
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
    fn order_survives_spilling() {
        let mut ob = OutBuf::new(1000);
        let mut want = Vec::new();
        let mut sink = Trickle {
            got: Vec::new(),
            per_call: 777,
            calls_left: 0,
        };
        for i in 0..500u32 {
            let piece: Vec<u8> = (0..(i % 97 + 1)).map(|j| (i + j) as u8).collect();
            ob.push(&piece).unwrap();
            want.extend_from_slice(&piece);
            if i % 50 == 0 {
                sink.calls_left = 3;
                ob.write_to(&mut sink).unwrap();
            }
        }
        assert!(ob.spilled > 0);
        sink.calls_left = usize::MAX;
        ob.write_to(&mut sink).unwrap();
        assert!(ob.is_empty());
        assert!(!ob.is_spilled());
        assert_eq!(sink.got, want);
    }
}
