//! Bencode, the dictionary format of rtpengine's ng control protocol: byte strings
//! (`4:spam`), integers (`i42e`), lists (`l…e`) and dictionaries (`d…e`, byte-string keys).
//! Both ways are bounded: nesting at most [`MAX_DEPTH`], a document at most [`MAX_LEN`] bytes,
//! so neither a hostile answer nor a runaway request can exhaust the stack or a datagram.
//! Keys are written sorted, as bencode requires; on reading any order is taken, because
//! rtpengine's own writer does not sort (its ng protocol documentation says so).

use std::collections::BTreeMap;

use bytes::Bytes;
use thiserror::Error;

/// Lists and dictionaries nested deeper than this are refused; ng nests three levels at most
/// (the statistics a `delete` answer carries: tags, their medias, their streams).
pub const MAX_DEPTH: usize = 16;
/// The longest document: a UDP datagram's payload cannot be longer.
pub const MAX_LEN: usize = 65_535;

/// A dictionary: sorted by key, which is the order bencode writes it in.
pub type Dict = BTreeMap<Bytes, Value>;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Bytes(Bytes),
    Int(i64),
    List(Vec<Value>),
    Dict(Dict),
}

#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum BencodeError {
    #[error("the document ends inside a value")]
    Truncated,
    #[error("byte {at}: {byte:#04x} starts no value")]
    Unexpected { at: usize, byte: u8 },
    #[error("byte {0}: not a bencode integer")]
    BadInteger(usize),
    #[error("byte {0}: not a byte string length")]
    BadLength(usize),
    #[error("byte {0}: a dictionary key that is not a byte string")]
    KeyNotBytes(usize),
    #[error("byte {0}: a dictionary key given twice")]
    DuplicateKey(usize),
    #[error("byte {0}: more after the value")]
    Trailing(usize),
    #[error("nested deeper than {MAX_DEPTH} lists and dictionaries")]
    TooDeep,
    #[error("longer than {MAX_LEN} bytes")]
    TooLong,
}

impl Value {
    #[must_use]
    pub fn as_bytes(&self) -> Option<&Bytes> {
        match self {
            Value::Bytes(bytes) => Some(bytes),
            _ => None,
        }
    }

    #[must_use]
    pub fn as_list(&self) -> Option<&[Value]> {
        match self {
            Value::List(list) => Some(list),
            _ => None,
        }
    }
}

impl From<&'static str> for Value {
    fn from(text: &'static str) -> Value {
        Value::Bytes(Bytes::from_static(text.as_bytes()))
    }
}

impl From<Bytes> for Value {
    fn from(bytes: Bytes) -> Value {
        Value::Bytes(bytes)
    }
}

impl From<i64> for Value {
    fn from(n: i64) -> Value {
        Value::Int(n)
    }
}

/// Appends `value` to `out`.
///
/// # Errors
/// `value` nests deeper than [`MAX_DEPTH`], or what it appends is longer than [`MAX_LEN`]
/// (`out` then holds part of it).
pub fn encode(value: &Value, out: &mut Vec<u8>) -> Result<(), BencodeError> {
    let start = out.len();
    write(value, 0, out)?;
    if out.len() - start > MAX_LEN {
        return Err(BencodeError::TooLong);
    }
    Ok(())
}

fn write(value: &Value, depth: usize, out: &mut Vec<u8>) -> Result<(), BencodeError> {
    match value {
        Value::Bytes(bytes) => write_bytes(bytes, out),
        Value::Int(n) => {
            out.push(b'i');
            out.extend_from_slice(n.to_string().as_bytes());
            out.push(b'e');
        }
        Value::List(items) => {
            let depth = deeper(depth)?;
            out.push(b'l');
            for item in items {
                write(item, depth, out)?;
            }
            out.push(b'e');
        }
        Value::Dict(dict) => {
            let depth = deeper(depth)?;
            out.push(b'd');
            for (key, item) in dict {
                write_bytes(key, out);
                write(item, depth, out)?;
            }
            out.push(b'e');
        }
    }
    Ok(())
}

fn write_bytes(bytes: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(bytes.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(bytes);
}

fn deeper(depth: usize) -> Result<usize, BencodeError> {
    if depth >= MAX_DEPTH {
        return Err(BencodeError::TooDeep);
    }
    Ok(depth + 1)
}

/// The one value `input` holds; its byte strings share `input`'s buffer.
///
/// # Errors
/// `input` is not exactly one well-formed value, or breaks a bound.
pub fn decode(input: &Bytes) -> Result<Value, BencodeError> {
    if input.len() > MAX_LEN {
        return Err(BencodeError::TooLong);
    }
    let mut reader = Reader { input, at: 0 };
    let value = reader.value(0)?;
    if reader.at != input.len() {
        return Err(BencodeError::Trailing(reader.at));
    }
    Ok(value)
}

struct Reader<'a> {
    input: &'a Bytes,
    at: usize,
}

