//! Storage formats compatible with Python Kopf: annotation keys, progress records, diff-bases.
