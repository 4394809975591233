//! Client-side helpers shared by mini's controllers, scheduler and agents: recording core/v1
//! Events, controller owner references, and pod state predicates.

pub mod events;
pub mod owner;
pub mod pod;

pub use events::{EventRecorder, EventType};
