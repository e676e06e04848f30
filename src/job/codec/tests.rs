//! Every supported type round-trips, sorts as its bytes sort, and refuses
//! bytes that are not one of its values.

use std::cmp::Ordering;
use std::fmt::Debug;

use super::*;

/// A small deterministic generator (xorshift64*), so failures repeat.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn round_trip<T: Codec + PartialEq + Debug>(value: T) {
    let bytes = to_bytes(&value);
    assert_eq!(
        from_bytes::<T>(&bytes).as_ref(),
        Ok(&value),
        "{value:?} as {bytes:x?}"
    );
    // Self-delimiting: it decodes the same with anything after it.
    let mut followed = bytes.clone();
    followed.extend_from_slice(&[0, 1, 0xFF, 7]);
    let mut input = &followed[..];
    assert_eq!(T::decode(&mut input).as_ref(), Ok(&value));
    assert_eq!(input, &[0, 1, 0xFF, 7]);
}

/// For every pair of `values`, the bytes order as `cmp` orders the values.
fn keeps_order<T: Codec + Debug>(values: &[T], cmp: impl Fn(&T, &T) -> Ordering) {
    for a in values {
        for b in values {
            let (ea, eb) = (to_bytes(a), to_bytes(b));
            assert_eq!(ea.cmp(&eb), cmp(a, b), "{a:?} vs {b:?}: {ea:x?} vs {eb:x?}");
        }
    }
}

#[test]
fn integers_round_trip_and_sort_as_numbers() {
    let mut rng = Rng(7);
    let mut u: Vec<u64> = vec![0, 1, 255, 256, u64::MAX, u64::MAX - 1];
    let mut i: Vec<i64> = vec![0, 1, -1, i64::MIN, i64::MAX, -256, 255];
    for _ in 0..40 {
        u.push(rng.next() >> (rng.next() % 64));
        i.push((rng.next() as i64) >> (rng.next() % 64));
    }
    for &n in &u {
        round_trip(n);
        round_trip(n as u32);
        round_trip(n as u16);
        round_trip(n as u8);
        round_trip(u128::from(n) << 64 | u128::from(n));
        round_trip(n as usize);
    }
    for &n in &i {
        round_trip(n);
        round_trip(n as i32);
        round_trip(n as i16);
        round_trip(n as i8);
        round_trip(i128::from(n) << 64);
        round_trip(n as isize);
    }
    keeps_order(&u, u64::cmp);
    keeps_order(&i, i64::cmp);
    let small: Vec<i8> = (i8::MIN..=i8::MAX).step_by(7).collect();
    keeps_order(&small, i8::cmp);
}

#[test]
fn floats_round_trip_bit_for_bit_and_sort_as_total_cmp() {
    let values = [
        f64::NEG_INFINITY,
        -1e300,
        -1.5,
        -f64::MIN_POSITIVE,
        -0.0,
        0.0,
        f64::MIN_POSITIVE,
        1.0,
        1.5,
        1e300,
        f64::INFINITY,
        f64::NAN,
        -f64::NAN,
    ];
    for v in values {
        let back: f64 = from_bytes(&to_bytes(&v)).unwrap();
        assert_eq!(back.to_bits(), v.to_bits(), "{v}");
        let back: f32 = from_bytes(&to_bytes(&(v as f32))).unwrap();
        assert_eq!(back.to_bits(), (v as f32).to_bits(), "{v}");
    }
    keeps_order(&values, f64::total_cmp);
    let singles: Vec<f32> = values.iter().map(|v| *v as f32).collect();
    keeps_order(&singles, f32::total_cmp);
}

