//! One line per kernel launch configuration, every kernel of `cuda/` included, at Qwen2-0.5B sizes
//! (a 4096-token batch), each with the bytes and flops it must move, the time the H100 needs for them
//! at its peak (the roofline floor: max(bytes / HBM bandwidth, flops / unit rate)) and the achieved
//! fraction of that floor.
//!   cargo bench --bench kernels [-- [--dry] [--device gpu|sim] [FILTER]]
//! Without a GPU it prints SKIP. `--dry --device sim` runs every line once at tiny shapes on the
//! simulated device: a check of the bench's logic in seconds (tests/bench_dry.rs), not a result.
//! Times: median of 5 batches of `iters` launches between two events, after 3 warm-ups; inputs are
//! random (never zeros). Bytes are the fewest the problem needs (each input read once, each output
//! written once, `+=` outputs read and written); where the kernel moves more by design, the note
//! says so. A line whose bytes fit the 50 MB L2 can beat the HBM floor across repeated launches.
//!
//! The roofline (`Roofline::h100`) is the lent H100's measured 3.0 TB/s copy and 798 TFLOP/s bf16
//! GEMM, and the datasheet's 67 TFLOP/s f32 FMA; `DRPO_ROOFLINE=HBM_GBS,BF16_TFLOPS,F32_TFLOPS`
//! replaces it (bench/gpu.sh passes the ceilings it measures on the machine it runs on).

#[path = "common.rs"]
pub mod common;

use common::{random, time_us, Opts};
use drpo::gpu::attention::{Heads, PackedSeqs, SeqTable};
use drpo::gpu::matmul::{MatmulPlan, MatmulTile};
use drpo::gpu::{self, bf16, Gpu, GpuFloat};
use drpo::rl::objectives::{Estimator, Hyper, Outcomes, StdKind};
use drpo::sampling::SamplingParams;
use rand::{rngs::StdRng, Rng, SeedableRng};

/// The unit whose rate bounds a line's flops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// bandwidth only (element-wise, gathers, reductions)
    Memory,
    /// bf16 operands on the tensor cores (mma), f32 accumulation
    TensorBf16,
    /// f32 FMA on the CUDA cores
    CudaF32,
}

/// What one call must move and compute.
#[derive(Clone, Copy, Debug)]
pub struct Cost {
    pub bytes: f64,
    pub flops: f64,
    pub unit: Unit,
}

fn memory(bytes: usize) -> Cost {
    Cost { bytes: bytes as f64, flops: 0.0, unit: Unit::Memory }
}

/// A product's cost on the unit its operand type runs on: tensor cores for bf16, CUDA cores for f32.
fn product<T: GpuFloat>(flops: f64, bytes: usize) -> Cost {
    let unit = if T::NAME == "bf16" { Unit::TensorBf16 } else { Unit::CudaF32 };
    Cost { bytes: bytes as f64, flops, unit }
}

/// The ceilings a line is read against.
#[derive(Clone, Debug, PartialEq)]
pub struct Roofline {
    pub hbm_gbs: f64,
    pub bf16_tflops: f64,
    pub f32_tflops: f64,
    pub source: String,
}

impl Roofline {
    /// H100 SXM 80 GB: 3.0 TB/s device-to-device copy (bytes read + written) and 798 TFLOP/s for an
    /// 8192³ bf16 GEMM on random data, both measured on the H100 lent to this workplace
    /// (2026-11-13); 67 TFLOP/s f32 FMA from the datasheet (132 SMs × 128 lanes × 2 × 1.98 GHz).
    pub fn h100() -> Roofline {
        Roofline { hbm_gbs: 3000.0, bf16_tflops: 798.0, f32_tflops: 67.0, source: "H100 SXM (3.0 TB/s, 798 bf16 TFLOP/s measured; 67 f32 TFLOP/s datasheet)".into() }
    }

    /// `DRPO_ROOFLINE=HBM_GBS,BF16_TFLOPS,F32_TFLOPS` if set, else [`Roofline::h100`].
    pub fn from_env() -> Result<Roofline, String> {
        match std::env::var("DRPO_ROOFLINE") {
            Ok(s) if !s.is_empty() => Roofline::parse(&s),
            _ => Ok(Roofline::h100()),
        }
    }

    pub fn parse(s: &str) -> Result<Roofline, String> {
        let v: Vec<f64> = s.split(',').map(|x| x.trim().parse::<f64>()).collect::<Result<_, _>>().map_err(|e| format!("DRPO_ROOFLINE={s}: {e}"))?;
        match v[..] {
            [hbm, bf16, f32] if v.iter().all(|x| x.is_finite() && *x > 0.0) => {
                Ok(Roofline { hbm_gbs: hbm, bf16_tflops: bf16, f32_tflops: f32, source: format!("DRPO_ROOFLINE ({hbm} GB/s, {bf16} bf16 TFLOP/s, {f32} f32 TFLOP/s)") })
            }
            _ => Err(format!("DRPO_ROOFLINE={s}: expected three positive numbers HBM_GBS,BF16_TFLOPS,F32_TFLOPS")),
        }
    }

    /// The floor in µs and what sets it.
    pub fn floor_us(&self, c: &Cost) -> (f64, &'static str) {
        let mem = c.bytes / (self.hbm_gbs * 1e3);
        let (rate, unit) = match c.unit {
            Unit::Memory => return (mem, "HBM"),
            Unit::TensorBf16 => (self.bf16_tflops, "bf16 TC"),
            Unit::CudaF32 => (self.f32_tflops, "f32 FMA"),
        };
        let compute = c.flops / (rate * 1e6);
        if compute >= mem {
            (compute, unit)
        } else {
            (mem, "HBM")
        }
    }
}

/// One printed line.
#[derive(Clone, Debug)]
pub struct Row {
    pub kernel: String,
    pub shape: String,
    pub us: f64,
    pub cost: Cost,
}

/// The shapes of a run: Qwen2-0.5B's widths at a 4096-token batch, or tiny ones (`--dry`).
#[derive(Clone, Debug)]
pub struct Sizes {
    /// rows of the element-wise kernels and of the prefill GEMMs (tokens)
    pub n: usize,
    pub c: usize,
    pub ff: usize,
    pub v: usize,
    pub heads: Heads,
    /// Qwen2.5-1.5B's heads (head_dim 128) for the training attention
    pub heads_128: Heads,
    /// rows of a decoding step's GEMM (one per sequence)
    pub decode_rows: usize,
    /// prefill: sequences × tokens; decode: sequences over this many cached keys
    pub prefill: (usize, usize),
    pub decode: (usize, usize),
    /// cached keys of the one long sequence of the decode attention lines (several 256-key splits)
    pub decode_long: usize,
    /// training attention (bf16, tensor cores): (sequences, tokens each); f32 (CUDA cores) at the first
    pub train_attention: Vec<(usize, usize)>,
    /// rows of the fused head (forward and backward)
    pub head_rows: usize,
    pub sample_rows: usize,
    /// objective: (questions of 8 responses, mean response length)
    pub objective: Vec<(usize, usize)>,
    /// parameters of the optimizer lines
    pub params: usize,
}

