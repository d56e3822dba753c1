//! `meridian node --config FILE`: the regional node daemon.

use crate::config::NodeConfig;
use anyhow::Context;
use meridian::runtime::{replica_id_for, Runtime};
use meridian::{Config, Durability, Engine};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::path::Path;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Runs a node until SIGINT or SIGTERM.
pub fn run(path: &Path) -> anyhow::Result<()> {
    let config = NodeConfig::load(path)?;
    crate::init_logging(&config.log_format == "json");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(serve(config))
}

async fn serve(config: NodeConfig) -> anyhow::Result<()> {
    let engine_config = Config {
        durability: if config.durability == "sync" {
            Durability::Sync
        } else {
            Durability::Wal
        },
        value_bytes_max: config.limits.value_bytes_max,
        entry_cache_bytes: config.limits.replication_cache_mib << 20,
        replica_id: Some(replica_id_for(
            &config.cluster,
            &config.name,
            config.incarnation,
        )),
        ..Config::default()
    };
    let dir = config.data_dir.clone();
    let engine = tokio::task::spawn_blocking(move || Engine::open(&dir, engine_config))
        .await?
        .with_context(|| format!("opening {}", config.data_dir.display()))?;
    let metrics = PrometheusBuilder::new()
        .install_recorder()
        .context("installing the metrics recorder")?;
    let runtime = Arc::new(Runtime::start(engine, config.runtime()).await?);
    if let Some(addr) = config.metrics_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        tokio::spawn(http(listener, metrics, runtime.clone()));
    }
    // A line for scripts and tests to wait on.
    println!(
        "meridian node {} ({}) listening on {}",
        config.name,
        config.region,
        runtime.local_addr()?
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
    match Arc::try_unwrap(runtime) {
        Ok(rt) => rt.shutdown().await,
        Err(_) => tracing::warn!("runtime still shared at shutdown; exiting without a drain"),
    }
    Ok(())
}

/// `/metrics` (Prometheus text) and `/health` (JSON status); one request per connection.
async fn http(listener: tokio::net::TcpListener, metrics: PrometheusHandle, runtime: Arc<Runtime>) {
    while let Ok((mut sock, _)) = listener.accept().await {
        let metrics = metrics.clone();
        let runtime = runtime.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let Ok(n) = sock.read(&mut buf).await else {
                return;
            };
            let request = String::from_utf8_lossy(&buf[..n]);
            let path = request.split_whitespace().nth(1).unwrap_or("/");
            let (status, kind, body) = match path {
                "/metrics" => ("200 OK", "text/plain; version=0.0.4", metrics.render()),
                "/health" => (
                    "200 OK",
                    "application/json",
                    serde_json::to_string(&runtime.status()).unwrap_or_else(|_| "{}".into()),
                ),
                _ => ("404 Not Found", "text/plain", "not found\n".into()),
            };
            let head = format!("HTTP/1.1 {status}\r\ncontent-type: {kind}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", body.len());
            let _ = sock.write_all(head.as_bytes()).await;
            let _ = sock.write_all(body.as_bytes()).await;
        });
    }
}
