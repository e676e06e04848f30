//! Typed messages: one enum over every opcode, with encode and decode
//! dispatch. Each message family's payload layout lives in its own file.
//!
//! Compatibility rule: a decoder ignores bytes after the last field it knows,
//! so a later minor revision may append fields to a payload without a new
//! opcode. Fields are never removed, reordered or resized.

pub mod args;
pub mod auth;
pub mod batch;
pub mod claim;
pub mod error_reply;
pub mod info;
pub mod manager;
pub mod output;
pub mod plugin;
pub mod shuffle;
pub mod wire;

pub use args::JobArgs;
pub use auth::Challenge;
pub use batch::{BatchResult, MapBatch, TaskFailure, TaskList};
pub use claim::{Claim, Claimed};
pub use error_reply::ErrorReply;
pub use info::{Info, Role};
pub use manager::{
    AttachWorker, JobStatus, JobSummary, JobsPage, JobsQuery, ManagerStats, RunJob, RunOptions,
};
pub use output::{OutputChunk, OutputForm, OutputRequest};
pub use plugin::{Install, InstallReply};
pub use shuffle::{DropShuffle, Fetch, MapOutput, Parts, Reduce, Reduced, ShuffleSpec};

use wire::{put_str, put_u64};

use super::error::ProtoError;
use super::opcode::Opcode;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// `PING` (0x01), empty payload.
    Ping,
    /// `INFO_REQUEST` (0x02), empty payload.
    InfoRequest,
    Install(Install),
    Uninstall([u8; 32]),
    MapBatch(MapBatch),
    Hello([u8; 32]),
    Auth([u8; 32]),
    Claim(Claim),
    RunJob(RunJob),
    JobStatsRequest(u64),
    JobsListRequest(JobsQuery),
    Attach(AttachWorker),
    Detach(String),
    ManagerStatsRequest,
    CancelJob(u64),
    OutputRequest(OutputRequest),
    Fetch(Fetch),
    Reduce(Reduce),
    DropShuffle(DropShuffle),
    PartsRequest(u64),
    /// `PONG` (0x81), empty payload.
    Pong,
    /// `INFO` (0x82).
    Info(Info),
    InstallReply(InstallReply),
    Uninstalled,
    BatchResult(BatchResult),
    Challenge(Challenge),
    AuthOk,
    Claimed(Claimed),
    JobAccepted(u64),
    JobStats(JobSummary),
    JobsList(JobsPage),
    Attached,
    Detached,
    ManagerStats(ManagerStats),
    Cancelled,
    Output(OutputChunk),
    /// `FETCHED` (0x98): laid out as `OUTPUT`.
    Fetched(OutputChunk),
    Reduced(Reduced),
    /// `DROPPED` (0x9A), empty payload.
    Dropped,
    Parts(Parts),
    /// `ERROR` (0xFF).
    Error(ErrorReply),
}

impl Message {
    pub fn opcode(&self) -> Opcode {
        match self {
            Message::Ping => Opcode::Ping,
            Message::InfoRequest => Opcode::InfoRequest,
            Message::Install(_) => Opcode::Install,
            Message::Uninstall(_) => Opcode::Uninstall,
            Message::MapBatch(_) => Opcode::MapBatch,
            Message::Hello(_) => Opcode::Hello,
            Message::Auth(_) => Opcode::Auth,
            Message::Claim(_) => Opcode::Claim,
            Message::RunJob(_) => Opcode::RunJob,
            Message::JobStatsRequest(_) => Opcode::JobStatsRequest,
            Message::JobsListRequest(_) => Opcode::JobsListRequest,
            Message::Attach(_) => Opcode::Attach,
            Message::Detach(_) => Opcode::Detach,
            Message::ManagerStatsRequest => Opcode::ManagerStatsRequest,
            Message::CancelJob(_) => Opcode::CancelJob,
            Message::OutputRequest(_) => Opcode::OutputRequest,
            Message::Fetch(_) => Opcode::Fetch,
            Message::Reduce(_) => Opcode::Reduce,
            Message::DropShuffle(_) => Opcode::DropShuffle,
            Message::PartsRequest(_) => Opcode::PartsRequest,
            Message::Fetched(_) => Opcode::Fetched,
            Message::Reduced(_) => Opcode::Reduced,
            Message::Dropped => Opcode::Dropped,
            Message::Parts(_) => Opcode::Parts,
            Message::Pong => Opcode::Pong,
            Message::Info(_) => Opcode::Info,
            Message::InstallReply(_) => Opcode::InstallReply,
            Message::Uninstalled => Opcode::Uninstalled,
            Message::BatchResult(_) => Opcode::BatchResult,
            Message::Challenge(_) => Opcode::Challenge,
            Message::AuthOk => Opcode::AuthOk,
            Message::Claimed(_) => Opcode::Claimed,
            Message::JobAccepted(_) => Opcode::JobAccepted,
            Message::JobStats(_) => Opcode::JobStats,
            Message::JobsList(_) => Opcode::JobsList,
            Message::Attached => Opcode::Attached,
            Message::Detached => Opcode::Detached,
            Message::ManagerStats(_) => Opcode::ManagerStats,
            Message::Cancelled => Opcode::Cancelled,
            Message::Output(_) => Opcode::Output,
            Message::Error(_) => Opcode::Error,
        }
    }

    /// The error reply for `err`.
    pub fn error(err: &ProtoError) -> Message {
        Message::Error(ErrorReply::from(err))
    }

