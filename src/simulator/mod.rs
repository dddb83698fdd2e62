//! Placeholder.
use clap::Args;
#[derive(Debug, Args)]
pub struct SimulateArgs {}
pub async fn run(
    _args: SimulateArgs,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    shutdown.await;
    Ok(())
}
