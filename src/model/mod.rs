//! Whole Mamba language models on any backend.
