//! Reinforcement learning: objectives, rewards (math grader), rollouts and the trainer.

pub mod grader;
pub mod objectives;