impl Reader<'_> {
    fn peek(&self) -> Result<u8, BencodeError> {
        self.input
            .get(self.at)
            .copied()
            .ok_or(BencodeError::Truncated)
    }

    fn value(&mut self, depth: usize) -> Result<Value, BencodeError> {
        match self.peek()? {
            b'i' => {
                self.at += 1;
                let n = self
                    .integer(b'e')
                    .ok_or(BencodeError::BadInteger(self.at))?;
                Ok(Value::Int(n))
            }
            b'l' => {
                let depth = deeper(depth)?;
                self.at += 1;
                let mut items = Vec::new();
                while self.peek()? != b'e' {
                    items.push(self.value(depth)?);
                }
                self.at += 1;
                Ok(Value::List(items))
            }
            b'd' => {
                let depth = deeper(depth)?;
                self.at += 1;
                let mut dict = Dict::new();
                while self.peek()? != b'e' {
                    let key_at = self.at;
                    if !self.peek()?.is_ascii_digit() {
                        return Err(BencodeError::KeyNotBytes(key_at));
                    }
                    let key = self.bytes()?;
                    let item = self.value(depth)?;
                    if dict.insert(key, item).is_some() {
                        return Err(BencodeError::DuplicateKey(key_at));
                    }
                }
                self.at += 1;
                Ok(Value::Dict(dict))
            }
            b'0'..=b'9' => Ok(Value::Bytes(self.bytes()?)),
            byte => Err(BencodeError::Unexpected { at: self.at, byte }),
        }
    }

    /// `LENGTH:BYTES`.
    fn bytes(&mut self) -> Result<Bytes, BencodeError> {
        let length_at = self.at;
        let len = self
            .integer(b':')
            .and_then(|n| usize::try_from(n).ok())
            .ok_or(BencodeError::BadLength(length_at))?;
        let end = self
            .at
            .checked_add(len)
            .filter(|&end| end <= self.input.len())
            .ok_or(BencodeError::Truncated)?;
        let bytes = self.input.slice(self.at..end);
        self.at = end;
        Ok(bytes)
    }

    /// A decimal integer up to `end` (consumed): no leading zeros, no `-0`, no overflow, as
    /// bencode's one spelling of each number requires.
    fn integer(&mut self, end: u8) -> Option<i64> {
        let rest = self.input.get(self.at..)?;
        // No i64 is longer ("-9223372036854775808"): a long run of digits fails here, unread.
        let len = rest.iter().take(21).position(|&b| b == end)?;
        let text = &rest[..len];
        let digits = text.strip_prefix(b"-").unwrap_or(text);
        let canonical = match digits {
            [] => false,
            [b'0'] => digits.len() == text.len(),
            [b'0', ..] => false,
            _ => digits.iter().all(u8::is_ascii_digit),
        };
        if !canonical {
            return None;
        }
        let n = std::str::from_utf8(text).ok()?.parse().ok()?;
        self.at += len + 1;
        Some(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decoded(text: &'static [u8]) -> Result<Value, BencodeError> {
        decode(&Bytes::from_static(text))
    }

    fn encoded(value: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        encode(value, &mut out).unwrap();
        out
    }

    fn dict<const N: usize>(entries: [(&'static str, Value); N]) -> Value {
        Value::Dict(
            entries
                .into_iter()
                .map(|(k, v)| (Bytes::from_static(k.as_bytes()), v))
                .collect(),
        )
    }

    #[test]
    fn encodes_each_kind() {
        assert_eq!(encoded(&"spam".into()), b"4:spam");
        assert_eq!(encoded(&"".into()), b"0:");
        assert_eq!(encoded(&Value::Int(0)), b"i0e");
        assert_eq!(encoded(&Value::Int(-42)), b"i-42e");
        assert_eq!(
            encoded(&Value::List(vec!["a".into(), Value::Int(1)])),
            b"l1:ai1ee"
        );
        assert_eq!(encoded(&dict([])), b"de");
    }

    #[test]
    fn dictionary_keys_are_written_sorted() {
        let value = dict([
            ("sdp", "v=0".into()),
            ("command", "offer".into()),
            ("call-id", "x".into()),
        ]);
        assert_eq!(encoded(&value), b"d7:call-id1:x7:command5:offer3:sdp3:v=0e");
    }

    #[test]
    fn decodes_an_ng_answer() {
        let value = decoded(b"d6:result2:ok3:sdp3:v=05:callsl1:a1:bee").unwrap();
        let expected = dict([
            ("result", "ok".into()),
            ("sdp", "v=0".into()),
            ("calls", Value::List(vec!["a".into(), "b".into()])),
        ]);
        assert_eq!(value, expected);
    }

    #[test]
    fn decodes_unsorted_keys_as_rtpengine_writes_them() {
        let value = decoded(b"d1:bi2e1:ai1ee").unwrap();
        assert_eq!(value, dict([("a", Value::Int(1)), ("b", Value::Int(2))]));
    }

    #[test]
    fn integers_reach_both_ends_of_i64() {
        assert_eq!(decoded(b"i-9223372036854775808e"), Ok(Value::Int(i64::MIN)));
        assert_eq!(decoded(b"i9223372036854775807e"), Ok(Value::Int(i64::MAX)));
        assert_eq!(
            decoded(b"i9223372036854775808e"),
            Err(BencodeError::BadInteger(1))
        );
        assert_eq!(
            decoded(b"i000000000000000000000000000001e"),
            Err(BencodeError::BadInteger(1))
        );
    }

    #[test]
    fn decoded_strings_are_binary_safe() {
        let value = decoded(b"3:\0\xff:").unwrap();
        assert_eq!(value, Value::Bytes(Bytes::from_static(b"\0\xff:")));
    }

    #[test]
    fn refuses_malformed_documents() {
        use BencodeError::*;
        let cases: &[(&[u8], BencodeError)] = &[
            (b"", Truncated),
            (b"4:abc", Truncated),
            (b"l1:a", Truncated),
            (b"d1:a", Truncated),
            (b"i12", BadInteger(1)),
            (b"ie", BadInteger(1)),
            (b"i-e", BadInteger(1)),
            (b"i-0e", BadInteger(1)),
            (b"i03e", BadInteger(1)),
            (b"i1x2e", BadInteger(1)),
            (b"i99999999999999999999e", BadInteger(1)),
            (b"03:abc", BadLength(0)),
            (b"4x:abcd", BadLength(0)),
            (b"99999999999999999999:a", BadLength(0)),
            (b"x", Unexpected { at: 0, byte: b'x' }),
            (b"l-1e", Unexpected { at: 1, byte: b'-' }),
            (b"di1ei2ee", KeyNotBytes(1)),
            (b"d1:ai1e1:ai2ee", DuplicateKey(7)),
            (b"i1ei2e", Trailing(3)),
            (b"4:spam ", Trailing(6)),
        ];
        for (input, error) in cases {
            let got = decode(&Bytes::copy_from_slice(input));
            assert_eq!(
                got.as_ref(),
                Err(error),
                "{}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn nesting_is_bounded_both_ways() {
        let at_limit = [&b"l".repeat(MAX_DEPTH)[..], &b"e".repeat(MAX_DEPTH)[..]].concat();
        assert!(decode(&Bytes::from(at_limit)).is_ok());
        let over = [
            &b"l".repeat(MAX_DEPTH + 1)[..],
            &b"e".repeat(MAX_DEPTH + 1)[..],
        ]
        .concat();
        assert_eq!(decode(&Bytes::from(over)), Err(BencodeError::TooDeep));
        // A hostile answer of nothing but openings fails on depth, not on the stack.
        let openings = Bytes::from(b"l".repeat(MAX_LEN));
        assert_eq!(decode(&openings), Err(BencodeError::TooDeep));

        let mut deep = Value::List(Vec::new());
        for _ in 0..MAX_DEPTH {
            deep = Value::List(vec![deep]);
        }
        assert_eq!(encode(&deep, &mut Vec::new()), Err(BencodeError::TooDeep));
    }

    #[test]
    fn length_is_bounded_both_ways() {
        let long = Value::Bytes(Bytes::from(vec![b'x'; MAX_LEN]));
        assert_eq!(encode(&long, &mut Vec::new()), Err(BencodeError::TooLong));
        let fits = Value::Bytes(Bytes::from(vec![b'x'; MAX_LEN - 6]));
        assert_eq!(encoded(&fits).len(), MAX_LEN);
        let mut input = b"65536:".to_vec();
        input.resize(65_536 + 6, b'x');
        assert_eq!(decode(&Bytes::from(input)), Err(BencodeError::TooLong));
    }

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            any::<i64>().prop_map(Value::Int),
            proptest::collection::vec(any::<u8>(), 0..20).prop_map(|b| Value::Bytes(b.into())),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::List),
                proptest::collection::btree_map(
                    proptest::collection::vec(any::<u8>(), 0..8).prop_map(Bytes::from),
                    inner,
                    0..8
                )
                .prop_map(Value::Dict),
            ]
        })
    }

    proptest! {
        #[test]
        fn encode_then_decode_is_the_same_value(value in value()) {
            let bytes = Bytes::from(encoded(&value));
            prop_assert_eq!(decode(&bytes), Ok(value));
        }

        #[test]
        fn what_decodes_encodes_back_to_the_same_bytes(value in value()) {
            // Encoding is canonical: one spelling per value, so a decoded document that was
            // written sorted comes back byte for byte.
            let bytes = encoded(&value);
            let again = decode(&Bytes::from(bytes.clone())).unwrap();
            prop_assert_eq!(encoded(&again), bytes);
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&Bytes::from(bytes));
        }
    }
}
