//! [`BackendRef`]: a borrowed backend that is itself a [`Backend`], so several models
//! (or a model and its tests) can share one device without the backend being `Clone`.

use crate::backend::Backend;
use crate::error::Result;
use crate::ops::{Elementwise, ScanInputs, StateIo, StepInputs};
use crate::params::*;
use crate::tensor::{DType, HostSlice, HostVec};

/// A shared reference to a backend, usable wherever a backend is taken by value:
/// `MambaModel::load(BackendRef(&wgpu), ...)`. Buffers are those of `B`.
#[derive(Debug)]
pub struct BackendRef<'a, B: Backend>(pub &'a B);

impl<B: Backend> Clone for BackendRef<'_, B> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<B: Backend> Copy for BackendRef<'_, B> {}

impl<B: Backend> Backend for BackendRef<'_, B> {
    type Buffer = B::Buffer;

    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn supports_weight_dtype(&self, dtype: DType) -> bool {
        self.0.supports_weight_dtype(dtype)
    }

    fn zeros(&self, dtype: DType, shape: &[usize]) -> Result<B::Buffer> {
        self.0.zeros(dtype, shape)
    }

    fn upload(&self, data: HostSlice<'_>, shape: &[usize]) -> Result<B::Buffer> {
        self.0.upload(data, shape)
    }

    fn download(&self, buf: &B::Buffer) -> Result<HostVec> {
        self.0.download(buf)
    }

    fn flush(&self) -> Result<()> {
        self.0.flush()
    }

    fn embedding(
        &self,
        p: &EmbeddingParams,
        ids: &B::Buffer,
        table: &B::Buffer,
        out: &mut B::Buffer,
    ) -> Result<()> {
        self.0.embedding(p, ids, table, out)
    }

    fn matmul(
        &self,
        p: &MatmulParams,
        x: &B::Buffer,
        w: &B::Buffer,
        bias: Option<&B::Buffer>,
        out: &mut B::Buffer,
    ) -> Result<()> {
        self.0.matmul(p, x, w, bias, out)
    }

    fn rms_norm(
        &self,
        p: &NormParams,
        x: &B::Buffer,
        weight: &B::Buffer,
        residual: Option<&mut B::Buffer>,
        out: &mut B::Buffer,
    ) -> Result<()> {
        self.0.rms_norm(p, x, weight, residual, out)
    }

    fn causal_conv1d(
        &self,
        p: &ConvParams,
        x: &B::Buffer,
        weight: &B::Buffer,
        bias: Option<&B::Buffer>,
        state: Option<&mut B::Buffer>,
        out: &mut B::Buffer,
    ) -> Result<()> {
        self.0.causal_conv1d(p, x, weight, bias, state, out)
    }

    fn causal_conv1d_update(
        &self,
        p: &ConvParams,
        x: &B::Buffer,
        weight: &B::Buffer,
        bias: Option<&B::Buffer>,
        state: &mut B::Buffer,
        out: &mut B::Buffer,
    ) -> Result<()> {
        self.0.causal_conv1d_update(p, x, weight, bias, state, out)
    }

    fn selective_scan(
        &self,
        p: &ScanParams,
        inputs: &ScanInputs<'_, B::Buffer>,
        state: StateIo<'_, B::Buffer>,
        out: &mut B::Buffer,
    ) -> Result<()> {
        self.0.selective_scan(p, inputs, state, out)
    }

    fn selective_state_update(
        &self,
        p: &StepParams,
        inputs: &StepInputs<'_, B::Buffer>,
        state: &mut B::Buffer,
        out: &mut B::Buffer,
    ) -> Result<()> {
        self.0.selective_state_update(p, inputs, state, out)
    }

    fn elementwise(
        &self,
        p: &ElementwiseParams,
        op: Elementwise,
        a: &B::Buffer,
        b: Option<&B::Buffer>,
        out: &mut B::Buffer,
    ) -> Result<()> {
        self.0.elementwise(p, op, a, b, out)
    }

    fn argmax(&self, p: &ArgmaxParams, x: &B::Buffer, out: &mut B::Buffer) -> Result<()> {
        self.0.argmax(p, x, out)
    }

    fn copy(&self, p: &CopyParams, src: &B::Buffer, dst: &mut B::Buffer) -> Result<()> {
        self.0.copy(p, src, dst)
    }
}