impl Sizes {
    pub fn qwen05() -> Sizes {
        Sizes {
            n: 4096,
            c: 896,
            ff: 4864,
            v: 151_936,
            heads: Heads { nh: 14, nkv: 2, hd: 64 },
            heads_128: Heads { nh: 12, nkv: 2, hd: 128 },
            decode_rows: 64,
            prefill: (8, 512),
            decode: (64, 1024),
            decode_long: 8192,
            train_attention: vec![(8, 1024), (1, 8192)],
            head_rows: 1024,
            sample_rows: 64,
            objective: vec![(4, 4096), (64, 2048)],
            params: 494_032_768,
        }
    }

    /// Every launch at least once, at shapes the simulator runs in seconds; odd sizes where the
    /// kernels take them (a vocabulary that is no multiple of a tile, sequences of unequal use).
    pub fn dry() -> Sizes {
        Sizes {
            n: 48,
            c: 64,
            ff: 96,
            v: 1000,
            heads: Heads { nh: 4, nkv: 2, hd: 16 },
            heads_128: Heads { nh: 2, nkv: 1, hd: 128 },
            decode_rows: 3,
            prefill: (2, 20),
            decode: (3, 24),
            decode_long: 300,
            train_attention: vec![(2, 24)],
            head_rows: 9,
            sample_rows: 2,
            objective: vec![(2, 16)],
            params: 70_000,
        }
    }
}

/// The run: device, mode, roofline, and the lines printed so far.
pub struct Bench<'g> {
    pub gpu: &'g Gpu,
    pub dry: bool,
    pub roof: Roofline,
    pub sizes: Sizes,
    pub filter: String,
    pub rows: Vec<Row>,
    pub rng: StdRng,
}

