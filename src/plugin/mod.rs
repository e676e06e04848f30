//! Job plugins: compiling what `redmap run` is given into a job library
//! ([`compile`]), and loading and calling job libraries through the C ABI
//! ([`loader`]; only in executor processes and the embedded run: a server
//! keeps a [`Library`], checked by [`library::probe`]). The ABI types themselves live in [`crate::job::abi`], beside
//! the plugin side of the boundary, so both sides share one definition;
//! `redmap_job.h` is the same ABI for C.

pub mod compile;
pub mod library;
pub mod loader;
pub mod store;

pub use compile::{build, Built, CompileError, Toolchain};
pub use library::Library;
pub use loader::{CallError, Instance, LoadError, Plugin, PluginHash, TaskIter};
