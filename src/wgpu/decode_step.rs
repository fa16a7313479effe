//! The fused decode step's launches (`shaders/decode_step/`), called from the
//! `impl Backend` in `ops.rs`. Weights are bound whole: a weight larger than one
//! binding is an [`crate::Error::Limit`] here, and the model checks
//! `fused_step_max_weight_bytes` first and takes the unfused ops instead.

use super::kernels::{DECODE_ROWS, Kernel};
use super::{Bind, WgpuBackend, WgpuBuffer, wdtype};
use crate::error::Result;
use crate::ops::call::*;

impl WgpuBackend {
    pub(super) fn mixer_in_launch(&self, call: MixerInCall<'_, WgpuBuffer>) -> Result<()> {
        let MixerInCall {
            p,
            inputs: i,
            conv_state,
            xc,
            z,
        } = call;
        let kernel = Kernel::MixerIn {
            w: wdtype(i.w_x),
            norm: wdtype(i.norm_w),
        };
        self.dispatch(
            kernel,
            &[
                Bind::Uniform(bytemuck::bytes_of(p)),
                self.whole("h", i.h)?,
                self.whole("norm_w", i.norm_w)?,
                self.whole("w_x", i.w_x)?,
                self.whole("w_z", i.w_z)?,
                self.whole("conv_w", i.conv_w)?,
                self.opt_read("conv_b", i.conv_b)?,
                self.whole("conv_state", conv_state)?,
                self.whole("xc", xc)?,
                self.whole("z", z)?,
            ],
            self.grid((2 * p.d_inner).div_ceil(DECODE_ROWS))?,
        )
    }

    pub(super) fn x_proj_launch(&self, call: XProjCall<'_, WgpuBuffer>) -> Result<()> {
        let XProjCall {
            p,
            xc,
            w_dt,
            w_b,
            w_c,
            dbc,
        } = call;
        self.dispatch(
            Kernel::XProj { w: wdtype(w_dt) },
            &[
                Bind::Uniform(bytemuck::bytes_of(p)),
                self.whole("xc", xc)?,
                self.whole("w_dt", w_dt)?,
                self.whole("w_b", w_b)?,
                self.whole("w_c", w_c)?,
                self.whole("dbc", dbc)?,
            ],
            self.grid((p.dt_rank + 2 * p.dstate).div_ceil(DECODE_ROWS))?,
        )
    }

    pub(super) fn ssm_step_launch(&self, call: SsmStepCall<'_, WgpuBuffer>) -> Result<()> {
        let SsmStepCall {
            p,
            inputs: i,
            state,
            y,
        } = call;
        self.dispatch(
            Kernel::SsmStep {
                w: wdtype(i.dt_proj),
            },
            &[
                Bind::Uniform(bytemuck::bytes_of(p)),
                self.whole("xc", i.xc)?,
                self.whole("dbc", i.dbc)?,
                self.whole("z", i.z)?,
                self.whole("dt_proj", i.dt_proj)?,
                self.whole("dt_bias", i.dt_bias)?,
                self.whole("A", i.a)?,
                self.whole("D", i.d)?,
                self.whole("state", state)?,
                self.whole("y", y)?,
            ],
            self.grid((p.batch * p.d_inner).div_ceil(64))?,
        )
    }
}
