//! Log shipping from the agent to the server: the wire types of `POST /v1-mini/logs`.
pub mod wire;
