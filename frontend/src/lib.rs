//! # rbuild-frontend — Dockerfile to BuildGraph
//!
//! (Being written: parser, expansion, planning.)

pub mod expand;
