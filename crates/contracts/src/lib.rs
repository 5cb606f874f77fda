//! The protobuf contracts between the tiers, generated from `proto/` at build
//! time.
//!
//! These types are wire types: they stop at the service edge. The gateway and
//! the worker convert them to and from `domain` types in their gRPC glue, so
//! the rest of the code never depends on the generated code.

/// `courtside.v1`: the first version of the contracts.
pub mod v1 {
    #![allow(missing_docs, unreachable_pub, missing_debug_implementations)]
    #![allow(clippy::all)]
    tonic::include_proto!("courtside.v1");

    /// Encoded file descriptor set for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/courtside_v1_descriptor.bin"));
}
