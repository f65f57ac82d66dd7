//! OCI distribution client: auth, pull, push, cache manifests.
