//! Prometheus metrics: the process-wide recorder, the request counter middleware and
//! the gauges refreshed at scrape time.

use std::sync::OnceLock;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Counter: HTTP requests by `route` and `status`.
pub const HTTP_REQUESTS: &str = "vigia_http_requests_total";
/// Gauge: resident set size now.
pub const PROCESS_RSS: &str = "vigia_process_resident_memory_bytes";
/// Gauge: highest resident set size since start (VmHWM).
pub const PROCESS_PEAK_RSS: &str = "vigia_process_peak_resident_memory_bytes";

/// Handle to the process-wide recorder.
#[derive(Clone)]
pub struct Metrics {
    handle: PrometheusHandle,
}

impl Metrics {
    /// Installs the global recorder on first call; later calls share it (one process,
    /// one registry, even when tests build several apps).
    pub fn install() -> Metrics {
        static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
        let handle = HANDLE.get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("_seconds".into()),
                    &[
                        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                        0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    ],
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Suffix("_readings".into()),
                        &[
                            1.0, 10.0, 100.0, 250.0, 500.0, 1000.0, 2000.0, 5000.0, 20000.0,
                        ],
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Suffix("_publishes".into()),
                        &[1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 1000.0],
                    )
                })
                .expect("bucket lists are non-empty constants")
                .build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder was installed first (a test harness);
            // then our handle simply renders nothing, which is harmless.
            let _ = metrics::set_global_recorder(recorder);
            vigia_ingest::metrics::describe();
            metrics::describe_counter!(
                HTTP_REQUESTS,
                metrics::Unit::Count,
                "HTTP requests by matched route and status."
            );
            metrics::describe_gauge!(PROCESS_RSS, metrics::Unit::Bytes, "Resident set size.");
            metrics::describe_gauge!(
                PROCESS_PEAK_RSS,
                metrics::Unit::Bytes,
                "Highest resident set size since start (VmHWM)."
            );
            handle
        });
        Metrics {
            handle: handle.clone(),
        }
    }

    /// Renders the text exposition, refreshing process gauges first.
    pub fn render(&self) -> String {
        if let Some((rss, peak)) = read_rss() {
            metrics::gauge!(PROCESS_RSS).set(rss as f64);
            metrics::gauge!(PROCESS_PEAK_RSS).set(peak as f64);
        }
        self.handle.render()
    }
}

/// (VmRSS, VmHWM) in bytes from /proc/self/status; None where /proc is absent.
fn read_rss() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Counts every response by matched route (not raw path, so label cardinality stays
/// bounded) and status.
pub async fn count_requests(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let res = next.run(req).await;
    metrics::counter!(HTTP_REQUESTS, "route" => route, "status" => res.status().as_str().to_owned())
        .increment(1);
    res
}
