//! The Qwen2 model as a listing of ops.
