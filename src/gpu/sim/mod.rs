//! The simulated device (`--device sim`): every kernel of `cuda/` runs on the CPU, from its own
//! source, through the same launchers as on a GPU — with the checks compute-sanitizer would make.
//!
//! - **Compiling** (`build.rs`): a family's files (the exact text NVRTC compiles) behind
//!   `cuda/sim/cuda_sim.h`, its `__shared__` declarations rewritten into per-block shared memory, a
//!   kernel table generated from its `extern "C" __global__` functions, compiled by g++ (`$CXX`) into
//!   a shared object, cached on disk, dlopen'ed; lazily, once per family and process.
//! - **Running** (`cuda_sim.h`): one CUDA thread per fiber; one block's fibers on one OS thread,
//!   switching at barriers and warp collectives; blocks in parallel on `DRPO_SIM_THREADS` OS threads
//!   (default: the machine's parallelism).
//! - **Checks**, each an [`Error::Sim`] naming the kernel, never a hang or a crashed process:
//!   launch geometry (block ≤ 1024 threads and (1024, 1024, 64), grid ≤ CUDA's limits,
//!   `__launch_bounds__`), argument types against the kernel's parameters (element size, constness),
//!   shared memory (static ≤ 48 KiB, static + dynamic ≤ 48 KiB or the architecture's opt-in maximum:
//!   163 KiB sm_80, 227 KiB sm_90), barrier and warp-collective divergence and deadlock,
//!   out-of-bounds global accesses (guard pages, `memory.rs`) and shared ones (red zones),
//!   uninitialised shared memory (poisoned with NaN bytes), and **races**: every launch runs under
//!   `DRPO_SIM_ORDERS` thread orders (default 3: forward, reverse, seeded shuffle), the buffers it
//!   may write restored to their bytes before each run; outputs that differ between orders are a
//!   race (a missing barrier, an early read of cp.async data, an order-dependent atomic). A grid of
//!   more than [`RACE_SAMPLE_BLOCKS`] blocks runs whole once; its extra orders run a sample of blocks
//!   (a race lives inside a block), compared with the same sample under the first order.
//!
//! `DRPO_SIM_ARCH` (sm_80 | sm_90, default sm_80: the oldest architecture the kernels target) sets
//! the shared-memory opt-in limit and the SM count the launchers see; `DRPO_SIM_SEED` the shuffles;
//! `DRPO_SIM_STACK_KB` each fiber's stack (default 64).

pub(crate) mod build;
mod fault;
pub(crate) mod memory;

use super::{Arg, ArgValue, DeviceBuffer, DeviceCopy, DeviceProps, Family, LaunchCfg, Memory, MAX_GRID, SHARED_DEFAULT_BYTES};
use crate::error::{Error, Result};
use std::ffi::{c_char, c_int, c_void};
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::sync::OnceLock;

pub(crate) use memory::Allocation;

/// Version of the interface with cuda_sim.h (`drpo_sim_abi`).
pub(crate) const ABI: u32 = 1;

/// `drpo_sim::Launch` of cuda_sim.h.
#[repr(C)]
pub(crate) struct LaunchC {
    grid: [u32; 3],
    block: [u32; 3],
    dynamic_shared_bytes: u32,
    shared_limit_bytes: u32,
    order: u32,
    stack_bytes: u32,
    seed: u64,
    next_block: *const AtomicU64,
    abort: *const AtomicU32,
    blocks: *const u64,
    block_count: u64,
}

/// `drpo_sim::Report` of cuda_sim.h.
#[repr(C)]
pub(crate) struct ReportC {
    message: [c_char; 4096],
    fault_addr: u64,
    fault_write: i32,
    fault_signal: i32,
    block: [u32; 3],
    thread: [u32; 3],
    has_thread: i32,
}

const RUN_OK: c_int = 0;
const RUN_FAULT: c_int = 2;

/// How the simulator runs launches (from the environment, read once).
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub threads: usize,
    pub orders: u32,
    pub arch: String,
    pub seed: u64,
    pub stack_bytes: u32,
}

fn env_number<T: std::str::FromStr>(name: &str, default: T) -> std::result::Result<T, String> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v.trim().parse().map_err(|_| format!("{name}={v} is not a number")),
        _ => Ok(default),
    }
}

