//! The reseller portal's public contract: the `reseller.v1` protobuf messages, the tonic
//! clients and servers of its four services, and the descriptor set for reflection.

#![allow(clippy::all, missing_docs)]

/// `reseller.v1`: every message, enum, client and server of CONTRACT.md.
pub mod v1 {
    tonic::include_proto!("reseller.v1");
}

/// The encoded `FileDescriptorSet` of every `.proto` file, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/reseller_descriptor.bin"));
