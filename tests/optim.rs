//! AdamW, gradient clipping and the learning-rate schedule against hand-derived values and a
//! textbook scalar re-implementation.

mod common;
use common::*;
use drpo::cpu::math;
use drpo::optim::{clip_grad_norm, global_grad_norm, AdamWConfig, AdamWState, LrDecay, LrSchedule};
use rand::Rng;

fn close(what: &str, got: f64, want: f64, tol: f64) {
    let err = (got - want).abs() / want.abs().max(1.0);
    assert!(err <= tol, "{what}: got {got:.17e}, want {want:.17e} (err {err:.2e} > {tol:.0e})");
}

#[test]
fn defaults_are_spec_5_6() {
    let c = AdamWConfig::default();
    assert_eq!((c.beta1, c.beta2, c.eps, c.weight_decay), (0.9, 0.999, 1e-8, 0.01));
    let s = LrSchedule::default();
    assert_eq!((s.lr, s.warmup_steps, s.decay), (2e-6, 0, LrDecay::Constant));
}

/// First step: m̂ = g and v̂ = g² exactly (in exact arithmetic), so the Adam update is
/// lr · g / (|g| + eps), a sign with magnitude lr, on top of the decay p · lr · wd.
#[test]
fn first_step_is_lr_times_sign() {
    let cfg = AdamWConfig::default();
    let lr = 1e-3;
    let p0 = [1.0, -2.0, 0.5, 3.0, -0.25, 0.0];
    let g = [0.3, -7.0, 1e-3, 0.0, 2.5e4, -1e-6];
    let mut p = p0.to_vec();
    let mut st = AdamWState::<f64>::new(p.len());
    st.step(&mut p, &g, &cfg, lr);
    assert_eq!(st.step, 1);
    for i in 0..p.len() {
        let want = p0[i] * (1.0 - lr * 0.01) - lr * g[i] / (g[i].abs() + 1e-8);
        close(&format!("p[{i}]"), p[i], want, 1e-15);
        close(&format!("m[{i}]"), st.m[i], 0.1 * g[i], 1e-15);
        close(&format!("v[{i}]"), st.v[i], 0.001 * g[i] * g[i], 1e-15);
    }
}

/// Two steps worked out by hand: p0 = 1, g = 0.5 then −0.25, lr = 0.1, wd = 0.01.
/// m1 = 0.05, v1 = 0.00025;  m2 = 0.9·0.05 − 0.1·0.25 = 0.02,  v2 = 0.999·0.00025 + 0.001·0.0625 = 0.00031225;
/// bias corrections at t = 2: 1 − 0.81 = 0.19 and 1 − 0.998001 = 0.001999.
#[test]
fn two_steps_by_hand() {
    let cfg = AdamWConfig::default();
    let mut p = vec![1.0f64];
    let mut st = AdamWState::new(1);
    st.step(&mut p, &[0.5], &cfg, 0.1);
    let p1 = 0.999 - 0.1 * 0.5 / (0.5 + 1e-8);
    close("p1", p[0], p1, 1e-15);
    st.step(&mut p, &[-0.25], &cfg, 0.1);
    close("m2", st.m[0], 0.02, 1e-15);
    close("v2", st.v[0], 0.00031225, 1e-15);
    let p2 = p1 * 0.999 - 0.1 * (0.02 / 0.19) / ((0.00031225f64 / 0.001999).sqrt() + 1e-8);
    close("p2", p[0], p2, 1e-15);
}

/// A zero gradient leaves the moments at zero and only the decay acts: p · (1 − lr·wd)^k.
#[test]
fn weight_decay_is_decoupled() {
    let cfg = AdamWConfig { weight_decay: 0.1, ..AdamWConfig::default() };
    let (lr, k) = (0.05, 7);
    let p0 = [1.0, -3.0, 0.125];
    let mut p = p0.to_vec();
    let mut st = AdamWState::new(3);
    for _ in 0..k {
        st.step(&mut p, &[0.0; 3], &cfg, lr);
    }
    for i in 0..3 {
        close(&format!("p[{i}]"), p[i], p0[i] * (1.0f64 - lr * 0.1).powi(k), 1e-14);
    }
    assert!(st.m.iter().chain(&st.v).all(|&x| x == 0.0));
    // no decay: a zero gradient changes nothing
    let no_wd = AdamWConfig { weight_decay: 0.0, ..cfg };
    let before = p.clone();
    st.step(&mut p, &[0.0; 3], &no_wd, lr);
    assert_eq!(p, before);
}