impl<'g> Bench<'g> {
    pub fn new(gpu: &'g Gpu, opts: &Opts, roof: Roofline) -> Bench<'g> {
        let sizes = if opts.dry { Sizes::dry() } else { Sizes::qwen05() };
        Bench { gpu, dry: opts.dry, roof, sizes, filter: opts.filter.clone(), rows: Vec::new(), rng: StdRng::seed_from_u64(1) }
    }

    /// Times `f` (`iters` launches per batch) as the line `kernel  shape`, unless the filter drops it.
    pub fn line(&mut self, kernel: &str, shape: String, iters: usize, cost: Cost, note: &str, f: impl FnMut() -> drpo::Result<()>) -> drpo::Result<()> {
        if !kernel.contains(&self.filter) {
            return Ok(());
        }
        let us = time_us(self.gpu, self.dry, iters, f)?;
        let (floor, bound) = self.roof.floor_us(&cost);
        let moved = scaled(cost.bytes, "B");
        let work = if cost.flops > 0.0 { scaled(cost.flops, "FLOP") } else { "–".into() };
        let floor_text = if floor >= 0.1 { format!("{floor:.2} us") } else { format!("{:.1} ns", floor * 1e3) };
        let l2 = if cost.bytes <= 50e6 && !self.dry { "fits L2; " } else { "" };
        let (time, achieved) = if self.dry {
            (format!("sim {:.1} ms", us / 1e3), "– (dry)".to_string())
        } else {
            let rate = if bound == "HBM" { format!("{:.2} TB/s", cost.bytes / us / 1e6) } else { format!("{:.0} TFLOP/s", cost.flops / us / 1e6) };
            (format!("{us:.2} us"), format!("{rate}, {:.0}%", 100.0 * floor / us))
        };
        println!("| {kernel} | {shape} | {time} | {moved} | {work} | {floor_text} ({bound}) | {achieved} | {l2}{note} |");
        self.rows.push(Row { kernel: kernel.to_string(), shape, us, cost });
        Ok(())
    }
}

/// `x` with a decimal prefix: 14.7 MB, 143 GFLOP.
fn scaled(x: f64, unit: &str) -> String {
    let (div, prefix) = [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"), (1.0, "")].into_iter().find(|&(d, _)| x >= d).unwrap_or((1.0, ""));
    let v = x / div;
    let digits = if v >= 100.0 { 0 } else if v >= 10.0 { 1 } else { 2 };
    format!("{v:.digits$} {prefix}{unit}")
}

/// The header of the table `run` prints (bench/RESULTS.md's "GPU kernels" table).
pub const TABLE_HEADER: &str = "| kernel | shape | time | moved | flops | floor | achieved (of floor) | note |\n| --- | --- | --- | --- | --- | --- | --- | --- |";

/// Every line, forward kernels first, then the backward, the objective and the optimizer.
pub fn run(b: &mut Bench) -> drpo::Result<()> {
    println!("device: {:?}; roofline: {}", b.gpu, b.roof.source);
    if b.dry {
        println!("DRY RUN: tiny shapes, one call per line; the times are the simulator's wall clock, not results");
    }
    println!("{TABLE_HEADER}");
    embedding::<bf16>(b)?;
    embedding::<f32>(b)?;
    rmsnorm::<bf16>(b)?;
    rmsnorm::<f32>(b)?;
    rope::<bf16>(b)?;
    rope::<f32>(b)?;
    matmul_fwd(b)?;
    matmul_bwd(b)?;
    attention_cached::<bf16>(b)?;
    attention_cached::<f32>(b)?;
    decode_step(b)?;
    train_attention_all(b)?;
    swiglu::<bf16>(b)?;
    swiglu::<f32>(b)?;
    residual::<bf16>(b)?;
    residual::<f32>(b)?;
    head::<bf16>(b)?;
    head::<f32>(b)?;
    sampling(b)?;
    objective(b)?;
    optimizer(b)
}

/// Gather of token rows, and its backward (one block per distinct id, f32 table rows read and written).
fn embedding<T: GpuFloat>(b: &mut Bench) -> drpo::Result<()> {
    let (gpu, Sizes { n, c, v, .. }) = (b.gpu, b.sizes.clone());
    let s = size_of::<T>();
    let table = gpu.htod(&random::<T>(&mut b.rng, v * c, 1.0))?;
    let ids: Vec<u32> = (0..n).map(|_| b.rng.random_range(0..v as u32)).collect();
    let ids_d = gpu.htod(&ids)?;
    let mut x = gpu.htod(&random::<T>(&mut b.rng, n * c, 2.0))?;
    let shape = format!("n={n} c={c} v={v}");
    b.line(&format!("embedding_fwd {}", T::NAME), shape, 200, memory(2 * n * c * s + 4 * n), "", || {
        gpu::embedding::embedding_fwd(gpu, &mut x.as_view_mut(), &ids_d.as_view(), &table.as_view(), n, c, v)
    })?;
    // random ids over the vocabulary: few repeats
    let plan = gpu::embedding::EmbeddingGradPlan::new(gpu, &ids, v)?;
    let mut dtable = gpu.alloc_zeros::<f32>(v * c)?;
    let bytes = n * c * s + plan.segments() * c * 4 * 2 + 3 * n * 4;
    b.line(&format!("embedding_bwd {}", T::NAME), format!("n={n} c={c} ({} distinct ids)", plan.segments()), 200, memory(bytes), "", || {
        gpu::embedding::embedding_bwd(gpu, &mut dtable.as_view_mut(), &x.as_view(), &plan, c)
    })
}

fn rmsnorm<T: GpuFloat>(b: &mut Bench) -> drpo::Result<()> {
    let (gpu, Sizes { n, c, .. }) = (b.gpu, b.sizes.clone());
    let s = size_of::<T>();
    let x = gpu.htod(&random::<T>(&mut b.rng, n * c, 2.0))?;
    let w = gpu.htod(&random::<T>(&mut b.rng, c, 1.0))?;
    let mut out = gpu.alloc_zeros::<T>(n * c)?;
    let mut rstd = gpu.alloc_zeros::<f32>(n)?;
    let fwd = memory(2 * n * c * s + c * s + 4 * n);
    b.line(&format!("rmsnorm_fwd {}", T::NAME), format!("n={n} c={c}"), 200, fwd, "", || {
        gpu::rmsnorm::rmsnorm_fwd(gpu, &mut out.as_view_mut(), &mut rstd.as_view_mut(), &x.as_view(), &w.as_view(), n, c, 1e-6)
    })?;
    // dout, x in; dx read and written (+=); dw (f32) read and written
    let mut dx = gpu.htod(&random::<T>(&mut b.rng, n * c, 1.0))?;
    let mut dw = gpu.alloc_zeros::<f32>(c)?;
    let mut part = gpu.alloc_zeros::<f32>(gpu::rmsnorm::bwd_scratch_len(n, c))?;
    let bwd = memory(4 * n * c * s + c * s + 4 * n + 8 * c);
    let note = "+ f32 dw partials per 16 rows (rmsnorm_bwd_dw sums them)";
    b.line(&format!("rmsnorm_bwd {}", T::NAME), format!("n={n} c={c}"), 200, bwd, note, || {
        gpu::rmsnorm::rmsnorm_bwd(gpu, &mut dx.as_view_mut(), &mut dw.as_view_mut(), &mut part.as_view_mut(), &out.as_view(), &x.as_view(), &w.as_view(), &rstd.as_view(), n, c)
    })
}

/// Rotary on the queries, in place (forward and backward move the same bytes).
fn rope<T: GpuFloat>(b: &mut Bench) -> drpo::Result<()> {
    let (gpu, Sizes { n, heads, .. }) = (b.gpu, b.sizes.clone());
    let Heads { nh, hd, .. } = heads;
    let (cos, sin) = gpu::rope::rope_table(n, hd, 1e6);
    let (cos, sin) = (gpu.htod(&cos)?, gpu.htod(&sin)?);
    let pos = gpu.htod(&(0..n as i32).collect::<Vec<_>>())?;
    let mut q = gpu.htod(&random::<T>(&mut b.rng, n * nh * hd, 2.0))?;
    let cost = memory(2 * n * nh * hd * size_of::<T>() + 4 * n + n * hd * 4);
    let shape = format!("n={n} nh={nh} hd={hd}");
    b.line(&format!("rope_fwd {}", T::NAME), shape.clone(), 200, cost, "", || {
        gpu::rope::rope_fwd(gpu, &mut q.as_view_mut(), &pos.as_view(), &cos.as_view(), &sin.as_view(), n, nh, hd)
    })?;
    b.line(&format!("rope_bwd {}", T::NAME), shape, 200, cost, "", || {
        gpu::rope::rope_bwd(gpu, &mut q.as_view_mut(), &pos.as_view(), &cos.as_view(), &sin.as_view(), n, nh, hd)
    })
}

/// Forward GEMMs: the MLP's gate|up product at prefill and at decode rows, both bf16 tiles; the
/// generation logits (bf16 in, f32 out) at decode rows; the f32 CUDA-core path.
fn matmul_fwd(b: &mut Bench) -> drpo::Result<()> {
    let (gpu, Sizes { n, c, ff, v, decode_rows, .. }) = (b.gpu, b.sizes.clone());
    let x = gpu.htod(&random::<bf16>(&mut b.rng, n * c, 1.0))?;
    let w = gpu.htod(&random::<bf16>(&mut b.rng, 2 * ff * c, 0.05))?;
    let mut y = gpu.alloc_zeros::<bf16>(n * 2 * ff)?;
    for (rows, tile) in [(n, MatmulTile::Large), (n, MatmulTile::Small), (decode_rows, MatmulTile::Large), (decode_rows, MatmulTile::Small)] {
        let cost = product::<bf16>(2.0 * (rows * c * 2 * ff) as f64, (rows * c + 2 * ff * c + rows * 2 * ff) * 2);
        b.line(&format!("matmul_fwd bf16 {tile:?}"), format!("m={rows} k={c} n={}", 2 * ff), 20, cost, "", || {
            gpu::matmul::matmul_fwd_with(gpu, tile, &mut y.slice_mut(0..rows * 2 * ff), &x.slice(0..rows * c), &w.as_view(), None, rows, c, 2 * ff)
        })?;
    }
    let lm = gpu.htod(&random::<bf16>(&mut b.rng, v * c, 0.05))?;
    let mut logits = gpu.alloc_zeros::<f32>(decode_rows * v)?;
    for tile in [MatmulTile::Large, MatmulTile::Small] {
        let cost = product::<bf16>(2.0 * (decode_rows * c * v) as f64, (decode_rows * c + v * c) * 2 + decode_rows * v * 4);
        b.line(&format!("matmul_fwd bf16→f32 {tile:?}"), format!("m={decode_rows} k={c} n={v} (logits)"), 20, cost, "", || {
            gpu::matmul::matmul_fwd_f32out_with(gpu, tile, &mut logits.as_view_mut(), &x.slice(0..decode_rows * c), &lm.as_view(), None, decode_rows, c, v)
        })?;
    }
    let x32 = gpu.htod(&random::<f32>(&mut b.rng, n * c, 1.0))?;
    let w32 = gpu.htod(&random::<f32>(&mut b.rng, 2 * ff * c, 0.05))?;
    let b32 = gpu.htod(&random::<f32>(&mut b.rng, 2 * ff, 0.05))?;
    let mut y32 = gpu.alloc_zeros::<f32>(n * 2 * ff)?;
    let cost = product::<f32>(2.0 * (n * c * 2 * ff) as f64, (n * c + 2 * ff * c + 2 * ff + n * 2 * ff) * 4);
    b.line("matmul_fwd f32", format!("m={n} k={c} n={} (+ bias)", 2 * ff), 5, cost, "", || {
        gpu::matmul::matmul_fwd(gpu, &mut y32.as_view_mut(), &x32.as_view(), &w32.as_view(), Some(&b32.as_view()), n, c, 2 * ff)
    })
}

/// Backward GEMMs, each product alone: dX = dY·W and dW += dYᵀ·X at the MLP's gate|up (both bf16
/// tiles), down and o projections (the launcher's tile), dX into f32 (the head backward's), and the
/// whole linear backward with the bias gradient (q projection) in bf16 and f32.
fn matmul_bwd(b: &mut Bench) -> drpo::Result<()> {
    let (gpu, Sizes { n, c, ff, heads, .. }) = (b.gpu, b.sizes.clone());
    let both = [MatmulTile::Large, MatmulTile::Small];
    for (name, d_in, d_out, tiles) in [("gate_up", c, 2 * ff, &both[..]), ("down", ff, c, &[][..]), ("o", c, c, &[][..])] {
        let x = gpu.htod(&random::<bf16>(&mut b.rng, n * d_in, 1.0))?;
        let w = gpu.htod(&random::<bf16>(&mut b.rng, d_out * d_in, 0.05))?;
        let dy = gpu.htod(&random::<bf16>(&mut b.rng, n * d_out, 1.0))?;
        let mut dx = gpu.alloc_zeros::<bf16>(n * d_in)?;
        let mut dw = gpu.alloc_zeros::<f32>(d_out * d_in)?;
        let flops = 2.0 * (n * d_in * d_out) as f64;
        let shape = format!("{name}: m={n} d_in={d_in} d_out={d_out}");
        let chosen = [(MatmulTile::choose(gpu, n, d_in), MatmulTile::choose(gpu, d_out, d_in))];
        let tile_pairs: Vec<(MatmulTile, MatmulTile)> = if tiles.is_empty() { chosen.to_vec() } else { tiles.iter().map(|&t| (t, t)).collect() };
        for (dx_tile, dw_tile) in tile_pairs {
            let cost = product::<bf16>(flops, (n * d_out + d_out * d_in + 2 * n * d_in) * 2);
            b.line(&format!("matmul_bwd_dx bf16 {dx_tile:?}"), shape.clone(), 10, cost, "", || {
                gpu::matmul::matmul_bwd_dx(gpu, dx_tile, &mut dx.as_view_mut(), &dy.as_view(), &w.as_view(), n, d_in, d_out)
            })?;
            let cost = product::<bf16>(flops, (n * d_out + n * d_in) * 2 + 2 * d_out * d_in * 4);
            b.line(&format!("matmul_bwd_dw bf16 {dw_tile:?}"), shape.clone(), 10, cost, "K = tokens; dW f32 +=", || {
                gpu::matmul::matmul_bwd_dw(gpu, dw_tile, &mut dw.as_view_mut(), &dy.as_view(), &x.as_view(), n, d_in, d_out)
            })?;
        }
        if name == "gate_up" {
            let mut dx32 = gpu.alloc_zeros::<f32>(n * d_in)?;
            for tile in both {
                let cost = product::<bf16>(flops, (n * d_out + d_out * d_in) * 2 + 2 * n * d_in * 4);
                b.line(&format!("matmul_bwd_dx bf16→f32 {tile:?}"), shape.clone(), 10, cost, "f32 dX +=", || {
                    gpu::matmul::matmul_bwd_dx(gpu, tile, &mut dx32.as_view_mut(), &dy.as_view(), &w.as_view(), n, d_in, d_out)
                })?;
            }
        }
    }
    linear_bwd_with_bias::<bf16>(b, n, c, heads.nh * heads.hd)?;
    linear_bwd_with_bias::<f32>(b, n, c, heads.nh * heads.hd)
}

/// dx, dw and db of one linear layer with a bias (the q projection), one launcher call.
fn linear_bwd_with_bias<T: GpuFloat>(b: &mut Bench, n: usize, d_in: usize, d_out: usize) -> drpo::Result<()> {
    let gpu = b.gpu;
    let s = size_of::<T>();
    let x = gpu.htod(&random::<T>(&mut b.rng, n * d_in, 1.0))?;
    let w = gpu.htod(&random::<T>(&mut b.rng, d_out * d_in, 0.05))?;
    let dy = gpu.htod(&random::<T>(&mut b.rng, n * d_out, 1.0))?;
    let (mut dx, mut dw, mut db) = (gpu.alloc_zeros::<T>(n * d_in)?, gpu.alloc_zeros::<f32>(d_out * d_in)?, gpu.alloc_zeros::<f32>(d_out)?);
    let bytes = (n * d_out + d_out * d_in + n * d_in + 2 * n * d_in) * s + 2 * d_out * d_in * 4 + 2 * d_out * 4;
    let cost = product::<T>(4.0 * (n * d_in * d_out) as f64, bytes);
    b.line(&format!("matmul_bwd {} (dx + dw + db)", T::NAME), format!("q: m={n} d_in={d_in} d_out={d_out}"), 5, cost, "3 launches", || {
        gpu::matmul::matmul_bwd(gpu, &mut dx.as_view_mut(), &mut dw.as_view_mut(), Some(&mut db.as_view_mut()), &dy.as_view(), &x.as_view(), &w.as_view(), n, d_in, d_out)
    })
}

/// Inference attention over the KV cache: the new keys appended, then prefill (sequences of fresh
/// tokens) and decode (one query row per sequence over its cached keys).
fn attention_cached<T: GpuFloat>(b: &mut Bench) -> drpo::Result<()> {
    let (gpu, Sizes { heads, prefill, decode, .. }) = (b.gpu, b.sizes.clone());
    let s = size_of::<T>();
    let (kvd, qd) = (heads.nkv * heads.hd, heads.nh * heads.hd);
    let kinds = [("prefill", vec![(0, prefill.1); prefill.0], prefill.1), ("decode", vec![(decode.1 - 1, 1); decode.0], decode.1)];
    for (label, seqs, cap) in kinds {
        let entries: Vec<_> = seqs.iter().enumerate().map(|(i, &(p, t))| (i, p, t)).collect();
        let table = SeqTable::new(gpu, &entries, seqs.len(), cap)?;
        let mut kc = gpu.htod(&random::<T>(&mut b.rng, seqs.len() * cap * kvd, 1.0))?;
        let mut vc = gpu.htod(&random::<T>(&mut b.rng, seqs.len() * cap * kvd, 1.0))?;
        let q = gpu.htod(&random::<T>(&mut b.rng, table.n_rows * qd, 1.0))?;
        let (k_new, v_new) = (gpu.htod(&random::<T>(&mut b.rng, table.n_rows * kvd, 1.0))?, gpu.htod(&random::<T>(&mut b.rng, table.n_rows * kvd, 1.0))?);
        let shape = format!("{label}: seqs={} rows={} nh={} nkv={} hd={}", seqs.len(), table.n_rows, heads.nh, heads.nkv, heads.hd);
        let cost = memory(4 * table.n_rows * kvd * s + 8 * table.n_rows);
        b.line(&format!("kv_append {}", T::NAME), shape.clone(), 100, cost, "", || {
            gpu::attention::kv_append(gpu, &mut kc.as_view_mut(), &mut vc.as_view_mut(), &k_new.as_view(), &v_new.as_view(), &table, kvd)
        })?;
        let mut att = gpu.alloc_zeros::<T>(table.n_rows * qd)?;
        let pairs: f64 = seqs.iter().map(|&(p, t)| (t * p + t * (t + 1) / 2) as f64).sum();
        let bytes = seqs.iter().map(|&(p, t)| (p + t) * kvd * s * 2).sum::<usize>() + table.n_rows * qd * s * 2;
        let decoding = label == "decode";
        // decode runs on the CUDA cores for both types (one query row: no tile for an mma)
        let cost = if decoding { product::<f32>(4.0 * pairs * qd as f64, bytes) } else { product::<T>(4.0 * pairs * qd as f64, bytes) };
        let note = if decoding { "CUDA cores both types" } else { "" };
        b.line(&format!("attention_{label} {}", T::NAME), shape, 20, cost, note, || {
            if decoding {
                gpu::attention::attention_decode(gpu, &mut att.as_view_mut(), &q.as_view(), &kc.as_view(), &vc.as_view(), &table, heads)
            } else {
                gpu::attention::attention_prefill(gpu, &mut att.as_view_mut(), &q.as_view(), &kc.as_view(), &vc.as_view(), &table, heads)
            }
        })?;
    }
    Ok(())
}

/// The decoding step (issue 12): its GEMMs for one and `decode_rows` sequences, whole-k (one block per
/// 64-column tile walks all of k: the plan before split-k) against the launcher's split-k plan, and
/// the split's f32-output and f32 kernels; the attention projections' weight gradient over `n`
/// tokens, whole against split; decode attention v2 (a block per query head over all keys, kept as
/// v3's baseline) and v3 (flash-decoding). `--dry` shapes are too small to split, so there a range
/// of one k-tile is forced. Bytes count the weights once; the partials (written and read back
/// through L2) are not in them.
fn decode_step(b: &mut Bench) -> drpo::Result<()> {
    let (gpu, Sizes { n, c, ff, heads, heads_128, decode_rows, decode, decode_long, .. }) = (b.gpu, b.sizes.clone());
    let dry = b.dry;
    let split = |plan: MatmulPlan| match plan {
        MatmulPlan::Whole(_) if dry => MatmulPlan::SplitK { k_chunk: 32 },
        plan => plan,
    };
    let label = |plan: MatmulPlan| if matches!(plan, MatmulPlan::Whole(_)) { "whole-k" } else { "split-k" };
    let (qd, kvd) = (heads.nh * heads.hd, heads.nkv * heads.hd);
    for (name, d_in, d_out) in [("q", c, qd), ("k", c, kvd), ("gate_up", c, 2 * ff), ("down", ff, c)] {
        let w = gpu.htod(&random::<bf16>(&mut b.rng, d_out * d_in, 0.05))?;
        let x = gpu.htod(&random::<bf16>(&mut b.rng, decode_rows * d_in, 1.0))?;
        let mut y = gpu.alloc_zeros::<bf16>(decode_rows * d_out)?;
        for rows in [1, decode_rows] {
            let cost = product::<bf16>(2.0 * (rows * d_in * d_out) as f64, (d_out * d_in + rows * d_in + rows * d_out) * 2);
            for plan in [MatmulTile::Small.into(), split(MatmulPlan::forward(gpu, rows, d_in, d_out))] {
                let note = format!("{} blocks ({plan:?})", d_out.div_ceil(64) * plan.splits(d_in));
                b.line(&format!("matmul_fwd bf16 decode {}", label(plan)), format!("{name}: m={rows} k={d_in} n={d_out}"), 50, cost, &note, || {
                    gpu::matmul::matmul_fwd_with(gpu, plan, &mut y.slice_mut(0..rows * d_out), &x.slice(0..rows * d_in), &w.as_view(), None, rows, d_in, d_out)
                })?;
            }
        }
        if name == "q" {
            // the split's other sums: an f32 output from bf16 operands (the logits of a small
            // vocabulary) and the f32 path, at the q projection's shape
            let plan = split(MatmulPlan::forward(gpu, decode_rows, d_in, d_out));
            let shape = format!("{name}: m={decode_rows} k={d_in} n={d_out}");
            let mut y32 = gpu.alloc_zeros::<f32>(decode_rows * d_out)?;
            let cost = product::<bf16>(2.0 * (decode_rows * d_in * d_out) as f64, (d_out * d_in + decode_rows * d_in) * 2 + decode_rows * d_out * 4);
            b.line("matmul_fwd bf16→f32 decode split-k", shape.clone(), 50, cost, &format!("{plan:?}"), || {
                gpu::matmul::matmul_fwd_f32out_with(gpu, plan, &mut y32.as_view_mut(), &x.as_view(), &w.as_view(), None, decode_rows, d_in, d_out)
            })?;
            let (x32, w32) = (gpu.htod(&random::<f32>(&mut b.rng, decode_rows * d_in, 1.0))?, gpu.htod(&random::<f32>(&mut b.rng, d_out * d_in, 0.05))?);
            let cost = product::<f32>(2.0 * (decode_rows * d_in * d_out) as f64, (d_out * d_in + decode_rows * d_in + decode_rows * d_out) * 4);
            b.line("matmul_fwd f32 decode split-k", shape, 50, cost, &format!("{plan:?}"), || {
                gpu::matmul::matmul_fwd_with(gpu, plan, &mut y32.as_view_mut(), &x32.as_view(), &w32.as_view(), None, decode_rows, d_in, d_out)
            })?;
        }
    }
    // the weight gradient of the k and q projections: few 64×64 tiles, k = the tokens
    for (name, d_in, d_out) in [("k", c, kvd), ("q", c, qd)] {
        let (x, dy) = (gpu.htod(&random::<bf16>(&mut b.rng, n * d_in, 1.0))?, gpu.htod(&random::<bf16>(&mut b.rng, n * d_out, 1.0))?);
        let mut dw = gpu.alloc_zeros::<f32>(d_out * d_in)?;
        let cost = product::<bf16>(2.0 * (n * d_in * d_out) as f64, (n * d_out + n * d_in) * 2 + 2 * d_out * d_in * 4);
        for plan in [MatmulTile::choose(gpu, d_out, d_in).into(), split(MatmulPlan::dw(gpu, n, d_in, d_out))] {
            let note = format!("{} blocks ({plan:?}); dW f32 +=", d_out.div_ceil(64) * d_in.div_ceil(64) * plan.splits(n));
            b.line(&format!("matmul_bwd_dw bf16 {}", label(plan)), format!("{name}: tokens={n} d_in={d_in} d_out={d_out}"), 10, cost, &note, || {
                gpu::matmul::matmul_bwd_dw(gpu, plan, &mut dw.as_view_mut(), &dy.as_view(), &x.as_view(), n, d_in, d_out)
            })?;
        }
        if name == "k" {
            let (x32, dy32) = (gpu.htod(&random::<f32>(&mut b.rng, n * d_in, 1.0))?, gpu.htod(&random::<f32>(&mut b.rng, n * d_out, 1.0))?);
            let plan = split(MatmulPlan::dw(gpu, n, d_in, d_out));
            let cost = product::<f32>(2.0 * (n * d_in * d_out) as f64, (n * d_out + n * d_in) * 4 + 2 * d_out * d_in * 4);
            b.line("matmul_bwd_dw f32 split-k", format!("{name}: tokens={n} d_in={d_in} d_out={d_out}"), 5, cost, &format!("{plan:?}; dW +="), || {
                gpu::matmul::matmul_bwd_dw(gpu, plan, &mut dw.as_view_mut(), &dy32.as_view(), &x32.as_view(), n, d_in, d_out)
            })?;
        }
    }
    // decode attention: v2 at the decode shape (v3's line is attention_cached's), both over one long
    // sequence (v3 splits it in 256-key pieces and merges them: the combine kernel)
    decode_attention::<bf16>(b, decode, heads, false)?;
    decode_attention::<bf16>(b, (1, decode_long), heads, true)?;
    decode_attention::<bf16>(b, (1, decode_long), heads_128, true)?;
    decode_attention::<f32>(b, (1, decode_long), heads, true)
}

/// Decode attention v2 (and v3 when `v3`) for `seqs` sequences over `keys` cached keys each: K and V
/// read once (v2 reads them once per query head of a group, from L2 at best), q in, out.
fn decode_attention<T: GpuFloat>(b: &mut Bench, (seqs, keys): (usize, usize), heads: Heads, v3: bool) -> drpo::Result<()> {
    let gpu = b.gpu;
    let s = size_of::<T>();
    let (qd, kvd) = (heads.nh * heads.hd, heads.nkv * heads.hd);
    let entries: Vec<_> = (0..seqs).map(|i| (i, keys - 1, 1)).collect();
    let table = SeqTable::new(gpu, &entries, seqs, keys)?;
    let kc = gpu.htod(&random::<T>(&mut b.rng, seqs * keys * kvd, 1.0))?;
    let vc = gpu.htod(&random::<T>(&mut b.rng, seqs * keys * kvd, 1.0))?;
    let q = gpu.htod(&random::<T>(&mut b.rng, seqs * qd, 1.0))?;
    let mut att = gpu.alloc_zeros::<T>(seqs * qd)?;
    let shape = format!("decode: seqs={seqs} keys={keys} nh={} nkv={} hd={}", heads.nh, heads.nkv, heads.hd);
    let cost = product::<f32>(4.0 * (seqs * keys * qd) as f64, seqs * keys * kvd * s * 2 + 2 * seqs * qd * s);
    b.line(&format!("attention_decode_v2 {}", T::NAME), shape.clone(), 20, cost, "baseline: a block per query head", || {
        gpu::attention::attention_decode_v2(gpu, &mut att.as_view_mut(), &q.as_view(), &kc.as_view(), &vc.as_view(), &table, heads)
    })?;
    if v3 {
        let note = format!("{} splits × {} kv heads + combine", keys.div_ceil(gpu::attention::DECODE_SPLIT_KEYS), heads.nkv);
        b.line(&format!("attention_decode {}", T::NAME), shape, 20, cost, &note, || {
            gpu::attention::attention_decode(gpu, &mut att.as_view_mut(), &q.as_view(), &kc.as_view(), &vc.as_view(), &table, heads)
        })?;
    }
    Ok(())
}

/// Training attention: bf16 (tensor cores) at every shape of [`Sizes::train_attention`] with the
/// 0.5B heads, at the first shape with the 1.5B heads (hd 128); f32 (CUDA cores) at the first.
fn train_attention_all(b: &mut Bench) -> drpo::Result<()> {
    let (shapes, heads, heads_128) = (b.sizes.train_attention.clone(), b.sizes.heads, b.sizes.heads_128);
    for &(count, len) in &shapes {
        train_attention::<bf16>(b, count, len, heads)?;
    }
    train_attention::<bf16>(b, shapes[0].0, shapes[0].1, heads_128)?;
    train_attention::<f32>(b, shapes[0].0, shapes[0].1, heads)
}

/// The training attention forward (saving the log-sum-exp) and backward (dq + delta, then dk dv)
/// over `count` packed sequences of `len` tokens. FLOPs of causal attention: 4·hd·nh per visible
/// (query, key) pair in the forward (QKᵀ and PV); the backward's nominal 2.5× that (QKᵀ recomputed,
/// dP = dO·Vᵀ, dV, dQ, dK); v1 recomputes more (NOTES.md, performance log).
fn train_attention<T: GpuFloat>(b: &mut Bench, count: usize, len: usize, heads: Heads) -> drpo::Result<()> {
    let gpu = b.gpu;
    let s = size_of::<T>();
    let seqs = PackedSeqs::new(gpu, &vec![len; count])?;
    let (rows, qd, kvd) = (seqs.n_rows, heads.nh * heads.hd, heads.nkv * heads.hd);
    let (q, k, v) = (gpu.htod(&random::<T>(&mut b.rng, rows * qd, 1.0))?, gpu.htod(&random::<T>(&mut b.rng, rows * kvd, 1.0))?, gpu.htod(&random::<T>(&mut b.rng, rows * kvd, 1.0))?);
    let dout = gpu.htod(&random::<T>(&mut b.rng, rows * qd, 1.0))?;
    let (mut att, mut lse, mut delta) = (gpu.alloc_zeros::<T>(rows * qd)?, gpu.alloc_zeros::<f32>(rows * heads.nh)?, gpu.alloc_zeros::<f32>(rows * heads.nh)?);
    let (mut dq, mut dk, mut dv) = (gpu.alloc_zeros::<T>(rows * qd)?, gpu.alloc_zeros::<T>(rows * kvd)?, gpu.alloc_zeros::<T>(rows * kvd)?);
    let fwd_flops = 4.0 * (count * len * (len + 1) / 2 * qd) as f64;
    let shape = format!("{count}×{len} tokens nh={} nkv={} hd={}", heads.nh, heads.nkv, heads.hd);
    let fwd = product::<T>(fwd_flops, 2 * rows * (qd + kvd) * s + rows * heads.nh * 4);
    b.line(&format!("attention_fwd {} (+lse)", T::NAME), shape.clone(), 5, fwd, "", || {
        gpu::attention::attention_fwd(gpu, &mut att.as_view_mut(), &mut lse.as_view_mut(), &q.as_view(), &k.as_view(), &v.as_view(), &seqs, heads)
    })?;
    // q, o, dout in, dq out; k, v in, dk, dv out; lse in, delta written and read
    let bwd = product::<T>(2.5 * fwd_flops, 4 * rows * (qd + kvd) * s + 3 * rows * heads.nh * 4);
    b.line(&format!("attention_bwd {} (dq, dk, dv)", T::NAME), shape, 5, bwd, "2 launches", || {
        let (q, k, v, o, l) = (q.as_view(), k.as_view(), v.as_view(), att.as_view(), lse.as_view());
        gpu::attention::attention_bwd(gpu, &mut dq.as_view_mut(), &mut dk.as_view_mut(), &mut dv.as_view_mut(), &mut delta.as_view_mut(), &dout.as_view(), &q, &k, &v, &o, &l, &seqs, heads)
    })
}

fn swiglu<T: GpuFloat>(b: &mut Bench) -> drpo::Result<()> {
    let (gpu, Sizes { n, ff, .. }) = (b.gpu, b.sizes.clone());
    let s = size_of::<T>();
    let gu = gpu.htod(&random::<T>(&mut b.rng, n * 2 * ff, 4.0))?;
    let mut act = gpu.alloc_zeros::<T>(n * ff)?;
    b.line(&format!("swiglu_fwd {}", T::NAME), format!("n={n} ff={ff}"), 100, memory(3 * n * ff * s), "", || {
        gpu::swiglu::swiglu_fwd(gpu, &mut act.as_view_mut(), &gu.as_view(), n, ff)
    })?;
    // dout [n, ff] and gu [n, 2ff] in, dgu [n, 2ff] read and written
    let mut dgu = gpu.alloc_zeros::<T>(n * 2 * ff)?;
    b.line(&format!("swiglu_bwd {}", T::NAME), format!("n={n} ff={ff}"), 100, memory(7 * n * ff * s), "", || {
        gpu::swiglu::swiglu_bwd(gpu, &mut dgu.as_view_mut(), &act.as_view(), &gu.as_view(), n, ff)
    })
}

fn residual<T: GpuFloat>(b: &mut Bench) -> drpo::Result<()> {
    let (gpu, Sizes { n, c, .. }) = (b.gpu, b.sizes.clone());
    let mut x = gpu.htod(&random::<T>(&mut b.rng, n * c, 1.0))?;
    let y = gpu.htod(&random::<T>(&mut b.rng, n * c, 1.0))?;
    b.line(&format!("residual_add {}", T::NAME), format!("n={n} c={c}"), 200, memory(3 * n * c * size_of::<T>()), "", || {
        gpu::residual::residual_add(gpu, &mut x.as_view_mut(), &y.as_view())
    })
}

/// The fused head over the full vocabulary: log-probs (forward) and dh, dW (backward), never the
/// [rows, v] logits (622 MB in f32 at 1024 rows).
fn head<T: GpuFloat>(b: &mut Bench) -> drpo::Result<()> {
    let (gpu, Sizes { c, v, head_rows: rows, .. }) = (b.gpu, b.sizes.clone());
    let s = size_of::<T>();
    let targets: Vec<u32> = (0..rows).map(|_| b.rng.random_range(0..v as u32)).collect();
    let h = gpu.htod(&random::<T>(&mut b.rng, rows * c, 1.0))?;
    let w = gpu.htod(&random::<T>(&mut b.rng, v * c, 0.05))?;
    let (mut logp, mut lse) = (gpu.alloc_zeros::<f32>(rows)?, gpu.alloc_zeros::<f32>(rows)?);
    // the scratch (partials, targets upload) is built once, outside the timed launches
    let mut scratch = gpu::logprob::HeadScratch::new::<T>(gpu, &targets, v)?;
    let shape = format!("n={rows} c={c} v={v}");
    let fwd = product::<T>(2.0 * (rows * c * v) as f64, (v * c + rows * c) * s + 12 * rows);
    b.line(&format!("head_logprob {}", T::NAME), shape.clone(), 5, fwd, "2 launches", || {
        gpu::logprob::head_logprob_with(gpu, &mut scratch, &mut logp.as_view_mut(), &mut lse.as_view_mut(), &h.as_view(), &w.as_view(), rows, c, v, 0.6)
    })?;
    // three products (the logits recomputed, dh, dW); the dlogits chunks go through memory by design
    let dlogp = gpu.htod(&random::<f32>(&mut b.rng, rows, 1.0))?;
    let mut dh = gpu.alloc_zeros::<T>(rows * c)?;
    let mut dw = gpu.alloc_zeros::<f32>(v * c)?;
    let mut grad = gpu::logprob::HeadGradScratch::<T>::new(gpu, &targets, v)?;
    let bwd = product::<T>(6.0 * (rows * c * v) as f64, (v * c + 3 * rows * c) * s + 2 * v * c * 4 + 12 * rows);
    let note = format!("+ dlogits through memory: {}", scaled((3 * rows * v * s) as f64, "B"));
    b.line(&format!("head_bwd {}", T::NAME), shape, 3, bwd, &note, || {
        gpu::logprob::head_bwd_with(gpu, &mut grad, &mut dh.as_view_mut(), &mut dw.as_view_mut(), &dlogp.as_view(), &lse.as_view(), &h.as_view(), &w.as_view(), rows, c, v, 0.6)
    })
}

/// The sampler over the full vocabulary (temperature only, top-p, top-k with top-p) and the Philox
/// uniforms it draws from.
fn sampling(b: &mut Bench) -> drpo::Result<()> {
    let (gpu, Sizes { v, sample_rows: rows, .. }) = (b.gpu, b.sizes.clone());
    let logits = gpu.htod(&random::<f32>(&mut b.rng, rows * v, 8.0))?;
    let streams = gpu.htod(&(0..rows as u64).collect::<Vec<_>>())?;
    let mut scratch = gpu.alloc_zeros::<u64>(rows * v)?;
    let mut toks = gpu.alloc_zeros::<u32>(rows)?;
    let mut flags = gpu.alloc_zeros::<u32>(rows)?;
    let mut logp = gpu.alloc_zeros::<f64>(rows)?;
    for (top_k, top_p) in [(0, 1.0), (0, 0.9), (50, 0.9)] {
        let params = SamplingParams { temperature: 0.6, top_k, top_p };
        let note = "+ passes over a u64 [rows, v] scratch";
        b.line("sample f32", format!("rows={rows} v={v} top_k={top_k} top_p={top_p}"), 10, memory(rows * v * 4 + 24 * rows), note, || {
            gpu::sampling::sample(gpu, &mut toks.as_view_mut(), &mut flags.as_view_mut(), &mut logp.as_view_mut(), &mut scratch.as_view_mut(), &logits.as_view(), &streams.as_view(), rows, v, &params, 7, 0)
        })?;
    }
    let n = rows * v;
    let streams = gpu.htod(&(0..n as u64).collect::<Vec<_>>())?;
    let steps = gpu.htod(&vec![3u64; n])?;
    let mut u = gpu.alloc_zeros::<f64>(n)?;
    b.line("philox_uniform f64", format!("n={n}"), 20, memory(24 * n), "", || gpu::sampling::philox_uniform(gpu, &mut u.as_view_mut(), 7, &streams.as_view(), &steps.as_view()))
}

/// The objectives on a chunk of groups of 8: DRPO (f32 log-probs), DisCO (f64), the PPO surrogate
/// (f32, f64) and GRPO's group advantages. Each call ends in a read-back of its scalars (a sync).
/// Fewest bytes: ℓ and ℓ^old read once, ∂loss/∂ℓ written once; the sums pass reads them again in
/// the surrogate.
fn objective(b: &mut Bench) -> drpo::Result<()> {
    let gpu = b.gpu;
    for (questions, mean_len) in b.sizes.objective.clone() {
        let rows = questions * 8;
        let group: Vec<usize> = (0..rows).map(|i| i / 8).collect();
        let correct: Vec<bool> = (0..rows).map(|i| i % 3 == 0).collect();
        let len: Vec<usize> = (0..rows).map(|_| b.rng.random_range(mean_len / 2..mean_len * 3 / 2)).collect();
        let finished = vec![true; rows];
        let o = Outcomes { group: &group, correct: &correct, finished: &finished, len: &len, max_len: 2 * mean_len };
        let groups = gpu::objective::DeviceGroups::upload(gpu, &o)?;
        let mut work = gpu::objective::ObjectiveWork::new(gpu, &groups)?;
        let t = groups.tokens;
        let lp: Vec<f64> = (0..2 * t).map(|_| b.rng.random_range(-3.0..-1.0)).collect();
        let (lp32, old32) = (gpu.htod(&lp[..t].iter().map(|&x| x as f32).collect::<Vec<_>>())?, gpu.htod(&lp[t..].iter().map(|&x| x as f32).collect::<Vec<_>>())?);
        let (lp64, old64) = (gpu.htod(&lp[..t])?, gpu.htod(&lp[t..])?);
        let tl32 = gpu::objective::TokenLogProbs { logp: lp32.as_view(), old_logp: old32.as_view() };
        let tl64 = gpu::objective::TokenLogProbs { logp: lp64.as_view(), old_logp: old64.as_view() };
        let (mut d32, mut d64) = (gpu.alloc_zeros::<f32>(t)?, gpu.alloc_zeros::<f64>(t)?);
        let hyper = Hyper::default();
        let shape = format!("{rows} responses, T={t}");
        b.line("objective drpo f32", shape.clone(), 50, memory(12 * t), "4 launches + read-back", || {
            gpu::objective::drpo(gpu, &mut d32.as_view_mut(), &mut work, &groups, &tl32, &hyper, 1.0).map(|_| ())
        })?;
        b.line("objective disco f64", shape.clone(), 50, memory(24 * t), "4 launches + read-back", || {
            gpu::objective::discriminative(gpu, &mut d64.as_view_mut(), &mut work, &groups, &tl64, &hyper, f64::INFINITY, 1.0).map(|_| ())
        })?;
        let rewards = gpu.htod(&(0..rows).map(|i| if i % 3 == 0 { 1.0 } else { 0.0 }).collect::<Vec<f64>>())?;
        let mut adv = gpu.alloc_zeros::<f64>(rows)?;
        b.line("group_advantages grpo", format!("{rows} responses, {questions} groups"), 50, memory(16 * rows + 8 * rows), "1 launch, latency-bound", || {
            gpu::objective::advantages(gpu, &mut adv.as_view_mut(), &rewards.as_view(), &groups, Estimator::Grpo, 1e-6, StdKind::Sample)
        })?;
        let note = "3 launches + read-back; ℓ, ℓ^old read twice";
        b.line("objective surrogate f32", shape.clone(), 50, memory(12 * t), note, || {
            gpu::objective::clipped_surrogate(gpu, &mut d32.as_view_mut(), &mut work, &groups, &tl32, &adv.as_view(), Some(0.2), 1.0).map(|_| ())
        })?;
        b.line("objective surrogate f64", shape, 50, memory(24 * t), note, || {
            gpu::objective::clipped_surrogate(gpu, &mut d64.as_view_mut(), &mut work, &groups, &tl64, &adv.as_view(), Some(0.2), 1.0).map(|_| ())
        })?;
    }
    Ok(())
}

/// The optimizer over Qwen2-0.5B's 494,032,768 parameters: the gradient norm (the CPU's chunked f64
/// order), the clip alone, and AdamW with the clip fused and the bf16 copy written.
fn optimizer(b: &mut Bench) -> drpo::Result<()> {
    let (gpu, params) = (b.gpu, b.sizes.params);
    let mut g = gpu.htod(&random::<f32>(&mut b.rng, params, 1e-3))?;
    let mut p = gpu.htod(&random::<f32>(&mut b.rng, params, 0.05))?;
    let (mut m, mut v) = (gpu.alloc_zeros::<f32>(params)?, gpu.alloc_zeros::<f32>(params)?);
    let mut pbf = gpu.alloc_zeros::<bf16>(params)?;
    let mut norm = gpu.alloc_zeros::<f64>(1)?;
    let mut partial = gpu.alloc_zeros::<f64>(gpu::optim::grad_norm_scratch_len(params))?;
    let shape = format!("n={params}");
    b.line("grad_norm f32", shape.clone(), 10, memory(4 * params), "2 launches: 2^15-element chunks, then one thread", || {
        gpu::optim::grad_norm(gpu, &mut norm.as_view_mut(), &mut partial.as_view_mut(), &g.as_view())
    })?;
    // max_norm just under the norm: every call scales g by c = 1 − 1e-6 (read and written; with
    // c ≥ 1 the kernel returns at once), so the ~70 timed calls leave g as it was to 1e-4
    gpu::optim::grad_norm(gpu, &mut norm.as_view_mut(), &mut partial.as_view_mut(), &g.as_view())?;
    let max_norm = gpu.dtoh(&norm)?[0] * (1.0 - 1e-6);
    b.line("clip_grad f32", shape.clone(), 10, memory(8 * params), "", || gpu::optim::clip_grad(gpu, &mut g.as_view_mut(), &norm.as_view(), max_norm))?;
    let k = drpo::optim::AdamWScalars::<f32>::new(&drpo::optim::AdamWConfig::default(), 2e-6, 1);
    // p, m, v, g in; p, m, v, bf16 copy out
    b.line("adamw_step f32", shape, 10, memory(30 * params), "fused clip, bf16 copy", || {
        let (mut pv, mut mv, mut vv, mut bv) = (p.as_view_mut(), m.as_view_mut(), v.as_view_mut(), pbf.as_view_mut());
        let bufs = gpu::optim::AdamWBuffers { params: &mut pv, m: &mut mv, v: &mut vv, params_bf16: Some(&mut bv) };
        gpu::optim::adamw_step(gpu, bufs, &g.as_view(), Some((&norm.as_view(), 1.0)), &k)
    })
}

#[allow(dead_code)] // the dry-run test includes this file for `run` and `Bench`
fn main() {
    let opts = match Opts::from_args() {
        Ok(o) => o,
        Err(usage) => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    };
    let roof = Roofline::from_env().unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(2);
    });
    let result = opts.open("kernels bench").and_then(|gpu| match gpu {
        Some(gpu) => run(&mut Bench::new(&gpu, &opts, roof)),
        None => Ok(()),
    });
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
