//! The CUDA backend of [`Gpu`](super::Gpu): one context and stream through cudarc, every kernel family
//! compiled by NVRTC to a cubin for the device's own architecture (machine code, not PTX: a cubin from
//! a newer NVRTC loads on an older driver of the same major version, PTX would not) and cached on disk
//! by a hash of the source, the architecture, the options and the NVRTC version.
//!
//! cudarc panics when libcuda or libnvrtc is absent, and (with its `cuda-13000` bindings and dynamic
//! loading) when the driver lacks a CUDA 13 symbol: so the libraries and the driver's version are
//! probed first, and each shortfall is [`Error::NoDevice`] with the reason. [`compile_all`] needs
//! NVRTC only, no GPU: it backs `drpo kernels` and `tests/kernels_compile.rs`.

use super::{fnv1a, cache_dir, Arg, ArgValue, DeviceBuffer, DeviceCopy, DeviceProps, Family, LaunchCfg, Memory, FAMILIES, SHARED_DEFAULT_BYTES};
use crate::error::{Error, Result};
use cudarc::driver::{result, sys, CudaContext, CudaFunction, CudaModule, CudaStream, DriverError, LaunchConfig, PushKernelArg};
use std::collections::HashMap;
use std::ffi::{c_char, CString};
use std::sync::{Arc, Mutex};

/// The oldest driver the bindings work with: CUDA 13.0 (driver R580). cudarc's `cuda-13000`
/// feature resolves every driver symbol of CUDA 13 with an `expect`, and NVRTC 13 cubins need it.
pub const MIN_DRIVER_VERSION: i32 = 13000;

/// True when `libnvrtc` can be loaded (cudarc would panic on first use otherwise).
pub fn nvrtc_available() -> bool {
    // SAFETY: only tries to dlopen the library candidates; no symbol is called.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// True when a CUDA driver of version 13.0 or newer can be loaded (says nothing about a device being
/// present). cudarc's own probe resolves every CUDA 13 symbol with `expect`, so on an older driver it
/// panics: the version is read first.
pub fn driver_available() -> bool {
    // SAFETY: as above, once the library is known to have the CUDA 13 entry points.
    matches!(driver_version(), Some(v) if v >= MIN_DRIVER_VERSION) && unsafe { cudarc::driver::sys::is_culib_present() }
}

/// The CUDA driver's version (`cuDriverGetVersion`: 1000·major + 10·minor, e.g. 13000), read through
/// our own dlopen of libcuda before cudarc resolves anything; None without a driver library.
pub fn driver_version() -> Option<i32> {
    static VERSION: std::sync::OnceLock<Option<i32>> = std::sync::OnceLock::new();
    *VERSION.get_or_init(probe_driver_version)
}

fn probe_driver_version() -> Option<i32> {
    for name in [c"libcuda.so.1", c"libcuda.so"] {
        // SAFETY: dlopen / dlsym with NUL-terminated names; the symbol has the C signature
        // `CUresult cuDriverGetVersion(int*)` in every CUDA release; the handle is kept open (as
        // cudarc keeps its own), so the library stays loaded.
        unsafe {
            let lib = libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
            if lib.is_null() {
                continue;
            }
            let sym = libc::dlsym(lib, c"cuDriverGetVersion".as_ptr());
            if sym.is_null() {
                return None;
            }
            let get: unsafe extern "C" fn(*mut i32) -> i32 = std::mem::transmute(sym);
            let mut v = 0;
            return (get(&mut v) == 0).then_some(v);
        }
    }
    None
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
        rows.extend(compile_family(family, arch)?);
    }
    Ok(rows)
}

