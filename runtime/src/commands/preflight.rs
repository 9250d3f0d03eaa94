//! `reflex preflight`: what this host offers Reflex (ONNX Runtime, GPUs, RT grants, Jetson).

use std::path::PathBuf;

use super::ort_version;
use anyhow::Result;

/// What this host offers Reflex: ONNX Runtime, GPUs (CUDA driver, SM, memory).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
    /// libonnxruntime.so.1.31.1 to try (default: $ORT_DYLIB_PATH).
    #[arg(long)]
    ort_library: Option<PathBuf>,
    /// Read the Jetson files (/etc/nv_tegra_release, /proc/device-tree/model, libnvinfer)
    /// and tools (nvpmodel, jetson_clocks) under this directory instead of / (a mounted
    /// image, or captured outputs in tests).
    #[arg(long, default_value = "/")]
    jetson_root: PathBuf,
}

pub fn exec(args: Args) -> Result<()> {
    let Args {
        json,
        ort_library,
        jetson_root,
    } = args;
    let ort = match reflex_policy::load_onnx_runtime(ort_library.as_deref()) {
        Ok(path) => Ok(path.display().to_string()),
        Err(e) => Err(e.to_string()),
    };
    let ort_build = match &ort {
        Ok(_) => reflex_policy::ort_build().ok(),
        Err(_) => None,
    };
    let gpus = reflex_policy::discover_gpus();
    let host = reflex_rt::ticker::host_report();
    let advice = host.advice();
    let jetson = crate::jetson::probe(&jetson_root);
    let jetson_advice = jetson.advice(&crate::jetson::GpuSide {
        cuda_built: reflex_policy::CUDA_BUILT,
        gpu_found: matches!(&gpus, reflex_policy::GpuDiscovery::Devices { devices } if !devices.is_empty()),
        ort_providers: ort_build.as_ref().map(|(_, p)| p.as_slice()),
    });
    if json {
        let value = serde_json::json!({
            "realtime": {
                "cpus": host.cpus,
                "sched_fifo": match &host.fifo_allowed { Ok(()) => "allowed".to_string(), Err(e) => format!("refused: {e}") },
                "rtprio_limit": [host.rtprio_limit.0, host.rtprio_limit.1],
                "memlock_limit_bytes": host.memlock_limit_bytes,
                "isolated_cpus": host.isolated_cpus,
                "preempt_rt": host.preempt_rt,
                "kernel": host.kernel,
                "advice": advice,
            },
            "onnxruntime": match &ort {
                Ok(path) => serde_json::json!({
                    "status": "loaded",
                    "path": path,
                    "version": ort_version(std::path::Path::new(path)),
                    "build": ort_build.as_ref().map(|(b, _)| b),
                    "providers": ort_build.as_ref().map(|(_, p)| p),
                }),
                Err(e) => serde_json::json!({"status": "unavailable", "error": e}),
            },
            "gpu": gpus,
            "cuda_built": reflex_policy::CUDA_BUILT,
            "jetson": jetson,
            "jetson_advice": jetson_advice,
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        println!(
            "reflex preflight ({} {})",
            std::env::consts::ARCH,
            std::env::consts::OS
        );
        match &ort {
            Ok(path) => println!(
                "onnxruntime: loaded {path} (version {})",
                ort_version(std::path::Path::new(path)).unwrap_or_else(|| "unknown".into())
            ),
            Err(e) => println!("onnxruntime: unavailable: {e}"),
        }
        if let Some((build, providers)) = &ort_build {
            println!("onnxruntime build: {}", build.trim());
            println!("onnxruntime providers: {}", providers.join(", "));
        }
        print_jetson(&jetson);
        match &gpus {
            reflex_policy::GpuDiscovery::NotBuilt => println!(
                "gpu: not checked: this reflex was built without CUDA (on a Jetson: --features jetpack6 for Orin, jetpack7 for Thor)"
            ),
            reflex_policy::GpuDiscovery::NoDriver => println!(
                "gpu: none: no CUDA driver (libcuda.so) on this host; policies run on the CPU"
            ),
            reflex_policy::GpuDiscovery::DriverError { message } => {
                println!("gpu: the CUDA driver answered with an error: {message}")
            }
            reflex_policy::GpuDiscovery::Devices { devices } => {
                for d in devices {
                    println!(
                        "gpu {}: {} (SM {}, {:.1} GiB)",
                        d.ordinal,
                        d.name,
                        d.sm,
                        d.total_mem_bytes as f64 / (1u64 << 30) as f64
                    );
                }
            }
        }
        println!(
            "real-time: {} CPUs, SCHED_FIFO {}, RLIMIT_RTPRIO {:?}, memlock {}, isolated CPUs [{}], PREEMPT_RT {}, kernel {}",
            host.cpus,
            match &host.fifo_allowed {
                Ok(()) => "allowed".to_string(),
                Err(e) => format!("refused ({e})"),
            },
            host.rtprio_limit,
            if host.memlock_limit_bytes == u64::MAX {
                "unlimited".to_string()
            } else {
                format!("{} KiB", host.memlock_limit_bytes / 1024)
            },
            host.isolated_cpus,
            if host.preempt_rt { "yes" } else { "no" },
            host.kernel
        );
        for line in jetson_advice.iter().chain(&advice) {
            println!("  to do: {line}");
        }
    }
    Ok(())
}

/// The Jetson part of `reflex preflight`'s text output.
fn print_jetson(j: &crate::jetson::JetsonReport) {
    if !j.is_jetson {
        println!(
            "jetson: not a Jetson (no {}); the L4T, power mode and clock checks apply on Jetson modules only",
            j.root.join("etc/nv_tegra_release").display()
        );
        return;
    }
    println!(
        "jetson: {}, L4T {} (JetPack {})",
        j.model.as_deref().unwrap_or("unknown module"),
        j.l4t.as_ref().map_or("?", |r| r.version.as_str()),
        j.l4t
            .as_ref()
            .and_then(|r| r.jetpack.as_deref())
            .unwrap_or("?")
    );
    match &j.power_mode {
        Some(m) => println!(
            "power mode: {} ({})",
            m.name,
            m.id.map_or("?".into(), |i| i.to_string())
        ),
        None => println!("power mode: unknown"),
    }
    match &j.clocks {
        Some(c) => println!(
            "clocks: {}",
            if c.locked {
                "locked (jetson_clocks)"
            } else {
                "not locked (DVFS)"
            }
        ),
        None => println!("clocks: unknown"),
    }
    println!("tensorrt: {}", j.tensorrt.as_deref().unwrap_or("not found"));
    for note in &j.notes {
        println!("  note: {note}");
    }
}
