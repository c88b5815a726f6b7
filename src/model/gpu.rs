//! GPU model (to be written).
