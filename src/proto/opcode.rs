//! The opcode byte: which message a frame carries.
//!
//! Requests use `0x01..=0x7F`; the reply to a request carries the request's
//! opcode with the high bit set. `0xFF` is the error reply to any request.
//! Numbers are never reused or renumbered: new messages take new numbers.

use super::error::ProtoError;

/// Every opcode this build knows. Unknown bytes decode to
/// [`ProtoError::UnknownOpcode`], which the receiver answers with an error frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Opcode {
    /// Health check; answered by `Pong`.
    Ping = 0x01,
    /// Ask a server for its info; answered by `Info`.
    InfoRequest = 0x02,
    /// One chunk of a job library; answered by `InstallReply`.
    Install = 0x03,
    /// Remove a job library; answered by `Uninstalled`.
    Uninstall = 0x04,
    /// Tasks to map and fold; answered by `BatchResult`.
    MapBatch = 0x05,
    /// Starts the authentication handshake; answered by `Challenge`.
    Hello = 0x06,
    /// The client's proof; answered by `AuthOk`.
    Auth = 0x07,
    /// A manager claims a worker for itself; answered by `Claimed`.
    Claim = 0x08,
    /// Start a job from an installed library; answered by `JobAccepted`.
    RunJob = 0x10,
    /// One job's summary; answered by `JobStats`.
    JobStatsRequest = 0x11,
    /// Every job's summary; answered by `JobsList`.
    JobsListRequest = 0x12,
    /// Attach a worker to a manager; answered by `Attached`.
    Attach = 0x13,
    /// Detach a worker; answered by `Detached`.
    Detach = 0x14,
    /// The manager's counters; answered by `ManagerStats`.
    ManagerStatsRequest = 0x15,
    /// Cancel a job; answered by `Cancelled`.
    CancelJob = 0x16,
    /// A chunk of an ended job's output; answered by `Output`.
    OutputRequest = 0x17,
    /// A chunk of a file a worker keeps for a shuffle; answered by `Fetched`.
    Fetch = 0x18,
    /// Reduce one partition of a keyed job; answered by `Reduced`.
    Reduce = 0x19,
    /// Remove a job's shuffle files from a worker; answered by `Dropped`.
    DropShuffle = 0x1A,
    /// Where an ended job's partitions are; answered by `Parts`.
    PartsRequest = 0x1B,
    /// Reply to `Ping`.
    Pong = 0x81,
    /// Reply to `InfoRequest`.
    Info = 0x82,
    InstallReply = 0x83,
    Uninstalled = 0x84,
    BatchResult = 0x85,
    Challenge = 0x86,
    AuthOk = 0x87,
    Claimed = 0x88,
    JobAccepted = 0x90,
    JobStats = 0x91,
    JobsList = 0x92,
    Attached = 0x93,
    Detached = 0x94,
    ManagerStats = 0x95,
    Cancelled = 0x96,
    Output = 0x97,
    Fetched = 0x98,
    Reduced = 0x99,
    Dropped = 0x9A,
    Parts = 0x9B,
    /// Error reply to any request (or unsolicited, before a close).
    Error = 0xFF,
}

