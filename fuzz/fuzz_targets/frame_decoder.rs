//! Any byte stream, split anywhere, through the incremental frame decoder
//! and message decoding, as a server reads a connection. It must never
//! panic, and never buffer more than one frame plus the bytes just added.
#![no_main]

use libfuzzer_sys::fuzz_target;
use redmap::proto::{Decoder, Message, ReadBuf, HEADER_LEN};

const MAX: u32 = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let Some((&step, rest)) = data.split_first() else {
        return;
    };
    let step = usize::from(step).max(1);
    let mut decoder = Decoder::new(MAX);
    let mut buf = ReadBuf::new();
    for chunk in rest.chunks(step) {
        buf.extend(chunk);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => {
                    assert!(frame.payload.len() <= MAX as usize);
                    let _ = Message::decode(&frame);
                }
                Ok(None) => break,
                Err(e) if e.error.is_fatal() => return,
                Err(_) => {}
            }
        }
        assert!(buf.len() <= HEADER_LEN + MAX as usize + step);
    }
});
