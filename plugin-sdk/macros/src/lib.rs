//! Attribute macros for the kopf SDK (under construction).
