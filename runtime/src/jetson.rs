//! Jetson facts for `reflex preflight`: the L4T / JetPack release (`/etc/nv_tegra_release`), the
//! module (`/proc/device-tree/model`), the power mode (`nvpmodel -q`), whether clocks are locked
//! (`jetson_clocks --show`) and the TensorRT version (`libnvinfer.so.*`), read under a root
//! directory — `/` on the robot, a folder of captured files and tool outputs in tests — and
//! turned into what to change for deterministic timing.
//!
//! Nothing here changes the machine: `nvpmodel -q` and `jetson_clocks --show` only read (the
//! latter needs root; without it the clocks are reported as unknown, with how to read them).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Serialize;

/// `/etc/nv_tegra_release`, e.g. `# R36 (release), REVISION: 4.3, GCID: …, BOARD: generic, …`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct L4tRelease {
    /// `36.4.3`
    pub version: String,
    pub major: u32,
    pub revision: String,
    pub board: Option<String>,
    /// The JetPack that ships this L4T (`6.2`), or the major series (`6.x`) when the revision is
    /// newer than this table.
    pub jetpack: Option<String>,
}

/// `nvpmodel -q`: `NV Power Mode: MAXN` then the mode number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PowerMode {
    pub name: String,
    pub id: Option<u32>,
}

/// One frequency domain of `jetson_clocks --show` (Hz for GPU/EMC, kHz for CPUs, as printed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Domain {
    pub name: String,
    pub governor: Option<String>,
    pub min: u64,
    pub max: u64,
    pub current: u64,
}

/// `jetson_clocks --show`, parsed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Clocks {
    pub soc: Option<String>,
    /// Online CPUs only.
    pub cpus: Vec<Domain>,
    pub gpu: Option<Domain>,
    pub emc: Option<Domain>,
    /// EMC `FreqOverride=1`: the memory clock is pinned.
    pub emc_override: bool,
    /// Every online CPU and the GPU run at one fixed frequency (min == max) and EMC is pinned —
    /// what `sudo jetson_clocks` leaves (the criterion jetson-stats uses too).
    pub locked: bool,
}

/// Everything preflight found about the Jetson side of this host.
#[derive(Debug, Clone, Serialize)]
pub struct JetsonReport {
    pub root: PathBuf,
    /// `{root}/etc/nv_tegra_release` exists.
    pub is_jetson: bool,
    pub model: Option<String>,
    pub l4t: Option<L4tRelease>,
    pub power_mode: Option<PowerMode>,
    pub clocks: Option<Clocks>,
    pub tensorrt: Option<String>,
    /// Why a field above is missing, one line each.
    pub notes: Vec<String>,
}

/// JetPack for an L4T release: exact for the releases NVIDIA published, else the series.
pub fn jetpack_for(major: u32, revision: &str) -> Option<String> {
    let exact = match (major, revision) {
        (35, "1.0") => Some("5.0.2"),
        (35, "2.1") => Some("5.1"),
        (35, "3.1") => Some("5.1.1"),
        (35, "4.1") => Some("5.1.2"),
        (35, "5.0") => Some("5.1.3"),
        (35, "6.0") => Some("5.1.4"),
        (35, "6.1") => Some("5.1.5"),
        (36, "2.0") => Some("6.0 DP"),
        (36, "3.0") => Some("6.0"),
        (36, "4.0") => Some("6.1"),
        (36, "4.3") => Some("6.2"),
        (36, "4.4") => Some("6.2.1"),
        (38, "2.0") => Some("7.0"),
        _ => None,
    };
    exact.map(str::to_string).or(match major {
        35 => Some("5.x".into()),
        36 => Some("6.x".into()),
        38 => Some("7.x".into()),
        _ => None,
    })
}

/// Parses `/etc/nv_tegra_release`.
pub fn parse_tegra_release(text: &str) -> Option<L4tRelease> {
    let line = text.lines().find(|l| l.trim_start().starts_with("# R"))?;
    let after_r = line.trim_start().strip_prefix("# R")?;
    let major: u32 = after_r
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()?;
    let field = |key: &str| {
        line.split(',')
            .map(str::trim)
            .find_map(|part| part.strip_prefix(key).map(|v| v.trim().to_string()))
    };
    let revision = field("REVISION:")?;
    let board = field("BOARD:");
    Some(L4tRelease {
        version: format!("{major}.{revision}"),
        major,
        jetpack: jetpack_for(major, &revision),
        revision,
        board,
    })
}

/// Parses `nvpmodel -q` (warnings before the mode line are skipped).
pub fn parse_nvpmodel(text: &str) -> Option<PowerMode> {
    let mut lines = text.lines().map(str::trim);
    let name = lines
        .by_ref()
        .find_map(|l| l.strip_prefix("NV Power Mode:"))?
        .trim()
        .to_string();
    let id = lines.find(|l| !l.is_empty()).and_then(|l| l.parse().ok());
    Some(PowerMode { name, id })
}

