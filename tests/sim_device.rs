//! The simulated device itself: the primitives the kernels build on (shuffles and votes, mma.sync,
//! ldmatrix, cp.async) against scalar references written from the PTX ISA — on every device, so a
//! GPU run checks the emulation — and one planted bug per check of the simulator, each reported with
//! the kernel's name while its correct twin passes (tests/sim_kernels/planted.cu).

mod gpu_common;
use drpo::gpu::{bf16, Family, Gpu, LaunchCfg, COMMON, PTX};
use gpu_common::*;
use rand::Rng;

static SELFTEST: Family = Family { name: "sim_selftest", files: &[COMMON, PTX, ("selftest.cu", include_str!("sim_kernels/selftest.cu"))] };
static PLANTED: Family = Family { name: "sim_planted", files: &[COMMON, PTX, ("planted.cu", include_str!("sim_kernels/planted.cu"))] };

/// The simulated device, or None after a SKIP line (no C++ compiler; DRPO_REQUIRE_SIM=1 fails).
fn sim_or_skip(test: &str) -> Option<Gpu> {
    devices(test).into_iter().find(|g| g.is_simulated())
}

// ---------------------------------------------------------------------------------------------
// Primitives against references

/// The value lane `lane` reads from `src` (None: its own), CUDA's shuffle rules for a segment width.
fn shuffle_source(lane: usize, kind: &str, arg: usize, width: usize) -> usize {
    let base = lane & !(width - 1);
    match kind {
        "idx" => base + (arg & (width - 1)),
        "up" => lane.checked_sub(arg).filter(|&s| s >= base).unwrap_or(lane),
        "down" => Some(lane + arg).filter(|&s| s < base + width).unwrap_or(lane),
        _ => Some(lane ^ arg).filter(|&s| s < base + width).unwrap_or(lane),
    }
}

#[test]
fn warp_shuffles_and_votes_follow_cuda() -> drpo::Result<()> {
    let mut rng = rng("warp_shuffles");
    for gpu in devices("warp_shuffles") {
        // ascending within each warp, distinct, even (o[15] halves them through a double)
        let mut input: Vec<i32> = (0..64).map(|_| 2 * rng.random_range(0..1000)).collect();
        input[..32].sort_unstable();
        input[32..].sort_unstable();
        for i in 1..64 {
            if i % 32 != 0 && input[i] <= input[i - 1] {
                input[i] = input[i - 1] + 2;
            }
        }
        let ind = gpu.htod(&input)?;
        let mut out = gpu.htod(&vec![i32::MIN; 64 * 16])?;
        let mut l = gpu.launch(&SELFTEST, "warp_shuffles", LaunchCfg::new((1, 1, 1), 64));
        l.arg_mut(&mut out.as_view_mut()).arg(&ind.as_view());
        // SAFETY: (int* out, const int* in) with 64·16 and 64 elements.
        unsafe { l.run() }?;
        let got = gpu.dtoh(&out)?;
        for t in 0..64 {
            let (w, lane) = (t / 32 * 32, t % 32);
            let at = |src: usize| input[w + src];
            let warp = &input[w..w + 32];
            let mut want = [0i32; 16];
            want[0] = at(shuffle_source(lane, "idx", (lane * 7 + 3) % 32, 32));
            want[1] = at(shuffle_source(lane, "idx", lane + 5, 8));
            want[2] = at(shuffle_source(lane, "up", 3, 32));
            want[3] = at(shuffle_source(lane, "up", 2, 16));
            want[4] = at(shuffle_source(lane, "down", 5, 32));
            want[5] = at(shuffle_source(lane, "down", 3, 8));
            want[6] = at(shuffle_source(lane, "xor", 9, 32));
            want[7] = at(shuffle_source(lane, "xor", 6, 4));
            want[8] = if lane < 16 { at(lane ^ 1) } else { at(shuffle_source(lane, "down", 4, 32)) };
            want[9] = warp.iter().enumerate().fold(0u32, |b, (l, v)| b | (((v % 3 == 0) as u32) << l)) as i32;
            want[10] = warp.contains(&input[5]) as i32;
            want[11] = 1;
            want[12] = warp.iter().fold(0u32, |s, &v| s.wrapping_add(v as u32)) as i32;
            want[13] = -warp.iter().min().unwrap();
            want[14] = at(lane ^ 1);
            want[15] = at(31 - lane);
            assert_eq!(&got[t * 16..t * 16 + 16], &want, "{gpu:?}: thread {t} (lane {lane})");
        }
    }
    Ok(())
}

