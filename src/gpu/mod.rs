//! GPU runtime: the seam between the launchers and a device, and one launcher file per kernel family.
//!
//! A [`Gpu`] is one of two backends, chosen when it is opened and invisible afterwards:
//! - **CUDA** ([`Gpu::new`], `cuda.rs`): one context and stream through cudarc; each family of `cuda/`
//!   compiled by NVRTC to a cubin for the device's own architecture (cached on disk).
//! - **the simulated device** ([`Gpu::sim`], `sim/`): the same `cuda/` files compiled as host C++ by
//!   g++ behind `cuda/sim/cuda_sim.h`, every CUDA thread a fiber, with out-of-bounds, race, barrier
//!   and launch-limit checks (`src/gpu/sim/mod.rs` says how).
//!
//! Above the seam everything is ours: [`DeviceBuffer`] owns device memory, [`DView`] / [`DViewMut`]
//! borrow a range of it (a device address, a length, a lifetime), [`Gpu::htod`] / [`Gpu::dtoh`] /
//! [`Gpu::memcpy_htod`] copy, and [`Gpu::launch`] builds a launch argument by argument. Launchers,
//! the GPU model, the engine and the sampler run unchanged on both backends.
//!
//! Sources are embedded in the binary (`include_str!`), so a release binary needs no source tree;
//! compiled kernels (cubins, simulator shared objects) are cached under `$DRPO_CACHE_DIR`, else
//! `$XDG_CACHE_HOME/drpo/kernels`, else `~/.cache/drpo/kernels`, keyed by a hash of the sources, the
//! options and the compiler's version.
//!
//! `DRPO_SYNC=1` synchronises after every launch, so a kernel fault is reported as
//! [`Error::Kernel`] naming the kernel that caused it instead of surfacing at some later call (the
//! simulator runs every launch to completion anyway and names the kernel of every error).

pub mod attention;
mod cuda;
pub mod embedding;
pub mod logprob;
pub mod matmul;
pub mod memory;
pub mod objective;
pub mod optim;
pub mod residual;
pub mod rmsnorm;
pub mod rope;
pub mod sampling;
pub mod sim;
pub mod swiglu;

use crate::error::{Error, Result};
use std::marker::PhantomData;
use std::ops::{Bound, RangeBounds};
use std::path::PathBuf;

pub use cuda::{compile_all, compile_family, driver_available, driver_version, nvrtc_available, nvrtc_version, parse_ptxas_report, KernelReport, MIN_DRIVER_VERSION};
pub use half::bf16;

/// `MemAvailable` of /proc/meminfo in bytes (None where there is no such file or line).
fn host_available_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.trim_start_matches("MemAvailable:").trim().trim_end_matches("kB").trim().parse().ok()?;
    kib.checked_mul(1024)
}

/// A plain value type that lives in device memory (bit-copyable, zero is a valid value).
pub trait DeviceCopy:
    cudarc::driver::DeviceRepr + cudarc::driver::ValidAsZeroBits + Copy + Default + Send + Sync + std::fmt::Debug + 'static
{
}
impl DeviceCopy for u8 {}
impl DeviceCopy for u16 {}
impl DeviceCopy for u32 {}
impl DeviceCopy for u64 {}
impl DeviceCopy for i32 {}
impl DeviceCopy for i64 {}
impl DeviceCopy for f32 {}
impl DeviceCopy for f64 {}
impl DeviceCopy for bf16 {}

