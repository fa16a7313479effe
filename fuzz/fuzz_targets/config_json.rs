//! `MambaConfig::from_json_bytes` on arbitrary bytes: every result must be Ok or a
//! typed error; an Ok config must have every derived size representable.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mamba_gpu::model::MambaConfig;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = MambaConfig::from_json_bytes(data, "config.json") {
        // What validation promises the loader: products fit, ids are in range.
        let e = c.intermediate_size;
        assert!(c.vocab_size.checked_mul(c.hidden_size).is_some());
        assert!(e.checked_mul(c.state_size).is_some());
        assert!((c.dt_rank + 2 * c.state_size).checked_mul(e).is_some());
        for id in [c.eos_token_id, c.bos_token_id, c.pad_token_id].into_iter().flatten() {
            assert!((id as usize) < c.vocab_size);
        }
    }
});
