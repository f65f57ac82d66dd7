//! Run a process in namespaces, pivot_root, cgroups. All unsafe code lives here.