#[test]
fn strings_and_byte_strings_round_trip_with_zero_bytes_and_sort_as_bytes() {
    let strings: Vec<String> = [
        "", "a", "a\0", "a\0b", "ab", "b", "\0", "\0\0", "é", "日本", "a\u{1}",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for s in &strings {
        round_trip(s.clone());
        round_trip(s.clone().into_bytes());
    }
    keeps_order(&strings, String::cmp);
    let bytes: Vec<Vec<u8>> = strings.iter().map(|s| s.clone().into_bytes()).collect();
    keeps_order(&bytes, Vec::cmp);
    // A byte string is compact: the bytes, then two.
    assert_eq!(to_bytes(&b"ab".to_vec()), [b'a', b'b', 0, 1]);
}

#[test]
fn small_types_round_trip_and_keep_their_order() {
    for b in [false, true] {
        round_trip(b);
    }
    keeps_order(&[false, true], bool::cmp);
    let chars = ['\0', 'a', 'z', 'é', '\u{10FFFF}'];
    for c in chars {
        round_trip(c);
    }
    keeps_order(&chars, char::cmp);
    round_trip(());
    assert!(to_bytes(&()).is_empty());
}

#[test]
fn compound_types_round_trip_and_sort_field_by_field() {
    let words: Vec<(String, u64)> = vec![
        ("".into(), 5),
        ("a".into(), 0),
        ("a".into(), 255),
        ("a\0".into(), 0),
        ("ab".into(), 1),
    ];
    for w in &words {
        round_trip(w.clone());
    }
    keeps_order(&words, |a, b| a.cmp(b));
    let lists: Vec<Vec<u32>> = vec![vec![], vec![0], vec![0, 0], vec![0, 1], vec![1], vec![1, 0]];
    for l in &lists {
        round_trip(l.clone());
    }
    keeps_order(&lists, Vec::cmp);
    let options: Vec<Option<i32>> = vec![None, Some(i32::MIN), Some(-1), Some(0), Some(7)];
    for o in &options {
        round_trip(*o);
    }
    keeps_order(&options, Option::cmp);
    round_trip(vec![Some("x".to_string()), None, Some(String::new())]);
    round_trip((1u8, -2i16, 3u32, "four".to_string(), 5.0f64, vec![6u8]));
    round_trip(vec![vec!["nested".to_string()], vec![]]);
    round_trip(Some(vec![0u8, 0, 0]));
}

#[test]
fn bytes_that_are_not_a_value_are_refused_with_why() {
    let err = |r: Result<(), DecodeError>| r.unwrap_err().to_string();
    assert_eq!(
        err(from_bytes::<u32>(&[1, 2]).map(drop)),
        "cannot decode a u32: the input ends inside it"
    );
    assert!(err(from_bytes::<bool>(&[2]).map(drop)).contains("neither 0 nor 1"));
    assert!(err(from_bytes::<char>(&0xD800u32.to_be_bytes()).map(drop)).contains("scalar"));
    assert!(err(from_bytes::<String>(&[0xFF, 0, 1]).map(drop)).contains("not UTF-8"));
    assert!(err(from_bytes::<String>(b"abc").map(drop)).contains("ends inside"));
    assert!(err(from_bytes::<String>(&[b'a', 0, 7]).map(drop)).contains("not escaped"));
    assert!(err(from_bytes::<Option<u8>>(&[9]).map(drop)).contains("tag"));
    assert!(err(from_bytes::<Vec<u16>>(&[1, 0, 1, 5]).map(drop)).contains("marker"));
    assert!(err(from_bytes::<u8>(&[1, 2]).map(drop)).contains("left after"));
    assert!(err(from_bytes::<(u8, u8)>(&[1]).map(drop)).contains("ends inside"));
}

#[test]
fn the_text_form_reads_as_the_module_says() {
    use super::to_text;
    assert_eq!(to_text(&42u64), "42");
    assert_eq!(to_text(&-7i32), "-7");
    assert_eq!(to_text(&-1.5f64), "-1.5");
    assert_eq!(to_text(&true), "true");
    assert_eq!(to_text(&()), "");
    assert_eq!(to_text(&'\t'), "\\t");
    assert_eq!(to_text(&"a\tb\nc\\d\re".to_string()), "a\\tb\\nc\\\\d\\re");
    assert_eq!(to_text(&vec![0u8, 0xab, 0x10]), "00ab10");
    assert_eq!(to_text(&vec!["x".to_string(), "y".to_string()]), "[x, y]");
    assert_eq!(to_text(&Some(3u8)), "3");
    assert_eq!(to_text(&None::<u8>), "");
    assert_eq!(to_text(&("w".to_string(), 2u32, -0.5f32)), "(w, 2, -0.5)");
}

#[test]
fn a_run_formats_whole_pairs_and_leaves_a_cut_one_for_the_next_piece() {
    use crate::job::codec::to_bytes;
    use crate::job::keyed::format_pairs;
    use crate::job::run::push_pair;
    let mut run = Vec::new();
    for (k, v) in [("a", 1u64), ("b\tc", 22)] {
        push_pair(&mut run, &to_bytes(&k.to_string()), &to_bytes(&v));
    }
    let (text, used) = format_pairs::<String, u64>(&run).unwrap();
    assert_eq!((text.as_str(), used), ("a\t1\nb\\tc\t22\n", run.len()));
    // Cut inside the second pair: only the first is written.
    let (text, used) = format_pairs::<String, u64>(&run[..run.len() - 3]).unwrap();
    assert_eq!(text, "a\t1\n");
    let (rest, more) = format_pairs::<String, u64>(&run[used..]).unwrap();
    assert_eq!((rest.as_str(), used + more), ("b\\tc\t22\n", run.len()));
    // A whole pair whose value is not a u64 is an error, not a cut.
    let mut bad = Vec::new();
    push_pair(&mut bad, &to_bytes(&"k".to_string()), &[1, 2]);
    assert!(format_pairs::<String, u64>(&bad).is_err());
}
