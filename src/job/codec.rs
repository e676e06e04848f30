//! How typed tasks, keys and values travel between processes: the
//! [`Codec`] trait, implemented here for the standard types, and by a job
//! for its own (by hand, or backed by serde in a crate job).
//!
//! The encoding is **order-preserving**: for every type implemented here,
//! comparing two encodings byte by byte orders them as `Ord` orders the
//! values (floats as `f64::total_cmp` does). So keys can be sorted, merged
//! and range-partitioned as bytes, without the job's code, wherever they
//! are; the job's output is sorted by key in the key type's own order. A
//! job implementing `Codec` for its own key type keeps that property by
//! encoding its fields in order with the encodings below.
//!
//! | type | encoding |
//! | --- | --- |
//! | `u8` … `u128`, `usize` (as `u64`) | fixed width, big-endian |
//! | `i8` … `i128`, `isize` (as `i64`) | fixed width, big-endian, sign bit flipped |
//! | `f32`, `f64` | the bits, big-endian: all flipped if negative, else the sign bit |
//! | `bool` | one byte, 0 or 1 |
//! | `char` | its scalar value as a `u32` |
//! | `()` | nothing |
//! | `String`, `Vec<u8>` | the bytes, each 0x00 written 0x00 0xFF, then 0x00 0x01 |
//! | `Vec<T>` (other `T`) | each element as 0x01 then the element, then 0x00 |
//! | `Option<T>` | 0x00 for `None`; 0x01 then the value for `Some` |
//! | tuples (up to 6) | the fields in order |
//!
//! Each type also has a **text form**, for people and line tools: what
//! `redmap run --output` writes, one `key<TAB>value` line per key. Numbers
//! as Rust prints them (`42`, `-1.5`), `bool` as `true`/`false`, `()` as
//! nothing, `char` and `String` as themselves with `\`, tab, newline and
//! carriage return written `\\`, `\t`, `\n` and `\r`, `Vec<u8>` in
//! lowercase hex, other `Vec`s as `[a, b]`, `Option` as its value or
//! nothing, tuples as `(a, b)`; a job's own type, unless it says
//! otherwise, as its encoding in hex. The text form is for reading: only
//! the encoding (`--format binary`) is sure to read back as the same
//! values.
//!
//! Every encoding is self-delimiting, so values can follow one another in
//! a buffer without lengths, and a tuple or a `Vec` of them still sorts
//! field by field.

use std::fmt;

/// Why bytes could not be decoded as a value: the type and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    what: &'static str,
    why: &'static str,
}

impl DecodeError {
    /// `what` (a type's name) could not be decoded, because `why`.
    pub fn new(what: &'static str, why: &'static str) -> DecodeError {
        DecodeError { what, why }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot decode a {}: {}", self.what, self.why)
    }
}

impl std::error::Error for DecodeError {}

/// A type that travels between processes as bytes (see the module's table
/// for the encodings and their order).
///
/// `decode` reads one value from the front of `input` and advances it past
/// the value; it fails, never panics, on bytes that are not one (cut
/// short, or not a value of the type).
pub trait Codec: Sized {
    /// Appends the value's encoding to `out`.
    fn encode(&self, out: &mut Vec<u8>);

    /// Reads one value from the front of `input`, and moves `input` past it.
    fn decode(input: &mut &[u8]) -> Result<Self, DecodeError>;

    /// Appends the encoding of a `Vec<Self>` (0x01 before each element, 0x00
    /// after the last). A type may encode its sequences more compactly, as
    /// `u8` does (a byte string), as long as the order is kept.
    fn encode_seq(items: &[Self], out: &mut Vec<u8>) {
        for item in items {
            out.push(1);
            item.encode(out);
        }
        out.push(0);
    }

    /// Appends the value's text form (see the module's notes) to `out`.
    /// The default is the value's encoding in lowercase hex.
    fn text(&self, out: &mut String) {
        hex(&to_bytes(self), out);
    }

    /// Appends the text form of a `Vec<Self>`: `[a, b]`, unless the type
    /// says otherwise (`u8`: hex).
    fn text_seq(items: &[Self], out: &mut String) {
        out.push('[');
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            item.text(out);
        }
        out.push(']');
    }

    /// Reads what [`Codec::encode_seq`] wrote.
    fn decode_seq(input: &mut &[u8]) -> Result<Vec<Self>, DecodeError> {
        let mut items = Vec::new();
        loop {
            match take::<1>(input, "Vec")?[0] {
                0 => return Ok(items),
                1 => items.push(Self::decode(input)?),
                _ => {
                    return Err(DecodeError::new(
                        "Vec",
                        "an element marker is neither 0 nor 1",
                    ))
                }
            }
        }
    }
}

/// `value`'s encoding, in a buffer of its own.
pub fn to_bytes<T: Codec>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    value.encode(&mut out);
    out
}

