//! Elementwise ops. Mirrors `shaders/elementwise.wgsl`.

use super::common::{silu, softplus};
use crate::ops::Elementwise;

pub(crate) fn elementwise(op: Elementwise, a: &[f32], b: Option<&[f32]>, out: &mut [f32]) {
    let f = |x: f32, y: f32| -> f32 {
        match op {
            Elementwise::Silu => silu(x as f64) as f32,
            Elementwise::Softplus => softplus(x as f64) as f32,
            Elementwise::Add => x + y,
            Elementwise::Mul => x * y,
            Elementwise::MulSilu => x * silu(y as f64) as f32,
        }
    };
    match b {
        Some(b) => {
            for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
                *o = f(x, y);
            }
        }
        None => {
            for (o, &x) in out.iter_mut().zip(a) {
                *o = f(x, 0.0);
            }
        }
    }
}