impl SimConfig {
    pub fn from_env() -> Result<SimConfig> {
        let bad = |why: String| Error::input(why);
        let threads = env_number("DRPO_SIM_THREADS", std::thread::available_parallelism().map_or(1, |n| n.get())).map_err(bad)?;
        let orders = env_number("DRPO_SIM_ORDERS", 3u32).map_err(bad)?;
        let seed = env_number("DRPO_SIM_SEED", 0x5eed_u64).map_err(bad)?;
        let stack_kb = env_number("DRPO_SIM_STACK_KB", 64u32).map_err(bad)?;
        let arch = std::env::var("DRPO_SIM_ARCH").ok().filter(|s| !s.is_empty()).unwrap_or_else(|| "sm_80".into());
        if !(1..=1024).contains(&threads) || !(1..=64).contains(&orders) || !(16..=65536).contains(&stack_kb) {
            return Err(bad(format!("DRPO_SIM_THREADS {threads} (1..=1024), DRPO_SIM_ORDERS {orders} (1..=64), DRPO_SIM_STACK_KB {stack_kb} (16..=65536)")));
        }
        if arch != "sm_80" && arch != "sm_90" {
            return Err(bad(format!("DRPO_SIM_ARCH={arch}: the simulator knows sm_80 and sm_90")));
        }
        Ok(SimConfig { threads, orders, arch, seed, stack_bytes: stack_kb * 1024 })
    }

    /// Shared memory per block with the opt-in attribute: sm_80 163 KiB, sm_90 227 KiB.
    pub fn shared_optin_bytes(&self) -> u32 {
        if self.arch == "sm_90" {
            227 * 1024
        } else {
            163 * 1024
        }
    }
}

/// Every (family, kernel) a simulated device of this process has launched (what a run covered:
/// `tests/bench_dry.rs` holds the kernel bench to every kernel of [`family_kernels`]).
static LAUNCHED: std::sync::Mutex<std::collections::BTreeSet<(&str, &str)>> = std::sync::Mutex::new(std::collections::BTreeSet::new());

/// The (family, kernel) pairs launched on the simulator so far in this process, sorted.
pub fn launched_kernels() -> Vec<(&'static str, &'static str)> {
    LAUNCHED.lock().unwrap_or_else(|e| e.into_inner()).iter().copied().collect()
}

/// The `extern "C" __global__` kernels of `family`, sorted, as the simulator finds them after the
/// preprocessor (macro-made entry points included); compiles the family on first use.
pub fn family_kernels(family: &'static Family) -> Result<Vec<String>> {
    let mut names: Vec<String> = build::module(family)?.kernels.keys().cloned().collect();
    names.sort();
    Ok(names)
}

/// The simulated device: its configuration and the OS threads that run blocks.
pub(crate) struct SimDevice {
    cfg: SimConfig,
}

/// Worker threads for blocks, shared by every simulated device of the process (their thread-local
/// fiber stacks and shared-memory arenas are reused from launch to launch).
fn pool(threads: usize) -> Result<&'static rayon::ThreadPool> {
    static POOL: OnceLock<std::result::Result<rayon::ThreadPool, String>> = OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("drpo-sim-{i}"))
            .build()
            .map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|e| Error::input(format!("the simulated device could not start its threads: {e}")))
}

impl SimDevice {
    pub fn open() -> Result<(SimDevice, DeviceProps)> {
        let cfg = SimConfig::from_env()?;
        let cxx = build::compiler()?;
        let sm_count = if cfg.arch == "sm_90" { 132 } else { 108 };
        let name = format!("simulated device ({}; {} threads, {} thread orders)", cxx.version, cfg.threads, cfg.orders);
        Ok((SimDevice { cfg: cfg.clone() }, DeviceProps { arch: cfg.arch, name, sm_count }))
    }

    pub fn alloc_zeros<T: DeviceCopy>(&self, len: usize) -> Result<DeviceBuffer<T>> {
        let a = Allocation::new(len * size_of::<T>())?;
        Ok(DeviceBuffer::new(a.addr(), len, Memory::Sim(a)))
    }

