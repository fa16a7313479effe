//! The wgpu backend (WGSL shaders in `shaders/`).
