//! Kopf's `03-exceptions` example in Rust: how handler errors are retried or not.
//!
//! * `create_fn` (Kopf's own): a [`kopf::TemporaryError`] first (retried after 1 s), an
//!   arbitrary error second (retried after the backoff), a [`kopf::PermanentError`] third,
//!   which fails the handler for good.
//! * `eventual_success`: temporary errors until the third attempt, then a result.
//! * `limited_retries`: an arbitrary error every time, `retries = 3, backoff = 1`: failed
//!   after three attempts.
//! * `permanent_errors`: an arbitrary error with `errors = kopf::Errors::Permanent`:
//!   failed at once, never retried.
//!
//! Backoffs are short (Kopf's default is 60 s) so the example finishes in seconds.

use serde_json::{Value, json};

/// An arbitrary (non-kopf) error: treated per the handler's `errors` mode.
#[derive(Debug)]
pub struct MyException(pub &'static str);

impl std::fmt::Display for MyException {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for MyException {}

/// Fails three times in three different ways; the last failure is final.
#[kopf::on::create("kopf.dev", "v1", "kopfexamples", backoff = 1.0)]
pub fn create_fn(ctx: &kopf::Context) -> kopf::Result<()> {
    match ctx.retry() {
        0 => Err(kopf::TemporaryError::new("First failure.").delay(1.0).into()),
        1 => Err(MyException("Second failure.").into()),
        _ => Err(kopf::PermanentError::new("Third failure, the final one.").into()),
    }
}

/// Not ready twice, then done: the result lands in `status.eventual_success`.
#[kopf::on::create("kopf.dev", "v1", "kopfexamples")]
pub fn eventual_success(ctx: &kopf::Context) -> kopf::Result<Value> {
    if ctx.retry() < 2 {
        return Err(
            kopf::TemporaryError::new(format!("Not ready yet (attempt {}).", ctx.retry() + 1))
                .delay(0.5)
                .into(),
        );
    }
    Ok(json!({"attempts": ctx.retry() + 1}))
}

/// Always fails with a message only; gives up after three attempts.
#[kopf::on::create("kopf.dev", "v1", "kopfexamples", retries = 3, backoff = 1.0)]
pub fn limited_retries(ctx: &kopf::Context) -> kopf::Result<()> {
    Err(MyException(if ctx.retry() == 0 {
        "Failure."
    } else {
        "Failure again."
    })
    .into())
}

/// An arbitrary error that the handler declares permanent.
#[kopf::on::create("kopf.dev", "v1", "kopfexamples", errors = kopf::Errors::Permanent)]
pub fn permanent_errors() -> kopf::Result<()> {
    Err(MyException("Unrecoverable.").into())
}
