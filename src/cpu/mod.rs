//! CPU reference of every op, generic over f32 and f64. One file per kernel family, mirroring `cuda/`.