impl Opcode {
    /// All opcodes, in numeric order; `tests/protocol_doc.rs` checks that
    /// protocol.md documents each one.
    pub const ALL: &'static [Opcode] = &[
        Opcode::Ping,
        Opcode::InfoRequest,
        Opcode::Install,
        Opcode::Uninstall,
        Opcode::MapBatch,
        Opcode::Hello,
        Opcode::Auth,
        Opcode::Claim,
        Opcode::RunJob,
        Opcode::JobStatsRequest,
        Opcode::JobsListRequest,
        Opcode::Attach,
        Opcode::Detach,
        Opcode::ManagerStatsRequest,
        Opcode::CancelJob,
        Opcode::OutputRequest,
        Opcode::Fetch,
        Opcode::Reduce,
        Opcode::DropShuffle,
        Opcode::PartsRequest,
        Opcode::Pong,
        Opcode::Info,
        Opcode::InstallReply,
        Opcode::Uninstalled,
        Opcode::BatchResult,
        Opcode::Challenge,
        Opcode::AuthOk,
        Opcode::Claimed,
        Opcode::JobAccepted,
        Opcode::JobStats,
        Opcode::JobsList,
        Opcode::Attached,
        Opcode::Detached,
        Opcode::ManagerStats,
        Opcode::Cancelled,
        Opcode::Output,
        Opcode::Fetched,
        Opcode::Reduced,
        Opcode::Dropped,
        Opcode::Parts,
        Opcode::Error,
    ];

    /// The name used in protocol.md and in logs.
    pub fn name(self) -> &'static str {
        match self {
            Opcode::Ping => "PING",
            Opcode::InfoRequest => "INFO_REQUEST",
            Opcode::Install => "INSTALL",
            Opcode::Uninstall => "UNINSTALL",
            Opcode::MapBatch => "MAP_BATCH",
            Opcode::Hello => "HELLO",
            Opcode::Auth => "AUTH",
            Opcode::Claim => "CLAIM",
            Opcode::RunJob => "RUN_JOB",
            Opcode::JobStatsRequest => "JOB_STATS_REQUEST",
            Opcode::JobsListRequest => "JOBS_LIST_REQUEST",
            Opcode::Attach => "ATTACH",
            Opcode::Detach => "DETACH",
            Opcode::ManagerStatsRequest => "MANAGER_STATS_REQUEST",
            Opcode::CancelJob => "CANCEL_JOB",
            Opcode::OutputRequest => "OUTPUT_REQUEST",
            Opcode::Fetch => "FETCH",
            Opcode::Reduce => "REDUCE",
            Opcode::DropShuffle => "DROP_SHUFFLE",
            Opcode::PartsRequest => "PARTS_REQUEST",
            Opcode::Pong => "PONG",
            Opcode::Info => "INFO",
            Opcode::InstallReply => "INSTALL_REPLY",
            Opcode::Uninstalled => "UNINSTALLED",
            Opcode::BatchResult => "BATCH_RESULT",
            Opcode::Challenge => "CHALLENGE",
            Opcode::AuthOk => "AUTH_OK",
            Opcode::Claimed => "CLAIMED",
            Opcode::JobAccepted => "JOB_ACCEPTED",
            Opcode::JobStats => "JOB_STATS",
            Opcode::JobsList => "JOBS_LIST",
            Opcode::Attached => "ATTACHED",
            Opcode::Detached => "DETACHED",
            Opcode::ManagerStats => "MANAGER_STATS",
            Opcode::Cancelled => "CANCELLED",
            Opcode::Output => "OUTPUT",
            Opcode::Fetched => "FETCHED",
            Opcode::Reduced => "REDUCED",
            Opcode::Dropped => "DROPPED",
            Opcode::Parts => "PARTS",
            Opcode::Error => "ERROR",
        }
    }

    /// The byte on the wire.
    pub fn as_u8(self) -> u8 {
        self as u8
    }
}

impl TryFrom<u8> for Opcode {
    type Error = ProtoError;

    fn try_from(byte: u8) -> Result<Self, ProtoError> {
        Opcode::ALL
            .iter()
            .copied()
            .find(|op| op.as_u8() == byte)
            .ok_or(ProtoError::UnknownOpcode(byte))
    }
}

impl std::fmt::Display for Opcode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}(0x{:02X})", self.name(), self.as_u8())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_opcode_round_trips_through_its_byte() {
        for &op in Opcode::ALL {
            assert_eq!(Opcode::try_from(op.as_u8()).unwrap(), op);
        }
    }

    #[test]
    fn unknown_bytes_are_typed_errors() {
        assert_eq!(Opcode::try_from(0x42), Err(ProtoError::UnknownOpcode(0x42)));
    }
}
