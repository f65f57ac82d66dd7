//! Image import/export: OCI layout and archive, docker-archive.
