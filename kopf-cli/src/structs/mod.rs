//! Plain data structures: field paths, diffs, patches, resource references.
