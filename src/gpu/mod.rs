//! GPU runtime: one CUDA context and stream, the kernel families of `cuda/` compiled by NVRTC at
//! start-up for the device's own architecture, and one launcher file per family.
//!
//! Sources are embedded in the binary (`include_str!`), so a release binary needs no source tree.
//! Each family is `common.cuh` (+ `gemm.cuh` for the GEMM users) + its `.cu`, compiled to a cubin
//! (machine code, not PTX: a cubin from a newer NVRTC loads on an older driver of the same major
//! version, PTX would not) and cached on disk under `$DRPO_CACHE_DIR`, else
//! `$XDG_CACHE_HOME/drpo/kernels`, else `~/.cache/drpo/kernels`, keyed by a hash of the source, the
//! architecture, the options and the NVRTC version.
//!
//! Without a CUDA driver, NVRTC or a device, [`Gpu::new`] returns [`Error::NoDevice`] (cudarc itself
//! would panic: the libraries are probed first). [`compile_all`] needs NVRTC only, no GPU: it backs
//! `drpo kernels` and `tests/kernels_compile.rs` (registers, shared memory, spills per kernel).
//!
//! `DRPO_SYNC=1` synchronises after every launch, so a kernel fault is reported as
//! [`Error::Kernel`] naming the kernel that caused it instead of surfacing at some later call.

pub mod attention;
pub mod embedding;
pub mod logprob;
pub mod matmul;
pub mod residual;
pub mod rmsnorm;
pub mod rope;
pub mod sampling;
pub mod swiglu;

use crate::error::{Error, Result};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaStream, DeviceRepr, DriverError, LaunchArgs, LaunchConfig, ValidAsZeroBits,
};
use std::collections::HashMap;
use std::ffi::{c_char, CString};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

pub use half::bf16;

/// Storage type of a kernel: `f32` (the tight-check path) or `bf16` (raw bits on the device).
/// Kernels are templates over it on the CUDA side; Rust picks the entry point by [`GpuFloat::pick`].
pub trait GpuFloat: DeviceRepr + ValidAsZeroBits + Copy + Default + Send + Sync + std::fmt::Debug + 'static {
    const NAME: &'static str;
    fn from_f32(x: f32) -> Self;
    fn to_f32(self) -> f32;
    /// The entry point for this type among an (f32, bf16) pair of names.
    fn pick(f32_name: &'static str, bf16_name: &'static str) -> &'static str;
}

impl GpuFloat for f32 {
    const NAME: &'static str = "f32";
    fn from_f32(x: f32) -> Self {
        x
    }
    fn to_f32(self) -> f32 {
        self
    }
    fn pick(f32_name: &'static str, _: &'static str) -> &'static str {
        f32_name
    }
}

impl GpuFloat for bf16 {
    const NAME: &'static str = "bf16";
    fn from_f32(x: f32) -> Self {
        bf16::from_f32(x)
    }
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
    fn pick(_: &'static str, bf16_name: &'static str) -> &'static str {
        bf16_name
    }
}

/// One NVRTC compilation unit: the files concatenated in order, each behind a `#line` so compiler
/// messages name the right file and line.
pub struct Family {
    pub name: &'static str,
    pub files: &'static [(&'static str, &'static str)],
}

const COMMON: (&str, &str) = ("common.cuh", include_str!("../../cuda/common.cuh"));
const GEMM: (&str, &str) = ("gemm.cuh", include_str!("../../cuda/gemm.cuh"));

/// Every kernel family, in the order they are compiled.
pub const FAMILIES: &[Family] = &[
    Family { name: "embedding", files: &[COMMON, ("embedding.cu", include_str!("../../cuda/embedding.cu"))] },
    Family { name: "rmsnorm", files: &[COMMON, ("rmsnorm.cu", include_str!("../../cuda/rmsnorm.cu"))] },
    Family { name: "rope", files: &[COMMON, ("rope.cu", include_str!("../../cuda/rope.cu"))] },
    Family { name: "matmul", files: &[COMMON, GEMM, ("matmul.cu", include_str!("../../cuda/matmul.cu"))] },
    Family { name: "attention", files: &[COMMON, ("attention.cu", include_str!("../../cuda/attention.cu"))] },
    Family { name: "swiglu", files: &[COMMON, ("swiglu.cu", include_str!("../../cuda/swiglu.cu"))] },
    Family { name: "residual", files: &[COMMON, ("residual.cu", include_str!("../../cuda/residual.cu"))] },
    Family { name: "logprob", files: &[COMMON, GEMM, ("logprob.cu", include_str!("../../cuda/logprob.cu"))] },
    Family { name: "sampling", files: &[COMMON, ("sampling.cu", include_str!("../../cuda/sampling.cu"))] },
];

