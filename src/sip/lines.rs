//! The lines of a message head, read one way for the parser, the stream framer and the answer
//! to an unparsable request: line ends are CRLF or a bare LF, CRLFs before the start line are
//! skipped (RFC 3261 §7.5), the head ends at the first empty line, and a line starting with SP
//! or HTAB continues the header above it (RFC 3261 §7.3.1). Lines are offsets into the buffer;
//! nothing is copied unless a folded line is asked for joined.

use std::borrow::Cow;

use memchr::memchr;

use super::header::HeaderName;

/// Where the start line begins: after any CRLFs (or bare LFs) before it (RFC 3261 §7.5).
#[must_use]
pub fn skip_leading_line_ends(bytes: &[u8]) -> usize {
    let mut pos = 0;
    while let Some(rest) = bytes.get(pos..) {
        if rest.starts_with(b"\r\n") {
            pos += 2;
        } else if rest.starts_with(b"\n") {
            pos += 1;
        } else {
            break;
        }
    }
    pos
}

/// The end of the line starting at `from`: (offset of its CR or LF, offset after the LF), or
/// `None` when no LF follows. A CR only counts as part of the line end just before the LF.
#[must_use]
pub fn line_end(bytes: &[u8], from: usize) -> Option<(usize, usize)> {
    let lf = from + memchr(b'\n', bytes.get(from..)?)?;
    let end = if lf > from && bytes[lf - 1] == b'\r' {
        lf - 1
    } else {
        lf
    };
    Some((end, lf + 1))
}

fn is_fold(b: u8) -> bool {
    matches!(b, b' ' | b'\t')
}

/// One header line with the continuation lines that follow it, as offsets into the head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogicalLine {
    /// Where its first line starts.
    pub start: usize,
    /// Where its first line's text ends (before the line end).
    pub first_end: usize,
    /// Where the text of its last line ends: `first_end` when it is not folded.
    pub end: usize,
    /// Just after the line end of its last line.
    pub next: usize,
}

impl LogicalLine {
    #[must_use]
    pub fn is_folded(&self) -> bool {
        self.end != self.first_end
    }

    /// Whether it is a continuation line with no header above it (the first line of a head).
    #[must_use]
    pub fn is_orphan_continuation(&self, bytes: &[u8]) -> bool {
        is_fold(bytes[self.start])
    }

    /// The header name (trimmed, classified) and the offset of the colon when its first line
    /// has one: RFC 3261 §25.1 `HCOLON` allows no line end before the colon.
    #[must_use]
    pub fn name(&self, bytes: &[u8]) -> Option<(HeaderName, usize)> {
        let first = &bytes[self.start..self.first_end];
        let colon = memchr(b':', first)?;
        Some((
            HeaderName::classify(first[..colon].trim_ascii()),
            self.start + colon,
        ))
    }

    /// The text from `from` (an offset in its first line) to its end, each continuation line
    /// trimmed and joined by one SP (RFC 3261 §7.3.1: the fold is equivalent to a space); an
    /// empty continuation adds nothing. Borrowed when the line is not folded.
    #[must_use]
    pub fn joined<'b>(&self, bytes: &'b [u8], from: usize) -> Cow<'b, [u8]> {
        let first = &bytes[from..self.first_end];
        if !self.is_folded() {
            return Cow::Borrowed(first);
        }
        let mut out = first.to_vec();
        // From the first line's end: the first piece is that line end's CR (or nothing).
        for more in bytes[self.first_end..self.end]
            .split(|&b| b == b'\n')
            .skip(1)
        {
            let more = more.trim_ascii();
            if !more.is_empty() {
                out.push(b' ');
                out.extend_from_slice(more);
            }
        }
        Cow::Owned(out)
    }
}

/// The header lines from `from` (just after the start line) to the blank line that ends the
/// head. Iteration stops at the blank line or, with `HeaderLines::new`, at a line no LF ends;
/// [`HeaderLines::head_end`] then says which.
#[derive(Clone, Debug)]
pub struct HeaderLines<'b> {
    bytes: &'b [u8],
    pos: usize,
    /// Whether the end of `bytes` ends the head (and a last line without line end is a line).
    lenient_end: bool,
    /// (offset of the blank line, offset after it), once found.
    head_end: Option<(usize, usize)>,
    done: bool,
}

