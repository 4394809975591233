//! Ships every container's CRI log lines from the node agent to the server and rotates the log files.

pub mod wire;
