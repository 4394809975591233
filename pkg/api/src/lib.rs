//! Resource registry, selectors, status errors and object helpers shared by the server side.

pub mod meta;
pub mod quantity;
pub mod registry;
pub mod selector;
pub mod status;

pub use quantity::Quantity;
pub use registry::{Registry, ResourceInfo, Storage};
pub use selector::{FieldSelector, LabelSelector};
pub use status::{ApiError, Cause};
