//! Placeholder on the `config` branch so the binary builds; the lead's server replaces it.

use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {}

/// Placeholder: logs that no listener exists in this build and returns.
///
/// # Errors
/// None in the placeholder.
pub async fn run(config: Config) -> Result<(), ServerError> {
    tracing::info!(local_ip = %config.local_ip, "server placeholder: no listeners in this build");
    Ok(())
}
