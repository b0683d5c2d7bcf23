//! The domain: what the service knows, independent of gRPC.

pub mod model;
pub mod repository;
pub mod service;
