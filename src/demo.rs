//! Placeholder.
use crate::cli::DemoArgs;
pub async fn run(
    _args: DemoArgs,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    shutdown.await;
    Ok(())
}
pub const DISCOVERY_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);