fn key_u64(line: &str, key: &str) -> Option<u64> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key))
        .and_then(|v| v.parse().ok())
}

fn key_str(line: &str, key: &str) -> Option<String> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key))
        .map(str::to_string)
}

fn domain(name: &str, line: &str) -> Option<Domain> {
    Some(Domain {
        name: name.to_string(),
        governor: key_str(line, "Governor="),
        min: key_u64(line, "MinFreq=")?,
        max: key_u64(line, "MaxFreq=")?,
        current: key_u64(line, "CurrentFreq=")?,
    })
}

/// Parses `jetson_clocks --show` (Xavier, Orin and Thor layout: `cpuN: Online=1 Governor=…
/// MinFreq=… MaxFreq=… CurrentFreq=…`, `GPU MinFreq=…`, `EMC … FreqOverride=0|1`).
pub fn parse_jetson_clocks(text: &str) -> Option<Clocks> {
    let mut clocks = Clocks {
        soc: None,
        cpus: Vec::new(),
        gpu: None,
        emc: None,
        emc_override: false,
        locked: false,
    };
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("SOC family:") {
            clocks.soc = rest.split_whitespace().next().map(str::to_string);
        } else if line.starts_with("cpu")
            && let Some((name, rest)) = line.split_once(':')
            && name[3..].chars().all(|c| c.is_ascii_digit())
        {
            if key_u64(rest, "Online=") == Some(0) {
                continue;
            }
            if let Some(d) = domain(name, rest) {
                clocks.cpus.push(d);
            }
        } else if let Some(rest) = line.strip_prefix("GPU ") {
            clocks.gpu = domain("GPU", rest);
        } else if let Some(rest) = line.strip_prefix("EMC ") {
            clocks.emc = domain("EMC", rest);
            clocks.emc_override = key_u64(rest, "FreqOverride=") == Some(1);
        }
    }
    if clocks.cpus.is_empty() && clocks.gpu.is_none() && clocks.emc.is_none() {
        return None;
    }
    clocks.locked = !clocks.cpus.is_empty()
        && clocks.cpus.iter().all(|c| c.min == c.max)
        && clocks.gpu.as_ref().is_some_and(|g| g.min == g.max)
        && clocks.emc_override;
    Some(clocks)
}

/// The TensorRT version from the newest `libnvinfer.so.X.Y.Z` in the library directories (the
/// runtime package ships it; the -dev header is not needed).
pub fn tensorrt_version(root: &Path) -> Option<String> {
    let mut best: Option<Vec<u32>> = None;
    for dir in [
        "usr/lib/aarch64-linux-gnu",
        "usr/lib/x86_64-linux-gnu",
        "usr/local/tensorrt/lib",
    ] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(v) = name.to_str().and_then(|n| n.strip_prefix("libnvinfer.so.")) else {
                continue;
            };
            let parts: Option<Vec<u32>> = v.split('.').map(|p| p.parse().ok()).collect();
            if let Some(parts) = parts
                && best.as_ref().is_none_or(|b| parts > *b)
            {
                best = Some(parts);
            }
        }
    }
    best.map(|b| b.iter().map(u32::to_string).collect::<Vec<_>>().join("."))
}

/// Where NVIDIA installs its tools, under `root`.
fn tool(root: &Path, name: &str) -> Option<PathBuf> {
    ["usr/sbin", "usr/bin", "sbin", "bin"]
        .iter()
        .map(|d| root.join(d).join(name))
        .find(|p| p.is_file())
}

