//! The end-to-end toy study (`drpo demo`): SFT a tiny model into an accurate but verbose base, RL it
//! with DRPO (a few λ), DisCO (λ = ∞) and GRPO with a length penalty (a few α), evaluate, and write a
//! report with tables and plots.

use crate::rl::objectives::Hyper;
use crate::rl::trainer::{ObjectiveKind, TrainConfig};

/// The RL settings of the toy study: SPEC §5.6's structure (G = 8, chunks of 4 questions, λ, τ, β, δ,
/// KL budget) at the toy's scale (a 100k-parameter model learns at a larger rate; C = the toy's budget).
pub fn toy_train_config(objective: ObjectiveKind, max_new_tokens: usize) -> TrainConfig {
    TrainConfig {
        objective,
        hyper: Hyper::default(),
        steps: 60,
        questions_per_step: 16,
        group_size: 8,
        mini_batch_questions: 16,
        chunk_questions: 4,
        inner_epochs: 1,
        temperature: 1.0,
        top_p: 1.0,
        max_new_tokens,
        lr: 3e-4,
        warmup_steps: 0,
        weight_decay: 0.0,
        grad_clip: 1.0,
        seed: 0,
        save_every: 0,
    }
}
