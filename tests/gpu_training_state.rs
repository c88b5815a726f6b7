//! The GPU model's training state through the policy seam, against `drpo::optim` on the host, bit for
//! bit: N steps of clip + AdamW on the same gradients give the CPU's parameters (the f32 master
//! weights), moments, step and gradient norms, and the bf16 compute copy is bf16(master) exactly;
//! the state leaves the device in the CPU's checkpoint format and comes back (a run saved on one
//! device resumes on another and continues bit-identically).

mod gpu_common;
use drpo::gpu::{bf16, Gpu, GpuFloat};
use drpo::model::gpu::GpuModel;
use drpo::model::Model;
use drpo::optim::{clip_grad_norm, AdamWConfig, AdamWState, LrDecay, LrSchedule};
use drpo::policy::{HostState, Policy};
use gpu_common::*;
use rand::rngs::StdRng;
use serde_json::json;
use std::sync::Arc;

/// The device's state equals the host reference's: master weights, moments, step; the compute copy
/// is the master weights rounded to T.
fn assert_state<T: GpuFloat>(what: &str, m: &GpuModel<T>, opt: &drpo::model::gpu_state::GpuAdamW, params: &[f32], state: &AdamWState<f32>) -> drpo::Result<()> {
    let got = m.export_state(opt)?;
    assert_bits(&format!("{what}: master weights"), &got.params, params);
    assert_bits(&format!("{what}: m"), &got.optim.m, &state.m);
    assert_bits(&format!("{what}: v"), &got.optim.v, &state.v);
    assert_eq!(got.optim.step, state.step, "{what}: step");
    let copy: Vec<u32> = m.gpu.dtoh(&m.params)?.iter().map(|x| x.to_f32().to_bits()).collect();
    let want: Vec<u32> = params.iter().map(|&p| T::from_f32(p).to_f32().to_bits()).collect();
    assert!(copy == want, "{what}: the {} compute copy is not the master weights rounded", T::NAME);
    Ok(())
}

/// `steps` optimizer steps on `model` (f32 on the host) and on a device model made from it, fresh
/// gradients each step (norms from well under to well over `max_norm`, so some steps clip and
/// some do not), compared after every step.
fn update_matches_optim_rs<T: GpuFloat>(gpu: &Arc<Gpu>, model: &Model<f32>, rng: &mut StdRng, cfg: &AdamWConfig, steps: u64) -> drpo::Result<()> {
    let what = format!("{} on {}, beta1 {}", T::NAME, if gpu.is_simulated() { "sim" } else { "gpu" }, cfg.beta1);
    let n = model.layout.total;
    let sched = LrSchedule { lr: 3e-3, warmup_steps: 2, decay: LrDecay::Cosine { min_lr: 1e-4, total_steps: steps } };
    let (mut params, mut state) = (model.params.clone(), AdamWState::<f32>::new(n));
    let mut dev = GpuModel::<T>::for_training(gpu.clone(), model)?;
    let (mut opt, mut grads) = (dev.new_optimizer()?, dev.new_grads()?);
    assert_state(&format!("{what}, start"), &dev, &opt, &params, &state)?;
    let max_norm = (n as f64).sqrt() / 3.0;
    let mut clipped = 0;
    for step in 0..steps {
        let g = mixed_gradients(rng, n, [0.03f32, 0.3, 3.0, 30.0][step as usize % 4]);
        let lr = sched.lr_at(state.step);
        let mut host_g = g.clone();
        let want_norm = clip_grad_norm(&mut host_g, max_norm);
        clipped += (max_norm / (want_norm + 1e-6) < 1.0) as usize;
        state.step(&mut params, &host_g, cfg, lr);

        // the backward passes accumulate: a buffer holding garbage is cleared first
        dev.gpu.memcpy_htod(&vec![f32::NAN; n], &mut grads.g.as_view_mut())?;
        dev.zero_grads(&mut grads)?;
        assert!(dev.grads_to_host(&grads)?.iter().all(|&x| x.to_bits() == 0), "{what}: zero_grads");
        dev.gpu.memcpy_htod(&g, &mut grads.g.as_view_mut())?;
        let got_norm = dev.clip_grad_norm(&mut grads, max_norm)?;
        assert_eq!(got_norm.to_bits(), want_norm.to_bits(), "{what} step {step}: norm {got_norm:e} vs {want_norm:e}");
        let clipped_g: Vec<f32> = dev.grads_to_host(&grads)?.iter().map(|&x| x as f32).collect();
        assert_bits(&format!("{what} step {step}: clipped gradient"), &clipped_g, &host_g);
        dev.apply_update(&mut opt, &grads, cfg, lr)?;
        assert_state(&format!("{what} step {step}"), &dev, &opt, &params, &state)?;
    }
    println!("{what}: {steps} steps bit-identical to optim.rs ({clipped} clipped)");
    assert!(clipped > 0 && clipped < steps as usize, "{what}: some steps must clip and some not");
    Ok(())
}