#[test]
fn mma_m16n8k16_bf16_matches_a_scalar_product() -> drpo::Result<()> {
    let mut rng = rng("mma_tile");
    for gpu in devices("mma_tile") {
        let a = uniform::<bf16>(&mut rng, 16 * 32, 2.0);
        let w = uniform::<bf16>(&mut rng, 8 * 32, 2.0);
        let c: Vec<f32> = (0..16 * 8).map(|_| rng.random_range(-4.0..4.0)).collect();
        let (ad, wd, cd) = (gpu.htod(&a)?, gpu.htod(&w)?, gpu.htod(&c)?);
        let mut d = gpu.htod(&vec![f32::NAN; 16 * 8])?;
        let mut l = gpu.launch(&SELFTEST, "mma_tile", LaunchCfg::new((1, 1, 1), 32));
        l.arg_mut(&mut d.as_view_mut()).arg(&ad.as_view()).arg(&wd.as_view()).arg(&cd.as_view());
        // SAFETY: (float* d, const bf16* a, const bf16* w, const float* c), sizes as the kernel reads.
        unsafe { l.run() }?;
        let got = widen(&gpu.dtoh(&d)?);
        let (a, w) = (widen(&a), widen(&w));
        let want: Vec<f64> = (0..16 * 8).map(|e| c[e] as f64 + (0..32).map(|k| a[e / 8 * 32 + k] * w[e % 8 * 32 + k]).sum::<f64>()).collect();
        // products of bf16 are exact; a tensor core's f32 accumulation of 16 of them (and c) is off by
        // a few f32 units of the partial sums (truncated alignment), the simulator's by ≤ 1 rounding
        assert_close(&format!("{gpu:?} mma"), &got, &want, chain(1e-6));
    }
    Ok(())
}

#[test]
fn ldmatrix_shapes_deliver_the_documented_fragments() -> drpo::Result<()> {
    let mut rng = rng("ldmatrix");
    for gpu in devices("ldmatrix") {
        let src: Vec<bf16> = (0..32 * 8).map(|_| bf16::from_bits(rng.random())).collect();
        let sd = gpu.htod(&src)?;
        let mut out = gpu.htod(&vec![0xdead_beefu32; 6 * 32 * 4])?;
        let mut l = gpu.launch(&SELFTEST, "ldmatrix_shapes", LaunchCfg::new((1, 1, 1), 32));
        l.arg_mut(&mut out.as_view_mut()).arg(&sd.as_view());
        // SAFETY: (unsigned* out, const bf16* src): 6·32·4 and 32·8 elements.
        unsafe { l.run() }?;
        let got = gpu.dtoh(&out)?;
        let m = |i: usize, r: usize, c: usize| src[(8 * i + r) * 8 + c].to_bits() as u32;
        for (shape, (count, trans)) in [(1, false), (2, false), (4, false), (1, true), (2, true), (4, true)].into_iter().enumerate() {
            for lane in 0..32 {
                for i in 0..count {
                    let (row, col) = (lane / 4, 2 * (lane % 4));
                    let want = if trans { m(i, col, row) | (m(i, col + 1, row) << 16) } else { m(i, row, col) | (m(i, row, col + 1) << 16) };
                    let g = got[(shape * 32 + lane) * 4 + i];
                    assert_eq!(g, want, "{gpu:?}: ldmatrix x{count}{} lane {lane} register {i}", if trans { ".trans" } else { "" });
                }
            }
        }
    }
    Ok(())
}

#[test]
fn cp_async_groups_land_by_their_waits() -> drpo::Result<()> {
    let mut rng = rng("cp_async");
    for gpu in devices("cp_async") {
        let src: Vec<u8> = (0..1792).map(|_| rng.random()).collect();
        let sd = gpu.htod(&src)?;
        let mut out = gpu.htod(&vec![0xa5u8; 1792])?;
        let mut early = gpu.htod(&vec![0i32; 128])?;
        let mut l = gpu.launch(&SELFTEST, "cp_async_groups", LaunchCfg::new((1, 1, 1), 64));
        l.arg_mut(&mut out.as_view_mut()).arg_mut(&mut early.as_view_mut()).arg(&sd.as_view());
        // SAFETY: (unsigned char* out, int* early, const unsigned char* src): 1792, 128, 1792 elements.
        unsafe { l.run() }?;
        let mut want = src.clone();
        for t in 0..64 {
            let at = 768 + 16 * t;
            want[at + t % 17..at + 16].fill(0); // the zero fill past src-size
        }
        assert_eq!(gpu.dtoh(&out)?, want, "{gpu:?}: shared memory after every group landed");
        let word = |at: usize| i32::from_le_bytes(src[at..at + 4].try_into().unwrap());
        let want_early: Vec<i32> = (0..64).map(|t| word(4 * t)).chain((0..64).map(|t| word(256 + 8 * t))).collect();
        assert_eq!(gpu.dtoh(&early)?, want_early, "{gpu:?}: each group read after the wait that covers it");
    }
    Ok(())
}

