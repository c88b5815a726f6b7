//! The CPU model against the PyTorch float64 oracle in tests/fixtures (logits, hidden states, log-probs).

mod common;
use common::*;
use drpo::model::{KvCache, Model};

/// The fixture's input rows, each cut to its real length.
fn fixture_inputs(dir: &std::path::Path) -> Vec<Vec<u32>> {
    let (ids, shape) = read_tensor(&dir.join("reference.safetensors"), "input_ids");
    let (lens, _) = read_tensor(&dir.join("reference.safetensors"), "lengths");
    (0..shape[0]).map(|b| ids[b * shape[1]..b * shape[1] + lens[b] as usize].iter().map(|&x| x as u32).collect()).collect()
}

/// Logits of the valid positions of the reference, flattened like our packed rows.
fn reference_logits(dir: &std::path::Path, seqs: &[Vec<u32>]) -> Vec<f64> {
    let (logits, shape) = read_tensor(&dir.join("reference.safetensors"), "logits");
    let (t, v) = (shape[1], shape[2]);
    let mut out = Vec::new();
    for (b, s) in seqs.iter().enumerate() {
        out.extend_from_slice(&logits[b * t * v..(b * t + s.len()) * v]);
    }
    out
}

#[test]
fn logits_match_reference_f64_and_f32() {
    for name in FIXTURES {
        let dir = fixture(name);
        let seqs = fixture_inputs(&dir);
        let refs: Vec<&[u32]> = seqs.iter().map(|s| s.as_slice()).collect();
        let want = reference_logits(&dir, &seqs);
        let m64 = Model::<f64>::load(&dir).unwrap();
        assert_rel(&format!("{name} logits f64"), &m64.logits(&refs).unwrap(), &want, 1e-10);
        let m32 = Model::<f32>::load(&dir).unwrap();
        let got: Vec<f64> = m32.logits(&refs).unwrap().iter().map(|&x| x as f64).collect();
        assert_rel(&format!("{name} logits f32"), &got, &want, 1e-4);
    }
}

#[test]
fn hidden_states_match_reference() {
    for name in FIXTURES {
        let dir = fixture(name);
        let seqs = fixture_inputs(&dir);
        let refs: Vec<&[u32]> = seqs.iter().map(|s| s.as_slice()).collect();
        let m = Model::<f64>::load(&dir).unwrap();
        let mut acts = Default::default();
        let mut cache = KvCache::new(&m.cfg, refs.len());
        m.forward(&mut cache, &refs, Some(&mut acts)).unwrap();
        let c = m.cfg.hidden_size;
        let pick = |tensor: &str| {
            let (h, shape) = read_tensor(&dir.join("reference.safetensors"), tensor);
            let mut out = Vec::new();
            for (b, s) in seqs.iter().enumerate() {
                out.extend_from_slice(&h[b * shape[1] * c..(b * shape[1] + s.len()) * c]);
            }
            out
        };
        // the residual stream after layer l is the input of layer l + 1, after the last layer x_final
        let last = m.cfg.num_hidden_layers - 1;
        for l in 0..last {
            assert_rel(&format!("{name} hidden.layer{l}"), &acts.layers[l + 1].x_in, &pick(&format!("hidden.layer{l}")), 1e-10);
        }
        assert_rel(&format!("{name} hidden.layer{last}"), &acts.x_final, &pick(&format!("hidden.layer{last}")), 1e-10);
        assert_rel(&format!("{name} hidden.final_norm"), &acts.hf, &pick("hidden.final_norm"), 1e-10);
        assert_rel(&format!("{name} hidden.embed"), &acts.layers[0].x_in, &pick("hidden.embed"), 1e-14);
    }
}

#[test]
fn logprobs_and_parameter_gradients_match_reference() {
    for name in FIXTURES {
        let dir = fixture(name);
        let refpath = dir.join("reference.safetensors");
        let seqs = fixture_inputs(&dir);
        let refs: Vec<&[u32]> = seqs.iter().map(|s| s.as_slice()).collect();
        let m = Model::<f64>::load(&dir).unwrap();
        let scored = m.score(&refs, 1.0, true).unwrap();
        let (lp, shape) = read_tensor(&refpath, "logprobs");
        let (w, _) = read_tensor(&refpath, "loss_weights");
        let mut got = Vec::new();
        let mut want = Vec::new();
        let mut dlogp = Vec::new();
        for (b, s) in seqs.iter().enumerate() {
            let k = s.len() - 1;
            got.extend_from_slice(&scored.logp[b]);
            want.extend_from_slice(&lp[b * shape[1]..b * shape[1] + k]);
            dlogp.push(w[b * shape[1]..b * shape[1] + k].to_vec());
        }
        assert_rel(&format!("{name} logprobs"), &got, &want, 1e-10);
        let loss: f64 = got.iter().zip(dlogp.concat()).map(|(a, b)| a * b).sum();
        let (want_loss, _) = read_tensor(&refpath, "weighted_logprob_sum");
        assert_rel(&format!("{name} weighted_logprob_sum"), &[loss], &want_loss, 1e-10);
        let grads = m.score_backward(&scored, &dlogp);
        for e in &m.layout.entries {
            let (want, shape) = read_tensor(&refpath, &format!("grad.{}", e.name));
            assert_eq!(shape, e.shape);
            assert_rel(&format!("{name} grad.{}", e.name), &grads[e.range()], &want, 1e-8);
        }
    }
}
