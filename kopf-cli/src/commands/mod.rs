//! Implementations of the `kopf` subcommands.
