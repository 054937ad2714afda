//! Where ONNX graphs run: the `device` a model asks for (`auto`, `cpu`, `cuda`, `cuda:<n>`),
//! the device it gets, and how many rows each device scored.
//!
//! The CUDA execution provider is compiled in only with the `cuda` cargo feature and used
//! only when the loaded ONNX Runtime library has it (the `onnxruntime-gpu` wheel); otherwise
//! a graph that asks for CUDA runs on the CPU, and whoever imports it is told so once.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::error::{ModelError, ModelResult};

/// The device a model asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DeviceRequest {
    /// A GPU when there is one, else the CPU.
    #[default]
    Auto,
    /// The CPU.
    Cpu,
    /// CUDA device `n`.
    Cuda(i32),
}

impl DeviceRequest {
    /// Parse `auto`, `cpu`, `cuda` or `cuda:<n>`.
    pub fn parse(text: &str) -> ModelResult<DeviceRequest> {
        let t = text.trim().to_ascii_lowercase();
        let bad = || {
            ModelError::InvalidParameter(format!(
                "device \"{text}\" is not auto, cpu, cuda or cuda:<n>"
            ))
        };
        Ok(match t.as_str() {
            "auto" => DeviceRequest::Auto,
            "cpu" => DeviceRequest::Cpu,
            "cuda" | "gpu" => DeviceRequest::Cuda(0),
            other => match other.strip_prefix("cuda:").map(str::parse::<i32>) {
                Some(Ok(n)) if n >= 0 => DeviceRequest::Cuda(n),
                _ => return Err(bad()),
            },
        })
    }
}

impl fmt::Display for DeviceRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceRequest::Auto => f.write_str("auto"),
            DeviceRequest::Cpu => f.write_str("cpu"),
            DeviceRequest::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// The device a graph runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    /// The CPU.
    Cpu,
    /// CUDA device `n`.
    Cuda(i32),
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// Whether this build and the loaded library can run CUDA.
pub fn cuda_available() -> bool {
    #[cfg(feature = "cuda")]
    {
        use ort::ep::ExecutionProvider;
        super::runtime::environment().is_ok() && ort::ep::CUDA::is_available().unwrap_or(false)
    }
    #[cfg(not(feature = "cuda"))]
    {
        false
    }
}

/// The device a request gets here.
pub fn effective(request: DeviceRequest) -> Device {
    match request {
        DeviceRequest::Cpu => Device::Cpu,
        DeviceRequest::Auto if cuda_available() => Device::Cuda(0),
        DeviceRequest::Cuda(n) if cuda_available() => Device::Cuda(n),
        _ => Device::Cpu,
    }
}

/// Why a request for a CUDA device runs on the CPU here, for the NOTICE that says so;
/// `None` when the request gets what it asks for (or asks for `auto` or `cpu`).
pub fn fallback_reason(request: DeviceRequest) -> Option<String> {
    match (request, effective(request)) {
        (DeviceRequest::Cuda(_), Device::Cpu) => Some(format!(
            "device {request} is not available on this server (it needs a build with the \
             `cuda` feature and the onnxruntime-gpu library)"
        )),
        _ => None,
    }
}

/// Copies of a model's artifact that run on another device than the model asks for (see
/// [`crate::ModelArtifact::on_device`]), one per device, kept so each device opens the model
/// once. Never serialised; empty again in a clone.
#[derive(Debug, Default)]
pub(crate) struct DeviceViews(
    std::sync::Mutex<Vec<(Device, std::sync::Arc<crate::ModelArtifact>)>>,
);

impl Clone for DeviceViews {
    fn clone(&self) -> Self {
        DeviceViews::default()
    }
}

impl DeviceViews {
    /// The artifact `whole` as run on device `wanted`: `whole` itself when that is `current`,
    /// the device it runs on already; else the copy kept for `wanted`, made once with the
    /// estimator `estimator` builds.
    pub(crate) fn view(
        &self,
        whole: &std::sync::Arc<crate::ModelArtifact>,
        current: Device,
        wanted: Device,
        estimator: impl FnOnce() -> crate::model::Estimator,
    ) -> std::sync::Arc<crate::ModelArtifact> {
        if wanted == current {
            return std::sync::Arc::clone(whole);
        }
        let mut views = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, view)) = views.iter().find(|(d, _)| *d == wanted) {
            return std::sync::Arc::clone(view);
        }
        let mut copy = (**whole).clone();
        copy.estimator = estimator();
        let view = std::sync::Arc::new(copy);
        views.push((wanted, std::sync::Arc::clone(&view)));
        view
    }
}

static CPU_RUNS: AtomicU64 = AtomicU64::new(0);
static CPU_ROWS: AtomicU64 = AtomicU64::new(0);
static CUDA_RUNS: AtomicU64 = AtomicU64::new(0);
static CUDA_ROWS: AtomicU64 = AtomicU64::new(0);

/// Count one run of `rows` rows on `device`.
pub(crate) fn count(device: Device, rows: usize) {
    let (runs, total) = match device {
        Device::Cpu => (&CPU_RUNS, &CPU_ROWS),
        Device::Cuda(_) => (&CUDA_RUNS, &CUDA_ROWS),
    };
    runs.fetch_add(1, Ordering::Relaxed);
    total.fetch_add(rows as u64, Ordering::Relaxed);
}

/// Runs and rows scored per device kind since start: `(device, runs, rows)`.
pub fn inference_counts() -> [(&'static str, u64, u64); 2] {
    [
        (
            "cpu",
            CPU_RUNS.load(Ordering::Relaxed),
            CPU_ROWS.load(Ordering::Relaxed),
        ),
        (
            "cuda",
            CUDA_RUNS.load(Ordering::Relaxed),
            CUDA_ROWS.load(Ordering::Relaxed),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_and_print() {
        for (text, want) in [
            ("auto", DeviceRequest::Auto),
            ("CPU", DeviceRequest::Cpu),
            ("cuda", DeviceRequest::Cuda(0)),
            ("cuda:3", DeviceRequest::Cuda(3)),
        ] {
            assert_eq!(DeviceRequest::parse(text).expect(text), want);
        }
        for bad in ["tpu", "cuda:-1", "cuda:x", ""] {
            assert!(DeviceRequest::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(DeviceRequest::Cuda(1).to_string(), "cuda:1");
        // Without the `cuda` feature every request runs on the CPU.
        #[cfg(not(feature = "cuda"))]
        {
            assert_eq!(effective(DeviceRequest::Cuda(0)), Device::Cpu);
            let why = fallback_reason(DeviceRequest::Cuda(1)).expect("a reason");
            assert!(
                why.contains("cuda:1") && why.contains("onnxruntime-gpu"),
                "{why}"
            );
        }
        assert_eq!(fallback_reason(DeviceRequest::Cpu), None);
        assert_eq!(fallback_reason(DeviceRequest::Auto), None);
    }
}
