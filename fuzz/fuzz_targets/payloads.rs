//! Any payload under any opcode through message decoding. What decodes
//! must encode and decode back to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use redmap::proto::{Message, Opcode};

fuzz_target!(|data: &[u8]| {
    let Some((&pick, payload)) = data.split_first() else {
        return;
    };
    let opcode = Opcode::ALL[usize::from(pick) % Opcode::ALL.len()];
    if let Ok(msg) = Message::decode_payload(opcode, payload) {
        let mut again = Vec::new();
        msg.encode_payload(&mut again);
        let back = Message::decode_payload(opcode, &again).expect("re-encoded payload decodes");
        assert_eq!(back, msg);
    }
});
