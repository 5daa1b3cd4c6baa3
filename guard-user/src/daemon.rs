//! `guard run`: the foreground daemon systemd (or a DaemonSet) runs on every host.
//!
//! On start it validates the config, adopts whatever is already pinned and reconciles it to the
//! config by difference. It serves metrics, reloads on SIGHUP and whenever the config or an
//! include file changes (a rejected config leaves the running state alone), and on SIGTERM
//! leaves the guard attached (fail closed) unless `detach_on_exit` says otherwise.

use std::{path::Path, sync::Arc, time::Duration};

use anyhow::Context as _;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    attach,
    config::{self, Desired},
    metrics,
    pins::PinLayout,
    reconcile::{Outcome, fingerprint, reconcile_file},
};

/// How often the config files are checked for changes (and missing interfaces retried).
pub const POLL: Duration = Duration::from_secs(1);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    result: &'static str,
}

/// Runs the daemon until SIGTERM or SIGINT.
pub fn run(config_path: &Path) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(serve(config_path))
}

async fn serve(config_path: &Path) -> anyhow::Result<()> {
    // The pin path comes from the config; the config is then read again, and applied, under
    // the pin root's lock.
    let layout = PinLayout::new(&config::load(config_path)?.pin_path);
    let (outcome, mut seen) = reconcile_file(&layout, config_path)?;
    let (mut desired, report) = match outcome {
        Outcome::Applied(desired, report) => (*desired, report),
        Outcome::Rejected(e) => return Err(e),
        Outcome::Failed(_, e) => return Err(e.context("applying the config")),
    };
    log::info!(
        "started with {} ({} interfaces, {} allowlisted, {} denylisted prefixes)",
        config_path.display(),
        desired.interfaces.len(),
        desired.allow.len(),
        desired.deny.len(),
    );
    log::info!("applied: {}", report.summary());
    let mut pending = !report.missing.is_empty();

    if log::log_enabled!(log::Level::Debug) {
        forward_ebpf_logs(&layout);
    }

    let reloads = Family::<ReloadLabels, Counter>::default();
    for result in ["ok", "rejected", "error"] {
        let _ = reloads.get_or_create(&ReloadLabels { result });
    }
    let mut registry: Registry = metrics::registry(&layout);
    registry.register(
        "guard_config_reloads",
        "Config reloads by guard run, by result.",
        reloads.clone(),
    );
    let registry = Arc::new(registry);
    if let Some(addr) = desired.metrics_addr {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the metrics address {addr}"))?;
        log::info!("serving metrics on http://{addr}/metrics");
        tokio::spawn(serve_metrics(listener, registry.clone()));
    }

    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut tick = tokio::time::interval(POLL);
    loop {
        let why = tokio::select! {
            _ = hup.recv() => "SIGHUP",
            _ = tick.tick() => {
                if fingerprint(config_path, &desired) != seen {
                    "a config file changed"
                } else if pending {
                    "retrying missing interfaces"
                } else {
                    continue;
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        };
        let (outcome, now) = match reconcile_file(&layout, config_path) {
            Ok(r) => r,
            Err(e) => {
                log::error!("reload ({why}) failed: {e:#}");
                reloads
                    .get_or_create(&ReloadLabels { result: "error" })
                    .inc();
                continue;
            }
        };
        seen = now;
        match outcome {
            Outcome::Applied(next, report) => {
                if report.changed() || why != "retrying missing interfaces" {
                    log::info!("reloaded ({why}): {}", report.summary());
                }
                if next.pin_path != desired.pin_path || next.metrics_addr != desired.metrics_addr {
                    log::warn!("pin_path and metrics_addr changes apply at the next start");
                }
                pending = !report.missing.is_empty();
                reloads.get_or_create(&ReloadLabels { result: "ok" }).inc();
                desired = Desired {
                    pin_path: desired.pin_path.clone(),
                    metrics_addr: desired.metrics_addr,
                    ..*next
                };
            }
            Outcome::Failed(_, e) => {
                log::error!("reload ({why}) failed: {e:#}");
                reloads
                    .get_or_create(&ReloadLabels { result: "error" })
                    .inc();
            }
            Outcome::Rejected(e) => {
                log::error!("config rejected ({why}), keeping the running state: {e:#}");
                reloads
                    .get_or_create(&ReloadLabels { result: "rejected" })
                    .inc();
            }
        }
    }

    if desired.detach_on_exit {
        let names: Vec<String> = attach::detach(&layout, &[], true, None)?
            .into_iter()
            .map(|d| d.name)
            .collect();
        log::info!(
            "stopping: detached from {} (detach_on_exit)",
            names.join(",")
        );
    } else {
        log::info!("stopping: the guard stays attached (fail closed)");
    }
    Ok(())
}

/// Forwards the XDP program's aya-log records to this process's logger. The program's own
/// level is fixed when it loads (debug if the loading process ran at debug level, else off),
/// so this shows records only from a program loaded at debug level.
fn forward_ebpf_logs(layout: &PinLayout) {
    let id = match aya::programs::ProgramInfo::from_pin(layout.prog()) {
        Ok(info) => info.id(),
        Err(e) => {
            log::warn!("eBPF logs: cannot read the pinned program: {e}");
            return;
        }
    };
    let logger = match aya_log::EbpfLogger::init_from_id(id) {
        Ok(l) => l,
        Err(e) => {
            log::warn!("eBPF logs: not forwarded: {e}");
            return;
        }
    };
    log::debug!("forwarding eBPF logs of program {id} (level fixed at load)");
    tokio::spawn(async move {
        // SAFETY: the logger owns its ring buffer's fd and keeps it open while the AsyncFd
        // owns the logger.
        let registered = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE)
        };
        let Ok(mut fd) = registered else {
            return;
        };
        loop {
            let Ok(mut ready) = fd.readable_mut().await else {
                return;
            };
            ready.get_inner_mut().flush();
            ready.clear_ready();
        }
    });
}

async fn serve_metrics(listener: tokio::net::TcpListener, registry: Arc<Registry>) {
    use axum::{
        Router,
        http::{StatusCode, header},
        response::IntoResponse as _,
        routing::get,
    };
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let registry = registry.clone();
            async move {
                match metrics::encode(&registry) {
                    Ok(body) => ([(header::CONTENT_TYPE, OPENMETRICS)], body).into_response(),
                    Err(e) => {
                        log::error!("metrics: {e:#}");
                        StatusCode::INTERNAL_SERVER_ERROR.into_response()
                    }
                }
            }
        }),
    );
    if let Err(e) = axum::serve(listener, app).await {
        log::error!("metrics server stopped: {e}");
    }
}

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
