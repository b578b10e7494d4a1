//! Run the emulator standalone: `cargo run -p kopf-testing --example serve -- KUBECONFIG [FILE...]`.

#[tokio::main]
async fn main() -> Result<(), kopf_testing::EmulatorError> {
    let mut args = std::env::args().skip(1);
    let kubeconfig = args.next().map(std::path::PathBuf::from);
    let files = args.map(std::path::PathBuf::from).collect();
    kopf_testing::serve_until_signal(kopf_testing::ServeOptions {
        kubeconfig,
        files,
        ..Default::default()
    })
    .await
}
