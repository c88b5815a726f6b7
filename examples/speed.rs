use drpo::config::ModelConfig;
use drpo::model::Model;
use std::time::Instant;
fn main() {
    let mut cfg = ModelConfig::from_dir(std::path::Path::new("tests/fixtures/qwen2-tiny")).unwrap();
    cfg.vocab_size = 48;
    let layout = drpo::layout::ParamLayout::new(&cfg);
    let params: Vec<f32> = (0..layout.total).map(|i| ((i * 7919 % 1000) as f32 / 1000.0 - 0.5) * 0.1).collect();
    let m = Model::from_params(cfg.clone(), params);
    let seqs: Vec<Vec<u32>> = (0..128).map(|s| (0..70).map(|t| ((s * 31 + t * 7) % 48) as u32).collect()).collect();
    let refs: Vec<&[u32]> = seqs.iter().map(|s| s.as_slice()).collect();
    let t = Instant::now();
    let sc = m.score(&refs, 1.0, true).unwrap();
    let t1 = t.elapsed();
    let d: Vec<Vec<f32>> = sc.logp.iter().map(|r| vec![0.01; r.len()]).collect();
    let t = Instant::now();
    let g = m.score_backward(&sc, &d);
    println!("fwd {:?} bwd {:?} {}", t1, t.elapsed(), g.len());
    let t = Instant::now();
    let prompts: Vec<Vec<u32>> = (0..128).map(|s| (0..15).map(|t| ((s * 31 + t * 7) % 48) as u32).collect()).collect();
    let opts = drpo::generate::GenerateOptions { max_new_tokens: 55, sampling: drpo::sampling::SamplingParams::default(), seed: 1, eos_ids: vec![], stream_offset: 0 };
    drpo::generate::generate(&m, &prompts, &opts).unwrap();
    println!("gen {:?}", t.elapsed());
}
