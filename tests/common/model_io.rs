//! Loading helpers of the model tests.

use mamba_gpu::model::LoadOptions;

/// Default load options without the progress bar.
pub fn quiet() -> LoadOptions {
    LoadOptions {
        progress: false,
        ..LoadOptions::default()
    }
}