impl<'b> HeaderLines<'b> {
    /// For a whole head: a line without line end means the head is truncated.
    #[must_use]
    pub fn new(bytes: &'b [u8], from: usize) -> HeaderLines<'b> {
        HeaderLines {
            bytes,
            pos: from,
            lenient_end: false,
            head_end: None,
            done: false,
        }
    }

    /// For what there is of a head: the end of `bytes` ends the last line and the head (a
    /// trailing CR is taken for a line end cut short).
    #[must_use]
    pub fn to_end_of(bytes: &'b [u8], from: usize) -> HeaderLines<'b> {
        HeaderLines {
            lenient_end: true,
            ..HeaderLines::new(bytes, from)
        }
    }

    /// The blank line ending the head: (where it starts, where the body starts); `None` when
    /// iteration has not reached it or the head is truncated.
    #[must_use]
    pub fn head_end(&self) -> Option<(usize, usize)> {
        self.head_end
    }

    fn line(&self, from: usize) -> Option<(usize, usize)> {
        line_end(self.bytes, from).or_else(|| {
            let len = self.bytes.len();
            (self.lenient_end && from <= len).then(|| {
                let end = if from < len && self.bytes[len - 1] == b'\r' {
                    len - 1
                } else {
                    len
                };
                (end, len)
            })
        })
    }
}

impl Iterator for HeaderLines<'_> {
    type Item = LogicalLine;

    fn next(&mut self) -> Option<LogicalLine> {
        if self.done {
            return None;
        }
        let start = self.pos;
        let Some((first_end, mut next)) = self.line(start) else {
            self.done = true;
            return None;
        };
        if first_end == start {
            self.head_end = Some((start, next));
            self.done = true;
            return None;
        }
        let mut end = first_end;
        // A continuation without line end is left for the next call to find truncated.
        while self.bytes.get(next).copied().is_some_and(is_fold) {
            let Some((more_end, more_next)) = self.line(next) else {
                break;
            };
            (end, next) = (more_end, more_next);
        }
        self.pos = next;
        Some(LogicalLine {
            start,
            first_end,
            end,
            next,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each logical line as (first line, joined text), and where the head ended.
    type Scan = (Vec<(String, String)>, Option<(usize, usize)>);

    fn scan(head: &[u8], lenient: bool) -> Scan {
        let from = line_end(head, skip_leading_line_ends(head)).unwrap().1;
        let mut lines = if lenient {
            HeaderLines::to_end_of(head, from)
        } else {
            HeaderLines::new(head, from)
        };
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let found = lines
            .by_ref()
            .map(|l| {
                (
                    text(&head[l.start..l.first_end]),
                    text(&l.joined(head, l.start)),
                )
            })
            .collect();
        (found, lines.head_end())
    }

    fn pairs(lines: &[(&str, &str)]) -> Vec<(String, String)> {
        lines
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    }

    #[test]
    fn crlf_and_bare_lf_lines() {
        let head = b"\r\n\nOPTIONS sip:a@b SIP/2.0\r\nA: 1\nB: 2\r\n\r\nbody";
        let (lines, end) = scan(head, false);
        assert_eq!(lines, pairs(&[("A: 1", "A: 1"), ("B: 2", "B: 2")]));
        assert_eq!(end, Some((head.len() - 6, head.len() - 4)));
        let head = b"OPTIONS sip:a@b SIP/2.0\nA: 1\n\nbody";
        assert_eq!(scan(head, false).1, Some((29, 30)));
    }

    /// RFC 3261 §7.3.1: SP or HTAB starts a continuation, joined with one SP; an empty
    /// continuation adds nothing; a CR not before the LF is text.
    #[test]
    fn folded_lines_join() {
        let head = b"R sip:a SIP/2.0\r\nSubject: a\r\n  b \r\n\tc\r\nX: y\r\n \r\n\r\n";
        let (lines, end) = scan(head, false);
        assert_eq!(
            lines,
            pairs(&[("Subject: a", "Subject: a b c"), ("X: y", "X: y")])
        );
        assert!(end.is_some());
        let head = b"R sip:a SIP/2.0\r\nA: 1\r2\r\n\r\n";
        assert_eq!(scan(head, false).0, pairs(&[("A: 1\r2", "A: 1\r2")]));
    }

    #[test]
    fn continuation_first_is_an_orphan() {
        let head = b"R sip:a SIP/2.0\r\n\tlost\r\n more\r\nA: 1\r\n\r\n";
        let from = line_end(head, 0).unwrap().1;
        let lines: Vec<LogicalLine> = HeaderLines::new(head, from).collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].is_orphan_continuation(head));
        assert_eq!(&lines[0].joined(head, lines[0].start)[..], b"\tlost more");
        assert!(!lines[1].is_orphan_continuation(head));
        assert_eq!(
            lines[1].name(head),
            Some((HeaderName::Other, lines[1].start + 1))
        );
    }

    #[test]
    fn names_need_a_colon_on_the_first_line() {
        let head = b"R sip:a SIP/2.0\r\nl :\r\n 5\r\nContent-Length\r\n : 6\r\n\r\n";
        let from = line_end(head, 0).unwrap().1;
        let lines: Vec<LogicalLine> = HeaderLines::new(head, from).collect();
        let (name, colon) = lines[0].name(head).unwrap();
        assert_eq!(name, HeaderName::ContentLength);
        assert_eq!(&lines[0].joined(head, colon + 1)[..], b" 5");
        assert_eq!(lines[1].name(head), None);
    }

    /// Without a blank line the head is truncated, and a continuation without line end is not
    /// taken into the line above it; to the end of the data, the end is a line end.
    #[test]
    fn ends_of_data() {
        let head = b"R sip:a SIP/2.0\r\nA: 1\r\n 2";
        assert_eq!(scan(head, false), (pairs(&[("A: 1", "A: 1")]), None));
        assert_eq!(
            scan(head, true),
            (pairs(&[("A: 1", "A: 1 2")]), Some((head.len(), head.len())))
        );
        let head = b"R sip:a SIP/2.0\nB: 3\r";
        assert_eq!(scan(head, true).0, pairs(&[("B: 3", "B: 3")]));
        assert_eq!(scan(head, false).0, pairs(&[]));
    }
}
