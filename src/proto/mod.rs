//! The wire: what a redmap frame is, byte for byte.
//!
//! Every binary link (CLI ↔ manager, manager ↔ worker) speaks the same framing,
//! described for other implementers in `protocol.md`:
//!
//! ```text
//!  0      1      2      3      4             8             12            16
//! +------+------+------+------+-------------+-------------+-------------+
//! | 0xA5 | 0x4D | ver  |  op  | request id  |   length    |   CRC32     |  payload…
//! +------+------+------+------+-------------+-------------+-------------+
//! ```
//!
//! All integers are big-endian. The modules below own one piece each:
//! - [`header`]: the fixed 16-byte header and the CRC of the payload;
//! - [`frame`]: a whole frame (header + payload) and [`encode_frame`];
//! - [`opcode`]: the opcode byte and the table of known opcodes;
//! - [`error`]: typed protocol errors and their stable wire codes;
//! - [`buf`]: the read buffer a connection fills from its socket;
//! - [`decoder`]: incremental frame decoding, with the size limit checked first;
//! - [`msg`]: typed messages and their payload layouts;
//! - [`text`]: the netcat text session for humans.

pub mod buf;
pub mod decoder;
pub mod error;
pub mod frame;
pub mod header;
pub mod msg;
pub mod opcode;
pub mod text;

pub use buf::ReadBuf;
pub use decoder::Decoder;
pub use error::{ErrorCode, FrameError, ProtoError};
pub use frame::{encode_frame, Frame};
pub use header::Header;
pub use msg::Message;
pub use opcode::Opcode;

/// The two bytes every binary connection starts with. The first one is not
/// printable ASCII, so a human typing into netcat can never produce it and the
/// server can tell a text session from a binary one by the first byte.
pub const MAGIC: [u8; 2] = [0xA5, 0x4D];

/// The protocol version this build speaks (header byte 2).
pub const PROTOCOL_VERSION: u8 = 1;

/// Size of the fixed frame header in bytes.
pub const HEADER_LEN: usize = 16;

/// The default `--max-size` (largest accepted payload), as in the original: 200 MiB.
pub const DEFAULT_MAX_SIZE: u32 = 200 * 1024 * 1024;

/// Room a frame's other fields take besides a library chunk or a batch's
/// tasks: a chunk or batch is at most the receiver's max size less this.
pub const FRAME_FIELDS_ROOM: usize = 1024;

/// The largest library chunk or batch of tasks, in bytes, that a receiver
/// with max size `max_size` takes in one frame, and at most `cap` (1 MiB
/// for install chunks: the recommended chunk size).
pub fn frame_budget(max_size: u32, cap: usize) -> usize {
    (effective_max_size(max_size) as usize)
        .saturating_sub(FRAME_FIELDS_ROOM)
        .clamp(1, cap)
}

/// Resolves a `--max-size` flag value: 0 means the default, as in the original.
pub fn effective_max_size(flag: u32) -> u32 {
    if flag == 0 {
        DEFAULT_MAX_SIZE
    } else {
        flag
    }
}
