//! `drpo gradcheck`: the model's analytic parameter gradient against central differences, in f64.
//!
//! Loss: L(θ) = Σ_{s,t} w[s][t] · logp_θ[s][t] at temperature 0.6 (SPEC §1's scoring temperature), on a
//! random batch (2–3 sequences of random lengths, random ids) with random weights w ∈ [−1, 1]: every
//! token's log-prob, the temperature and the packing of several sequences all enter the gradient.
//! For every parameter tensor, `samples` random coordinates i are checked against the fourth-order
//! central difference (the five-point stencil):
//! ```text
//! numeric_i = (8·(L(x+h) − L(x−h)) − (L(x+2h) − L(x−2h))) / 12h,   x = θ_i,  h = 1e-4 · max(1, |x|)
//! error_i   = |analytic_i − numeric_i| / max(|analytic_i|, |numeric_i|, floor)
//! ```
//! Why this stencil and h: the plain central difference has truncation error h²·|L⁽³⁾|/6 and rounding
//! error ≈ ε·|L|/h (ε = 2.2e-16). Measured on the fixtures and random configs, at h = 1e-5 it gives
//! absolute errors of 2e-9 (rounding-bound) to 7e-8 (truncation-bound: random configs have large
//! third derivatives), leaving only a few-fold margin under a 1e-6 relative tolerance for the smaller
//! entries. The five-point stencil's truncation error is h⁴·|L⁽⁵⁾|/30, so h can grow to 1e-4 (rounding
//! ≈ 1e-12·|L|): measured 1e-10 to 2e-10 on the same cases. Rounding x ± h, x ± 2h themselves moves
//! the estimate by ≤ ulp(x)/h ≈ 2e-12 relative. The floor (1e-4 × the largest |analytic| entry of the
//! whole gradient) keeps entries that are pure cancellation noise from reporting a huge relative
//! error; above it the error is relative. A tensor passes when every checked coordinate has error ≤ 1e-6.
//!
//! With `--device gpu|sim` ([`device_gradcheck`]) the question is another one: does the device's
//! backward (the f32 GPU model) compute the gradient the CPU's f64 backward computes? Every coordinate
//! is compared, with the f32 arithmetic's bound ([`DEVICE_TOLERANCE`]) instead of finite differences.

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::model::gpu::GpuModel;
use crate::model::Model;
use crate::policy::{Policy, ScoreBatch};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::Path;
use std::sync::Arc;

/// A checked coordinate passes when its (floored) relative error is at most this.
pub const TOLERANCE: f64 = 1e-6;
/// Step of the five-point central difference, relative to max(1, |x|).
pub const STEP: f64 = 1e-4;
/// Cap on `--samples`: each coordinate costs four forward passes.
pub const MAX_SAMPLES: usize = 10_000;
/// Denominator floor, relative to the largest |analytic| entry of the whole gradient.
pub const FLOOR: f64 = 1e-4;
/// The temperature of the checked log-probs (SPEC §1: rollouts and scoring use 0.6).
pub const TEMPERATURE: f64 = 0.6;

/// One parameter tensor's result.
#[derive(Clone, Debug, PartialEq)]
pub struct GradcheckRow {
    /// HF tensor name
    pub tensor: String,
    pub numel: usize,
    /// coordinates checked (min(samples, numel))
    pub checked: usize,
    /// max |analytic − numeric| over the checked coordinates
    pub max_abs_err: f64,
    /// max |analytic − numeric| / max(|analytic|, |numeric|, floor)
    pub max_rel_err: f64,
    /// the worst coordinate (flat index inside the tensor) and its two values
    pub worst_index: usize,
    pub analytic: f64,
    pub numeric: f64,
    pub tolerance: f64,
    pub pass: bool,
}

/// The loss of the check: L = Σ_{s,t} weights[s][t] · logp[s][t] at temperature `temp`.
#[derive(Clone, Debug)]
pub struct GradcheckLoss {
    pub seqs: Vec<Vec<u32>>,
    /// one weight per log-prob: len(seqs[s]) − 1 entries
    pub weights: Vec<Vec<f64>>,
    pub temp: f64,
}

