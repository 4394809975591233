//! Agent-side streaming protocols: SPDY/3.1, the Kubernetes WebSocket channel framing, and the
//! exec/attach (remotecommand) and port-forward bridges behind the agent's streaming endpoints.

pub mod spdy;
