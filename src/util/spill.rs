//! Bodies that stay in memory up to a threshold and spill to an anonymous
//! temporary file past it. The file is unlinked as soon as it is created, so
//! it disappears when closed, even if the process dies.

use std::fs::File;
use std::io::{self, Cursor, Read, Seek, SeekFrom};
use std::path::PathBuf;
/// Directory for spill files: `$TMPDIR` or `/tmp`.
pub fn spill_dir() -> PathBuf {
    std::env::temp_dir()
}

/// Create a read-write file that has no name any more. Its name while it
/// had one, `resumelb-….spill`, is what `lsof` and /proc show for it.
pub fn anonymous_file() -> io::Result<File> {
    let named = tempfile::Builder::new()
        .prefix("resumelb-")
        .suffix(".spill")
        .tempfile_in(spill_dir())?;
    Ok(named.into_file())
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

/// Buffered reads straight from the memory or the file's own buffer.
impl io::BufRead for BodyReader {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        match self {
            BodyReader::Memory(c) => c.fill_buf(),
            BodyReader::File(f, _) => f.fill_buf(),
        }
    }

    fn consume(&mut self, n: usize) {
        match self {
            BodyReader::Memory(c) => c.consume(n),
            BodyReader::File(f, _) => f.consume(n),
        }
    }
}

impl BodyReader {
    /// Reading it may wait on the disk.
    pub fn on_disk(&self) -> bool {
        matches!(self, BodyReader::File(..))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn spill_files_leave_no_name_behind() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = tempfile::tempfile_in(dir.path()).unwrap();
        f.write_all(&[7; 1000]).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let mut r = BodyReader::File(io::BufReader::new(f), 1000);
        r.rewind().unwrap();
        let mut back = Vec::new();
        r.read_to_end(&mut back).unwrap();
        assert_eq!(back, vec![7; 1000]);
    }
}
