//! GPU runtime and kernel launchers (to be written).