/// Storage type of a kernel: `f32` (the tight-check path) or `bf16` (raw bits on the device).
/// Kernels are templates over it on the CUDA side; Rust picks the entry point by [`GpuFloat::pick`].
pub trait GpuFloat: DeviceCopy {
    const NAME: &'static str;
    fn from_f32(x: f32) -> Self;
    fn to_f32(self) -> f32;
    /// The entry point for this type among an (f32, bf16) pair of names.
    fn pick(f32_name: &'static str, bf16_name: &'static str) -> &'static str;
    /// The view as f32 values when T is f32 (the optimizer updates f32 weights in place).
    fn as_f32_mut<'a>(v: DViewMut<'a, Self>) -> Option<DViewMut<'a, f32>>;
    /// The view as bf16 values when T is bf16 (the optimizer writes the bf16 compute copy).
    fn as_bf16_mut<'a>(v: DViewMut<'a, Self>) -> Option<DViewMut<'a, bf16>>;
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
    fn as_f32_mut<'a>(v: DViewMut<'a, f32>) -> Option<DViewMut<'a, f32>> {
        Some(v)
    }
    fn as_bf16_mut<'a>(_: DViewMut<'a, f32>) -> Option<DViewMut<'a, bf16>> {
        None
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
    fn as_f32_mut<'a>(_: DViewMut<'a, bf16>) -> Option<DViewMut<'a, f32>> {
        None
    }
    fn as_bf16_mut<'a>(v: DViewMut<'a, bf16>) -> Option<DViewMut<'a, bf16>> {
        Some(v)
    }
}

// ---------------------------------------------------------------------------------------------
// Kernel families: the compilation units of cuda/.

/// One compilation unit: the files concatenated in order, each behind a `#line` so compiler
/// messages name the right file and line. Launchers name their family by reference; the backends
/// load a family on first use (the CUDA backend loads [`FAMILIES`] when it opens).
#[derive(Debug)]
pub struct Family {
    pub name: &'static str,
    pub files: &'static [(&'static str, &'static str)],
}

pub const COMMON: (&str, &str) = ("common.cuh", include_str!("../../cuda/common.cuh"));
pub const PTX: (&str, &str) = ("ptx.cuh", include_str!("../../cuda/ptx.cuh"));
pub const GEMM: (&str, &str) = ("gemm.cuh", include_str!("../../cuda/gemm.cuh"));

pub static EMBEDDING: Family = Family { name: "embedding", files: &[COMMON, ("embedding.cu", include_str!("../../cuda/embedding.cu"))] };
pub static RMSNORM: Family = Family { name: "rmsnorm", files: &[COMMON, ("rmsnorm.cu", include_str!("../../cuda/rmsnorm.cu"))] };
pub static ROPE: Family = Family { name: "rope", files: &[COMMON, ("rope.cu", include_str!("../../cuda/rope.cu"))] };
pub static MATMUL: Family = Family { name: "matmul", files: &[COMMON, PTX, GEMM, ("matmul.cu", include_str!("../../cuda/matmul.cu"))] };
pub static ATTENTION: Family = Family { name: "attention", files: &[COMMON, PTX, ("attention.cu", include_str!("../../cuda/attention.cu"))] };
pub static SWIGLU: Family = Family { name: "swiglu", files: &[COMMON, ("swiglu.cu", include_str!("../../cuda/swiglu.cu"))] };
pub static RESIDUAL: Family = Family { name: "residual", files: &[COMMON, ("residual.cu", include_str!("../../cuda/residual.cu"))] };
pub static LOGPROB: Family = Family { name: "logprob", files: &[COMMON, PTX, GEMM, ("logprob.cu", include_str!("../../cuda/logprob.cu"))] };
pub static SAMPLING: Family = Family { name: "sampling", files: &[COMMON, ("sampling.cu", include_str!("../../cuda/sampling.cu"))] };
pub static OBJECTIVE: Family = Family { name: "objective", files: &[COMMON, ("objective.cu", include_str!("../../cuda/objective.cu"))] };
pub static OPTIM: Family = Family { name: "optim", files: &[COMMON, ("optim.cu", include_str!("../../cuda/optim.cu"))] };

/// Every kernel family of `cuda/`, in the order they are compiled.
pub static FAMILIES: [&Family; 11] =
    [&EMBEDDING, &RMSNORM, &ROPE, &MATMUL, &ATTENTION, &SWIGLU, &RESIDUAL, &LOGPROB, &SAMPLING, &OBJECTIVE, &OPTIM];

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

