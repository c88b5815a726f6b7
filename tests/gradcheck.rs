//! The model's f64 gradient against central differences (src/gradcheck.rs), on the fixture models and
//! random configs; and a wrong gradient is caught.

mod common;
use common::*;
use drpo::gradcheck::{check_gradient, check_tensor, gradcheck, random_config, random_params, GradcheckLoss, GradcheckRow, TOLERANCE};
use drpo::model::Model;
use rand::Rng;

fn report(what: &str, rows: &[GradcheckRow]) {
    for r in rows {
        println!(
            "{what} {:<45} n={:<6} checked={:<3} abs={:.2e} rel={:.2e} (worst #{}: {:.6e} vs {:.6e}) {}",
            r.tensor, r.numel, r.checked, r.max_abs_err, r.max_rel_err, r.worst_index, r.analytic, r.numeric,
            if r.pass { "ok" } else { "FAIL" }
        );
    }
}

#[test]
fn fixtures_pass() {
    let mut rng = rng("gradcheck_fixtures");
    for name in FIXTURES {
        let seed = rng.random();
        let rows = gradcheck(Some(&fixture(name)), None, seed, 6).unwrap();
        report(name, &rows);
        let m = Model::<f64>::load(&fixture(name)).unwrap();
        assert_eq!(rows.len(), m.layout.entries.len());
        assert!(rows.iter().all(|r| r.checked == 6.min(r.numel)));
        for r in &rows {
            assert!(r.pass, "{name}: {} fails: rel {:.2e} > {TOLERANCE:.0e}", r.tensor, r.max_rel_err);
        }
    }
}

#[test]
fn random_configs_pass() {
    let mut rng = rng("gradcheck_random_configs");
    for _ in 0..3 {
        let seed: u64 = rng.random();
        let cfg = random_config(seed);
        println!("seed {seed}: {cfg:?}");
        let rows = gradcheck(None, None, seed, 8).unwrap();
        report(&format!("random {seed}"), &rows);
        for r in &rows {
            assert!(r.pass, "seed {seed}: {} fails: rel {:.2e}", r.tensor, r.max_rel_err);
        }
    }
}

fn random_model(seed: u64) -> Model<f64> {
    let cfg = random_config(seed);
    let params = random_params(&cfg, seed);
    Model::from_params(cfg, params)
}

/// An error of 1e-4 · max|g| added to one tensor's analytic gradient fails that tensor and only it;
/// so does a relative error of 1e-4 on the final norm's gradient.
#[test]
fn a_wrong_gradient_is_caught() {
    let mut rng = rng("gradcheck_wrong_gradient");
    for name in FIXTURES {
        let model = Model::<f64>::load(&fixture(name)).unwrap();
        let loss = GradcheckLoss::random(&model.cfg, &mut rng);
        let good = loss.gradient(&model).unwrap();
        let gmax = good.iter().fold(0.0f64, |m, g| m.max(g.abs()));
        let target = "model.layers.1.self_attn.v_proj.weight";
        let mut bad = good.clone();
        bad[model.layout.get(target).unwrap().range()].iter_mut().for_each(|g| *g += 1e-4 * gmax);
        let rows = check_gradient(&model, &loss, &bad, 4, rng.random()).unwrap();
        report(&format!("{name} additive"), &rows);
        for r in &rows {
            assert_eq!(r.pass, r.tensor != target, "{name}: {}: pass = {}, rel {:.2e}", r.tensor, r.pass, r.max_rel_err);
        }
        let target = "model.norm.weight";
        let mut bad = good.clone();
        bad[model.layout.final_norm.clone()].iter_mut().for_each(|g| *g *= 1.0 + 1e-4);
        let all: Vec<usize> = (0..model.cfg.hidden_size).collect();
        let row = check_tensor(&model, &loss, &bad, target, &all).unwrap();
        assert!(check_tensor(&model, &loss, &good, target, &all).unwrap().pass);
        println!("{name} relative 1e-4 on {target}: rel {:.2e}", row.max_rel_err);
        assert!(!row.pass && row.max_rel_err > 5e-5, "{name}: a 1e-4 relative error on {target} went unnoticed");
    }
}

