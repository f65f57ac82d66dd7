//! Overlay snapshots, and the diff module: upper dir to OCI layer, layer to snapshot.