/// Stable 64-bit FNV-1a: the cache keys must not change between Rust releases.
pub(crate) fn fnv1a(parts: &[&[u8]]) -> u64 {
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

// ---------------------------------------------------------------------------------------------
// Memory: owned buffers and borrowed views.

/// Device memory holding `len` values of T, freed on drop.
pub struct DeviceBuffer<T: DeviceCopy> {
    ptr: u64,
    len: usize,
    // kept for its Drop (cudarc frees on the stream; the simulator unmaps)
    #[allow(dead_code)]
    mem: Memory<T>,
}

#[allow(dead_code)] // owned for their Drop only
pub(crate) enum Memory<T> {
    Cuda(cudarc::driver::CudaSlice<T>),
    Sim(sim::Allocation),
}

/// A shared borrow of `len` device values starting at device address `ptr`.
pub struct DView<'a, T> {
    ptr: u64,
    len: usize,
    _borrow: PhantomData<&'a [T]>,
}

/// An exclusive borrow of `len` device values starting at device address `ptr`.
pub struct DViewMut<'a, T> {
    ptr: u64,
    len: usize,
    _borrow: PhantomData<&'a mut [T]>,
}

// Copy whatever T is (derive would ask T: Copy)
impl<T> Clone for DView<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for DView<'_, T> {}

impl<T: DeviceCopy> std::fmt::Debug for DeviceBuffer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DeviceBuffer<{}>({:#x}, {})", std::any::type_name::<T>(), self.ptr, self.len)
    }
}

impl<T> std::fmt::Debug for DView<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DView({:#x}, {})", self.ptr, self.len)
    }
}

/// `start..end` of a range within `len` elements; panics like slice indexing when out of range.
fn bounds(len: usize, r: impl RangeBounds<usize>) -> (usize, usize) {
    let start = match r.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s + 1,
        Bound::Unbounded => 0,
    };
    let end = match r.end_bound() {
        Bound::Included(&e) => e + 1,
        Bound::Excluded(&e) => e,
        Bound::Unbounded => len,
    };
    assert!(start <= end && end <= len, "device range {start}..{end} out of bounds for length {len}");
    (start, end)
}

impl<T: DeviceCopy> DeviceBuffer<T> {
    pub(crate) fn new(ptr: u64, len: usize, mem: Memory<T>) -> Self {
        DeviceBuffer { ptr, len, mem }
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn as_view(&self) -> DView<'_, T> {
        DView { ptr: self.ptr, len: self.len, _borrow: PhantomData }
    }
    pub fn as_view_mut(&mut self) -> DViewMut<'_, T> {
        DViewMut { ptr: self.ptr, len: self.len, _borrow: PhantomData }
    }
    pub fn slice(&self, r: impl RangeBounds<usize>) -> DView<'_, T> {
        self.as_view().slice(r)
    }
    pub fn slice_mut(&mut self, r: impl RangeBounds<usize>) -> DViewMut<'_, T> {
        let (s, e) = bounds(self.len, r);
        DViewMut { ptr: self.ptr + (s * size_of::<T>()) as u64, len: e - s, _borrow: PhantomData }
    }
}

impl<'a, T> DView<'a, T> {
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The device address of the first element (for alignment checks).
    pub fn addr(&self) -> u64 {
        self.ptr
    }
    pub fn slice(&self, r: impl RangeBounds<usize>) -> DView<'a, T> {
        let (s, e) = bounds(self.len, r);
        DView { ptr: self.ptr + (s * size_of::<T>()) as u64, len: e - s, _borrow: PhantomData }
    }
}

impl<T> DViewMut<'_, T> {
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn addr(&self) -> u64 {
        self.ptr
    }
    pub fn as_view(&self) -> DView<'_, T> {
        DView { ptr: self.ptr, len: self.len, _borrow: PhantomData }
    }
    pub fn slice(&self, r: impl RangeBounds<usize>) -> DView<'_, T> {
        self.as_view().slice(r)
    }
    pub fn slice_mut(&mut self, r: impl RangeBounds<usize>) -> DViewMut<'_, T> {
        let (s, e) = bounds(self.len, r);
        DViewMut { ptr: self.ptr + (s * size_of::<T>()) as u64, len: e - s, _borrow: PhantomData }
    }
    /// Two disjoint exclusive views: `[0, mid)` and `[mid, len)`.
    pub fn split_at_mut(&mut self, mid: usize) -> (DViewMut<'_, T>, DViewMut<'_, T>) {
        assert!(mid <= self.len, "split_at_mut: {mid} > {}", self.len);
        let second = self.ptr + (mid * size_of::<T>()) as u64;
        (
            DViewMut { ptr: self.ptr, len: mid, _borrow: PhantomData },
            DViewMut { ptr: second, len: self.len - mid, _borrow: PhantomData },
        )
    }
}