impl GradcheckLoss {
    /// 2–3 sequences of 1..=7 tokens (the first has at least 2, so some log-prob exists; a 1-token
    /// sequence contributes no log-prob but still shares the packed batch), uniform ids, weights in [−1, 1].
    pub fn random(cfg: &ModelConfig, rng: &mut impl Rng) -> Self {
        let max_len = cfg.max_position_embeddings.min(7);
        let n_seqs = rng.random_range(2..=3);
        let seqs: Vec<Vec<u32>> = (0..n_seqs)
            .map(|s| {
                let len = if s == 0 { rng.random_range(2.min(max_len)..=max_len) } else { rng.random_range(1..=max_len) };
                (0..len).map(|_| rng.random_range(0..cfg.vocab_size as u32)).collect()
            })
            .collect();
        let weights = seqs.iter().map(|s| (1..s.len()).map(|_| rng.random_range(-1.0..=1.0)).collect()).collect();
        GradcheckLoss { seqs, weights, temp: TEMPERATURE }
    }

    fn refs(&self) -> Vec<&[u32]> {
        self.seqs.iter().map(Vec::as_slice).collect()
    }

    fn batch(&self, cfg: &ModelConfig) -> Result<ScoreBatch> {
        ScoreBatch::sequences(cfg, &self.refs(), self.temp)
    }

    pub fn value<P: Policy>(&self, policy: &P) -> Result<f64> {
        let scored = policy.score_responses(&self.batch(policy.config())?, false)?;
        Ok(scored.logp.iter().zip(&self.weights).flat_map(|(lp, w)| lp.iter().zip(w).map(|(l, w)| l * w)).sum())
    }

    /// dL/dθ by the policy's backward pass, flat in layout order.
    pub fn gradient<P: Policy>(&self, policy: &P) -> Result<Vec<f64>> {
        let scored = policy.score_responses(&self.batch(policy.config())?, true)?;
        let mut grads = policy.new_grads()?;
        policy.backward_responses(&scored, &self.weights, &mut grads)?;
        policy.grads_to_host(&grads)
    }
}

/// Checks `analytic` (dL/dθ, flat) against five-point differences of `loss` at `samples` random
/// coordinates of every tensor of `model`. Coordinates are drawn from `seed`.
pub fn check_gradient(model: &Model<f64>, loss: &GradcheckLoss, analytic: &[f64], samples: usize, seed: u64) -> Result<Vec<GradcheckRow>> {
    assert_eq!(analytic.len(), model.layout.total, "check_gradient: gradient does not match the model");
    let mut rng = StdRng::seed_from_u64(seed);
    let floor = gradient_floor(analytic);
    let mut probe = model.clone();
    let mut rows = Vec::with_capacity(model.layout.entries.len());
    for e in &model.layout.entries {
        let picks = rand::seq::index::sample(&mut rng, e.numel(), samples.min(e.numel())).into_vec();
        rows.push(check_entries(model, &mut probe, loss, analytic, floor, &e.name, &picks)?);
    }
    Ok(rows)
}

/// Checks the given coordinates (flat indices inside the tensor) of one tensor.
pub fn check_tensor(model: &Model<f64>, loss: &GradcheckLoss, analytic: &[f64], tensor: &str, coords: &[usize]) -> Result<GradcheckRow> {
    assert_eq!(analytic.len(), model.layout.total, "check_tensor: gradient does not match the model");
    check_entries(model, &mut model.clone(), loss, analytic, gradient_floor(analytic), tensor, coords)
}

/// The denominator floor of the relative error: FLOOR × the largest |analytic| entry.
fn gradient_floor(analytic: &[f64]) -> f64 {
    FLOOR * analytic.iter().fold(0.0f64, |m, g| m.max(g.abs()))
}

