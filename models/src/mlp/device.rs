//! Where a perceptron trains and runs: the same `device` request as imported graphs
//! ([`DeviceRequest`]), served by candle instead of ONNX Runtime.
//!
//! candle runs on a CUDA GPU only in a build with the `candle-cuda` feature of
//! `prognos-models` (it compiles candle's kernels, so it needs a CUDA toolkit and is never
//! built in CI); otherwise, or when the GPU cannot be opened, every request runs on the CPU.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use crate::onnx::device::{Device, DeviceRequest};

/// candle's handle on CUDA device `n`, opened once per process and shared: tensors made on
/// two handles of one GPU cannot be mixed. `None` when this build or machine has no such GPU.
fn cuda_handle(n: i32) -> Option<candle_core::Device> {
    if !candle_core::utils::cuda_is_available() {
        return None;
    }
    static HANDLES: OnceLock<Mutex<HashMap<i32, Option<candle_core::Device>>>> = OnceLock::new();
    let mut handles = HANDLES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    handles
        .entry(n)
        .or_insert_with(|| {
            usize::try_from(n)
                .ok()
                .and_then(|i| candle_core::Device::new_cuda(i).ok())
        })
        .clone()
}

/// The device `request` gets for a perceptron here.
pub fn effective(request: DeviceRequest) -> Device {
    match request {
        DeviceRequest::Cpu => Device::Cpu,
        DeviceRequest::Auto if cuda_handle(0).is_some() => Device::Cuda(0),
        DeviceRequest::Cuda(n) if cuda_handle(n).is_some() => Device::Cuda(n),
        _ => Device::Cpu,
    }
}

/// candle's handle for the device `request` gets.
pub(crate) fn candle_device(request: DeviceRequest) -> candle_core::Device {
    match effective(request) {
        Device::Cuda(n) => cuda_handle(n).unwrap_or(candle_core::Device::Cpu),
        Device::Cpu => candle_core::Device::Cpu,
    }
}

/// Why a perceptron that asks for a CUDA device runs on the CPU here (for the NOTICE that
/// says so); `None` when it gets what it asks for, or asks for `auto` or `cpu`.
pub fn fallback_reason(request: DeviceRequest) -> Option<String> {
    match (request, effective(request)) {
        (DeviceRequest::Cuda(_), Device::Cpu) => Some(format!(
            "device {request} is not available to USING mlp on this server (it needs a build \
             with the `candle-cuda` feature and that GPU); the network runs on the CPU"
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_run_on_the_cpu_without_the_feature() {
        assert_eq!(effective(DeviceRequest::Cpu), Device::Cpu);
        assert!(candle_device(DeviceRequest::Cpu).is_cpu());
        assert_eq!(fallback_reason(DeviceRequest::Auto), None);
        assert_eq!(fallback_reason(DeviceRequest::Cpu), None);
        if !candle_core::utils::cuda_is_available() {
            for r in [
                DeviceRequest::Auto,
                DeviceRequest::Cuda(0),
                DeviceRequest::Cuda(2),
            ] {
                assert_eq!(effective(r), Device::Cpu, "{r}");
                assert!(candle_device(r).is_cpu(), "{r}");
            }
            let why = fallback_reason(DeviceRequest::Cuda(2)).expect("a reason");
            assert!(
                why.contains("cuda:2") && why.contains("candle-cuda"),
                "{why}"
            );
        }
    }
}