/// The gradient of the loss at temperature 0.7 checked against differences at 0.6: every tensor with
/// a gradient fails (a backward that ignored the temperature would fail the same way).
#[test]
fn a_gradient_at_the_wrong_temperature_is_caught() {
    let mut rng = rng("gradcheck_wrong_temperature");
    let model = random_model(rng.random());
    let loss = GradcheckLoss::random(&model.cfg, &mut rng);
    assert_eq!(loss.temp, 0.6);
    let wrong = GradcheckLoss { temp: 0.7, ..loss.clone() }.gradient(&model).unwrap();
    // every coordinate checked: a tensor's sampled coordinates may all have a zero gradient (the
    // embedding rows of absent tokens)
    let rows = check_gradient(&model, &loss, &wrong, usize::MAX, rng.random()).unwrap();
    report("temp 0.7 vs 0.6", &rows);
    // A tensor whose true gradient is zero up to round-off cannot tell the temperatures apart (q/k
    // projections when every scored position attends to a single key: that softmax is 1 whatever q
    // and k are). Every other tensor must fail.
    let right = loss.gradient(&model).unwrap();
    let scale = right.iter().fold(0.0f64, |m, g| m.max(g.abs()));
    let mut discriminating = 0;
    for (e, r) in model.layout.entries.iter().zip(&rows) {
        let largest = right[e.range()].iter().fold(0.0f64, |m, g| m.max(g.abs()));
        if largest > 1e-6 * scale {
            discriminating += 1;
            assert!(!r.pass, "{}: a gradient at temperature 0.7 passed the check at 0.6 (max |g| = {largest:.2e})", r.tensor);
        }
    }
    assert!(discriminating > 0, "no tensor has a gradient");
}

#[test]
fn options_and_determinism() {
    let dir = fixture("qwen2-tiny");
    assert!(gradcheck(Some(&dir), Some(random_config(1)), 1, 2).is_err(), "a folder and a config at once");
    assert!(gradcheck(None, None, 1, 0).is_err(), "zero samples");
    let mut bad = random_config(3);
    bad.num_attention_heads = 2;
    bad.num_key_value_heads = 3;
    assert!(gradcheck(None, Some(bad), 1, 2).is_err(), "an invalid config is an error, not a panic");
    // the same seed gives the same rows; a config override is used as given
    let cfg = random_config(99);
    let a = gradcheck(None, Some(cfg.clone()), 5, 3).unwrap();
    let b = gradcheck(None, Some(cfg.clone()), 5, 3).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.len(), drpo::layout::ParamLayout::new(&cfg).entries.len());
    assert!(a.iter().all(|r| r.pass && r.tolerance == TOLERANCE));
}

/// random_config covers MHA, GQA and MQA, tied and untied, head_dim ≠ hidden / heads, and every
/// config survives config.json (so `drpo gradcheck` on it is a valid Qwen2 model).
#[test]
fn random_configs_cover_the_shapes() {
    let cfgs: Vec<_> = (0..300).map(random_config).collect();
    let any = |f: &dyn Fn(&drpo::config::ModelConfig) -> bool| cfgs.iter().any(f);
    assert!(any(&|c| c.num_attention_heads == c.num_key_value_heads && c.num_key_value_heads > 1));
    assert!(any(&|c| c.num_key_value_heads == 1 && c.num_attention_heads > 1));
    assert!(any(&|c| c.num_key_value_heads > 1 && c.num_attention_heads > c.num_key_value_heads));
    assert!(any(&|c| c.tie_word_embeddings) && any(&|c| !c.tie_word_embeddings));
    assert!(any(&|c| c.q_dim() != c.hidden_size));
    assert!(any(&|c| c.num_hidden_layers == 1) && any(&|c| c.num_hidden_layers == 3));
    for c in &cfgs {
        let mut back = drpo::config::ModelConfig::from_json(&c.to_json(), std::path::Path::new("random")).unwrap();
        back.torch_dtype = None; // to_json writes a default dtype
        assert_eq!(&back, c);
    }
    assert_ne!(random_params(&cfgs[0], 0), random_params(&cfgs[0], 1));
}