    pub fn htod<T: DeviceCopy>(&self, src: &[T]) -> Result<DeviceBuffer<T>> {
        let b = self.alloc_zeros::<T>(src.len())?;
        // SAFETY: the new allocation holds src.len() values.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), b.ptr as *mut T, src.len()) };
        Ok(b)
    }

    /// Runs `kernel` under every configured thread order, with every check.
    pub fn launch(&self, family: &'static Family, kernel: &'static str, cfg: LaunchCfg, args: &[Arg]) -> Result<()> {
        let module = build::module(family)?;
        LAUNCHED.lock().unwrap_or_else(|e| e.into_inner()).insert((family.name, kernel));
        let err = |what: String| Error::Sim { kernel: kernel.to_string(), what };
        let Some(k) = module.kernels.get(kernel) else {
            let mut names: Vec<&String> = module.kernels.keys().collect();
            names.sort();
            return Err(err(format!("no such kernel in {}.cu (it defines {names:?})", family.name)));
        };
        self.check_geometry(cfg, k.max_threads).map_err(err)?;
        check_arguments(k, args).map_err(err)?;

        // the buffers the launch may write: restored before every order, compared after
        let outputs: Vec<(usize, usize, usize)> = args
            .iter()
            .enumerate()
            .filter_map(|(i, a)| match (a.value, a.view) {
                (ArgValue::Ptr(p), Some(v)) if v.writable && p != 0 && v.bytes > 0 => Some((i, p as usize, v.bytes)),
                _ => None,
            })
            .collect();
        let read = |p: usize, n: usize| -> Vec<u8> {
            // SAFETY: the launcher's view: n live bytes at p.
            unsafe { std::slice::from_raw_parts(p as *const u8, n) }.to_vec()
        };
        let orders = self.cfg.orders;
        let seed = self.cfg.seed ^ super::fnv1a(&[kernel.as_bytes()]);
        let run = |order: u32, blocks: Option<&[u64]>| -> Result<()> {
            self.run_once(&module, k, cfg, args, order, seed, blocks).map_err(|what| err(format!("{what} (thread order: {})", order_name(order, seed))))?;
            check_slack(k, args).map_err(err)
        };
        if orders == 1 {
            return run(0, None);
        }
        let restore = |bytes: &[Vec<u8>]| {
            for (&(_, p, n), b) in outputs.iter().zip(bytes) {
                // SAFETY: as `read`.
                unsafe { std::ptr::copy_nonoverlapping(b.as_ptr(), p as *mut u8, n) };
            }
        };
        let snapshot = || -> Vec<Vec<u8>> { outputs.iter().map(|&(_, p, n)| read(p, n)).collect() };
        let before = snapshot();
        run(0, None)?;
        let result = snapshot();
        // A grid of many blocks is race-checked on a sample of them (blocks cannot communicate within
        // a launch, so a race is inside one block): the sample runs from the same starting bytes
        // under order 0 and under order k, and the two must agree bit for bit.
        let sample = race_sample(cfg.grid, seed);
        let reference = match &sample {
            None => result.clone(),
            Some(blocks) => {
                restore(&before);
                run(0, Some(blocks))?;
                snapshot()
            }
        };
        for order in 1..orders {
            restore(&before);
            run(order, sample.as_deref())?;
            if let Some(what) = compare(k, args, &outputs, &reference, &snapshot()) {
                let which = sample.as_ref().map_or(String::new(), |s| format!(" (a sample of {} of the grid's blocks)", s.len()));
                return Err(err(format!(
                    "a race: {what} between thread orders {} and {}{which}. Outputs may not depend on the order in \
                     which threads run between barriers: look for a missing __syncthreads / __syncwarp, a read of \
                     shared memory another thread writes in the same phase, a cp.async read before its wait (the \
                     forward order completes cp.async copies at issue, the others at the wait), or an \
                     order-dependent atomic",
                    order_name(0, seed),
                    order_name(order, seed)
                )));
            }
        }
        restore(&result);
        Ok(())
    }

