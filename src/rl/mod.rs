//! Reinforcement learning: objectives, rewards (math grader), rollouts and the trainer.

pub mod chunk;
pub mod env;
pub mod grader;
pub mod objectives;
pub mod run_folder;
pub mod trainer;