/// Anything a copy to the host can read: a buffer or a view.
pub trait AsDView<T> {
    fn as_dview(&self) -> DView<'_, T>;
}
impl<T: DeviceCopy> AsDView<T> for DeviceBuffer<T> {
    fn as_dview(&self) -> DView<'_, T> {
        self.as_view()
    }
}
impl<T> AsDView<T> for DView<'_, T> {
    fn as_dview(&self) -> DView<'_, T> {
        *self
    }
}
impl<T> AsDView<T> for DViewMut<'_, T> {
    fn as_dview(&self) -> DView<'_, T> {
        self.as_view()
    }
}

// ---------------------------------------------------------------------------------------------
// The device.

/// An open device: the CUDA GPU `ordinal` ([`Gpu::new`]) or the simulated device ([`Gpu::sim`]).
pub struct Gpu {
    /// f32 scratch that a launcher's kernels pass from one launch to the next ([`Gpu::with_workspace`]);
    /// declared first, so it is freed before the backend it was allocated on
    workspace: std::sync::Mutex<Option<DeviceBuffer<f32>>>,
    backend: Backend,
    /// "sm_90" for an H100; the architecture whose limits the simulator checks
    pub arch: String,
    pub device_name: String,
    pub sm_count: usize,
    sync_each_launch: bool,
    /// device allocations made so far ([`Gpu::allocations`])
    allocations: std::sync::atomic::AtomicUsize,
}

enum Backend {
    Cuda(cuda::CudaDevice),
    Sim(sim::SimDevice),
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Gpu({} {}, {} SMs)", self.device_name, self.arch, self.sm_count)
    }
}

/// Grid, block and dynamic shared memory of a launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaunchCfg {
    pub grid: (u32, u32, u32),
    pub block: (u32, u32, u32),
    /// dynamic shared memory per block; above 48 KiB the launch opts in to the device's maximum
    pub shared_bytes: u32,
}

impl LaunchCfg {
    /// A 1-D block of `threads`, no dynamic shared memory.
    pub fn new(grid: (u32, u32, u32), threads: u32) -> Self {
        LaunchCfg { grid, block: (threads, 1, 1), shared_bytes: 0 }
    }
}

/// Static shared memory limit of CUDA, and the default dynamic limit without an opt-in.
pub const SHARED_DEFAULT_BYTES: u32 = 48 * 1024;

impl Gpu {
    /// Opens CUDA device `ordinal` and loads every kernel family (compiled for its architecture, or
    /// from the cache). [`Error::NoDevice`] when the driver (or one older than CUDA 13.0), NVRTC or
    /// the device is missing.
    pub fn new(ordinal: usize) -> Result<Gpu> {
        let (dev, props) = cuda::CudaDevice::open(ordinal)?;
        Ok(Gpu::with(Backend::Cuda(dev), props))
    }

    /// The simulated device (`--device sim`): the kernels of `cuda/` compiled by the host's C++
    /// compiler (`$CXX`, else g++), run on the CPU with every check of `sim/`. [`Error::NoDevice`]
    /// when no C++ compiler is found.
    pub fn sim() -> Result<Gpu> {
        let (dev, props) = sim::SimDevice::open()?;
        Ok(Gpu::with(Backend::Sim(dev), props))
    }

    fn with(backend: Backend, p: DeviceProps) -> Gpu {
        let sync_each_launch = std::env::var("DRPO_SYNC").is_ok_and(|v| v == "1");
        Gpu { workspace: Default::default(), backend, arch: p.arch, device_name: p.name, sm_count: p.sm_count, sync_each_launch, allocations: Default::default() }
    }

