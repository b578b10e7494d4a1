//! The kopf plugin SDK (under construction).