/// Textbook AdamW (Loshchilov & Hutter, the form torch documents) on one scalar.
struct ScalarAdamW {
    p: f64,
    m: f64,
    v: f64,
    t: i32,
}

impl ScalarAdamW {
    fn step(&mut self, g: f64, c: &AdamWConfig, lr: f64) {
        self.t += 1;
        self.p -= lr * c.weight_decay * self.p;
        self.m = c.beta1 * self.m + (1.0 - c.beta1) * g;
        self.v = c.beta2 * self.v + (1.0 - c.beta2) * g * g;
        let m_hat = self.m / (1.0 - c.beta1.powi(self.t));
        let v_hat = self.v / (1.0 - c.beta2.powi(self.t));
        self.p -= lr * m_hat / (v_hat.sqrt() + c.eps);
    }
}

/// f64 and f32 states against the scalar reference over 20 steps of a warmup + cosine schedule, on the
/// same gradients (f32 values, so all three see identical inputs).
#[test]
fn many_steps_match_a_scalar_reimplementation() {
    let mut rng = rng("adamw_many_steps");
    let cfg = AdamWConfig { beta1: 0.8, beta2: 0.99, eps: 1e-6, weight_decay: 0.05 };
    let sched = LrSchedule { lr: 1e-2, warmup_steps: 3, decay: LrDecay::Cosine { min_lr: 1e-3, total_steps: 15 } };
    // 70_001 elements: more than two parallel chunks, and an odd tail
    let n = 70_001;
    let p0: Vec<f64> = (0..n).map(|_| rng.random_range(-2.0f32..2.0) as f64).collect();
    let mut scalars: Vec<ScalarAdamW> = p0.iter().map(|&p| ScalarAdamW { p, m: 0.0, v: 0.0, t: 0 }).collect();
    let mut p64 = p0.clone();
    let mut p32: Vec<f32> = p0.iter().map(|&x| x as f32).collect();
    let (mut st64, mut st32) = (AdamWState::<f64>::new(n), AdamWState::<f32>::new(n));
    for step in 0..20 {
        let lr = sched.lr_at(st64.step);
        // |g| ≥ 0.01, so eps does not dominate and the f32 update is well conditioned
        let g32: Vec<f32> = (0..n).map(|_| rng.random_range(0.01f32..1.0) * if rng.random::<bool>() { 1.0 } else { -1.0 }).collect();
        let g: Vec<f64> = g32.iter().map(|&x| x as f64).collect();
        st64.step(&mut p64, &g, &cfg, lr);
        st32.step(&mut p32, &g32, &cfg, lr);
        for (s, &gi) in scalars.iter_mut().zip(&g) {
            s.step(gi, &cfg, lr);
        }
        assert_eq!((st64.step, st32.step), (step + 1, step + 1));
    }
    let worst64 = p64.iter().zip(&scalars).map(|(a, s)| (a - s.p).abs()).fold(0.0, f64::max);
    let worst32 = p32.iter().zip(&scalars).map(|(&a, s)| (a as f64 - s.p).abs()).fold(0.0, f64::max);
    println!("max |p − p_ref|: f64 {worst64:.3e}, f32 {worst32:.3e}");
    // f64: the two forms differ only in rounding (p·(1 − lr·wd) vs p − lr·wd·p, sqrt(v)/sqrt(bc2) vs
    // sqrt(v/bc2)): a few ulps of |p| ≤ 2.2 per step, 20 steps
    assert!(worst64 < 1e-13, "f64 AdamW differs from the reference: {worst64:.3e}");
    // f32: ~6e-8 relative per rounding of p (|p| ≤ 2.2), a handful of roundings per step, 20 steps
    assert!(worst32 < 1e-5, "f32 AdamW drifts from the reference: {worst32:.3e}");
}

/// torch's AdamW step, operation by operation, in the parameters' float type: the order of
/// `_single_tensor_adamw` / `_foreach` on CUDA (where verl trains). Python scalars are doubles, cast
/// to the tensor's type at each op; `addcmul_(t1, t2, value)` is self + value·(t1·t2), `addcdiv_` is
/// self + value·(t1/t2), `lerp_(end, w)` is self + w·(end − self) for |w| < 0.5, else
/// end − (end − self)·(1 − w).
trait TorchFloat: Copy + std::ops::Add<Output = Self> + std::ops::Sub<Output = Self> + std::ops::Mul<Output = Self> + std::ops::Div<Output = Self> {
    fn of(x: f64) -> Self;
    fn sqrt(self) -> Self;
}
impl TorchFloat for f32 {
    fn of(x: f64) -> Self {
        x as f32
    }
    fn sqrt(self) -> Self {
        f32::sqrt(self)
    }
}
impl TorchFloat for f64 {
    fn of(x: f64) -> Self {
        x
    }
    fn sqrt(self) -> Self {
        f64::sqrt(self)
    }
}

