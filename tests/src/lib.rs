//! Shared helpers for guard's integration tests and the demo: crafted packets, the privilege
//! gate, and a lab of network namespaces with real servers.
pub mod differential;
pub mod kernel;
pub mod lab;
pub mod packets;
pub mod privilege;