    /// Runs `f` with an exclusive view of `len` f32 of the device's workspace: the scratch a launcher
    /// hands from one of its kernels to the next (split-k partial sums, decode attention's per-split
    /// softmax states). One buffer per device, grown to the largest request and kept, so a decoding
    /// step allocates nothing; reusing it is safe because launches run in stream order (one stream:
    /// the next user's kernels start after these have finished) and the lock is held while `f`
    /// queues them. Contents are unspecified on entry. Launchers only: `f` must not call it again.
    pub(crate) fn with_workspace<R>(&self, len: usize, f: impl FnOnce(&mut DViewMut<'_, f32>) -> Result<R>) -> Result<R> {
        // a panic inside `f` cannot leave the buffer half-made: take it back from a poisoned lock
        let mut guard = self.workspace.lock().unwrap_or_else(|e| e.into_inner());
        if guard.as_ref().is_none_or(|b| b.len() < len) {
            *guard = None; // freed (in stream order) before the larger one is allocated
            *guard = Some(self.alloc_zeros::<f32>(len)?);
        }
        let buffer = guard.as_mut().expect("allocated above");
        f(&mut buffer.slice_mut(0..len))
    }

    /// Bytes the workspace of [`Gpu::with_workspace`] holds now (its high-water mark).
    pub fn workspace_bytes(&self) -> usize {
        self.workspace.lock().unwrap_or_else(|e| e.into_inner()).as_ref().map_or(0, |b| b.len() * size_of::<f32>())
    }

    /// Device memory not allocated now, in bytes: the driver's count on a GPU; on the simulated
    /// device, whose memory is the host's, the host's available memory (`MemAvailable` of
    /// /proc/meminfo; unlimited where the host does not say).
    pub fn free_bytes(&self) -> Result<u64> {
        match &self.backend {
            Backend::Cuda(d) => d.free_bytes(),
            Backend::Sim(_) => Ok(host_available_bytes().unwrap_or(u64::MAX)),
        }
    }

    /// Device allocations ([`Gpu::alloc_zeros`], [`Gpu::htod`]) made on this device so far: what the
    /// tests and the performance log count to show a workspace reused.
    pub fn allocations(&self) -> usize {
        self.allocations.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// True on the simulated device (for reports and names only: launchers never ask).
    pub fn is_simulated(&self) -> bool {
        matches!(self.backend, Backend::Sim(_))
    }

    /// `len` zeros.
    pub fn alloc_zeros<T: DeviceCopy>(&self, len: usize) -> Result<DeviceBuffer<T>> {
        self.allocations.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match &self.backend {
            Backend::Cuda(d) => d.alloc_zeros(len),
            Backend::Sim(d) => d.alloc_zeros(len),
        }
    }

    /// A new buffer holding a copy of `src`.
    pub fn htod<T: DeviceCopy>(&self, src: &[T]) -> Result<DeviceBuffer<T>> {
        self.allocations.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match &self.backend {
            Backend::Cuda(d) => d.htod(src),
            Backend::Sim(d) => d.htod(src),
        }
    }

    /// Copies `src` into the first `src.len()` elements of `dst`.
    pub fn memcpy_htod<T: DeviceCopy>(&self, src: &[T], dst: &mut DViewMut<'_, T>) -> Result<()> {
        assert!(src.len() <= dst.len, "memcpy_htod: {} values into a view of {}", src.len(), dst.len);
        match &self.backend {
            Backend::Cuda(d) => d.memcpy_htod(src, dst.ptr),
            Backend::Sim(_) => {
                // SAFETY: the view is an exclusive borrow of at least src.len() live values.
                unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst.ptr as *mut T, src.len()) };
                Ok(())
            }
        }
    }

    /// Copies `src` into the first `src.len()` elements of `dst`, on the device (in stream order).
    pub fn memcpy_dtod<T: DeviceCopy>(&self, src: &DView<'_, T>, dst: &mut DViewMut<'_, T>) -> Result<()> {
        assert!(src.len <= dst.len, "memcpy_dtod: {} values into a view of {}", src.len, dst.len);
        match &self.backend {
            Backend::Cuda(d) => d.memcpy_dtod(src.ptr, dst.ptr, src.len * size_of::<T>()),
            Backend::Sim(_) => {
                // SAFETY: `src` borrows src.len live values, `dst` exclusively at least as many; an
                // exclusive and a shared borrow cannot overlap.
                unsafe { std::ptr::copy_nonoverlapping(src.ptr as *const T, dst.ptr as *mut T, src.len) };
                Ok(())
            }
        }
    }