/// The value that `bytes` encode, all of them: bytes left over after the
/// value are an error (they belong to no value).
pub fn from_bytes<T: Codec>(mut bytes: &[u8]) -> Result<T, DecodeError> {
    let value = T::decode(&mut bytes)?;
    if bytes.is_empty() {
        Ok(value)
    } else {
        Err(DecodeError::new(
            std::any::type_name::<T>(),
            "bytes are left after the value",
        ))
    }
}

/// The text form of any value, in a string of its own.
pub fn to_text<T: Codec>(value: &T) -> String {
    let mut out = String::new();
    value.text(&mut out);
    out
}

/// Appends `bytes` in lowercase hex.
fn hex(bytes: &[u8], out: &mut String) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
}

/// Appends `text` with the characters that would break a line apart (and
/// the escape itself) escaped.
fn escaped(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

/// The text form of a value that prints as Rust's `Display` prints it.
macro_rules! display_text {
    () => {
        fn text(&self, out: &mut String) {
            use std::fmt::Write;
            let _ = write!(out, "{self}");
        }
    };
}

/// The first `N` bytes of `input`, which moves past them.
fn take<const N: usize>(input: &mut &[u8], what: &'static str) -> Result<[u8; N], DecodeError> {
    let Some((head, rest)) = input.split_first_chunk::<N>() else {
        return Err(DecodeError::new(what, "the input ends inside it"));
    };
    *input = rest;
    Ok(*head)
}

macro_rules! unsigned {
    ($($t:ty),*) => {$(
        impl Codec for $t {
            fn encode(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_be_bytes());
            }
            fn decode(input: &mut &[u8]) -> Result<$t, DecodeError> {
                Ok(<$t>::from_be_bytes(take(input, stringify!($t))?))
            }
            display_text!();
        }
    )*};
}
unsigned!(u16, u32, u64, u128);

macro_rules! signed {
    ($($t:ty => $u:ty),*) => {$(
        impl Codec for $t {
            fn encode(&self, out: &mut Vec<u8>) {
                // Flipping the sign bit puts negatives below positives.
                let flipped = (*self as $u) ^ (1 << (<$u>::BITS - 1));
                out.extend_from_slice(&flipped.to_be_bytes());
            }
            fn decode(input: &mut &[u8]) -> Result<$t, DecodeError> {
                let flipped = <$u>::from_be_bytes(take(input, stringify!($t))?);
                Ok((flipped ^ (1 << (<$u>::BITS - 1))) as $t)
            }
            display_text!();
        }
    )*};
}
signed!(i8 => u8, i16 => u16, i32 => u32, i64 => u64, i128 => u128);

macro_rules! float {
    ($($t:ty => $u:ty),*) => {$(
        impl Codec for $t {
            fn encode(&self, out: &mut Vec<u8>) {
                let bits = self.to_bits();
                let sign = 1 << (<$u>::BITS - 1);
                // Negatives: all bits flipped (larger magnitude sorts
                // lower); positives: the sign bit set. The order is then
                // total_cmp's: -NaN < -inf < … < -0 < +0 < … < +inf < NaN.
                let key = if bits & sign != 0 { !bits } else { bits | sign };
                out.extend_from_slice(&key.to_be_bytes());
            }
            fn decode(input: &mut &[u8]) -> Result<$t, DecodeError> {
                let key = <$u>::from_be_bytes(take(input, stringify!($t))?);
                let sign = 1 << (<$u>::BITS - 1);
                let bits = if key & sign != 0 { key & !sign } else { !key };
                Ok(<$t>::from_bits(bits))
            }
            display_text!();
        }
    )*};
}
float!(f32 => u32, f64 => u64);

impl Codec for u8 {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(*self);
    }
    fn decode(input: &mut &[u8]) -> Result<u8, DecodeError> {
        Ok(take::<1>(input, "u8")?[0])
    }
    /// A `Vec<u8>` is a byte string, escaped like a `String`'s bytes.
    fn encode_seq(items: &[u8], out: &mut Vec<u8>) {
        encode_bytes(items, out);
    }
    fn decode_seq(input: &mut &[u8]) -> Result<Vec<u8>, DecodeError> {
        decode_bytes(input, "Vec<u8>")
    }
    display_text!();
    fn text_seq(items: &[u8], out: &mut String) {
        hex(items, out);
    }
}

impl Codec for usize {
    fn encode(&self, out: &mut Vec<u8>) {
        (*self as u64).encode(out);
    }
    fn decode(input: &mut &[u8]) -> Result<usize, DecodeError> {
        usize::try_from(u64::decode(input)?)
            .map_err(|_| DecodeError::new("usize", "it is too large for this machine"))
    }
    display_text!();
}

impl Codec for isize {
    fn encode(&self, out: &mut Vec<u8>) {
        (*self as i64).encode(out);
    }
    fn decode(input: &mut &[u8]) -> Result<isize, DecodeError> {
        isize::try_from(i64::decode(input)?)
            .map_err(|_| DecodeError::new("isize", "it is too large for this machine"))
    }
    display_text!();
}

