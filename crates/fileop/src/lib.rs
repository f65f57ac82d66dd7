//! File actions of the build graph, executed safely inside roots.
