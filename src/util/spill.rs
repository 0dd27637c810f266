//! Bodies that stay in memory up to a threshold and spill to an anonymous
//! temporary file past it. The file is unlinked as soon as it is created, so
//! it disappears when closed, even if the process dies.

use std::fs::File;
use std::io::{self, Cursor, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Directory for spill files: `$TMPDIR` or `/tmp`.
pub fn spill_dir() -> PathBuf {
    std::env::temp_dir()
}

/// Create a read-write file that has no name any more.
pub fn anonymous_file() -> io::Result<File> {
    let dir = spill_dir();
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!("resumelb-{}-{n}.spill", std::process::id()));
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(f) => {
                std::fs::remove_file(&path)?;
                return Ok(f);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// A body being received: memory first, a temporary file past `threshold`.
#[derive(Debug)]
pub struct SpillBuffer {
    threshold: usize,
    mem: Vec<u8>,
    file: Option<File>,
    len: u64,
}

impl SpillBuffer {
    pub fn new(threshold: usize) -> SpillBuffer {
        SpillBuffer {
            threshold,
            mem: Vec::new(),
            file: None,
            len: 0,
        }
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn is_spilled(&self) -> bool {
        self.file.is_some()
    }

    pub fn write(&mut self, data: &[u8]) -> io::Result<()> {
        if self.file.is_none() && self.mem.len() + data.len() > self.threshold {
            let mut f = anonymous_file()?;
            f.write_all(&self.mem)?;
            self.mem = Vec::new();
            self.file = Some(f);
        }
        match &mut self.file {
            Some(f) => f.write_all(data)?,
            None => self.mem.extend_from_slice(data),
        }
        self.len += data.len() as u64;
        Ok(())
    }

    /// The whole body, from its start.
    pub fn into_reader(self) -> io::Result<BodyReader> {
        Ok(match self.file {
            Some(mut f) => {
                f.seek(SeekFrom::Start(0))?;
                BodyReader::File(io::BufReader::with_capacity(64 * 1024, f), self.len)
            }
            None => BodyReader::Memory(Cursor::new(self.mem)),
        })
    }
}

/// A request body for an application to read.
#[derive(Debug)]
pub enum BodyReader {
    Memory(Cursor<Vec<u8>>),
    File(io::BufReader<File>, u64),
}

impl BodyReader {
    pub fn empty() -> BodyReader {
        BodyReader::Memory(Cursor::new(Vec::new()))
    }

    /// The body's length in bytes.
    pub fn len(&self) -> u64 {
        match self {
            BodyReader::Memory(c) => c.get_ref().len() as u64,
            BodyReader::File(_, n) => *n,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Back to the start, to send the body again.
    pub fn rewind(&mut self) -> io::Result<()> {
        match self {
            BodyReader::Memory(c) => c.set_position(0),
            BodyReader::File(f, _) => {
                f.seek(SeekFrom::Start(0))?;
            }
        }
        Ok(())
    }
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            BodyReader::Memory(c) => c.read(buf),
            BodyReader::File(f, _) => f.read(buf),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_in_memory_below_threshold_and_spills_past_it() {
        let mut b = SpillBuffer::new(10);
        b.write(b"hello").unwrap();
        b.write(b"world").unwrap();
        assert!(!b.is_spilled());
        b.write(b"!").unwrap();
        assert!(b.is_spilled());
        assert_eq!(b.len(), 11);
        let mut r = b.into_reader().unwrap();
        assert_eq!(r.len(), 11);
        let mut s = String::new();
        r.read_to_string(&mut s).unwrap();
        assert_eq!(s, "helloworld!");
    }

    #[test]
    fn spill_files_leave_no_name_behind() {
        let before = count_spill_files();
        let mut b = SpillBuffer::new(0);
        b.write(&[7; 1000]).unwrap();
        assert!(b.is_spilled());
        assert_eq!(count_spill_files(), before);
    }

    fn count_spill_files() -> usize {
        let prefix = format!("resumelb-{}-", std::process::id());
        std::fs::read_dir(spill_dir())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            })
            .count()
    }
}
