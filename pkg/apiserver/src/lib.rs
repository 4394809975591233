//! the kubernetes-compatible api server: routing, handlers, watch, discovery, authn/authz