/// `probe` is a copy of `model` whose parameters are perturbed one at a time and restored.
fn check_entries(
    model: &Model<f64>,
    probe: &mut Model<f64>,
    loss: &GradcheckLoss,
    analytic: &[f64],
    floor: f64,
    tensor: &str,
    coords: &[usize],
) -> Result<GradcheckRow> {
    let e = model.layout.get(tensor).ok_or_else(|| Error::input(format!("gradcheck: the model has no tensor `{tensor}`")))?;
    let mut row = GradcheckRow {
        tensor: e.name.clone(),
        numel: e.numel(),
        checked: coords.len(),
        max_abs_err: 0.0,
        max_rel_err: 0.0,
        worst_index: 0,
        analytic: f64::NAN,
        numeric: f64::NAN,
        tolerance: TOLERANCE,
        pass: true,
    };
    for (k, &local) in coords.iter().enumerate() {
        assert!(local < e.numel(), "gradcheck: coordinate {local} outside `{tensor}`");
        let i = e.offset + local;
        let x = model.params[i];
        let h = STEP * x.abs().max(1.0);
        let mut loss_at = |xi: f64| -> Result<f64> {
            probe.params[i] = xi;
            loss.value(probe)
        };
        let (l1p, l1m, l2p, l2m) = (loss_at(x + h)?, loss_at(x - h)?, loss_at(x + 2.0 * h)?, loss_at(x - 2.0 * h)?);
        probe.params[i] = x;
        let numeric = (8.0 * (l1p - l1m) - (l2p - l2m)) / (12.0 * h);
        let a = analytic[i];
        let abs_err = (a - numeric).abs();
        // NaN anywhere is a failure, never a silent pass
        let (abs_err, rel_err) =
            if abs_err.is_nan() { (f64::INFINITY, f64::INFINITY) } else { (abs_err, abs_err / a.abs().max(numeric.abs()).max(floor)) };
        row.max_abs_err = row.max_abs_err.max(abs_err);
        if rel_err > row.max_rel_err || k == 0 {
            row.max_rel_err = rel_err;
            (row.worst_index, row.analytic, row.numeric) = (local, a, numeric);
        }
    }
    row.pass = row.max_rel_err <= TOLERANCE;
    Ok(row)
}

/// The gradient check of `drpo gradcheck`.
/// - `model_dir`: a Hugging Face folder, its weights cast to f64;
/// - else `cfg_override`: that config with random parameters ([`random_params`]);
/// - else [`random_config`]`(seed)` with random parameters.
///
/// The batch, the loss weights and the checked coordinates all derive from `seed`.
/// Cost: 4 · samples · (number of tensors) forward passes of a few tokens, plus the model in f64 twice
/// (weights and a perturbed copy) and its gradient: fine for tiny models, slow for real ones.
pub fn gradcheck(model_dir: Option<&Path>, cfg_override: Option<ModelConfig>, seed: u64, samples: usize) -> Result<Vec<GradcheckRow>> {
    if samples == 0 || samples > MAX_SAMPLES {
        return Err(Error::input(format!("gradcheck: --samples {samples}: must be in 1..={MAX_SAMPLES} (coordinates checked per tensor)")));
    }
    let (model, loss, mut rng) = checked_case(model_dir, cfg_override, seed)?;
    let analytic = loss.gradient(&model)?;
    check_gradient(&model, &loss, &analytic, samples, rng.random())
}