#[test]
fn device_update_matches_optim_rs_bit_for_bit() -> drpo::Result<()> {
    let mut rng = rng("device_update");
    // 3 chunks of optim::CHUNK and a partial one: the norm's chunked order matters
    let model = Model::<f32>::load(&fixture("qwen2-tiny"))?;
    for gpu in devices("device_update") {
        let gpu = Arc::new(gpu);
        // torch's lerp_ has two forms: β1 = 0.9 uses m + (1 − β1)(g − m), β1 = 0.3 uses g − (g − m)·β1
        for cfg in [AdamWConfig::default(), AdamWConfig { beta1: 0.3, beta2: 0.95, eps: 1e-6, weight_decay: 0.1 }] {
            update_matches_optim_rs::<bf16>(&gpu, &model, &mut rng, &cfg, 8)?;
            update_matches_optim_rs::<f32>(&gpu, &model, &mut rng, &cfg, 8)?;
        }
    }
    Ok(())
}

/// A few device steps, saved as a checkpoint from the device state, loaded on the CPU: the same bits;
/// imported into another device model: the same bits, the compute copy the rounding; one more step
/// on each side from there: still the same bits.
#[test]
fn device_state_round_trips_through_a_checkpoint() -> drpo::Result<()> {
    let mut rng = rng("device_checkpoint");
    let start = Model::<f32>::load(&fixture("qwen2-tiny-mqa"))?;
    let n = start.layout.total;
    let cfg = AdamWConfig::default();
    for gpu in devices("device_checkpoint") {
        let gpu = Arc::new(gpu);
        let mut dev = GpuModel::<bf16>::for_training(gpu.clone(), &start)?;
        let (mut opt, mut grads) = (dev.new_optimizer()?, dev.new_grads()?);
        for _ in 0..3 {
            dev.gpu.memcpy_htod(&mixed_gradients(&mut rng, n, 0.1), &mut grads.g.as_view_mut())?;
            dev.clip_grad_norm(&mut grads, 1.0)?;
            dev.apply_update(&mut opt, &grads, &cfg, 1e-2)?;
        }
        let saved = dev.export_state(&opt)?;
        assert!(saved.params != start.params && saved.optim.step == 3, "the state moved");

        let dir = scratch_dir("device-checkpoint").join("checkpoint");
        let model = Model::from_params(start.cfg.clone(), saved.params.clone());
        drpo::checkpoint::save_checkpoint(&dir, &model, &saved.optim, &json!({"at": 3}), None, drpo::weights::SaveDtype::F32)?;
        let loaded = drpo::checkpoint::load_checkpoint::<f32>(&dir)?;
        assert_bits("checkpoint weights", &loaded.model.params, &saved.params);
        assert_bits("checkpoint m", &loaded.optim.m, &saved.optim.m);
        assert_bits("checkpoint v", &loaded.optim.v, &saved.optim.v);
        assert_eq!(loaded.optim.step, 3);

        // into a device model made from other weights: the checkpoint's state replaces them
        let mut other = GpuModel::<bf16>::for_training(gpu.clone(), &Model::<f32>::random(start.cfg.clone(), 5, 0.02))?;
        let mut other_opt = other.new_optimizer()?;
        other.import_state(&mut other_opt, &HostState { params: loaded.model.params.clone(), optim: loaded.optim.clone() })?;
        assert_state("imported", &other, &other_opt, &saved.params, &saved.optim)?;

        // the next step: on the CPU from the checkpoint, on both device models
        let g = mixed_gradients(&mut rng, n, 0.1);
        let (mut host, mut host_opt) = (loaded.model.clone(), loaded.optim.clone());
        let mut host_g = g.clone();
        clip_grad_norm(&mut host_g, 1.0);
        host_opt.step(&mut host.params, &host_g, &cfg, 1e-2);
        for (what, m, o) in [("saved", &mut dev, &mut opt), ("imported", &mut other, &mut other_opt)] {
            let mut gr = m.new_grads()?;
            m.gpu.memcpy_htod(&g, &mut gr.g.as_view_mut())?;
            m.clip_grad_norm(&mut gr, 1.0)?;
            m.apply_update(o, &gr, &cfg, 1e-2)?;
            assert_state(&format!("{what} device model, step 4"), m, o, &host.params, &host_opt)?;
        }

        // a state of another size is refused by name
        let mut short = saved.clone();
        short.optim.v.pop();
        let e = other.import_state(&mut other_opt, &short).expect_err("a short v").to_string();
        assert!(e.contains("optimizer v"), "{e}");
    }
    Ok(())
}