    /// Sets every value of `dst` to zero (all bits zero: 0.0 for the float types).
    pub fn memset_zero<T: DeviceCopy>(&self, dst: &mut DViewMut<'_, T>) -> Result<()> {
        let bytes = dst.len * size_of::<T>();
        match &self.backend {
            Backend::Cuda(d) => d.memset_zero(dst.ptr, bytes),
            Backend::Sim(_) => {
                // SAFETY: the view is an exclusive borrow of dst.len live values; all-zero bits are a
                // valid T (DeviceCopy: ValidAsZeroBits).
                unsafe { std::ptr::write_bytes(dst.ptr as *mut u8, 0, bytes) };
                Ok(())
            }
        }
    }

    /// The values of a buffer or view (waits for the queued work first).
    pub fn dtoh<T: DeviceCopy, S: AsDView<T> + ?Sized>(&self, src: &S) -> Result<Vec<T>> {
        let v = src.as_dview();
        match &self.backend {
            Backend::Cuda(d) => d.dtoh(v.ptr, v.len),
            // SAFETY: the view borrows v.len live values; the simulator's launches are synchronous.
            Backend::Sim(_) => Ok(unsafe { std::slice::from_raw_parts(v.ptr as *const T, v.len) }.to_vec()),
        }
    }

    /// Waits for all queued work.
    pub fn synchronize(&self) -> Result<()> {
        match &self.backend {
            Backend::Cuda(d) => d.synchronize(),
            Backend::Sim(_) => Ok(()),
        }
    }

    /// Starts a launch of `kernel` (an `extern "C" __global__` of `family`); push its arguments in
    /// order with the builder's methods, then [`Launch::run`].
    pub fn launch(&self, family: &'static Family, kernel: &'static str, cfg: LaunchCfg) -> Launch<'_> {
        Launch { gpu: self, family, kernel, cfg, args: Vec::with_capacity(16), _borrows: PhantomData }
    }

    /// Mean microseconds per call of `f` over `iters` calls, after 3 warm-ups, as the device measures
    /// them (CUDA events; wall-clock on the simulator, where the figure means nothing for a GPU).
    pub fn time_us(&self, iters: usize, f: &mut dyn FnMut() -> Result<()>) -> Result<f64> {
        for _ in 0..3 {
            f()?;
        }
        match &self.backend {
            Backend::Cuda(d) => d.time_us(iters, f),
            Backend::Sim(_) => {
                let t = std::time::Instant::now();
                for _ in 0..iters {
                    f()?;
                }
                Ok(t.elapsed().as_secs_f64() * 1e6 / iters.max(1) as f64)
            }
        }
    }
}

/// What a backend tells about itself when opened.
pub(crate) struct DeviceProps {
    pub arch: String,
    pub name: String,
    pub sm_count: usize,
}

