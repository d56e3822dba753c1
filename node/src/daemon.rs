//! `meridian node --config FILE`: the regional node daemon.

use anyhow::Context;
use meridian::Engine;
use meridian_config::node_config::NodeConfig;
use meridian_runtime::Runtime;
use metrics_exporter_prometheus::PrometheusBuilder;
use std::path::Path;

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
    let engine_config = config.engine_config();
    let dir = config.data_dir.clone();
    let engine = tokio::task::spawn_blocking(move || Engine::open(&dir, engine_config))
        .await?
        .with_context(|| format!("opening {}", config.data_dir.display()))?;
    let metrics = PrometheusBuilder::new()
        .install_recorder()
        .context("installing the metrics recorder")?;
    let runtime = Runtime::start(engine, config.runtime()).await?;
    // The endpoint reads status through a handle: the runtime stays ours to shut down.
    let (stop_http, stopped) = tokio::sync::watch::channel(false);
    if let Some(addr) = config.metrics_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        tokio::spawn(crate::http::serve(
            listener,
            metrics,
            runtime.status_handle(),
            runtime.route_handle(),
            stopped,
        ));
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
    let _ = stop_http.send(true);
    runtime.shutdown().await;
    Ok(())
}
