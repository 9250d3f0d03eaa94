//! GPU discovery for preflight: cudarc behind the `cuda` feature, guarded so a host without an
//! NVIDIA driver gets a plain answer, never a panic.

/// The CUDA this build's cudarc was generated for (None: built without CUDA).
pub const CUDA_BUILT: Option<&str> = if cfg!(feature = "cuda-13000") {
    Some("13.0")
} else if cfg!(feature = "cuda") {
    Some("12.6")
} else {
    None
};

/// One CUDA device.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GpuDevice {
    pub ordinal: usize,
    pub name: String,
    /// Compute capability without the dot, e.g. `87` (Orin), `110` (Thor).
    pub sm: String,
    pub total_mem_bytes: u64,
}

/// What this host has.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum GpuDiscovery {
    /// Built without the `cuda` feature: GPU discovery is not compiled in.
    NotBuilt,
    /// No CUDA driver library (`libcuda.so`) on this host.
    NoDriver,
    Devices {
        devices: Vec<GpuDevice>,
    },
    /// The driver is there but answered with an error.
    DriverError {
        message: String,
    },
}

/// Lists CUDA devices, or says why there are none.
#[cfg(not(feature = "gpu"))]
pub fn discover_gpus() -> GpuDiscovery {
    GpuDiscovery::NotBuilt
}

/// Lists CUDA devices, or says why there are none.
#[cfg(feature = "gpu")]
pub fn discover_gpus() -> GpuDiscovery {
    use cudarc::driver::CudaContext;
    // SAFETY: only tries to dlopen libcuda (via libloading) and drops the handle; the library's
    // initializers are the NVIDIA driver's own, the same code any CUDA program runs.
    #[allow(unsafe_code)]
    let present = unsafe { cudarc::driver::sys::is_culib_present() };
    if !present {
        return GpuDiscovery::NoDriver;
    }
    let count = match CudaContext::device_count() {
        Ok(n) => n.max(0) as usize,
        Err(e) => {
            return GpuDiscovery::DriverError {
                message: e.to_string(),
            };
        }
    };
    let mut devices = Vec::with_capacity(count);
    for ordinal in 0..count {
        let context = match CudaContext::new(ordinal) {
            Ok(c) => c,
            Err(e) => {
                return GpuDiscovery::DriverError {
                    message: format!("device {ordinal}: {e}"),
                };
            }
        };
        let (major, minor) = context.compute_capability().unwrap_or((0, 0));
        devices.push(GpuDevice {
            ordinal,
            name: context.name().unwrap_or_else(|e| format!("unknown ({e})")),
            sm: format!("{major}{minor}"),
            total_mem_bytes: context.total_mem().unwrap_or(0) as u64,
        });
    }
    GpuDiscovery::Devices { devices }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_host_has_no_gpu_and_says_so() {
        // The CI host has no NVIDIA driver: the answer is plain, not a panic.
        let found = discover_gpus();
        if cfg!(feature = "gpu") {
            assert!(
                matches!(
                    found,
                    GpuDiscovery::NoDriver | GpuDiscovery::DriverError { .. }
                ),
                "{found:?}"
            );
        } else {
            assert_eq!(found, GpuDiscovery::NotBuilt);
        }
    }
}