    /// Decodes a payload of the message `opcode` names (the frame's
    /// header already checked and removed). Bytes after the last field this
    /// build knows are ignored (see the compatibility rule above).
    ///
    /// Errors: [`ProtoError::Malformed`] for a payload too short or
    /// otherwise not of the opcode's layout.
    pub fn decode_payload(opcode: Opcode, payload: &[u8]) -> Result<Message, ProtoError> {
        Ok(match opcode {
            Opcode::Ping => Message::Ping,
            Opcode::InfoRequest => Message::InfoRequest,
            Opcode::Install => Message::Install(Install::decode(payload)?),
            Opcode::Uninstall => Message::Uninstall(plugin::decode_hash(opcode, payload)?),
            Opcode::MapBatch => Message::MapBatch(MapBatch::decode(payload)?),
            Opcode::Hello => Message::Hello(auth::decode_32(opcode, payload)?),
            Opcode::Auth => Message::Auth(auth::decode_32(opcode, payload)?),
            Opcode::Claim => Message::Claim(Claim::decode(payload)?),
            Opcode::RunJob => Message::RunJob(RunJob::decode(payload)?),
            Opcode::JobStatsRequest => {
                Message::JobStatsRequest(manager::decode_id(opcode, payload)?)
            }
            Opcode::JobsListRequest => Message::JobsListRequest(JobsQuery::decode(payload)?),
            Opcode::Attach => Message::Attach(AttachWorker::decode(payload)?),
            Opcode::Detach => Message::Detach(manager::decode_addr(opcode, payload)?),
            Opcode::ManagerStatsRequest => Message::ManagerStatsRequest,
            Opcode::CancelJob => Message::CancelJob(manager::decode_id(opcode, payload)?),
            Opcode::OutputRequest => Message::OutputRequest(OutputRequest::decode(payload)?),
            Opcode::Fetch => Message::Fetch(Fetch::decode(payload)?),
            Opcode::Reduce => Message::Reduce(Reduce::decode(payload)?),
            Opcode::DropShuffle => Message::DropShuffle(DropShuffle::decode(payload)?),
            Opcode::PartsRequest => Message::PartsRequest(manager::decode_id(opcode, payload)?),
            Opcode::Fetched => Message::Fetched(OutputChunk::decode_as(opcode, payload)?),
            Opcode::Reduced => Message::Reduced(Reduced::decode(payload)?),
            Opcode::Dropped => Message::Dropped,
            Opcode::Parts => Message::Parts(Parts::decode(payload)?),
            Opcode::Pong => Message::Pong,
            Opcode::Info => Message::Info(Info::decode(payload)?),
            Opcode::InstallReply => Message::InstallReply(InstallReply::decode(payload)?),
            Opcode::Uninstalled => Message::Uninstalled,
            Opcode::BatchResult => Message::BatchResult(BatchResult::decode(payload)?),
            Opcode::Challenge => Message::Challenge(Challenge::decode(payload)?),
            Opcode::AuthOk => Message::AuthOk,
            Opcode::Claimed => Message::Claimed(Claimed::decode(payload)?),
            Opcode::JobAccepted => Message::JobAccepted(manager::decode_id(opcode, payload)?),
            Opcode::JobStats => Message::JobStats(JobSummary::decode(payload)?),
            Opcode::JobsList => Message::JobsList(JobsPage::decode(payload)?),
            Opcode::Attached => Message::Attached,
            Opcode::Detached => Message::Detached,
            Opcode::ManagerStats => Message::ManagerStats(ManagerStats::decode(payload)?),
            Opcode::Cancelled => Message::Cancelled,
            Opcode::Output => Message::Output(OutputChunk::decode(payload)?),
            Opcode::Error => Message::Error(ErrorReply::decode(payload)?),
        })
    }

    /// Appends this message's payload (not the header) to `out`.
    pub fn encode_payload(&self, out: &mut Vec<u8>) {
        match self {
            Message::Ping
            | Message::InfoRequest
            | Message::Pong
            | Message::ManagerStatsRequest
            | Message::Uninstalled
            | Message::Attached
            | Message::Detached
            | Message::Cancelled
            | Message::Dropped
            | Message::AuthOk => {}
            Message::Info(info) => info.encode(out),
            Message::Install(m) => m.encode(out),
            Message::Uninstall(hash) | Message::Hello(hash) | Message::Auth(hash) => {
                out.extend_from_slice(hash)
            }
            Message::Challenge(c) => c.encode(out),
            Message::Claim(m) => m.encode(out),
            Message::Claimed(m) => m.encode(out),
            Message::MapBatch(m) => m.encode(out),
            Message::RunJob(m) => m.encode(out),
            Message::JobStatsRequest(id)
            | Message::JobAccepted(id)
            | Message::CancelJob(id)
            | Message::PartsRequest(id) => put_u64(out, *id),
            Message::Attach(m) => m.encode(out),
            Message::Detach(addr) => put_str(out, addr),
            Message::InstallReply(m) => m.encode(out),
            Message::BatchResult(m) => m.encode(out),
            Message::JobStats(m) => m.encode(out),
            Message::JobsListRequest(q) => q.encode(out),
            Message::JobsList(page) => page.encode(out),
            Message::ManagerStats(m) => m.encode(out),
            Message::OutputRequest(m) => m.encode(out),
            Message::Output(m) | Message::Fetched(m) => m.encode(out),
            Message::Fetch(m) => m.encode(out),
            Message::Reduce(m) => m.encode(out),
            Message::DropShuffle(m) => m.encode(out),
            Message::Reduced(m) => m.encode(out),
            Message::Parts(m) => m.encode(out),
            Message::Error(err) => err.encode(out),
        }
    }
}
