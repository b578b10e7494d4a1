//! The operator: the reactor that watches resources and runs handlers.
