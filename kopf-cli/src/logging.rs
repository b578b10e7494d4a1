//! Log setup: formats, levels and the object prefix.