/// [`compile_all`] for one family (any [`Family`], e.g. a test's).
pub fn compile_family(family: &'static Family, arch: &str) -> Result<Vec<KernelReport>> {
    let compiled = nvrtc_compile(family, arch, true)?;
    let found = parse_ptxas_report(family.name, &compiled.log);
    if found.is_empty() {
        return Err(Error::Nvrtc {
            family: family.name.to_string(),
            log: format!("no ptxas report in the NVRTC log ({} bytes of cubin):\n{}", compiled.cubin.len(), compiled.log),
        });
    }
    Ok(found)
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

/// The context, its stream and the loaded kernel modules.
pub(crate) struct CudaDevice {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    arch: String,
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
    functions: Mutex<HashMap<&'static str, CudaFunction>>,
}

impl CudaDevice {
    pub fn open(ordinal: usize) -> Result<(CudaDevice, DeviceProps)> {
        match driver_version() {
            Some(v) if v >= MIN_DRIVER_VERSION => {}
            Some(v) => {
                return Err(Error::NoDevice {
                    why: format!(
                        "the CUDA driver is version {}.{} ({v}); drpo needs CUDA 13.0 or newer (driver R580+): \
                         its bindings and NVRTC 13 cubins use CUDA 13 entry points",
                        v / 1000,
                        v % 1000 / 10
                    ),
                })
            }
            None => return Err(Error::NoDevice { why: "no CUDA driver (libcuda.so) on this machine".into() }),
        }
        if !driver_available() {
            return Err(Error::NoDevice { why: "the CUDA driver library (libcuda.so) cannot be loaded".into() });
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
        // One stream only, and raw device addresses above the seam: cudarc's per-buffer events (for
        // ordering across streams) would only cost time.
        // SAFETY: no buffer exists yet, and this backend never uses a second stream.
        unsafe { ctx.disable_event_tracking() };
        let (major, minor) = ctx.compute_capability()?;
        if major < 8 {
            return Err(Error::NoDevice {
                why: format!("compute capability {major}.{minor}: the kernels need sm_80 or newer (bf16 mma.sync)"),
            });
        }
        let arch = format!("sm_{major}{minor}");
        let sm_count = ctx.attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?.max(1) as usize;
        let name = ctx.name()?;
        let stream = ctx.default_stream();
        let dev = CudaDevice { ctx, stream, arch: arch.clone(), modules: Mutex::new(HashMap::new()), functions: Mutex::new(HashMap::new()) };
        // every family at start-up: a compile error shows now, not at the first launch
        for family in FAMILIES {
            dev.module(family)?;
        }
        Ok((dev, DeviceProps { arch, name, sm_count }))
    }

    /// Free memory of the device, in bytes (the driver's count).
    pub fn free_bytes(&self) -> Result<u64> {
        self.ctx.bind_to_thread()?;
        let (free, _total) = result::mem_get_info()?;
        Ok(free as u64)
    }

    fn module(&self, family: &'static Family) -> Result<Arc<CudaModule>> {
        let mut map = self.modules.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = map.get(family.name) {
            return Ok(m.clone());
        }
        let cubin = cubin_for(family, &self.arch)?;
        let m = self.ctx.load_module(cudarc::nvrtc::Ptx::from_binary(cubin))?;
        map.insert(family.name, m.clone());
        Ok(m)
    }

    /// A kernel entry point (looked up once, then cached).
    fn function(&self, family: &'static Family, name: &'static str) -> Result<CudaFunction> {
        if let Some(f) = self.functions.lock().unwrap_or_else(|e| e.into_inner()).get(name) {
            return Ok(f.clone());
        }
        let f = self.module(family)?.load_function(name).map_err(|source| Error::Kernel { name, source })?;
        self.functions.lock().unwrap_or_else(|e| e.into_inner()).insert(name, f.clone());
        Ok(f)
    }

    fn wrap<T: DeviceCopy>(&self, slice: cudarc::driver::CudaSlice<T>) -> DeviceBuffer<T> {
        use cudarc::driver::DevicePtr;
        let ptr = slice.device_ptr(&self.stream).0;
        DeviceBuffer::new(ptr, slice.len(), Memory::Cuda(slice))
    }

    pub fn alloc_zeros<T: DeviceCopy>(&self, len: usize) -> Result<DeviceBuffer<T>> {
        // a zero-length allocation is refused by some drivers: keep one element
        let slice = self.stream.alloc_zeros::<T>(len.max(1))?;
        let mut b = self.wrap(slice);
        b.len = len;
        Ok(b)
    }

    pub fn htod<T: DeviceCopy>(&self, src: &[T]) -> Result<DeviceBuffer<T>> {
        let mut b = self.alloc_zeros::<T>(src.len())?;
        self.memcpy_htod(src, b.ptr)?;
        b.len = src.len();
        Ok(b)
    }

    pub fn memcpy_htod<T: DeviceCopy>(&self, src: &[T], dst: u64) -> Result<()> {
        if src.is_empty() {
            return Ok(());
        }
        // SAFETY: `dst` addresses at least src.len() values (the caller's view); from pageable memory
        // the call returns once `src` has been staged, so it may be dropped afterwards.
        unsafe { result::memcpy_htod_async(dst, src, self.stream.cu_stream()) }?;
        Ok(())
    }

    pub fn memcpy_dtod(&self, src: u64, dst: u64, bytes: usize) -> Result<()> {
        if bytes == 0 {
            return Ok(());
        }
        // SAFETY: `src` and `dst` address `bytes` bytes of live, disjoint memory (the caller's views).
        unsafe { result::memcpy_dtod_async(dst, src, bytes, self.stream.cu_stream()) }?;
        Ok(())
    }

    pub fn memset_zero(&self, dst: u64, bytes: usize) -> Result<()> {
        if bytes == 0 {
            return Ok(());
        }
        // SAFETY: `dst` addresses `bytes` bytes of live memory on this stream (the caller's view);
        // all-zero bytes are a valid value of every DeviceCopy type.
        unsafe { result::memset_d8_async(dst, 0, bytes, self.stream.cu_stream()) }?;
        Ok(())
    }

    pub fn dtoh<T: DeviceCopy>(&self, src: u64, len: usize) -> Result<Vec<T>> {
        let mut out = vec![T::default(); len];
        if len > 0 {
            // SAFETY: `src` addresses `len` values (the caller's view); the stream is synchronised
            // before `out` is read.
            unsafe { result::memcpy_dtoh_async(&mut out, src, self.stream.cu_stream()) }?;
        }
        self.stream.synchronize()?;
        Ok(out)
    }

    pub fn synchronize(&self) -> Result<()> {
        self.stream.synchronize()?;
        Ok(())
    }

    pub fn launch(&self, family: &'static Family, name: &'static str, cfg: LaunchCfg, args: &[Arg]) -> Result<()> {
        let f = self.function(family, name)?;
        if cfg.shared_bytes > SHARED_DEFAULT_BYTES {
            // dynamic shared memory above 48 KiB needs the function's opt-in first
            use sys::CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES as MAX_DYN;
            f.set_attribute(MAX_DYN, cfg.shared_bytes as i32).map_err(|source| Error::Kernel { name, source })?;
        }
        let mut b = self.stream.launch_builder(&f);
        for a in args {
            match &a.value {
                ArgValue::Ptr(p) => b.arg(p),
                ArgValue::I32(x) => b.arg(x),
                ArgValue::U32(x) => b.arg(x),
                ArgValue::I64(x) => b.arg(x),
                ArgValue::U64(x) => b.arg(x),
                ArgValue::F32(x) => b.arg(x),
                ArgValue::F64(x) => b.arg(x),
            };
        }
        let lc = LaunchConfig { grid_dim: cfg.grid, block_dim: cfg.block, shared_mem_bytes: cfg.shared_bytes };
        // SAFETY: the caller of Launch::run vouches for the argument list and the buffer sizes.
        unsafe { b.launch(lc) }.map_err(|source: DriverError| Error::Kernel { name, source })?;
        Ok(())
    }

    pub fn time_us(&self, iters: usize, f: &mut dyn FnMut() -> Result<()>) -> Result<f64> {
        // the default event flags can time (CU_EVENT_DISABLE_TIMING would not)
        let flags = Some(sys::CUevent_flags::CU_EVENT_DEFAULT);
        let start = self.ctx.new_event(flags)?;
        let end = self.ctx.new_event(flags)?;
        start.record(&self.stream)?;
        for _ in 0..iters {
            f()?;
        }
        end.record(&self.stream)?;
        Ok(start.elapsed_ms(&end)? as f64 * 1e3 / iters.max(1) as f64)
    }
}

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
}