fn run(path: &Path, arg: &str) -> Result<String, String> {
    let out = Command::new(path)
        .arg(arg)
        .output()
        .map_err(|e| format!("cannot run {} {arg}: {e}", path.display()))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!(
            "{} {arg} failed ({}): {}",
            path.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Reads the Jetson facts under `root` (`/` on the robot).
pub fn probe(root: &Path) -> JetsonReport {
    let mut notes = Vec::new();
    let release_path = root.join("etc/nv_tegra_release");
    let release = std::fs::read_to_string(&release_path).ok();
    let is_jetson = release.is_some();
    let l4t = release.as_deref().and_then(parse_tegra_release);
    if is_jetson && l4t.is_none() {
        notes.push(format!(
            "{} has no `# R<major> (release), REVISION: …` line",
            release_path.display()
        ));
    }
    let model = std::fs::read_to_string(root.join("proc/device-tree/model"))
        .ok()
        .map(|m| m.trim_end_matches('\0').trim().to_string())
        .filter(|m| !m.is_empty());
    let mut power_mode = None;
    let mut clocks = None;
    if is_jetson {
        match tool(root, "nvpmodel") {
            None => notes.push("nvpmodel not found (package nvidia-l4t-nvpmodel)".into()),
            Some(p) => match run(&p, "-q") {
                Ok(text) => {
                    power_mode = parse_nvpmodel(&text);
                    if power_mode.is_none() {
                        notes.push(format!(
                            "nvpmodel -q printed no `NV Power Mode:` line: {text:?}"
                        ));
                    }
                }
                Err(e) => notes.push(e),
            },
        }
        match tool(root, "jetson_clocks") {
            None => notes.push("jetson_clocks not found (package nvidia-l4t-tools)".into()),
            Some(p) => match run(&p, "--show") {
                Ok(text) => {
                    clocks = parse_jetson_clocks(&text);
                    if clocks.is_none() {
                        notes.push("jetson_clocks --show printed no CPU/GPU/EMC lines; run preflight as root (`sudo reflex preflight`) to read the clocks".into());
                    }
                }
                Err(e) => notes.push(format!(
                    "{e}; run preflight as root (`sudo reflex preflight`) to read the clocks"
                )),
            },
        }
    }
    let tensorrt = tensorrt_version(root);
    if is_jetson && tensorrt.is_none() {
        notes.push("no libnvinfer.so.* (TensorRT) in /usr/lib/aarch64-linux-gnu".into());
    }
    JetsonReport {
        root: root.to_path_buf(),
        is_jetson,
        model,
        l4t,
        power_mode,
        clocks,
        tensorrt,
        notes,
    }
}

/// What the GPU side of this build and host offers, for [`JetsonReport::advice`].
#[derive(Debug)]
pub struct GpuSide<'a> {
    /// `reflex_policy::CUDA_BUILT`.
    pub cuda_built: Option<&'a str>,
    /// A CUDA device was found (cudarc).
    pub gpu_found: bool,
    /// The loaded ONNX Runtime's execution providers (None: ONNX Runtime not loaded).
    pub ort_providers: Option<&'a [String]>,
}

fn mhz(hz: u64) -> u64 {
    hz / 1_000_000
}

impl JetsonReport {
    /// What to change for deterministic timing on this Jetson, one line each; empty on a host
    /// that is not a Jetson, and when nothing is missing.
    pub fn advice(&self, gpu: &GpuSide) -> Vec<String> {
        let mut out = Vec::new();
        if !self.is_jetson {
            return out;
        }
        let jetpack_major = self.l4t.as_ref().map(|r| r.major);
        let feature = match jetpack_major {
            Some(38) => "jetpack7",
            _ => "jetpack6",
        };
        match &self.power_mode {
            Some(m) if !m.name.to_ascii_uppercase().starts_with("MAXN") => out.push(format!(
                "power mode is {} (nvpmodel {}): select MAXN for the highest fixed clocks — `sudo nvpmodel -m 0` on AGX Orin and Thor (`nvpmodel -q --verbose` lists this module's modes); it persists across reboots",
                m.name,
                m.id.map_or("?".to_string(), |i| i.to_string())
            )),
            Some(_) => {}
            None => out.push("power mode unknown: run `sudo nvpmodel -q` and select MAXN (`sudo nvpmodel -m 0` on AGX Orin and Thor)".into()),
        }
        match &self.clocks {
            Some(c) if !c.locked => {
                let mut what = Vec::new();
                let scaling: Vec<&Domain> = c.cpus.iter().filter(|d| d.min != d.max).collect();
                if let Some(d) = scaling.first() {
                    what.push(format!(
                        "{} of {} CPUs scale ({} {}–{} MHz)",
                        scaling.len(),
                        c.cpus.len(),
                        d.governor.as_deref().unwrap_or("?"),
                        d.min / 1000,
                        d.max / 1000
                    ));
                }
                if let Some(g) = c.gpu.as_ref().filter(|g| g.min != g.max) {
                    what.push(format!("GPU {}–{} MHz", mhz(g.min), mhz(g.max)));
                }
                if !c.emc_override {
                    what.push("EMC FreqOverride=0".into());
                }
                out.push(format!(
                    "clocks are not locked ({}): run `sudo jetson_clocks` at every boot (launch/README.md has the systemd unit) so the 10 ms loop and inference latency do not follow the DVFS governor",
                    what.join(", ")
                ));
            }
            Some(_) => {}
            None => out.push("clock lock unknown: run `sudo jetson_clocks --show` (or this preflight as root) and lock them with `sudo jetson_clocks`".into()),
        }
        match gpu.cuda_built {
            None => out.push(format!(
                "this reflex was built without CUDA: rebuild with `cargo build --release --features {feature}` to use the GPU (CPU inference otherwise)"
            )),
            Some(built) => {
                let wanted = match jetpack_major {
                    Some(38) => Some("13.0"),
                    Some(36) => Some("12.6"),
                    _ => None,
                };
                if let Some(w) = wanted.filter(|w| *w != built) {
                    out.push(format!(
                        "this reflex was built for CUDA {built} but {} ships CUDA {w}: rebuild with `--features {feature}`",
                        self.l4t.as_ref().and_then(|r| r.jetpack.as_deref()).map_or("this JetPack".to_string(), |j| format!("JetPack {j}"))
                    ));
                }
                if !gpu.gpu_found {
                    out.push("no CUDA device answered although this is a Jetson: check `nvidia-l4t-cuda` and that the user is in the `video` and `render` groups".into());
                }
            }
        }
        match gpu.ort_providers {
            Some(p) if !p.iter().any(|n| n == "TensorrtExecutionProvider") => out.push(format!(
                "the loaded ONNX Runtime offers {} but no TensorrtExecutionProvider: install an onnxruntime-gpu build for JetPack {} (NVIDIA's Jetson AI Lab wheel index) and set `[models] ort_library` to its libonnxruntime.so",
                p.join(", "),
                self.l4t.as_ref().and_then(|r| r.jetpack.as_deref()).unwrap_or("?")
            )),
            Some(_) => {}
            None => out.push("ONNX Runtime not loaded: pass --ort-library (the onnxruntime-gpu build for this JetPack) to check its execution providers".into()),
        }
        if self.tensorrt.is_none() {
            out.push("TensorRT not found (libnvinfer.so.*): `sudo apt install nvidia-tensorrt` (part of JetPack); the TensorRT accelerator needs it".into());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tegra_release_lines() {
        let r = parse_tegra_release(
            "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: Wed Jan  8 01:49:37 UTC 2025\n# KERNEL_VARIANT: oot\nTARGET_USERSPACE_LIB_DIR=nvidia\n",
        )
        .unwrap();
        assert_eq!(r.version, "36.4.3");
        assert_eq!(r.jetpack.as_deref(), Some("6.2"));
        assert_eq!(r.board.as_deref(), Some("generic"));
        let r = parse_tegra_release("# R36 (release), REVISION: 9.1, GCID: 1").unwrap();
        assert_eq!(r.jetpack.as_deref(), Some("6.x"));
        assert!(parse_tegra_release("garbage").is_none());
        assert!(parse_tegra_release("# R36 (release), GCID: 1").is_none());
    }

    #[test]
    fn nvpmodel_with_a_warning_first() {
        let m = parse_nvpmodel("NVPM WARN: fan mode is not set!\nNV Power Mode: 15W\n1\n").unwrap();
        assert_eq!(
            m,
            PowerMode {
                name: "15W".into(),
                id: Some(1)
            }
        );
        assert!(parse_nvpmodel("").is_none());
    }

    #[test]
    fn clocks_locked_needs_cpus_gpu_and_emc() {
        let locked = "SOC family:tegra234  Machine:NVIDIA Jetson AGX Orin\ncpu0: Online=1 Governor=schedutil MinFreq=2201600 MaxFreq=2201600 CurrentFreq=2201600 IdleStates: WFI=0 c7=0\ncpu1: Online=0 Governor=schedutil MinFreq=729600 MaxFreq=2201600 CurrentFreq=729600 IdleStates: WFI=1 c7=1\nGPU MinFreq=1300500000 MaxFreq=1300500000 CurrentFreq=1300500000\nEMC MinFreq=204000000 MaxFreq=3199000000 CurrentFreq=3199000000 FreqOverride=1\n";
        let c = parse_jetson_clocks(locked).unwrap();
        assert_eq!(c.soc.as_deref(), Some("tegra234"));
        assert_eq!(c.cpus.len(), 1, "offline CPUs are skipped");
        assert!(c.locked);
        let c = parse_jetson_clocks(&locked.replace("FreqOverride=1", "FreqOverride=0")).unwrap();
        assert!(!c.locked);
        let c =
            parse_jetson_clocks(&locked.replace("GPU MinFreq=1300500000", "GPU MinFreq=306000000"))
                .unwrap();
        assert!(!c.locked);
        assert!(parse_jetson_clocks("jetson_clocks: must be run as root\n").is_none());
    }

    #[test]
    fn this_host_is_not_a_jetson_unless_it_is() {
        let r = probe(Path::new("/"));
        assert_eq!(r.is_jetson, Path::new("/etc/nv_tegra_release").exists());
        if !r.is_jetson {
            let gpu = GpuSide {
                cuda_built: None,
                gpu_found: false,
                ort_providers: None,
            };
            assert!(r.advice(&gpu).is_empty());
        }
    }
}