/// The architectures `drpo kernels` and the compile test check: Ampere (A100) and Hopper (H100/H200).
pub const CHECK_ARCHS: [&str; 2] = ["sm_80", "sm_90"];

impl Family {
    /// The compilation unit's full text.
    pub fn source(&self) -> String {
        let mut s = String::new();
        for (file, text) in self.files {
            s.push_str(&format!("#line 1 \"{file}\"\n{text}\n"));
        }
        s
    }
}

/// True when `libnvrtc` can be loaded (cudarc would panic on first use otherwise).
pub fn nvrtc_available() -> bool {
    // SAFETY: only tries to dlopen the library candidates; no symbol is called.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// True when the CUDA driver library can be loaded (says nothing about a device being present).
pub fn driver_available() -> bool {
    // SAFETY: as above.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

fn no_nvrtc() -> Error {
    Error::NoDevice {
        why: "NVRTC (libnvrtc.so.13) not found; run `eval \"$(bash .ci/install-nvrtc.sh)\"` or put the CUDA 13 lib folder on LD_LIBRARY_PATH".into(),
    }
}

/// NVRTC's (major, minor) version.
pub fn nvrtc_version() -> Result<(i32, i32)> {
    if !nvrtc_available() {
        return Err(no_nvrtc());
    }
    let (mut major, mut minor) = (0, 0);
    // SAFETY: two out-pointers to live integers.
    let r = unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
    r.result().map_err(|e| Error::Nvrtc { family: "(version)".into(), log: format!("{e:?}") })?;
    Ok((major, minor))
}

/// A compiled family: the cubin and NVRTC's log (ptxas's `-v` report when asked for).
struct Compiled {
    cubin: Vec<u8>,
    log: String,
}

fn compile_options(arch: &str, verbose: bool) -> Vec<String> {
    let mut o = vec![format!("--gpu-architecture={arch}"), "--std=c++17".to_string()];
    if verbose {
        o.push("--ptxas-options=-v".to_string());
    }
    o
}

/// Compiles one family to a cubin for `arch` (e.g. "sm_90") with NVRTC. No GPU is needed.
fn nvrtc_compile(family: &Family, arch: &str, verbose: bool) -> Result<Compiled> {
    use cudarc::nvrtc::{result, sys};
    if !nvrtc_available() {
        return Err(no_nvrtc());
    }
    let err = |what: String| Error::Nvrtc { family: family.name.to_string(), log: what };
    let src = CString::new(family.source()).map_err(|_| err("source contains a NUL byte".into()))?;
    let name = CString::new(format!("{}.cu", family.name)).map_err(|_| err("bad family name".into()))?;
    let prog = result::create_program(&src, Some(&name)).map_err(|e| err(format!("nvrtcCreateProgram: {e:?}")))?;
    let read_log = || -> String {
        // SAFETY: `prog` is live until destroy_program below.
        match unsafe { result::get_program_log(prog) } {
            Ok(raw) => {
                let bytes: Vec<u8> = raw.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
                String::from_utf8_lossy(&bytes).into_owned()
            }
            Err(e) => format!("(no log: {e:?})"),
        }
    };
    let opts = compile_options(arch, verbose);
    // SAFETY: `prog` was created above and is destroyed exactly once, after its last use.
    let out = unsafe {
        let compiled = result::compile_program(prog, &opts);
        let log = read_log();
        let cubin = compiled.map_err(|e| err(format!("{e:?} with options {opts:?}\n{log}"))).and_then(|()| {
            let mut size = 0usize;
            sys::nvrtcGetCUBINSize(prog, &mut size).result().map_err(|e| err(format!("nvrtcGetCUBINSize: {e:?}")))?;
            let mut buf = vec![0u8; size];
            sys::nvrtcGetCUBIN(prog, buf.as_mut_ptr() as *mut c_char)
                .result()
                .map_err(|e| err(format!("nvrtcGetCUBIN: {e:?}")))?;
            Ok(buf)
        });
        let _ = result::destroy_program(prog);
        cubin.map(|cubin| Compiled { cubin, log })
    };
    out
}

/// Stable 64-bit FNV-1a: the cache key must not change between Rust releases.
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for &b in p.iter().chain(std::iter::once(&0xffu8)) {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// Folder of the kernel cache, if one can be named.
pub fn cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("DRPO_CACHE_DIR") {
        return Some(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d).join("drpo/kernels"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/drpo/kernels"))
}

/// The family's cubin for `arch`: from the disk cache, else compiled and (best effort) cached.
/// A cache that cannot be written (read-only home) only costs a recompile next time.
fn cubin_for(family: &Family, arch: &str) -> Result<Vec<u8>> {
    let (major, minor) = nvrtc_version()?;
    let src = family.source();
    let opts = compile_options(arch, false).join(" ");
    let version = format!("nvrtc {major}.{minor}");
    let key = fnv1a(&[src.as_bytes(), arch.as_bytes(), opts.as_bytes(), version.as_bytes()]);
    let path = cache_dir().map(|d| d.join(format!("{}-{arch}-{key:016x}.cubin", family.name)));
    if let Some(p) = &path {
        if let Ok(bytes) = std::fs::read(p) {
            if !bytes.is_empty() {
                return Ok(bytes);
            }
        }
    }
    let compiled = nvrtc_compile(family, arch, false)?;
    if let Some(p) = &path {
        let _ = crate::error::write_atomic(p, &compiled.cubin);
    }
    Ok(compiled.cubin)
}

/// One row of the compile check: a kernel's resources for one architecture (from ptxas `-v`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelReport {
    pub family: &'static str,
    pub kernel: String,
    pub arch: String,
    pub registers: u32,
    /// static shared memory per block
    pub shared_bytes: u32,
    pub stack_bytes: u32,
    pub spill_store_bytes: u32,
    pub spill_load_bytes: u32,
    pub barriers: u32,
}

/// Compiles every family for `arch` ("sm_80", "sm_90", …) with NVRTC only (no GPU, no driver) and
/// returns one row per kernel entry point, in family order then ptxas's order.
/// Fails with [`Error::NoDevice`] when NVRTC is absent and [`Error::Nvrtc`] when a family does not compile.
pub fn compile_all(arch: &str) -> Result<Vec<KernelReport>> {
    let mut rows = Vec::new();
    for family in FAMILIES {
        let compiled = nvrtc_compile(family, arch, true)?;
        let found = parse_ptxas_report(family.name, &compiled.log);
        if found.is_empty() {
            return Err(Error::Nvrtc {
                family: family.name.to_string(),
                log: format!("no ptxas report in the NVRTC log ({} bytes of cubin):\n{}", compiled.cubin.len(), compiled.log),
            });
        }
        rows.extend(found);
    }
    Ok(rows)
}

/// Parses ptxas `-v` output:
/// ```text
/// ptxas info    : Compiling entry function 'rmsnorm_fwd_f32' for 'sm_90'
/// ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
/// ptxas info    : Used 20 registers, used 1 barriers, 128 bytes smem
/// ```
pub fn parse_ptxas_report(family: &'static str, log: &str) -> Vec<KernelReport> {
    fn number_before(line: &str, unit: &str) -> Option<u32> {
        let at = line.find(unit)?;
        line[..at].split(|c: char| !c.is_ascii_digit()).rfind(|s| !s.is_empty())?.parse().ok()
    }
    fn number_after(line: &str, word: &str) -> Option<u32> {
        let at = line.find(word)? + word.len();
        line[at..].split(|c: char| !c.is_ascii_digit()).find(|s| !s.is_empty())?.parse().ok()
    }
    let mut rows: Vec<KernelReport> = Vec::new();
    for line in log.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            let mut parts = rest.split('\'');
            let kernel = parts.next().unwrap_or_default().to_string();
            let arch = parts.nth(1).unwrap_or_default().to_string();
            rows.push(KernelReport {
                family,
                kernel,
                arch,
                registers: 0,
                shared_bytes: 0,
                stack_bytes: 0,
                spill_store_bytes: 0,
                spill_load_bytes: 0,
                barriers: 0,
            });
        } else if let Some(r) = rows.last_mut() {
            if line.contains("bytes stack frame") {
                r.stack_bytes = number_before(line, "bytes stack frame").unwrap_or(0);
                r.spill_store_bytes = number_before(line, "bytes spill stores").unwrap_or(0);
                r.spill_load_bytes = number_before(line, "bytes spill loads").unwrap_or(0);
            } else if line.contains("Used") && line.contains("registers") {
                r.registers = number_after(line, "Used").unwrap_or(0);
                r.barriers = number_after(line, "used").filter(|_| line.contains("barriers")).unwrap_or(0);
                r.shared_bytes = number_before(line, "bytes smem").unwrap_or(0);
            }
        }
    }
    rows
}

/// The CUDA context, its stream and the loaded kernel modules.
pub struct Gpu {
    pub ctx: Arc<CudaContext>,
    pub stream: Arc<CudaStream>,
    /// "sm_90" for an H100
    pub arch: String,
    pub device_name: String,
    pub sm_count: usize,
    sync_each_launch: bool,
    modules: HashMap<&'static str, Arc<CudaModule>>,
    functions: Mutex<HashMap<&'static str, CudaFunction>>,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Gpu({} {}, {} SMs)", self.device_name, self.arch, self.sm_count)
    }
}