fn torch_adamw_step<T: TorchFloat>(p: &mut T, m: &mut T, v: &mut T, g: T, t: i32, c: &AdamWConfig, lr: f64) {
    *p = *p * T::of(1.0 - lr * c.weight_decay); //                 param.mul_(1 - lr * wd)
    let w = T::of(1.0 - c.beta1); //                                exp_avg.lerp_(grad, 1 - beta1)
    *m = if (1.0 - c.beta1).abs() < 0.5 { *m + w * (g - *m) } else { g - (g - *m) * (T::of(1.0) - w) };
    *v = *v * T::of(c.beta2); //                                    exp_avg_sq.mul_(beta2)
    *v = *v + T::of(1.0 - c.beta2) * (g * g); //                    .addcmul_(grad, grad, value=1 - beta2)
    // Python floats: beta1 ** step, i.e. glibc's pow; drpo's β^t is its own correctly rounded powi
    // (glibc's pow is 1 ulp off it for ~0.1% of (β, t), tests/math.rs: the bias corrections then
    // differ in f64, and in f32 only if that ulp crosses an f32 rounding boundary)
    let step_size = lr / (1.0 - math::powi(c.beta1, t as u64));
    let bc2_sqrt = (1.0 - math::powi(c.beta2, t as u64)).sqrt();
    let denom = (*v).sqrt() / T::of(bc2_sqrt) + T::of(c.eps); //    (exp_avg_sq.sqrt() / bc2_sqrt).add_(eps)
    *p = *p + T::of(-step_size) * (*m / denom); //                  param.addcdiv_(exp_avg, denom, value=-step_size)
}

/// Bit for bit torch's rounding order, in f32 and f64, on random data over 25 steps, for β1 = 0.9
/// (lerp's first form) and β1 = 0.3 (its second form).
#[test]
fn adamw_rounds_like_torch() {
    let mut rng = rng("adamw_rounds_like_torch");
    for beta1 in [0.9, 0.3] {
        let cfg = AdamWConfig { beta1, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 };
        let sched = LrSchedule { lr: 3e-3, warmup_steps: 2, decay: LrDecay::Cosine { min_lr: 1e-4, total_steps: 25 } };
        let n = 40_001;
        let p0: Vec<f32> = (0..n).map(|_| rng.random_range(-2.0f32..2.0)).collect();
        let (mut p32, mut p64) = (p0.clone(), p0.iter().map(|&x| x as f64).collect::<Vec<f64>>());
        let (mut st32, mut st64) = (AdamWState::<f32>::new(n), AdamWState::<f64>::new(n));
        let mut r32: Vec<(f32, f32, f32)> = p0.iter().map(|&p| (p, 0.0, 0.0)).collect();
        let mut r64: Vec<(f64, f64, f64)> = p0.iter().map(|&p| (p as f64, 0.0, 0.0)).collect();
        for t in 1..=25 {
            let lr = sched.lr_at(st32.step);
            // gradients over many magnitudes, so products and quotients round in every way
            let g: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0) * 10f32.powi(rng.random_range(-6..3))).collect();
            let g64: Vec<f64> = g.iter().map(|&x| x as f64).collect();
            st32.step(&mut p32, &g, &cfg, lr);
            st64.step(&mut p64, &g64, &cfg, lr);
            for ((r, s), &gi) in r32.iter_mut().zip(r64.iter_mut()).zip(&g) {
                torch_adamw_step(&mut r.0, &mut r.1, &mut r.2, gi, t, &cfg, lr);
                torch_adamw_step(&mut s.0, &mut s.1, &mut s.2, gi as f64, t, &cfg, lr);
            }
        }
        let diff32 = (0..n).filter(|&i| p32[i].to_bits() != r32[i].0.to_bits() || st32.m[i].to_bits() != r32[i].1.to_bits() || st32.v[i].to_bits() != r32[i].2.to_bits()).count();
        let diff64 = (0..n).filter(|&i| p64[i].to_bits() != r64[i].0.to_bits() || st64.m[i].to_bits() != r64[i].1.to_bits() || st64.v[i].to_bits() != r64[i].2.to_bits()).count();
        println!("β1 = {beta1}: elements differing from torch's order: f32 {diff32}, f64 {diff64} of {n}");
        assert_eq!((diff32, diff64), (0, 0), "β1 = {beta1}");
    }
}

