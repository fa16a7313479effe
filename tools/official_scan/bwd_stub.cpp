// Backward stubs for a forward-only build of mamba_ssm's `selective_scan_cuda`.
//
// selective_scan.cpp defines both `fwd` and `bwd` and so references
// `selective_scan_bwd_cuda<input_t, weight_t>` for every type pair its dispatch macros
// produce. The official build gets those from the six selective_scan_bwd_*.cu files,
// which are most of its compile time; we time the forward only, so this file provides
// the same explicit instantiations (same signature, hence the same mangled symbols), each
// failing loudly if anything ever calls it. setup.py checks before building that the
// list below equals the `template void selective_scan_bwd_cuda<...>` lines of the sdist.
//
// A plain C++ file (compiled by the host compiler, not nvcc): nothing here runs on the GPU.

#include <cstddef>
#include <cstdint>

#include <cuda_runtime_api.h>  // cudaStream_t, as in the .cu files
#include <c10/util/BFloat16.h>
#include <c10/util/Exception.h>
#include <c10/util/Half.h>
#include <c10/util/complex.h>

#include "selective_scan.h"  // SSMParamsBwd (needs <cstdint> first, as in the sdist)

// selective_scan_common.h spells it so; that header is CUDA-only, so repeat it here.
using complex_t = c10::complex<float>;

template <typename input_t, typename weight_t>
void selective_scan_bwd_cuda(SSMParamsBwd &params, cudaStream_t stream) {
    (void)params;
    (void)stream;
    TORCH_CHECK(false,
                "selective_scan_cuda was built forward-only (tools/official_scan): "
                "selective_scan_bwd_cuda is a stub; build the full mamba_ssm package "
                "for the backward");
}

// BEGIN BWD INSTANTIATIONS (setup.py compares these lines with the sdist's bwd .cu files)
template void selective_scan_bwd_cuda<float, float>(SSMParamsBwd &params, cudaStream_t stream);
template void selective_scan_bwd_cuda<float, complex_t>(SSMParamsBwd &params, cudaStream_t stream);
template void selective_scan_bwd_cuda<at::Half, float>(SSMParamsBwd &params, cudaStream_t stream);
template void selective_scan_bwd_cuda<at::Half, complex_t>(SSMParamsBwd &params, cudaStream_t stream);
template void selective_scan_bwd_cuda<at::BFloat16, float>(SSMParamsBwd &params, cudaStream_t stream);
template void selective_scan_bwd_cuda<at::BFloat16, complex_t>(SSMParamsBwd &params, cudaStream_t stream);
// END BWD INSTANTIATIONS
