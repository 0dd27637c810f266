//! Incremental decoder for chunked request bodies (RFC 9112 §7.1), strict:
//! sizes are hex digits only (at most 15), every line ends in CRLF, chunk
//! extensions are skipped, trailers are read and dropped.

use super::HttpError;

/// Longest chunk-size line (size, extensions) or trailer line accepted.
const MAX_LINE: usize = 4096;
/// Most hex digits in a chunk size (15 keeps it below 2^60).
const MAX_DIGITS: usize = 15;
/// Total bytes of trailers accepted.
const MAX_TRAILERS: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Size,
    Data(u64),
    DataCr,
    DataLf,
    Trailer,
    Done,
}

/// Decodes a chunked body fed in arbitrary pieces.
#[derive(Debug)]
pub struct ChunkedDecoder {
    state: State,
    line: Vec<u8>,
    trailer_bytes: usize,
}

impl Default for ChunkedDecoder {
    fn default() -> ChunkedDecoder {
        ChunkedDecoder::new()
    }
}

fn parse_size(line: &[u8]) -> Result<u64, HttpError> {
    let size_part = match line.iter().position(|&b| b == b';') {
        Some(i) => &line[..i],
        None => line,
    };
    // Whitespace before extensions (BWS) is tolerated; inside digits it is not.
    let digits = size_part
        .strip_suffix(b" ")
        .unwrap_or(size_part)
        .trim_ascii_end();
    if digits.is_empty() || digits.len() > MAX_DIGITS {
        return Err(HttpError::bad("bad chunk size"));
    }
    let mut n: u64 = 0;
    for &d in digits {
        let v = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            b'A'..=b'F' => d - b'A' + 10,
            _ => return Err(HttpError::bad("bad chunk size")),
        };
        n = n * 16 + u64::from(v);
    }
    if line.iter().any(|&b| b == 0 || b == b'\r' || b == b'\n') {
        return Err(HttpError::bad("bad chunk extension"));
    }
    Ok(n)
}

impl ChunkedDecoder {
    pub fn new() -> ChunkedDecoder {
        ChunkedDecoder {
            state: State::Size,
            line: Vec::new(),
            trailer_bytes: 0,
        }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Collect a CRLF-terminated line; `Some(())` when `self.line` holds a
    /// whole one (without CRLF).
    fn line_byte(&mut self, b: u8) -> Result<Option<()>, HttpError> {
        if self.line.last() == Some(&b'\r') {
            if b != b'\n' {
                return Err(HttpError::bad("bare CR in chunked body"));
            }
            self.line.pop();
            return Ok(Some(()));
        }
        if b == b'\n' {
            return Err(HttpError::bad("chunk line not ended by CRLF"));
        }
        if self.line.len() >= MAX_LINE {
            return Err(HttpError::bad("chunk line too long"));
        }
        self.line.push(b);
        Ok(None)
    }

    /// Feed bytes; body data goes to `out`. Returns how many input bytes
    /// were used: all of them, or fewer when the body ended (the rest
    /// belongs to the next request).
    pub fn feed(&mut self, input: &[u8], out: &mut dyn FnMut(&[u8])) -> Result<usize, HttpError> {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                State::Done => return Ok(i),
                State::Size => {
                    let b = input[i];
                    i += 1;
                    if self.line_byte(b)?.is_some() {
                        let n = parse_size(&self.line)?;
                        self.line.clear();
                        self.state = if n == 0 {
                            State::Trailer
                        } else {
                            State::Data(n)
                        };
                    }
                }
                State::Data(left) => {
                    let take = (input.len() - i).min(usize::try_from(left).unwrap_or(usize::MAX));
                    out(&input[i..i + take]);
                    i += take;
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        State::DataCr
                    } else {
                        State::Data(left)
                    };
                }
                State::DataCr => {
                    if input[i] != b'\r' {
                        return Err(HttpError::bad("chunk data not followed by CRLF"));
                    }
                    i += 1;
                    self.state = State::DataLf;
                }
                State::DataLf => {
                    if input[i] != b'\n' {
                        return Err(HttpError::bad("chunk data not followed by CRLF"));
                    }
                    i += 1;
                    self.state = State::Size;
                }
                State::Trailer => {
                    let b = input[i];
                    i += 1;
                    self.trailer_bytes += 1;
                    if self.trailer_bytes > MAX_TRAILERS {
                        return Err(HttpError {
                            status: 431,
                            why: "trailers too large",
                        });
                    }
                    if self.line_byte(b)?.is_some() {
                        if self.line.is_empty() {
                            self.state = State::Done;
                            return Ok(i);
                        }
                        let ok = self.line.iter().position(|&c| c == b':').is_some_and(|p| {
                            p > 0 && !self.line[..p].iter().any(|c| c.is_ascii_whitespace())
                        }) && !self.line.contains(&0);
                        if !ok {
                            return Err(HttpError::bad("bad trailer field"));
                        }
                        self.line.clear();
                    }
                }
            }
        }
        Ok(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8], step: usize) -> Result<(Vec<u8>, usize), HttpError> {
        let mut d = ChunkedDecoder::new();
        let mut body = Vec::new();
        let mut used = 0;
        for piece in input.chunks(step.max(1)) {
            used += d.feed(piece, &mut |b| body.extend_from_slice(b))?;
            if d.is_done() {
                break;
            }
        }
        assert!(d.is_done(), "not done");
        Ok((body, used))
    }

    #[test]
    fn decodes_in_any_split() {
        let input = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        for step in [1, 2, 3, 7, 100] {
            let (body, used) = decode_all(input, step).unwrap();
            assert_eq!(body, b"hello world");
            assert_eq!(&input[used..], b"NEXT", "step {step}");
        }
    }

    #[test]
    fn strictness() {
        let cases: &[&[u8]] = &[
            b"g\r\n",                    // not hex
            b"-1\r\n",                   // sign
            b" 5\r\nhello\r\n0\r\n\r\n", // leading space
            b"0x5\r\n",                  // 0x prefix
            b"1000000000000000\r\n",     // 16 digits
            b"5\nhello\r\n0\r\n\r\n",    // bare LF
            b"5\r\nhelloX\r\n",          // data not followed by CRLF
            b"5\r\nhello\r\n0\r\nbad trailer\r\n\r\n",
            b"5\rx", // bare CR
            b"\r\n", // empty size
        ];
        for c in cases {
            let mut d = ChunkedDecoder::new();
            let r = d.feed(c, &mut |_| {});
            assert!(r.is_err(), "{:?} accepted", String::from_utf8_lossy(c));
        }
    }

    #[test]
    fn big_sizes_do_not_overflow() {
        let mut d = ChunkedDecoder::new();
        d.feed(b"fffffffffffffff\r\nabc", &mut |_| {}).unwrap();
        assert!(!d.is_done());
    }
}