#[test]
fn clipping_follows_torch() {
    // ‖(3, 4)‖ = 5 > 1: scaled by 1 / (5 + 1e-6)
    let mut g = vec![3.0f64, 4.0];
    let norm = clip_grad_norm(&mut g, 1.0);
    assert_eq!(norm, 5.0);
    close("g0", g[0], 3.0 / (5.0 + 1e-6), 1e-16);
    close("g1", g[1], 4.0 / (5.0 + 1e-6), 1e-16);
    // below the threshold: untouched, bit for bit
    let mut g = vec![0.3f32, -0.4];
    let before = g.clone();
    let norm = clip_grad_norm(&mut g, 1.0);
    close("norm", norm, 0.5, 1e-7);
    assert_eq!(g, before);
    // exactly at the threshold torch still scales by max / (max + 1e-6)
    let mut g = vec![0.6f64, 0.8];
    clip_grad_norm(&mut g, 1.0);
    close("g at threshold", g[0], 0.6 / (1.0 + 1e-6), 1e-15);
    // a buffer over several chunks: ‖0.01·1‖ = 0.01·sqrt(n)
    let n = 100_003;
    let mut g = vec![0.01f32; n];
    let norm = clip_grad_norm(&mut g, 0.5);
    close("big norm", norm, (0.01f32 as f64) * (n as f64).sqrt(), 1e-12);
    let after = global_grad_norm(&g);
    close("clipped norm", after, 0.5 * norm / (norm + 1e-6), 1e-6);
    // non-finite: reported, gradient left alone
    let mut g = vec![1.0f64, f64::NAN];
    assert!(clip_grad_norm(&mut g, 1.0).is_nan());
    assert_eq!(g[0], 1.0);
}

#[test]
fn schedule_endpoints() {
    let constant = LrSchedule { lr: 1e-3, warmup_steps: 0, decay: LrDecay::Constant };
    assert_eq!(constant.lr_at(0), 1e-3);
    assert_eq!(constant.lr_at(1_000_000), 1e-3);

    let warm = LrSchedule { lr: 1e-3, warmup_steps: 10, decay: LrDecay::Constant };
    assert_eq!(warm.lr_at(0), 0.0);
    close("warmup 5/10", warm.lr_at(5), 5e-4, 1e-15);
    close("warmup 9/10", warm.lr_at(9), 9e-4, 1e-15);
    assert_eq!(warm.lr_at(10), 1e-3);
    assert_eq!(warm.lr_at(500), 1e-3);

    let cos = LrSchedule { lr: 1e-3, warmup_steps: 10, decay: LrDecay::Cosine { min_lr: 1e-4, total_steps: 110 } };
    assert_eq!(cos.lr_at(10), 1e-3);
    close("cosine midpoint", cos.lr_at(60), 0.5 * (1e-3 + 1e-4), 1e-15);
    // a quarter of the way: min + (lr − min)·(1 + cos(π/4))/2
    close("cosine quarter", cos.lr_at(35), 1e-4 + 9e-4 * (1.0 + 0.5f64.sqrt()) / 2.0, 1e-15);
    close("cosine end", cos.lr_at(110), 1e-4, 1e-15);
    close("after the end", cos.lr_at(10_000), 1e-4, 1e-15);
    // monotone decreasing after the warmup
    let lrs: Vec<f64> = (10..=110).map(|s| cos.lr_at(s)).collect();
    assert!(lrs.windows(2).all(|w| w[1] <= w[0]));
}

#[test]
fn state_serialises_through_json() {
    let mut st = AdamWState::<f32>::new(3);
    let mut p = vec![0.1f32, 0.2, 0.3];
    st.step(&mut p, &[1e-3, -0.7, 3.0], &AdamWConfig::default(), 1e-2);
    let text = serde_json::to_string(&st).unwrap();
    let back: AdamWState<f32> = serde_json::from_str(&text).unwrap();
    assert_eq!(back.step, 1);
    assert!(back.m.iter().zip(&st.m).all(|(a, b)| a.to_bits() == b.to_bits()));
    assert!(back.v.iter().zip(&st.v).all(|(a, b)| a.to_bits() == b.to_bits()));
}
