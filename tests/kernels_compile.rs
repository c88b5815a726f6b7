//! Every kernel family compiles with NVRTC for sm_80 and sm_90 — no GPU needed — and every entry
//! point the launchers call exists, with its registers / shared memory / spills printed (`--nocapture`).
//! Without NVRTC (a fresh machine: it comes from pip, `.ci/install-nvrtc.sh`) the NVRTC tests print
//! SKIP and pass; with DRPO_REQUIRE_NVRTC=1 (set by `.ci/run`, which installs it) they fail instead.

use drpo::gpu::{compile_all, nvrtc_available, CHECK_ARCHS};

/// Every entry point a launcher in src/gpu/ names, by family (kept by hand: a renamed kernel must
/// fail here, on a machine without a GPU, not at the first launch on one).
const ENTRY_POINTS: &[(&str, &[&str])] = &[
    ("embedding", &["embedding_fwd_f32", "embedding_fwd_bf16", "embedding_bwd_f32", "embedding_bwd_bf16"]),
    ("rmsnorm", &["rmsnorm_fwd_f32", "rmsnorm_fwd_bf16", "rmsnorm_bwd_f32", "rmsnorm_bwd_bf16", "rmsnorm_bwd_dw"]),
    ("rope", &["rope_fwd_f32", "rope_fwd_bf16", "rope_bwd_f32", "rope_bwd_bf16"]),
    (
        "matmul",
        &[
            "matmul_fwd_f32",
            "matmul_fwd_bf16_large",
            "matmul_fwd_bf16_small",
            "matmul_fwd_bf16f32_large",
            "matmul_fwd_bf16f32_small",
            "matmul_part_bf16_small",
            "matmul_part_f32",
            "matmul_split_sum_bf16",
            "matmul_split_sum_bf16f32",
            "matmul_split_sum_f32",
            "matmul_bwd_dx_f32",
            "matmul_bwd_dx_bf16_large",
            "matmul_bwd_dx_bf16_small",
            "matmul_bwd_dx_bf16f32_large",
            "matmul_bwd_dx_bf16f32_small",
            "matmul_bwd_dw_f32",
            "matmul_bwd_dw_bf16_large",
            "matmul_bwd_dw_bf16_small",
            "matmul_bwd_dw_part_bf16_small",
            "matmul_bwd_dw_part_f32",
            "matmul_split_acc_f32",
            "matmul_bwd_db_f32",
            "matmul_bwd_db_bf16",
        ],
    ),
    (
        "attention",
        &[
            "kv_append_f32",
            "kv_append_bf16",
            "attention_prefill_f32",
            "attention_prefill_bf16",
            "attention_decode_f32",
            "attention_decode_bf16",
            "attention_decode_combine_f32",
            "attention_decode_combine_bf16",
            "attention_decode_v2_f32",
            "attention_decode_v2_bf16",
            "attention_fwd_f32",
            "attention_fwd_bf16",
            "attention_bwd_dq_f32",
            "attention_bwd_dq_bf16",
            "attention_bwd_dkdv_f32",
            "attention_bwd_dkdv_bf16",
        ],
    ),
    ("swiglu", &["swiglu_fwd_f32", "swiglu_fwd_bf16", "swiglu_bwd_f32", "swiglu_bwd_bf16"]),
    ("residual", &["residual_add_f32", "residual_add_bf16"]),
    ("logprob", &["head_partial_f32", "head_partial_bf16", "head_finish", "head_dlogits_f32", "head_dlogits_bf16", "head_dh_flush_bf16"]),
    ("sampling", &["sampling_fwd_f32", "philox_uniform_f64"]),
    (
        "objective",
        &[
            "objective_sums_f32",
            "objective_sums_f64",
            "drpo_groups",
            "group_advantages",
            "surrogate_f32",
            "surrogate_f64",
            "objective_finish",
            "objective_dlogp_f32",
            "objective_dlogp_f64",
        ],
    ),
    ("optim", &["grad_norm_partial_f32", "grad_norm_finish", "clip_grad_f32", "adamw_step_f32"]),
];

fn nvrtc_or_skip() -> bool {
    if nvrtc_available() {
        return true;
    }
    assert!(
        !std::env::var("DRPO_REQUIRE_NVRTC").is_ok_and(|v| v == "1"),
        "DRPO_REQUIRE_NVRTC=1 but NVRTC (libnvrtc.so.13) is not found: run `eval \"$(bash .ci/install-nvrtc.sh)\"`"
    );
    println!("SKIP: NVRTC (libnvrtc.so.13) not found; `eval \"$(bash .ci/install-nvrtc.sh)\"` installs it from pip");
    false
}

