//! The host side of the plugin ABI: loading, describing, invoking.