    fn check_geometry(&self, cfg: LaunchCfg, max_threads: u32) -> std::result::Result<(), String> {
        let (b, g) = ([cfg.block.0, cfg.block.1, cfg.block.2], [cfg.grid.0, cfg.grid.1, cfg.grid.2]);
        let threads: u64 = b.iter().map(|&x| x as u64).product();
        if b.contains(&0) || g.contains(&0) {
            return Err(format!("empty launch: grid {g:?}, block {b:?}"));
        }
        if b[0] > 1024 || b[1] > 1024 || b[2] > 64 || threads > 1024 {
            return Err(format!("block {b:?} = {threads} threads: CUDA allows at most 1024 threads, (1024, 1024, 64)"));
        }
        if max_threads > 0 && threads > max_threads as u64 {
            return Err(format!("block of {threads} threads above the kernel's __launch_bounds__({max_threads})"));
        }
        for (axis, (&n, max)) in ["x", "y", "z"].iter().zip(g.iter().zip(MAX_GRID)) {
            if n as usize > max {
                return Err(format!("grid.{axis} = {n} exceeds CUDA's limit of {max}"));
            }
        }
        let optin = self.cfg.shared_optin_bytes();
        if cfg.shared_bytes > optin {
            return Err(format!("{} bytes of dynamic shared memory: {} allows at most {optin} per block", cfg.shared_bytes, self.cfg.arch));
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn run_once(&self, module: &build::Module, k: &build::Kernel, cfg: LaunchCfg, args: &[Arg], order: u32, seed: u64, blocks: Option<&[u64]>) -> std::result::Result<(), String> {
        fault::install();
        let next = AtomicU64::new(0);
        let abort = AtomicU32::new(0);
        let launch = LaunchC {
            grid: [cfg.grid.0, cfg.grid.1, cfg.grid.2],
            block: [cfg.block.0, cfg.block.1, cfg.block.2],
            dynamic_shared_bytes: cfg.shared_bytes,
            shared_limit_bytes: if cfg.shared_bytes > SHARED_DEFAULT_BYTES { self.cfg.shared_optin_bytes() } else { SHARED_DEFAULT_BYTES },
            order,
            stack_bytes: self.cfg.stack_bytes,
            seed,
            next_block: &next,
            abort: &abort,
            blocks: blocks.map_or(std::ptr::null(), |b| b.as_ptr()),
            block_count: blocks.map_or(0, |b| b.len() as u64),
        };
        // `void** args`: each entry points at its value (what cuLaunchKernel takes too)
        let mut ptrs: Vec<*mut c_void> = args
            .iter()
            .map(|a| match &a.value {
                ArgValue::Ptr(x) | ArgValue::U64(x) => x as *const u64 as *mut c_void,
                ArgValue::I32(x) => x as *const i32 as *mut c_void,
                ArgValue::U32(x) => x as *const u32 as *mut c_void,
                ArgValue::I64(x) => x as *const i64 as *mut c_void,
                ArgValue::F32(x) => x as *const f32 as *mut c_void,
                ArgValue::F64(x) => x as *const f64 as *mut c_void,
            })
            .collect();
        struct Shared<'a> {
            module: &'a build::Module,
            info: *const build::KernelInfo,
            launch: *const LaunchC,
            args: *mut *mut c_void,
        }
        // SAFETY: every pointer targets data alive for the whole (blocking) launch; the C++ side only
        // reads `info`, `launch` and `args`, and touches the two counters atomically.
        unsafe impl Sync for Shared<'_> {}
        let shared = Shared { module, info: k.info, launch: &launch, args: ptrs.as_mut_ptr() };
        let run = |s: &Shared| -> (c_int, Box<ReportC>) {
            // SAFETY: a zeroed ReportC is valid (integers and chars).
            let mut report: Box<ReportC> = Box::new(unsafe { std::mem::zeroed() });
            let _hook = fault::Hooked::new(s.module.fault);
            // SAFETY: drpo_sim_run of the module that defines `info`, with a launch whose geometry and
            // arguments were checked against the kernel above.
            let code = unsafe { (s.module.run)(s.info, s.launch, s.args, &mut *report) };
            (code, report)
        };
        let blocks = blocks.map_or(cfg.grid.0 as u64 * cfg.grid.1 as u64 * cfg.grid.2 as u64, |b| b.len() as u64);
        let results: Vec<(c_int, Box<ReportC>)> = if self.cfg.threads <= 1 || blocks <= 1 {
            vec![run(&shared)]
        } else {
            let results = std::sync::Mutex::new(Vec::new());
            pool(self.cfg.threads).map_err(|e| e.to_string())?.broadcast(|_| {
                let r = run(&shared);
                results.lock().unwrap_or_else(|e| e.into_inner()).push(r);
            });
            results.into_inner().unwrap_or_else(|e| e.into_inner())
        };
        match results.into_iter().find(|(code, _)| *code != RUN_OK) {
            None => Ok(()),
            Some((code, r)) => Err(describe(code, &r, k, args)),
        }
    }
}

/// Grids up to this many blocks are run whole under every thread order.
pub const RACE_SAMPLE_BLOCKS: usize = 16;

/// The blocks of a larger grid that the extra orders run: the grid's corners (where partial tiles
/// are) and seeded others, as sorted linear indices; None for a grid small enough to run whole.
fn race_sample(grid: (u32, u32, u32), seed: u64) -> Option<Vec<u64>> {
    let (gx, gy, gz) = (grid.0 as u64, grid.1 as u64, grid.2 as u64);
    let total = gx * gy * gz;
    if total <= RACE_SAMPLE_BLOCKS as u64 {
        return None;
    }
    let mut picked = std::collections::BTreeSet::new();
    for x in [0, gx - 1] {
        for y in [0, gy - 1] {
            for z in [0, gz - 1] {
                picked.insert(x + gx * (y + gy * z));
            }
        }
    }
    let mut state = seed | 1;
    while picked.len() < RACE_SAMPLE_BLOCKS {
        // xorshift64*: any well-spread choice will do
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        picked.insert(state.wrapping_mul(0x2545_f491_4f6c_dd1d) % total);
    }
    Some(picked.into_iter().collect())
}

fn order_name(order: u32, seed: u64) -> String {
    match order {
        0 => "forward".into(),
        1 => "reverse".into(),
        k => format!("shuffled #{k} (DRPO_SIM_SEED-derived seed {seed:#x})"),
    }
}

/// The kernel's parameter list against the pushed arguments: count, and per argument kind, element
/// size and constness (a kernel writing through a pointer the launcher passed read-only is an error).
fn check_arguments(k: &build::Kernel, args: &[Arg]) -> std::result::Result<(), String> {
    let name = |i: usize| k.params.get(i).map_or_else(|| format!("#{i}"), |p| format!("`{p}` (#{i})"));
    if k.signature.len() != args.len() {
        return Err(format!("the kernel takes {} arguments ({}), the launcher pushed {}", k.signature.len(), k.params.join(", "), args.len()));
    }
    for (i, (want, a)) in k.signature.iter().zip(args).enumerate() {
        let got = a.code();
        let null = matches!(a.value, ArgValue::Ptr(0));
        let ok = match (want.as_bytes()[0], got.as_bytes()[0]) {
            (b'w' | b'r', b'w' | b'r') if null => want[1..] == got[1..] || &want[1..] == "0",
            (b'w', b'r') => false,
            (b'w' | b'r', b'w' | b'r') => want[1..] == got[1..] || &want[1..] == "0",
            _ => *want == got,
        };
        if !ok {
            let hint = match (want.as_bytes()[0], got.as_bytes()[0]) {
                (b'w', b'r') => " (the kernel writes through it; pass an exclusive view)".to_string(),
                (b'w' | b'r', b'w' | b'r') => format!(" (elements of {} bytes in the kernel, {} in the view)", &want[1..], &got[1..]),
                _ => String::new(),
            };
            return Err(format!("argument {}: the kernel takes `{want}`, the launcher passed `{got}`{hint} (codes: r/w = const/mutable pointer + element bytes, i/u/f = int/unsigned/float + bytes)", name(i)));
        }
    }
    Ok(())
}

/// Which argument's buffer holds `addr`, and the buffer: "argument `x` (#2)".
fn owner(k: &build::Kernel, args: &[Arg], region: &memory::Region) -> String {
    let names: Vec<String> = args
        .iter()
        .enumerate()
        .filter(|(_, a)| matches!(a.value, ArgValue::Ptr(p) if p != 0 && memory::find(p as usize) == Some(*region)))
        .map(|(i, _)| k.params.get(i).map_or_else(|| format!("#{i}"), |p| format!("`{p}`")))
        .collect();
    if names.is_empty() {
        "a buffer no argument points into".into()
    } else {
        format!("the buffer of argument {}", names.join(" / "))
    }
}

/// The message of a failed run: the module's text, or for a fault the buffer the address belongs to.
fn describe(code: c_int, r: &ReportC, k: &build::Kernel, args: &[Arg]) -> String {
    // SAFETY: the module writes a NUL-terminated message (vsnprintf) or leaves it zeroed.
    let msg = unsafe { std::ffi::CStr::from_ptr(r.message.as_ptr()) }.to_string_lossy().into_owned();
    let at = format!(
        "block ({}, {}, {}){}",
        r.block[0],
        r.block[1],
        r.block[2],
        if r.has_thread != 0 { format!(" thread ({}, {}, {})", r.thread[0], r.thread[1], r.thread[2]) } else { String::new() }
    );
    if code != RUN_FAULT {
        return format!("{at}: {msg}");
    }
    let access = match r.fault_write {
        1 => "write",
        0 => "read",
        _ => "access",
    };
    let addr = r.fault_addr as usize;
    let what = if !msg.is_empty() {
        msg
    } else if r.fault_signal == libc::SIGFPE {
        "integer division by zero (or INT_MIN / -1); a GPU returns an unspecified value instead".into()
    } else if let Some(reg) = memory::find(addr) {
        if addr >= reg.data + reg.len {
            format!("out-of-bounds {access} at {addr:#x}: {} bytes past the end of {} ({} bytes)", addr - (reg.data + reg.len), owner(k, args, &reg), reg.len)
        } else {
            format!("out-of-bounds {access} at {addr:#x}: {} bytes before the start of {} ({} bytes)", reg.data - addr, owner(k, args, &reg), reg.len)
        }
    } else if addr == 0 && r.fault_signal == libc::SIGSEGV {
        format!("invalid {access}: a null pointer, or a misaligned vector access (a general-protection fault reports address 0)")
    } else {
        format!("invalid {access} at {addr:#x}: not memory of the simulated device (a freed buffer or a wild pointer)")
    };
    format!("{at}: {what}")
}

/// A write into the slack after a buffer (memory.rs) is an out-of-bounds write.
fn check_slack(k: &build::Kernel, args: &[Arg]) -> std::result::Result<(), String> {
    for a in args {
        let ArgValue::Ptr(p) = a.value else { continue };
        if p == 0 {
            continue;
        }
        if let Some(reg) = memory::find(p as usize) {
            if let Some(off) = memory::slack_written(&reg) {
                return Err(format!("out-of-bounds write: {off} bytes past the end of {} ({} bytes)", owner(k, args, &reg), reg.len));
            }
        }
    }
    Ok(())
}

/// The first difference between two runs' outputs, described; None when they are equal.
fn compare(k: &build::Kernel, args: &[Arg], outputs: &[(usize, usize, usize)], a: &[Vec<u8>], b: &[Vec<u8>]) -> Option<String> {
    for ((&(i, _, _), x), y) in outputs.iter().zip(a).zip(b) {
        if x == y {
            continue;
        }
        let esize = args[i].view.map_or(1, |v| v.elem_bytes.max(1));
        let differ = x.chunks(esize).zip(y.chunks(esize)).filter(|(p, q)| p != q).count();
        let e = x.chunks(esize).zip(y.chunks(esize)).position(|(p, q)| p != q).unwrap_or(0);
        let hex = |c: &[u8]| c.iter().rev().map(|b| format!("{b:02x}")).collect::<String>();
        let (p, q) = (&x[e * esize..(e + 1) * esize], &y[e * esize..(e + 1) * esize]);
        let as_float = match esize {
            4 => format!(" = {} vs {}", f32::from_le_bytes(p.try_into().ok()?), f32::from_le_bytes(q.try_into().ok()?)),
            8 => format!(" = {} vs {}", f64::from_le_bytes(p.try_into().ok()?), f64::from_le_bytes(q.try_into().ok()?)),
            _ => String::new(),
        };
        let name = k.params.get(i).map_or_else(|| format!("#{i}"), |s| format!("`{s}`"));
        return Some(format!("{differ} element(s) of argument {name} differ, first #{e}: 0x{} vs 0x{}{as_float},", hex(p), hex(q)));
    }
    None
}