#[test]
fn every_kernel_compiles_for_sm80_and_sm90() {
    if !nvrtc_or_skip() {
        return;
    }
    let (major, minor) = drpo::gpu::nvrtc_version().unwrap();
    println!("NVRTC {major}.{minor}");
    for arch in CHECK_ARCHS {
        let rows = compile_all(arch).unwrap_or_else(|e| panic!("{arch}: {e}"));
        println!("{:<10} {:<28} {:>5} {:>5} {:>7} {:>6} {:>6} {:>6}", "family", "kernel", "arch", "regs", "smem_B", "stack", "st_sp", "ld_sp");
        for r in &rows {
            println!(
                "{:<10} {:<28} {:>5} {:>5} {:>7} {:>6} {:>6} {:>6}",
                r.family, r.kernel, r.arch, r.registers, r.shared_bytes, r.stack_bytes, r.spill_store_bytes, r.spill_load_bytes
            );
        }
        for (family, names) in ENTRY_POINTS {
            for name in *names {
                let row = rows.iter().find(|r| r.kernel == *name);
                let row = row.unwrap_or_else(|| panic!("{arch}: kernel `{name}` missing from family `{family}`"));
                assert_eq!(row.family, *family, "{name}: compiled in family {} instead of {family}", row.family);
                assert_eq!(row.arch, arch, "{name}: compiled for {} instead of {arch}", row.arch);
                assert!(row.registers > 0 && row.registers <= 255, "{name}: {} registers", row.registers);
                // static shared memory above 48 KiB would need an opt-in attribute the launchers do not set
                assert!(row.shared_bytes <= 48 * 1024, "{name}: {} bytes of static shared memory", row.shared_bytes);
                assert_eq!((row.spill_store_bytes, row.spill_load_bytes), (0, 0), "{arch} {name}: register spills");
            }
        }
        let known: usize = ENTRY_POINTS.iter().map(|(_, n)| n.len()).sum();
        assert_eq!(rows.len(), known, "{arch}: kernels compiled that no launcher names (update ENTRY_POINTS)");
    }
}

/// The launch constants the Rust launchers share with a kernel's compile-time `#define`s (no NVRTC needed).
#[test]
fn launchers_use_the_kernels_compile_time_block_shapes() {
    let src = include_str!("../cuda/attention.cu");
    let define = |name: &str| -> usize {
        let line = src.lines().find(|l| l.starts_with(&format!("#define {name} "))).unwrap_or_else(|| panic!("no #define {name}"));
        line.split_whitespace().nth(2).unwrap().parse().unwrap()
    };
    assert_eq!(define("ATT_PREFILL_WARPS"), drpo::gpu::attention::PREFILL_WARPS, "prefill warps per block");
    assert_eq!(define("ATT_BQ"), drpo::gpu::attention::PREFILL_ROWS, "prefill query rows per block");
    assert_eq!(define("ATT_DECODE_WARPS"), drpo::gpu::attention::DECODE_WARPS, "decode warps per block");
    assert_eq!(define("ATT_SPLIT_KEYS"), drpo::gpu::attention::DECODE_SPLIT_KEYS, "decode keys per split");
    assert_eq!(define("ATT_GROUP_MAX"), drpo::gpu::attention::DECODE_GROUP_MAX, "decode query heads per block");
    assert_eq!(define("ATC_BQ"), drpo::gpu::attention::TC_ROWS, "tensor-core forward query rows per block");
    assert_eq!(define("ATB_TC"), drpo::gpu::attention::TC_ROWS, "tensor-core backward rows / keys per block");
    assert_eq!(define("ATB_BQ"), drpo::gpu::attention::BWD_ROWS, "backward query rows per tile");
    assert_eq!(define("ATB_BK"), drpo::gpu::attention::BWD_KEYS, "backward keys per tile");
    assert_eq!(define("ATB_WARPS"), drpo::gpu::attention::BWD_WARPS, "backward warps per block");
    // the device grad norm sums the CPU's chunks in the CPU's order only if the chunks are the same
    let optim = include_str!("../cuda/optim.cu");
    let chunk = optim.lines().find_map(|l| l.strip_prefix("#define OPTIM_CHUNK ")).expect("no #define OPTIM_CHUNK");
    assert_eq!(chunk.trim().parse::<usize>().unwrap(), drpo::optim::CHUNK, "grad-norm chunk (optim::CHUNK)");
}

#[test]
fn a_compile_error_reports_the_family_and_the_log() {
    if !nvrtc_or_skip() {
        return;
    }
    // An architecture NVRTC does not know: the error must carry NVRTC's own words, not a panic.
    let e = compile_all("sm_1").unwrap_err();
    let text = e.to_string();
    println!("{text}");
    assert!(matches!(e, drpo::Error::Nvrtc { .. }), "{text}");
    assert!(text.contains("embedding"), "the first family is named: {text}");
}

#[test]
fn gpu_new_without_a_driver_is_no_device() {
    if drpo::gpu::driver_available() {
        println!("SKIP gpu_new_without_a_driver_is_no_device: a CUDA driver is present here");
        return;
    }
    match drpo::gpu::Gpu::new(0) {
        Err(drpo::Error::NoDevice { why }) => println!("NoDevice: {why}"),
        other => panic!("expected NoDevice, got {other:?}"),
    }
}
