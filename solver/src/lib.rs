//! BuildGraph to image: cache keys, scheduling, execution.
