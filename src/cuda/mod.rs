//! The CUDA backend (CUDA C in `kernels/`, compiled by NVRTC).
