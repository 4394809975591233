//! gRPC clients and messages mini speaks: the Kubernetes CRI v1 API (`cri::v1`) and the containerd
//! services the image importer uses (`containerd::services::*::v1`), plus the unix-socket transport and
//! the containerd namespace header. The message and client code is generated from the vendored `.proto`
//! files in `proto/` and committed, so building needs no `protoc`; the `generated_code_matches_proto_files`
//! test regenerates it with `protox` and fails when it is stale
//! (`MINI_REGENERATE_PROTO=1 cargo test -p mini-proto` rewrites it).

pub mod transport;

pub use prost_types;
pub use transport::{connect_unix, unix_connector, with_namespace};

// The generated modules follow the protobuf package tree (the generated code refers to other packages by
// relative `super::` paths) and are left exactly as generated: rustfmt skips them, and the doc lints that
// the comments copied from the .proto files trip are allowed.

/// The Kubernetes Container Runtime Interface.
pub mod cri {
    /// CRI v1 (package `runtime.v1`): the `RuntimeService` and `ImageService` clients and their messages.
    #[rustfmt::skip]
    #[allow(clippy::doc_lazy_continuation, rustdoc::invalid_html_tags)]
    pub mod v1;
}

/// containerd's gRPC API (package `containerd.*`), the services mini calls directly.
pub mod containerd {
    /// Messages shared by the services (package `containerd.types`): `Descriptor`, `Mount`.
    #[rustfmt::skip]
    #[allow(clippy::doc_lazy_continuation, rustdoc::invalid_html_tags)]
    pub mod types;

    /// containerd's services.
    pub mod services {
        /// The content store (package `containerd.services.content.v1`).
        pub mod content {
            #[rustfmt::skip]
            #[allow(clippy::doc_lazy_continuation, rustdoc::invalid_html_tags)]
            pub mod v1;
        }
        /// Applying layer diffs to mounts (package `containerd.services.diff.v1`).
        pub mod diff {
            #[rustfmt::skip]
            #[allow(clippy::doc_lazy_continuation, rustdoc::invalid_html_tags)]
            pub mod v1;
        }
        /// Image records (package `containerd.services.images.v1`).
        pub mod images {
            #[rustfmt::skip]
            #[allow(clippy::doc_lazy_continuation, rustdoc::invalid_html_tags)]
            pub mod v1;
        }
        /// Leases that protect resources from garbage collection (package `containerd.services.leases.v1`).
        pub mod leases {
            #[rustfmt::skip]
            #[allow(clippy::doc_lazy_continuation, rustdoc::invalid_html_tags)]
            pub mod v1;
        }
        /// Snapshotters (package `containerd.services.snapshots.v1`).
        pub mod snapshots {
            #[rustfmt::skip]
            #[allow(clippy::doc_lazy_continuation, rustdoc::invalid_html_tags)]
            pub mod v1;
        }
    }
}

#[cfg(test)]
mod codegen_tests;
