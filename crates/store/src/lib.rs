//! Content-addressed blob store and metadata database.
