//! The protobuf contracts between the tiers, generated from `proto/` at build
//! time.
//!
//! These types are wire types: they stop at the service edge. The gateway and
//! the worker convert them to and from `domain` types in their gRPC glue, so
//! the rest of the code never depends on the generated code.

/// The layout of the durable stream's `v1::MatchEvent` entries that writers
/// produce today (its `format` field). Entries written before the field
/// existed read as 0 and have the same layout as format 1. A reader accepts
/// every format up to this one and leaves newer entries alone.
pub const STREAM_ENTRY_FORMAT: u32 = 1;

/// `courtside.v1`: the first version of the contracts.
pub mod v1 {
    #![allow(missing_docs, unreachable_pub, missing_debug_implementations)]
    #![allow(clippy::all)]
    tonic::include_proto!("courtside.v1");

    /// Encoded file descriptor set for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/courtside_v1_descriptor.bin"));
}
