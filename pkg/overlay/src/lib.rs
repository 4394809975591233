//! Crate root (being written).