/// One kernel argument: the value pushed, and for pointers what the simulator checks.
#[derive(Clone, Copy, Debug)]
pub(crate) enum ArgValue {
    Ptr(u64),
    I32(i32),
    U32(u32),
    I64(i64),
    U64(u64),
    F32(f32),
    F64(f64),
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Arg {
    pub value: ArgValue,
    /// pointers: bytes of one element, bytes of the view, writable (an exclusive view)
    pub view: Option<ViewArg>,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct ViewArg {
    pub elem_bytes: usize,
    pub bytes: usize,
    pub writable: bool,
}

impl Arg {
    /// The signature code of this argument (cuda/sim/cuda_sim.h, `KernelInfo::signature`).
    pub(crate) fn code(&self) -> String {
        match (self.value, self.view) {
            (ArgValue::Ptr(_), Some(v)) => format!("{}{}", if v.writable { "w" } else { "r" }, v.elem_bytes),
            (ArgValue::Ptr(_), None) => "p".into(),
            (ArgValue::I32(_), _) => "i4".into(),
            (ArgValue::U32(_), _) => "u4".into(),
            (ArgValue::I64(_), _) => "i8".into(),
            (ArgValue::U64(_), _) => "u8".into(),
            (ArgValue::F32(_), _) => "f4".into(),
            (ArgValue::F64(_), _) => "f8".into(),
        }
    }
}

/// A launch being built: arguments in the kernel's parameter order, then [`Launch::run`].
/// The views it was given stay borrowed until it runs.
pub struct Launch<'a> {
    gpu: &'a Gpu,
    family: &'static Family,
    kernel: &'static str,
    cfg: LaunchCfg,
    args: Vec<Arg>,
    _borrows: PhantomData<&'a ()>,
}

impl<'a> Launch<'a> {
    fn push(&mut self, value: ArgValue, view: Option<ViewArg>) -> &mut Self {
        self.args.push(Arg { value, view });
        self
    }
    /// A read-only buffer argument (`const T*`).
    pub fn arg<'b: 'a, T: DeviceCopy>(&mut self, v: &DView<'b, T>) -> &mut Self {
        let view = ViewArg { elem_bytes: size_of::<T>(), bytes: v.len * size_of::<T>(), writable: false };
        self.push(ArgValue::Ptr(v.ptr), Some(view))
    }
    /// A buffer argument the kernel writes (`T*`).
    pub fn arg_mut<'b: 'a, T: DeviceCopy>(&mut self, v: &mut DViewMut<'b, T>) -> &mut Self {
        let view = ViewArg { elem_bytes: size_of::<T>(), bytes: v.len * size_of::<T>(), writable: true };
        self.push(ArgValue::Ptr(v.ptr), Some(view))
    }
    /// An optional read-only buffer: a null pointer for `None`.
    pub fn arg_opt<'b: 'a, T: DeviceCopy>(&mut self, v: Option<&DView<'b, T>>) -> &mut Self {
        match v {
            Some(v) => self.arg(v),
            None => self.push(ArgValue::Ptr(0), Some(ViewArg { elem_bytes: size_of::<T>(), bytes: 0, writable: false })),
        }
    }
    pub fn i32(&mut self, x: i32) -> &mut Self {
        self.push(ArgValue::I32(x), None)
    }
    pub fn u32(&mut self, x: u32) -> &mut Self {
        self.push(ArgValue::U32(x), None)
    }
    pub fn i64(&mut self, x: i64) -> &mut Self {
        self.push(ArgValue::I64(x), None)
    }
    pub fn u64(&mut self, x: u64) -> &mut Self {
        self.push(ArgValue::U64(x), None)
    }
    pub fn f32(&mut self, x: f32) -> &mut Self {
        self.push(ArgValue::F32(x), None)
    }
    pub fn f64(&mut self, x: f64) -> &mut Self {
        self.push(ArgValue::F64(x), None)
    }

    /// Enqueues the kernel (CUDA) or runs it to completion with every check (simulator); with
    /// `DRPO_SYNC=1` a CUDA launch is also waited for, so a fault is reported under its own name.
    ///
    /// # Safety
    /// The arguments must match the kernel's parameter list in order and type (the simulator checks
    /// the types; CUDA cannot), and every buffer must be large enough for the grid `cfg` describes
    /// (the launchers check lengths).
    pub unsafe fn run(&mut self) -> Result<()> {
        let gpu = self.gpu;
        match &gpu.backend {
            Backend::Cuda(d) => {
                d.launch(self.family, self.kernel, self.cfg, &self.args)?;
                if gpu.sync_each_launch {
                    d.synchronize().map_err(|e| match e {
                        Error::Cuda(source) => Error::Kernel { name: self.kernel, source },
                        e => e,
                    })?;
                }
                Ok(())
            }
            Backend::Sim(d) => d.launch(self.family, self.kernel, self.cfg, &self.args),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn views_slice_and_split_within_bounds() {
        let v: DView<'_, f32> = DView { ptr: 1000, len: 10, _borrow: PhantomData };
        let s = v.slice(2..5);
        assert_eq!((s.addr(), s.len()), (1008, 3));
        assert_eq!(v.slice(..).len(), 10);
        let mut m: DViewMut<'_, u16> = DViewMut { ptr: 64, len: 7, _borrow: PhantomData };
        let (a, b) = m.split_at_mut(3);
        assert_eq!((a.addr(), a.len(), b.addr(), b.len()), (64, 3, 70, 4));
        assert!(std::panic::catch_unwind(|| v.slice(4..11)).is_err());
    }
}
