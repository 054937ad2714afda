//! GPU memory and utilisation for `/metrics`, when the machine has NVIDIA GPUs.
//!
//! Read with `nvidia-smi --query-gpu=…` (it ships with every NVIDIA driver, so wherever a GPU
//! can run a model it is there), at most once per [`REFRESH`], with a time limit; a machine
//! without it reports no GPU metrics. Not NVML through a crate: the maintained binding
//! (nvml-wrapper) would bring second major versions of thiserror, libloading and darling
//! into the build for four numbers per GPU.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a reading is reused.
const REFRESH: Duration = Duration::from_secs(5);
/// How long `nvidia-smi` may take.
const TIME_LIMIT: Duration = Duration::from_secs(3);

/// One GPU's state.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuReading {
    /// The GPU's index, as CUDA device numbers count (`cuda:<index>`).
    pub index: String,
    /// Device memory in use, bytes.
    pub memory_used_bytes: i64,
    /// Device memory, bytes.
    pub memory_total_bytes: i64,
    /// Share of the last sample period a kernel ran, 0–1.
    pub utilization: f64,
}

/// The last reading and when it was taken.
static LAST: Mutex<Option<(Instant, Vec<GpuReading>)>> = Mutex::new(None);

/// Every GPU's state now (a reading at most [`REFRESH`] old); empty without NVIDIA GPUs.
pub async fn read() -> Vec<GpuReading> {
    if let Some((at, gpus)) = LAST.lock().unwrap_or_else(|p| p.into_inner()).as_ref()
        && at.elapsed() < REFRESH
    {
        return gpus.clone();
    }
    let gpus = query().await;
    *LAST.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), gpus.clone()));
    gpus
}

async fn query() -> Vec<GpuReading> {
    let run = tokio::process::Command::new("nvidia-smi")
        .args([
            "--query-gpu=index,memory.used,memory.total,utilization.gpu",
            "--format=csv,noheader,nounits",
        ])
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(TIME_LIMIT, run).await {
        Ok(Ok(out)) if out.status.success() => parse(&String::from_utf8_lossy(&out.stdout)),
        _ => Vec::new(),
    }
}

/// Parse `nvidia-smi`'s CSV lines (`0, 1024, 81559, 37`: index, MiB used, MiB total, %
/// busy); lines that do not read as numbers (`[N/A]`) are left out.
pub fn parse(csv: &str) -> Vec<GpuReading> {
    csv.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(',').map(str::trim).collect();
            let [index, used, total, busy] = fields.as_slice() else {
                return None;
            };
            let mib = |s: &str| s.parse::<i64>().ok().map(|v| v.saturating_mul(1024 * 1024));
            Some(GpuReading {
                index: index.parse::<u32>().ok()?.to_string(),
                memory_used_bytes: mib(used)?,
                memory_total_bytes: mib(total)?,
                utilization: busy.parse::<f64>().ok()? / 100.0,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nvidia_smi_lines_and_skips_unreadable_ones() {
        let got = parse("0, 1024, 81559, 37\n1, [N/A], 81559, 0\n\ngarbage\n2, 0, 40960, 100\n");
        assert_eq!(
            got,
            vec![
                GpuReading {
                    index: "0".into(),
                    memory_used_bytes: 1024 * 1024 * 1024,
                    memory_total_bytes: 81559 * 1024 * 1024,
                    utilization: 0.37,
                },
                GpuReading {
                    index: "2".into(),
                    memory_used_bytes: 0,
                    memory_total_bytes: 40960 * 1024 * 1024,
                    utilization: 1.0,
                },
            ]
        );
        assert!(parse("").is_empty());
    }
}
