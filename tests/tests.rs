//! The integration suite: one crate, one module per story.

mod util;

mod args;
mod auth;
mod cli;
mod cluster;
mod codec;
mod examples;
mod faults;
mod field;
mod httpfaults;
mod keyed;
mod layering;
mod manager;
mod monitor;
mod netfaults;
mod output;
mod plugin;
mod protocol_doc;
mod reactor;
mod readme;
mod shuffle;
mod worker;
