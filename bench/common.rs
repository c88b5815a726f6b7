//! What the GPU benches share (bench/kernels.rs, bench/vs_torch_gpu.rs): the command line, the
//! device, the timer and random inputs.
//!
//!   BENCH [--dry] [--device gpu|sim] [FILTER]
//!
//! `--dry` runs every case once at tiny shapes: a check of the bench's logic (every launch accepts
//! its shapes and buffers, every line's figures are computed) that runs on the simulated device in
//! seconds. Its times are the simulator's wall clock and are not results. FILTER keeps the cases
//! whose name contains it.

use drpo::gpu::{Gpu, GpuFloat};
use rand::{rngs::StdRng, Rng};
use std::time::Instant;

/// The parsed command line of a GPU bench.
#[derive(Clone, Debug, Default)]
pub struct Opts {
    pub dry: bool,
    pub sim: bool,
    pub filter: String,
}

impl Opts {
    /// Parses the process's arguments; `Err` carries the usage text. Cargo's own `--bench` flag
    /// (given to every bench target by `cargo bench`) is ignored.
    pub fn from_args() -> Result<Opts, String> {
        Opts::parse(std::env::args().skip(1))
    }

    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Opts, String> {
        let usage = "usage: BENCH [--dry] [--device gpu|sim] [FILTER]";
        let mut o = Opts::default();
        let mut args = args.into_iter();
        while let Some(a) = args.next() {
            match a.as_str() {
                "--dry" => o.dry = true,
                "--bench" => {}
                "--device" => match args.next().as_deref() {
                    Some("gpu") => o.sim = false,
                    Some("sim") => o.sim = true,
                    other => return Err(format!("--device {}: expected gpu or sim\n{usage}", other.unwrap_or("(nothing)"))),
                },
                s if s.starts_with('-') => return Err(format!("unknown option {s}\n{usage}")),
                s => o.filter = s.to_string(),
            }
        }
        Ok(o)
    }

    /// Whether a case of this name runs.
    pub fn wants(&self, name: &str) -> bool {
        name.contains(&self.filter)
    }

    /// The device asked for; `None` (after a SKIP line) when it is absent.
    pub fn open(&self, bench: &str) -> drpo::Result<Option<Gpu>> {
        match if self.sim { Gpu::sim() } else { Gpu::new(0) } {
            Ok(g) => Ok(Some(g)),
            Err(drpo::Error::NoDevice { why }) => {
                println!("SKIP {bench}: {why}");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

/// Microseconds per call of `f`: the median of 5 batches of `iters` calls between two events, each
/// batch after 3 warm-ups ([`Gpu::time_us`]). Dry: one call, timed by the wall clock.
pub fn time_us(gpu: &Gpu, dry: bool, iters: usize, mut f: impl FnMut() -> drpo::Result<()>) -> drpo::Result<f64> {
    if dry {
        let t = Instant::now();
        f()?;
        gpu.synchronize()?;
        return Ok(t.elapsed().as_secs_f64() * 1e6);
    }
    let mut batches = Vec::with_capacity(5);
    for _ in 0..5 {
        batches.push(gpu.time_us(iters, &mut f)?);
    }
    batches.sort_by(f64::total_cmp);
    Ok(batches[2])
}

/// Milliseconds of one call of `f` that ends with the work done on the host (a model call: its
/// own uploads, launches and read-backs): the median of `reps` calls after one warm-up. Dry: one call.
pub fn wall_ms(dry: bool, reps: usize, mut f: impl FnMut() -> drpo::Result<()>) -> drpo::Result<f64> {
    let mut once = || -> drpo::Result<f64> {
        let t = Instant::now();
        f()?;
        Ok(t.elapsed().as_secs_f64() * 1e3)
    };
    if dry {
        return once();
    }
    once()?;
    let mut t = (0..reps.max(1)).map(|_| once()).collect::<drpo::Result<Vec<f64>>>()?;
    t.sort_by(f64::total_cmp);
    Ok(t[t.len() / 2])
}

/// `n` values uniform in [−scale, scale) (never zeros: they hide unwritten outputs and can run
/// faster than real data).
pub fn random<T: GpuFloat>(rng: &mut StdRng, n: usize, scale: f32) -> Vec<T> {
    (0..n).map(|_| T::from_f32(rng.random_range(-scale..scale))).collect()
}