/// The device branches of the wrappers (inline PTX) compile for sm_80 and sm_90 where NVRTC is.
#[test]
fn selftest_kernels_compile_with_nvrtc() {
    if !drpo::gpu::nvrtc_available() {
        assert!(!std::env::var("DRPO_REQUIRE_NVRTC").is_ok_and(|v| v == "1"), "DRPO_REQUIRE_NVRTC=1 but NVRTC is not found");
        println!("SKIP selftest_kernels_compile_with_nvrtc: NVRTC not found (.ci/install-nvrtc.sh)");
        return;
    }
    for arch in drpo::gpu::CHECK_ARCHS {
        let rows = drpo::gpu::compile_family(&SELFTEST, arch).unwrap_or_else(|e| panic!("{arch}: {e}"));
        let names: Vec<&str> = rows.iter().map(|r| r.kernel.as_str()).collect();
        println!("{arch}: {names:?}");
        assert_eq!(rows.len(), 4, "{arch}: {names:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Planted bugs

/// Launches a (float* out, const float* x[, int n]) kernel of the planted family on the simulator.
fn run_planted(gpu: &Gpu, kernel: &'static str, cfg: LaunchCfg, out_len: usize, x: &[f32], n: Option<i32>) -> drpo::Result<Vec<f32>> {
    let xd = gpu.htod(x)?;
    let mut out = gpu.htod(&vec![0.0f32; out_len])?;
    let mut l = gpu.launch(&PLANTED, kernel, cfg);
    l.arg_mut(&mut out.as_view_mut()).arg(&xd.as_view());
    if let Some(n) = n {
        l.i32(n);
    }
    // SAFETY: the planted kernels take (float* out, const float* x[, int n]); their bugs are what the
    // simulator must catch, and it contains them (guard pages, red zones, its own error paths).
    unsafe { l.run() }?;
    gpu.dtoh(&out)
}

/// Asserts `r` is a simulator error naming `kernel` and containing every word of `words`.
fn assert_reported(r: drpo::Result<Vec<f32>>, kernel: &str, words: &[&str]) {
    let e = r.expect_err(&format!("{kernel}: the planted bug went unreported"));
    let text = e.to_string();
    println!("{kernel}: {text}");
    assert!(matches!(e, drpo::Error::Sim { .. }), "{kernel}: {e:?}");
    assert!(text.contains(&format!("`{kernel}`")), "the error names the kernel: {text}");
    for w in words {
        assert!(text.contains(w), "{kernel}: `{w}` missing from: {text}");
    }
}

#[test]
fn a_missing_barrier_is_reported_as_a_race() -> drpo::Result<()> {
    let Some(gpu) = sim_or_skip("planted_race") else { return Ok(()) };
    let mut rng = rng("planted_race");
    let (rows, n) = (3, 1000);
    let x: Vec<f32> = (0..rows * n).map(|_| rng.random_range(-1.0..1.0)).collect();
    let cfg = LaunchCfg::new((rows as u32, 1, 1), 256);
    assert_reported(run_planted(&gpu, "total_missing_barrier", cfg, rows, &x, Some(n as i32)), "total_missing_barrier", &["race", "`out`", "thread orders"]);
    let got = run_planted(&gpu, "total_with_barrier", cfg, rows, &x, Some(n as i32))?;
    let want: Vec<f64> = x.chunks(n).map(|r| r.iter().map(|&v| v as f64).sum()).collect();
    assert_close("total_with_barrier", &got.iter().map(|&v| v as f64).collect::<Vec<_>>(), &want, chain(1e-5));
    Ok(())
}

#[test]
fn out_of_bounds_accesses_name_the_buffer() -> drpo::Result<()> {
    let Some(gpu) = sim_or_skip("planted_oob") else { return Ok(()) };
    // n·4 a multiple of 16: the first byte past the end is the guard page; otherwise it is the slack
    // that the launch checks afterwards
    for n in [64usize, 37] {
        let x: Vec<f32> = (0..n).map(|i| i as f32).collect();
        let cfg = LaunchCfg::new((2, 1, 1), 32);
        let words: &[&str] = if n % 4 == 0 { &["out-of-bounds write", "0 bytes past the end", "`out`"] } else { &["out-of-bounds write", "past the end", "`out`"] };
        assert_reported(run_planted(&gpu, "copy_off_by_one", cfg, n, &x, Some(n as i32)), "copy_off_by_one", words);
        if n % 4 == 0 {
            assert_reported(run_planted(&gpu, "copy_reads_past_end", cfg, n, &x, Some(n as i32)), "copy_reads_past_end", &["out-of-bounds read", "`x`"]);
        }
        assert_eq!(run_planted(&gpu, "copy_in_bounds", cfg, n, &x, Some(n as i32))?, x);
    }
    Ok(())
}

#[test]
fn barriers_not_reached_by_every_thread_are_errors_not_hangs() -> drpo::Result<()> {
    let Some(gpu) = sim_or_skip("planted_barriers") else { return Ok(()) };
    let n = 300; // not a multiple of the block: the last block has threads past n
    let x: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let cfg = LaunchCfg::new((2, 1, 1), 256);
    assert_reported(run_planted(&gpu, "barrier_after_early_return", cfg, n, &x, Some(n as i32)), "barrier_after_early_return", &["__syncthreads", "exited"]);
    assert_reported(run_planted(&gpu, "barrier_divergent", cfg, n, &x, Some(n as i32)), "barrier_divergent", &["divergent __syncthreads", "planted.cu"]);
    let got = run_planted(&gpu, "barrier_uniform", cfg, n, &x, Some(n as i32))?;
    let want: Vec<f32> = (0..n).map(|i| { let (b, t) = (i / 256, i % 256); let j = b * 256 + 255 - t; if j < n { j as f32 } else { 0.0 } }).collect();
    assert_eq!(got, want);
    Ok(())
}

#[test]
fn a_divergent_shuffle_is_an_error() -> drpo::Result<()> {
    let Some(gpu) = sim_or_skip("planted_shuffle") else { return Ok(()) };
    let x: Vec<f32> = (0..64).map(|i| i as f32).collect();
    let cfg = LaunchCfg::new((1, 1, 1), 64);
    assert_reported(run_planted(&gpu, "shuffle_divergent", cfg, 64, &x, None), "shuffle_divergent", &["__shfl_xor_sync", "__shfl_down_sync", "planted.cu"]);
    let got = run_planted(&gpu, "shuffle_uniform", cfg, 64, &x, None)?;
    assert_eq!(got, (0..64).map(|i| (i + (i ^ 1)) as f32).collect::<Vec<_>>());
    Ok(())
}

#[test]
fn shared_memory_is_checked_and_poisoned() -> drpo::Result<()> {
    let Some(gpu) = sim_or_skip("planted_shared") else { return Ok(()) };
    let x: Vec<f32> = (0..64).map(|i| i as f32 + 1.0).collect();
    let cfg = LaunchCfg::new((1, 1, 1), 64);
    assert_reported(run_planted(&gpu, "shared_overflow", cfg, 64, &x, None), "shared_overflow", &["shared memory written out of bounds", "`buf`"]);
    // never written shared memory reads as NaN, whatever the order: no race, a poisoned output
    let got = run_planted(&gpu, "shared_read_uninitialised", cfg, 64, &x, None)?;
    for (i, v) in got.iter().enumerate() {
        assert!(if i % 2 == 0 { *v == x[i] } else { v.is_nan() }, "element {i}: {v}");
    }
    Ok(())
}

#[test]
fn cp_async_data_read_before_its_wait_is_a_race() -> drpo::Result<()> {
    let Some(gpu) = sim_or_skip("planted_cp_async") else { return Ok(()) };
    let x: Vec<f32> = (0..256).map(|i| i as f32).collect();
    let cfg = LaunchCfg::new((1, 1, 1), 256);
    assert_reported(run_planted(&gpu, "cp_async_read_early", cfg, 256, &x, None), "cp_async_read_early", &["race", "cp.async"]);
    let got = run_planted(&gpu, "cp_async_read_after_wait", cfg, 256, &x, None)?;
    assert_eq!(got, x.iter().rev().copied().collect::<Vec<_>>());
    Ok(())
}

#[test]
fn an_order_dependent_float_atomic_is_a_race() -> drpo::Result<()> {
    let Some(gpu) = sim_or_skip("planted_atomic") else { return Ok(()) };
    let mut rng = rng("planted_atomic");
    let n: i32 = 4096;
    // magnitudes spread over many binades: reordered f32 additions round differently
    let x: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0) * 10f32.powi(rng.random_range(-4..4))).collect();
    assert_reported(run_planted(&gpu, "atomic_float_sum", LaunchCfg::new((1, 1, 1), 256), 1, &x, Some(n)), "atomic_float_sum", &["race", "atomic"]);
    Ok(())
}

#[test]
fn launch_limits_and_argument_types_are_checked() -> drpo::Result<()> {
    let Some(gpu) = sim_or_skip("planted_limits") else { return Ok(()) };
    let x = vec![1.0f32; 2048];
    // block size above __launch_bounds__(64), and above CUDA's 1024
    assert_reported(run_planted(&gpu, "bounded_64", LaunchCfg::new((1, 1, 1), 128), 128, &x, None), "bounded_64", &["__launch_bounds__(64)"]);
    assert_reported(run_planted(&gpu, "copy_in_bounds", LaunchCfg::new((1, 1, 1), 1025), 8, &x, Some(8)), "copy_in_bounds", &["1024 threads"]);
    let deep = LaunchCfg { grid: (1, 1, 1), block: (1, 1, 65), shared_bytes: 0 };
    assert_reported(run_planted(&gpu, "copy_in_bounds", deep, 8, &x, Some(8)), "copy_in_bounds", &["(1024, 1024, 64)"]);
    assert_reported(run_planted(&gpu, "copy_in_bounds", LaunchCfg::new((1, 65_536, 1), 32), 8, &x, Some(8)), "copy_in_bounds", &["grid.y = 65536"]);
    // static shared memory above 48 KiB; dynamic shared memory within and beyond the sm_80 opt-in
    assert_reported(run_planted(&gpu, "big_static_shared", LaunchCfg::new((1, 1, 1), 32), 32, &x, None), "big_static_shared", &["48 KiB", "`big`"]);
    let dynamic = |bytes: u32| LaunchCfg { grid: (1, 1, 1), block: (128, 1, 1), shared_bytes: bytes };
    let got = run_planted(&gpu, "dynamic_shared_sum", dynamic(2048 * 4), 1, &x, Some(2048))?;
    assert_eq!(got, vec![2048.0]);
    let big = run_planted(&gpu, "dynamic_shared_sum", dynamic(100 * 1024), 1, &x, Some(2048))?;
    assert_eq!(big, vec![2048.0], "100 KiB of dynamic shared memory: an opt-in launch");
    let limit = gpu.arch.as_str();
    let too_big = if limit == "sm_90" { 228 * 1024 } else { 164 * 1024 };
    assert_reported(run_planted(&gpu, "dynamic_shared_sum", dynamic(too_big), 1, &x, Some(2048)), "dynamic_shared_sum", &["dynamic shared memory", limit]);
    // arguments: a missing one, an f32 view for a bf16 kernel, a read-only view where the kernel writes
    assert_reported(run_planted(&gpu, "copy_in_bounds", LaunchCfg::new((1, 1, 1), 32), 8, &x, None), "copy_in_bounds", &["takes 3 arguments", "pushed 2"]);
    let xb = gpu.htod(&[bf16::from_f32(1.0); 8])?;
    let mut ob = gpu.alloc_zeros::<bf16>(8)?;
    let of = gpu.alloc_zeros::<f32>(8)?;
    let mut l = gpu.launch(&PLANTED, "scale_bf16", LaunchCfg::new((1, 1, 1), 32));
    l.arg_mut(&mut ob.as_view_mut()).arg(&of.as_view()).f32(2.0).i32(8);
    // SAFETY: refused by the simulator's type check before anything runs (the test's point).
    let e = unsafe { l.run() }.unwrap_err().to_string();
    println!("{e}");
    assert!(e.contains("`scale_bf16`") && e.contains("`x` (#1)") && e.contains("r2") && e.contains("r4"), "{e}");
    let mut l = gpu.launch(&PLANTED, "scale_bf16", LaunchCfg::new((1, 1, 1), 32));
    l.arg(&ob.as_view()).arg(&xb.as_view()).f32(2.0).i32(8);
    // SAFETY: as above.
    let e = unsafe { l.run() }.unwrap_err().to_string();
    println!("{e}");
    assert!(e.contains("`out` (#0)") && e.contains("writes through it"), "{e}");
    let mut l = gpu.launch(&PLANTED, "scale_bf16", LaunchCfg::new((1, 1, 1), 32));
    l.arg_mut(&mut ob.as_view_mut()).arg(&xb.as_view()).f32(2.0).i32(8);
    // SAFETY: the right arguments.
    unsafe { l.run() }?;
    assert_eq!(gpu.dtoh(&ob)?, vec![bf16::from_f32(2.0); 8]);
    Ok(())
}
