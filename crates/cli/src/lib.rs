//! The rbuild command line.
