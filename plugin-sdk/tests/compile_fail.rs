//! Compile-fail tests of the attributes: options that a handler kind does not accept (as in
//! Kopf), options that this operator cannot honour, and missing required ones. The
//! expected compiler output is in `compile_fail/*.stderr`; regenerate it with
//! `TRYBUILD=overwrite cargo test -p kopf --test compile_fail` and review the diff.

#[test]
fn attributes_refuse_options_at_compile_time() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/compile_fail/*.rs");
}