impl Gpu {
    /// Opens device `ordinal` and loads every kernel family (compiled for its architecture, or from
    /// the cache). [`Error::NoDevice`] when the driver, NVRTC or the device is missing.
    pub fn new(ordinal: usize) -> Result<Gpu> {
        if !driver_available() {
            return Err(Error::NoDevice { why: "no CUDA driver (libcuda.so) on this machine".into() });
        }
        if !nvrtc_available() {
            return Err(no_nvrtc());
        }
        let count = CudaContext::device_count()
            .map_err(|e| Error::NoDevice { why: format!("the CUDA driver found no usable device ({e:?})") })?;
        if ordinal >= count.max(0) as usize {
            return Err(Error::NoDevice { why: format!("device {ordinal} asked for, {count} present") });
        }
        let ctx = CudaContext::new(ordinal)?;
        let (major, minor) = ctx.compute_capability()?;
        if major < 8 {
            return Err(Error::NoDevice {
                why: format!("compute capability {major}.{minor}: the kernels need sm_80 or newer (bf16 mma.sync)"),
            });
        }
        let arch = format!("sm_{major}{minor}");
        let sm_count =
            ctx.attribute(cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?.max(1) as usize;
        let device_name = ctx.name()?;
        let stream = ctx.default_stream();
        let mut modules = HashMap::new();
        for family in FAMILIES {
            let cubin = cubin_for(family, &arch)?;
            let module = ctx.load_module(cudarc::nvrtc::Ptx::from_binary(cubin))?;
            modules.insert(family.name, module);
        }
        let sync_each_launch = std::env::var("DRPO_SYNC").is_ok_and(|v| v == "1");
        Ok(Gpu { ctx, stream, arch, device_name, sm_count, sync_each_launch, modules, functions: Mutex::new(HashMap::new()) })
    }

    /// A kernel entry point of a family (looked up once, then cached).
    pub fn function(&self, family: &'static str, name: &'static str) -> Result<CudaFunction> {
        let mut map = self.functions.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = map.get(name) {
            return Ok(f.clone());
        }
        let module = self.modules.get(family);
        assert!(module.is_some(), "kernel family `{family}` is not in gpu::FAMILIES");
        let f = module.map(|m| m.load_function(name)).unwrap_or(Err(DriverError(
            cudarc::driver::sys::cudaError_enum::CUDA_ERROR_NOT_FOUND,
        )));
        let f = f.map_err(|source| Error::Kernel { name, source })?;
        map.insert(name, f.clone());
        Ok(f)
    }

    /// Launches a prepared argument list; with `DRPO_SYNC=1` also waits for the kernel, so a fault
    /// is reported under its own name.
    ///
    /// # Safety
    /// The arguments pushed on `args` must match the kernel's parameter list in order and type, and
    /// every buffer must be large enough for the grid `cfg` describes (the launchers check lengths).
    pub unsafe fn launch(&self, name: &'static str, cfg: LaunchConfig, args: &mut LaunchArgs<'_>) -> Result<()> {
        args.launch(cfg).map_err(|source| Error::Kernel { name, source })?;
        if self.sync_each_launch {
            self.stream.synchronize().map_err(|source| Error::Kernel { name, source })?;
        }
        Ok(())
    }

    /// Waits for all queued work.
    pub fn synchronize(&self) -> Result<()> {
        self.stream.synchronize()?;
        Ok(())
    }
}

/// `ceil(a / b)`: the blocks that cover a items, b per block.
pub(crate) fn blocks(a: usize, b: usize) -> usize {
    a.div_ceil(b)
}

/// CUDA's grid limits (every device since compute capability 3.0): x ≤ 2^31 − 1, y and z ≤ 65,535.
pub const MAX_GRID: [usize; 3] = [(1 << 31) - 1, 65_535, 65_535];

/// A launch grid checked against [`MAX_GRID`]: over the limit the launch itself would fail with an
/// CUDA_ERROR_INVALID_VALUE that names nothing. `dims[i] = (blocks, what they count)`.
pub(crate) fn grid_dims(op: &'static str, dims: [(usize, &str); 3]) -> Result<(u32, u32, u32)> {
    for (axis, (&(n, what), max)) in ["x", "y", "z"].iter().zip(dims.iter().zip(MAX_GRID)) {
        if n > max {
            return Err(Error::input(format!("{op}: grid.{axis} = {n} blocks ({what}) exceeds CUDA's limit of {max}; split the call")));
        }
    }
    Ok((dims[0].0 as u32, dims[1].0 as u32, dims[2].0 as u32))
}

/// Checks that a size fits the kernels' 32-bit index arguments.
pub(crate) fn as_i32(op: &'static str, what: &str, x: usize) -> Result<i32> {
    i32::try_from(x).map_err(|_| Error::input(format!("{op}: {what} = {x} does not fit a 32-bit kernel argument")))
}

/// A raw device pointer argument that is null (for optional inputs such as a missing bias).
pub(crate) const NULL_PTR: u64 = 0;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ptxas_verbose_output() {
        let log = "ptxas info    : 0 bytes gmem\n\
ptxas info    : Compiling entry function 'k2' for 'sm_80'\n\
ptxas info    : Function properties for k2\n\
ptxas         .     16 bytes stack frame, 8 bytes spill stores, 12 bytes spill loads\n\
ptxas info    : Used 14 registers, used 0 barriers, 360 bytes cmem[0], 88 bytes cmem[2]\n\
ptxas info    : Compiling entry function 'k' for 'sm_90'\n\
ptxas info    : Function properties for k\n\
ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n\
ptxas info    : Used 10 registers, used 1 barriers, 256 bytes smem\n";
        let rows = parse_ptxas_report("t", log);
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].kernel.as_str(), rows[0].arch.as_str()), ("k2", "sm_80"));
        assert_eq!((rows[0].registers, rows[0].shared_bytes, rows[0].barriers), (14, 0, 0));
        assert_eq!((rows[0].stack_bytes, rows[0].spill_store_bytes, rows[0].spill_load_bytes), (16, 8, 12));
        assert_eq!((rows[1].kernel.as_str(), rows[1].registers, rows[1].shared_bytes, rows[1].barriers), ("k", 10, 256, 1));
    }

    #[test]
    fn grids_over_the_cuda_limits_are_input_errors() {
        assert_eq!(grid_dims("op", [(MAX_GRID[0], "rows"), (65_535, "tiles"), (1, "")]).unwrap(), ((1 << 31) - 1, 65_535, 1));
        let e = grid_dims("matmul_fwd", [(3, "column tiles"), (65_536, "row tiles of 64"), (1, "")]).unwrap_err();
        assert!(matches!(e, Error::Input { .. }), "{e:?}");
        let text = e.to_string();
        assert!(text.contains("matmul_fwd") && text.contains("grid.y = 65536") && text.contains("65535"), "{text}");
        assert!(grid_dims("op", [(1, ""), (1, ""), (65_536, "sequences")]).is_err());
        assert!(grid_dims("op", [(1 << 31, "rows"), (1, ""), (1, "")]).is_err());
    }

    #[test]
    fn cache_key_depends_on_every_part() {
        let a = fnv1a(&[b"src", b"sm_90"]);
        assert_ne!(a, fnv1a(&[b"src", b"sm_80"]));
        assert_ne!(a, fnv1a(&[b"sr", b"csm_90"]));
        assert_eq!(a, fnv1a(&[b"src", b"sm_90"]));
    }
}