impl Codec for bool {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(u8::from(*self));
    }
    fn decode(input: &mut &[u8]) -> Result<bool, DecodeError> {
        match take::<1>(input, "bool")?[0] {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::new("bool", "its byte is neither 0 nor 1")),
        }
    }
    display_text!();
}

impl Codec for char {
    fn encode(&self, out: &mut Vec<u8>) {
        u32::from(*self).encode(out);
    }
    fn decode(input: &mut &[u8]) -> Result<char, DecodeError> {
        char::from_u32(u32::decode(input)?)
            .ok_or(DecodeError::new("char", "it is not a Unicode scalar value"))
    }
    fn text(&self, out: &mut String) {
        escaped(self.encode_utf8(&mut [0; 4]), out);
    }
}

impl Codec for () {
    fn encode(&self, _out: &mut Vec<u8>) {}
    fn decode(_input: &mut &[u8]) -> Result<(), DecodeError> {
        Ok(())
    }
    fn text(&self, _out: &mut String) {}
}

/// Writes `bytes` as an order-preserving byte string: each 0x00 as 0x00
/// 0xFF, then the end 0x00 0x01 (below any continuation, so a prefix sorts
/// first).
fn encode_bytes(bytes: &[u8], out: &mut Vec<u8>) {
    out.reserve(bytes.len() + 2);
    let mut rest = bytes;
    while let Some(zero) = rest.iter().position(|b| *b == 0) {
        out.extend_from_slice(&rest[..zero]);
        out.extend_from_slice(&[0, 0xFF]);
        rest = &rest[zero + 1..];
    }
    out.extend_from_slice(rest);
    out.extend_from_slice(&[0, 1]);
}

/// Reads what [`encode_bytes`] wrote.
fn decode_bytes(input: &mut &[u8], what: &'static str) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::new();
    let mut rest = *input;
    loop {
        let Some(zero) = rest.iter().position(|b| *b == 0) else {
            return Err(DecodeError::new(what, "the input ends inside it"));
        };
        out.extend_from_slice(&rest[..zero]);
        match rest.get(zero + 1) {
            Some(1) => {
                *input = &rest[zero + 2..];
                return Ok(out);
            }
            Some(0xFF) => {
                out.push(0);
                rest = &rest[zero + 2..];
            }
            Some(_) => return Err(DecodeError::new(what, "a 0x00 byte is not escaped")),
            None => return Err(DecodeError::new(what, "the input ends inside it")),
        }
    }
}

impl Codec for String {
    fn encode(&self, out: &mut Vec<u8>) {
        encode_bytes(self.as_bytes(), out);
    }
    fn decode(input: &mut &[u8]) -> Result<String, DecodeError> {
        String::from_utf8(decode_bytes(input, "String")?)
            .map_err(|_| DecodeError::new("String", "it is not UTF-8"))
    }
    fn text(&self, out: &mut String) {
        escaped(self, out);
    }
}

impl<T: Codec> Codec for Vec<T> {
    fn encode(&self, out: &mut Vec<u8>) {
        T::encode_seq(self, out);
    }
    fn decode(input: &mut &[u8]) -> Result<Vec<T>, DecodeError> {
        T::decode_seq(input)
    }
    fn text(&self, out: &mut String) {
        T::text_seq(self, out);
    }
}

impl<T: Codec> Codec for Option<T> {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            None => out.push(0),
            Some(v) => {
                out.push(1);
                v.encode(out);
            }
        }
    }
    fn decode(input: &mut &[u8]) -> Result<Option<T>, DecodeError> {
        match take::<1>(input, "Option")?[0] {
            0 => Ok(None),
            1 => T::decode(input).map(Some),
            _ => Err(DecodeError::new("Option", "its tag is neither 0 nor 1")),
        }
    }
    fn text(&self, out: &mut String) {
        if let Some(v) = self {
            v.text(out);
        }
    }
}

macro_rules! tuple {
    ($($name:ident),+) => {
        impl<$($name: Codec),+> Codec for ($($name,)+) {
            #[allow(non_snake_case)]
            fn encode(&self, out: &mut Vec<u8>) {
                let ($($name,)+) = self;
                $($name.encode(out);)+
            }
            fn decode(input: &mut &[u8]) -> Result<Self, DecodeError> {
                Ok(($($name::decode(input)?,)+))
            }
            #[allow(non_snake_case)]
            fn text(&self, out: &mut String) {
                let ($($name,)+) = self;
                out.push('(');
                let mut first = true;
                $(
                    if !std::mem::take(&mut first) {
                        out.push_str(", ");
                    }
                    $name.text(out);
                )+
                out.push(')');
            }
        }
    };
}
tuple!(A);
tuple!(A, B);
tuple!(A, B, C);
tuple!(A, B, C, D);
tuple!(A, B, C, D, E);
tuple!(A, B, C, D, E, F);

#[cfg(test)]
mod tests;
