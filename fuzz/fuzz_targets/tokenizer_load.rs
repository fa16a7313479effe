//! `TextTokenizer::from_bytes` on arbitrary bytes, then (if it loads) a round trip
//! through encode, decode and the streaming decoder: all Ok or typed errors.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mamba_gpu::model::TextTokenizer;

fuzz_target!(|data: &[u8]| {
    if let Ok(t) = TextTokenizer::from_bytes(data, "tokenizer.json") {
        if let Ok(ids) = t.encode("It is a truth universally acknowledged, é 日本") {
            let _ = t.decode(&ids);
            let mut s = t.stream();
            for &id in ids.iter().take(64) {
                let _ = s.push(id);
            }
            let _ = s.finish();
        }
        let _ = t.decode(&[0, 1, 2, u32::MAX]);
    }
});
