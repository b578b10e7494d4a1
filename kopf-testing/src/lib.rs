//! Kubernetes API emulator (under construction).
