//! A connection's write buffer: frames are appended, the socket takes what
//! it can until it would block, and the written front is dropped in large
//! steps rather than on every write.

use std::io::{self, Write};

/// Bytes written before the buffer's front is compacted away.
const COMPACT: usize = 64 * 1024;

#[derive(Debug, Default)]
pub struct WriteBuf {
    buf: Vec<u8>,
    pos: usize,
}

impl WriteBuf {
    pub fn new() -> WriteBuf {
        WriteBuf::default()
    }

    /// Bytes not yet written.
    pub fn unsent(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.unsent() == 0
    }

    /// The buffer to append frames to.
    pub fn buf(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// Write until everything is out or the socket would block; returns
    /// the bytes written.
    pub fn flush_to(&mut self, w: &mut impl Write) -> io::Result<usize> {
        let mut total = 0;
        loop {
            if self.pos == self.buf.len() {
                self.buf.clear();
                self.pos = 0;
                return Ok(total);
            }
            match w.write(&self.buf[self.pos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.pos += n;
                    total += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if self.pos >= COMPACT {
                        self.buf.drain(..self.pos);
                        self.pos = 0;
                    }
                    return Ok(total);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Sink {
        got: Vec<u8>,
        budget: usize,
    }

    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            if self.budget == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = b.len().min(self.budget).min(1000);
            self.budget -= n;
            self.got.extend_from_slice(&b[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn writes_in_order_across_would_block() {
        let mut wb = WriteBuf::new();
        let data: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        wb.buf().extend_from_slice(&data[..150_000]);
        let mut sink = Sink {
            got: Vec::new(),
            budget: 100_000,
        };
        assert_eq!(wb.flush_to(&mut sink).unwrap(), 100_000);
        assert_eq!(wb.unsent(), 50_000);
        wb.buf().extend_from_slice(&data[150_000..]);
        sink.budget = usize::MAX;
        wb.flush_to(&mut sink).unwrap();
        assert!(wb.is_empty());
        assert_eq!(sink.got, data);
    }
}
