//! Docker .dockerignore rules and Go filepath.Match wildcards.