/// The model, the loss and the rng of the coordinates of a gradient check (see [`gradcheck`]).
fn checked_case(model_dir: Option<&Path>, cfg_override: Option<ModelConfig>, seed: u64) -> Result<(Model<f64>, GradcheckLoss, StdRng)> {
    let model = match (model_dir, cfg_override) {
        (Some(_), Some(_)) => return Err(Error::input("gradcheck takes a model folder or a config, not both")),
        (Some(dir), None) => {
            // the model in f64 three times (weights, the perturbed copy, the gradient), before any of it
            let cfg = crate::weights::checked_config(dir)?;
            let mut est = crate::memory::training(&cfg, 8, 21, 7); // ≤ 3 sequences of ≤ 7 tokens
            est.optimizer = est.weights.saturating_mul(2);
            crate::memory::ensure_fits("gradcheck in f64 (the weights, a perturbed copy, the gradient)", &est)?;
            Model::<f64>::load(dir)?
        }
        (None, cfg) => {
            let cfg = match cfg {
                // through the config.json checks, so a bad override is an error, not a panic in an op
                Some(c) => ModelConfig::from_json(&c.to_json(), Path::new("(gradcheck config)"))?,
                None => random_config(seed),
            };
            let params = random_params(&cfg, seed);
            Model::from_params(cfg, params)
        }
    };
    if model.cfg.max_position_embeddings < 2 {
        return Err(Error::input("gradcheck needs max_position_embeddings ≥ 2 (a log-prob needs two tokens)"));
    }
    let mut rng = StdRng::seed_from_u64(seed ^ 0x6772_6164_6368_6b21);
    let loss = GradcheckLoss::random(&model.cfg, &mut rng);
    Ok((model, loss, rng))
}

/// Per-element tolerance of the device check ([`device_gradcheck`]): the f32 gradient's worst element
/// within 5σ of the f32 model's relative bound 1e-4, |Δ| ≤ 5e-4·(|ref| + rms(ref)) (the derivation is
/// tests/gpu_model_grad.rs's F32_GRAD: ≤ 8 stages of f32 sums of ≤ √k·u, times the cancellation of
/// the sums over tokens).
pub const DEVICE_TOLERANCE: f64 = 5e-4;

/// `drpo gradcheck --device gpu|sim`: the device's analytic gradient (the f32 GPU model: the uncached
/// forward and the device backward of `model::gpu_train`) against the CPU's f64 gradient of the same
/// loss (the batch and weights [`gradcheck`] draws from `seed`) on the same weights (rounded to f32, as
/// the device holds them), every coordinate of every tensor:
/// ```text
/// error_i = |device_i − cpu_i| / (|cpu_i| + floor),
/// floor   = max(rms of the tensor's non-zero cpu entries, GLOBAL_FLOOR · rms of the whole gradient's non-zero entries)
/// ```
/// Non-zero entries: an embedding table's rows of ids absent from the batch are zeros and would put
/// the floor below its used rows' scale. The whole gradient's share: a tensor whose gradient cancels
/// to zero (q and k when every scored row attends to one key: that softmax is 1 whatever q and k
/// are) is round-off on the device, of the order of u times the other gradients' terms (measured
/// 7e-8 of max |g|); a hundredth of the whole gradient's rms covers that and leaves a tensor
/// whose gradient is small but not cancelled judged on its own scale (a wrong tensor could hide
/// only below 5e-6 of the whole gradient's rms). `numeric` in a row is the CPU value.
pub fn device_gradcheck(gpu: Arc<Gpu>, model_dir: Option<&Path>, cfg_override: Option<ModelConfig>, seed: u64) -> Result<Vec<GradcheckRow>> {
    let (model, loss, _) = checked_case(model_dir, cfg_override, seed)?;
    let device = GpuModel::<f32>::from_cpu(gpu, &model)?;
    let got: Vec<f64> = loss.gradient(&device)?;
    let want = loss.gradient(&model.cast::<f32>().cast::<f64>())?;
    Ok(compare_gradients(&model.layout, &got, &want, DEVICE_TOLERANCE))
}

/// [`device_gradcheck`]'s comparison of a gradient `got` with a reference `want` (both flat, in
/// `layout` order), tensor by tensor.
pub fn compare_gradients(layout: &crate::layout::ParamLayout, got: &[f64], want: &[f64], tolerance: f64) -> Vec<GradcheckRow> {
    assert!(got.len() == layout.total && want.len() == layout.total, "compare_gradients: gradients do not match the layout");
    let global = nonzero_rms(want);
    layout.entries.iter().map(|e| compare_tensor(&e.name, &got[e.range()], &want[e.range()], global, tolerance)).collect()
}

/// The rms of the non-zero values (0 when there are none).
fn nonzero_rms(x: &[f64]) -> f64 {
    let (sum, n) = x.iter().filter(|&&v| v != 0.0).fold((0.0, 0usize), |(s, n), v| (s + v * v, n + 1));
    (sum / n.max(1) as f64).sqrt()
}

