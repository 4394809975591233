//! Client-side helpers shared by mini's controllers, scheduler and agents: recording core/v1
//! Events, controller owner references, pod state predicates, driving watch streams, and waiting
//! for a CRD to be Established.

pub mod crd;
pub mod events;
pub mod owner;
pub mod pod;
pub mod watch;

pub use events::{EventRecorder, EventType};