/// The device check's comparison (`drpo gradcheck --device`): round-off passes; a relative error of
/// 1e-3 on one tensor fails that tensor and only it; a tensor whose reference is zero (a gradient that
/// cancels) passes with round-off and fails with values of the other tensors' scale; NaN fails.
#[test]
fn the_device_comparison_catches_wrong_gradients() {
    use drpo::gradcheck::{compare_gradients, DEVICE_TOLERANCE};
    let mut rng = rng("gradcheck_device_comparison");
    let cfg = random_config(rng.random());
    let layout = drpo::layout::ParamLayout::new(&cfg);
    let mut want: Vec<f64> = (0..layout.total).map(|_| rng.random_range(-1.0..1.0)).collect();
    // the embedding row of id 0 has no term; the first q projection's gradient cancels to zero
    want[layout.embed.start..layout.embed.start + cfg.hidden_size].fill(0.0);
    let q = layout.layers[0].q_w.clone();
    want[q.clone()].fill(0.0);
    let mut near: Vec<f64> = want.iter().map(|w| w * (1.0 + 1e-6)).collect();
    near[q.clone()].iter_mut().for_each(|g| *g = rng.random_range(-1e-8..1e-8));
    assert!(compare_gradients(&layout, &near, &want, DEVICE_TOLERANCE).iter().all(|r| r.pass && r.checked == r.numel));
    let target = &layout.entries[layout.entries.len() / 2];
    let mut bad = near.clone();
    bad[target.range()].iter_mut().for_each(|g| *g *= 1.0 + 1e-3);
    for r in compare_gradients(&layout, &bad, &want, DEVICE_TOLERANCE) {
        assert_eq!(r.pass, r.tensor != target.name, "{}: rel {:.2e}", r.tensor, r.max_rel_err);
    }
    for (range, name) in [(q, "model.layers.0.self_attn.q_proj.weight"), (layout.embed.start..layout.embed.start + 1, "model.embed_tokens.weight")] {
        let mut wrong = near.clone();
        wrong[range].fill(0.1);
        for r in compare_gradients(&layout, &wrong, &want, DEVICE_TOLERANCE) {
            assert_eq!(r.pass, r.tensor != name, "{}: rel {:.2e}", r.tensor, r.max_rel_err);
        }
    }
    // a tensor whose gradient is 1e-4 of the others' (not cancelled, just small) is judged on its own
    // scale: half wrong fails there, where the whole gradient's rms as its floor would pass it
    let small = layout.entries[1].range();
    let (mut want_small, mut near_small) = (want.clone(), near.clone());
    want_small[small.clone()].iter_mut().for_each(|g| *g *= 1e-4);
    near_small[small.clone()].iter_mut().for_each(|g| *g *= 1e-4);
    assert!(compare_gradients(&layout, &near_small, &want_small, DEVICE_TOLERANCE).iter().all(|r| r.pass));
    near_small[small].iter_mut().for_each(|g| *g *= 1.5);
    for r in compare_gradients(&layout, &near_small, &want_small, DEVICE_TOLERANCE) {
        assert_eq!(r.pass, r.tensor != layout.entries[1].name, "{}: rel {:.2e}", r.tensor, r.max_rel_err);
    }
    let mut nan = near;
    nan[layout.total - 1] = f64::NAN;
    assert!(!compare_gradients(&layout, &nan, &want, DEVICE_TOLERANCE).last().unwrap().pass);
}