/// The share of the whole gradient's rms in every tensor's floor ([`device_gradcheck`]).
pub const GLOBAL_FLOOR: f64 = 1e-2;

fn compare_tensor(name: &str, got: &[f64], want: &[f64], global_rms: f64, tolerance: f64) -> GradcheckRow {
    let floor = nonzero_rms(want).max(GLOBAL_FLOOR * global_rms).max(f64::MIN_POSITIVE);
    let mut row = GradcheckRow {
        tensor: name.to_string(),
        numel: want.len(),
        checked: want.len(),
        max_abs_err: 0.0,
        max_rel_err: 0.0,
        worst_index: 0,
        analytic: f64::NAN,
        numeric: f64::NAN,
        tolerance,
        pass: true,
    };
    for (i, (&a, &w)) in got.iter().zip(want).enumerate() {
        let abs_err = (a - w).abs();
        let rel_err = if abs_err.is_nan() { f64::INFINITY } else { abs_err / (w.abs() + floor) };
        row.max_abs_err = row.max_abs_err.max(if abs_err.is_nan() { f64::INFINITY } else { abs_err });
        if rel_err > row.max_rel_err || i == 0 {
            row.max_rel_err = rel_err;
            (row.worst_index, row.analytic, row.numeric) = (i, a, w);
        }
    }
    row.pass = row.max_rel_err <= tolerance;
    row
}

/// A small random Qwen2 config: 1–3 kv heads shared by 1–3 query heads each (MHA, GQA and MQA),
/// head_dim 2–8 (even) independent of hidden_size 3–20, MLP 2–17, vocab 5–40, 1–3 layers,
/// rope θ log-uniform in [10, 1e6], eps log-uniform in [1e-7, 1e-2], tied or untied embeddings.
pub fn random_config(seed: u64) -> ModelConfig {
    let mut rng = StdRng::seed_from_u64(seed);
    let nkv = rng.random_range(1..=3);
    let vocab_size = rng.random_range(5..=40);
    ModelConfig {
        vocab_size,
        hidden_size: rng.random_range(3..=20),
        intermediate_size: rng.random_range(2..=17),
        num_hidden_layers: rng.random_range(1..=3),
        num_attention_heads: nkv * rng.random_range(1..=3),
        num_key_value_heads: nkv,
        head_dim: 2 * rng.random_range(1..=4),
        rope_theta: 10f64.powf(rng.random_range(1.0..=6.0)),
        rms_norm_eps: 10f64.powf(rng.random_range(-7.0..=-2.0)),
        max_position_embeddings: 32,
        tie_word_embeddings: rng.random(),
        bos_token_id: None,
        eos_token_ids: vec![vocab_size as u32 - 1],
        torch_dtype: None,
    }
}

/// Random parameters for `cfg`, sized so every op works in its non-linear range: embeddings
/// U(−1, 1); linear weights U(−a, a) with a = sqrt(3 / fan_in) (unit-variance outputs, so attention
/// is neither uniform nor one-hot and SiLU sees both signs); biases U(−0.5, 0.5); norm weights U(0.5, 1.5).
pub fn random_params(cfg: &ModelConfig, seed: u64) -> Vec<f64> {
    let layout = crate::layout::ParamLayout::new(cfg);
    let mut rng = StdRng::seed_from_u64(seed ^ 0x7061_7261_6d73);
    let mut params = vec![0.0; layout.total];
    for e in &layout.entries {
        let (lo, hi) = if e.name.ends_with("norm.weight") {
            (0.5, 1.5)
        } else if e.name.ends_with(".bias") {
            (-0.5, 0.5)
        } else if e.name == "model.embed_tokens.weight" {
            (-1.0, 1.0)
        } else {
            let a = (3.0 / e.shape[1] as f64).sqrt();
            (-a, a)
        };
        params[e.range()].iter_mut().for_each(|p| *p = rng.random_range(lo..hi));
    }
    params
}
