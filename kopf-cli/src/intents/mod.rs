//! Causes and filters: what happened to an object and which handlers it concerns.
