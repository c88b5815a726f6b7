//! The GPU benches' logic without a GPU: `bench/kernels.rs` and `bench/vs_torch_gpu.rs` (drpo's side
//! of `bench/gpu.sh`) run every case once at tiny shapes (`--dry`) on the simulated device, so a
//! launch with a wrong shape or buffer, or a line whose figures are not finite, fails here and not
//! in the first minutes of a lent GPU. The kernel bench must launch every kernel of `cuda/` (STYLE:
//! every kernel has a bench entry). The times printed are the simulator's and mean nothing.
//! Skips without a C++ compiler; DRPO_REQUIRE_SIM=1 (`.ci/run`) fails instead.
// each bench file brings its own copy of bench/common.rs, as its bench target needs
#![allow(clippy::duplicate_mod)]

#[allow(dead_code)]
#[path = "../bench/kernels.rs"]
mod kernels;
#[allow(dead_code)]
#[path = "../bench/vs_torch_gpu.rs"]
mod vs_torch_gpu;

use drpo::gpu::{sim, Gpu, FAMILIES};

fn sim_or_skip(test: &str) -> Option<Gpu> {
    match Gpu::sim() {
        Ok(g) => Some(g),
        Err(drpo::Error::NoDevice { why }) => {
            assert!(std::env::var("DRPO_REQUIRE_SIM").map_or(true, |v| v != "1"), "{test}: DRPO_REQUIRE_SIM=1 but no simulated device: {why}");
            println!("SKIP {test}: {why}");
            None
        }
        Err(e) => panic!("{test}: the simulated device failed to start: {e}"),
    }
}

fn dry_opts() -> kernels::common::Opts {
    kernels::common::Opts::parse(["--dry", "--device", "sim"].map(String::from)).unwrap()
}

/// One test, in this order, because the simulator's record of launched kernels is per process: the
/// kernel bench alone must cover every kernel (the second bench would hide a gap).
#[test]
fn benches_run_dry_on_the_simulator() {
    let Some(gpu) = sim_or_skip("benches_run_dry_on_the_simulator") else { return };
    let t = std::time::Instant::now();
    let mut b = kernels::Bench::new(&gpu, &dry_opts(), kernels::Roofline::h100());
    kernels::run(&mut b).unwrap();
    for r in &b.rows {
        assert!(r.us.is_finite() && r.us > 0.0, "{} {}: time {}", r.kernel, r.shape, r.us);
        assert!(r.cost.bytes > 0.0 && r.cost.flops >= 0.0, "{} {}: {:?}", r.kernel, r.shape, r.cost);
        assert_eq!(r.cost.flops > 0.0, r.cost.unit != kernels::Unit::Memory, "{} {}: flops without a unit, or a unit without flops", r.kernel, r.shape);
    }
    let launched = sim::launched_kernels();
    let mut missing = Vec::new();
    for family in FAMILIES {
        for k in sim::family_kernels(family).unwrap() {
            if !launched.iter().any(|&(f, l)| f == family.name && l == k) {
                missing.push(format!("{}/{k}", family.name));
            }
        }
    }
    assert!(missing.is_empty(), "kernels no line of bench/kernels.rs launches: {missing:?}");
    println!("kernel bench, dry: {} lines, {} kernels, {:.1} s", b.rows.len(), launched.len(), t.elapsed().as_secs_f64());

    let t = std::time::Instant::now();
    let plan = vs_torch_gpu::Plan::new(true);
    let mut runner = vs_torch_gpu::Runner::new(gpu, true);
    let mut lines = Vec::new();
    vs_torch_gpu::run(&mut runner, &plan, "", &mut |v| lines.push(v)).unwrap();
    assert_eq!(lines.len(), plan.cases.len());
    for (case, line) in plan.cases.iter().zip(&lines) {
        assert_eq!(line["case"], case.name.as_str());
        let spec = plan.json(case);
        assert_eq!(spec["case"], case.name.as_str());
        match (line["ms"].as_f64(), line["missing"].as_str()) {
            (Some(ms), None) => assert!(ms.is_finite() && ms > 0.0, "{line}"),
            // only the training step may be missing (the device step is not built yet)
            (None, Some(_)) => assert_eq!(spec["kind"], "train_step", "{line}"),
            _ => panic!("neither a time nor a reason: {line}"),
        }
    }
    println!("vs_torch_gpu, dry: {} cases, {:.1} s", lines.len(), t.elapsed().as_secs_f64());
}

#[test]
fn roofline_floor_is_the_larger_of_bytes_and_flops() {
    use kernels::{Cost, Roofline, Unit};
    let roof = Roofline::parse("3000, 800, 50").unwrap();
    // 3 GB at 3 TB/s = 1 ms; 400 GFLOP at 800 TFLOP/s = 0.5 ms: memory sets it
    assert_eq!(roof.floor_us(&Cost { bytes: 3e9, flops: 4e11, unit: Unit::TensorBf16 }), (1000.0, "HBM"));
    assert_eq!(roof.floor_us(&Cost { bytes: 3e9, flops: 1.6e12, unit: Unit::TensorBf16 }), (2000.0, "bf16 TC"));
    assert_eq!(roof.floor_us(&Cost { bytes: 3e6, flops: 1e9, unit: Unit::CudaF32 }), (20.0, "f32 FMA"));
    assert_eq!(roof.floor_us(&Cost { bytes: 3e6, flops: 0.0, unit: Unit::Memory }), (1.0, "HBM"));
    for bad in ["", "3000,800", "3000,800,0", "3000,x,50", "3000,800,50,1", "nan,800,50"] {
        assert!(Roofline::parse(bad).is_err(), "{bad:?} parsed");
    }
    assert_eq!(Roofline::h100().hbm_gbs, 3000.0);
}

#[test]
fn bench_options_parse() {
    use kernels::common::Opts;
    let o = Opts::parse(["--bench", "--dry", "--device", "sim", "matmul"].map(String::from)).unwrap();
    assert!(o.dry && o.sim && o.filter == "matmul" && o.wants("matmul_fwd bf16") && !o.wants("rope_fwd"));
    assert!(!Opts::parse(Vec::<String>::new()).unwrap().sim);
    assert!(Opts::parse(["--device".to_string()]).is_err());
    assert!(Opts::parse(["--device", "tpu"].map(String::from)).is_err());
    assert!(Opts::parse(["--fast".to_string()]).is_err());
}
