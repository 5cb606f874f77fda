//! The `healthcheck` subcommand: asks a running worker's gRPC health service
//! whether it serves. Container healthchecks call the binary itself, so the
//! runtime image needs no curl or grpc_health_probe.

use std::time::Duration;

use anyhow::{Context as _, bail};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// Succeeds when the worker at `url` reports SERVING within a few seconds.
pub async fn healthcheck(url: &str) -> anyhow::Result<()> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned())
        .with_context(|| format!("invalid worker url {url:?}"))?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(2))
        .connect()
        .await
        .with_context(|| format!("cannot connect to {url}"))?;
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest { service: String::new() })
        .await
        .context("health check failed")?;
    match response.into_inner().status() {
        ServingStatus::Serving => Ok(()),
        other => bail!("worker reports {}", other.as_str_name()),
    }
}
