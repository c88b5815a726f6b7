//! Reinforcement learning: objectives, rewards (math grader), rollouts and the trainer.
