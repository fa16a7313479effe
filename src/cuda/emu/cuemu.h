// The CUDA C dialect of kernels/*.cu on a CPU: what a kernel translation unit sees.
// Part of the CPU execution model (src/cuda/emu/mod.rs has the design). The scheduler
// behind these declarations is runner.cpp.
//
// Every CUDA thread is a fiber; the fibers of one block run on one OS thread and switch
// only inside the synchronising calls below (__syncthreads, warp shuffles / votes /
// __syncwarp), so everything between two of them runs as one uninterrupted step. The
// built-in index variables read the running fiber. rewrite.rs turns `__shared__`
// declarations into calls of shared_var / dynamic_shared (one heap allocation per array
// and block, filled with 0xff bytes: NaN as f32, so reads of unwritten shared memory
// show up, and separate allocations, so AddressSanitizer sees overruns), and the inline
// PTX conversions into calls of the ptx_* functions.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <type_traits>
#include <utility>

#define __CUDACC__ 1
#define __CUDACC_RTC__ 1
#define __CUDA_ARCH__ 800
#define __global__
#define __device__
#define __host__
#define __constant__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
// Aliasing promises mean nothing here: every barrier is an opaque call.
#define __restrict__
#define __align__(n) alignas(n)

struct uint3 { unsigned int x, y, z; };
struct dim3 { unsigned int x, y, z; };
struct alignas(8) float2 { float x, y; };
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(8) uint2 { unsigned int x, y; };
struct alignas(16) uint4 { unsigned int x, y, z, w; };
struct alignas(8) int2 { int x, y; };
struct alignas(16) int4 { int x, y, z, w; };
inline float2 make_float2(float x, float y) { return {x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline uint2 make_uint2(unsigned int x, unsigned int y) { return {x, y}; }
inline uint4 make_uint4(unsigned int x, unsigned int y, unsigned int z, unsigned int w) {
    return {x, y, z, w};
}
inline int2 make_int2(int x, int y) { return {x, y}; }
inline int4 make_int4(int x, int y, int z, int w) { return {x, y, z, w}; }

namespace cuemu {

// The running CUDA thread, and the launch it belongs to (set by the scheduler).
struct ThreadCtx {
    uint3 tid;
};
extern ThreadCtx* g_thread;
extern uint3 g_block_idx;
extern dim3 g_block_dim;
extern dim3 g_grid_dim;

// Block barrier; warp collectives. `file`/`line` name the call site for reports.
void syncthreads(const char* file, int line);
enum Coll : int { SHFL_IDX, SHFL_UP, SHFL_DOWN, SHFL_XOR, SYNCWARP, BALLOT, ANY, ALL };
unsigned long long warp_collective(Coll op, const char* file, int line, unsigned int mask,
                                   unsigned long long value, int arg, int width);
// Shared memory of the running block (see the header comment).
void* shared_alloc(const char* site, size_t bytes, size_t align);
void* dynamic_shared();

template <class T>
inline T& shared_var(const char* site) {
    return *static_cast<T*>(shared_alloc(site, sizeof(T), alignof(T)));
}

inline void syncwarp(const char* file, int line, unsigned int mask = 0xffffffffu) {
    warp_collective(SYNCWARP, file, line, mask, 0, 0, 32);
}

template <class T>
inline T shfl(Coll op, const char* file, int line, unsigned int mask, T v, int arg,
              int width = 32) {
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value,
                  "warp shuffles move values of at most 8 bytes");
    unsigned long long bits = 0;
    std::memcpy(&bits, &v, sizeof(T));
    bits = warp_collective(op, file, line, mask, bits, arg, width);
    T r;
    std::memcpy(&r, &bits, sizeof(T));
    return r;
}

// The inline PTX forms rewrite.rs knows.
inline float ptx_cvt_f32_f16(unsigned short h) {
    _Float16 f;
    std::memcpy(&f, &h, 2);
    return (float)f;
}
inline unsigned short ptx_cvt_rn_f16_f32(float f) {
    _Float16 h = (_Float16)f;   // round to nearest even, as cvt.rn
    unsigned short r;
    std::memcpy(&r, &h, 2);
    return r;
}
inline float ptx_cvt_f32_bf16(unsigned short h) {
    unsigned int u = (unsigned int)h << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
inline unsigned short ptx_cvt_rn_bf16_f32(float f) {
    unsigned int x;
    std::memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((x >> 16) | 0x40u);
    x += 0x7fffu + ((x >> 16) & 1u);
    return (unsigned short)(x >> 16);
}
inline float ptx_ex2_approx_f32(float x) { return std::exp2(x); }

// One entry point: its parameter list as sizes (and pointee sizes, -1 for a value,
// 0 for void*), its __launch_bounds__ and a caller taking cuLaunchKernel's void** args.
struct ParamInfo {
    unsigned int size;
    int pointee;
};
struct Entry {
    const char* name;
    const char* file;
    unsigned int max_threads;
    unsigned int nparams;
    const ParamInfo* params;
    void (*call)(void** args);
};
// One field of a param struct, for the layout checks against src/params.rs.
struct Field {
    const char* name;
    size_t offset, size;
    int is_float;
};
struct Layout {
    const char* name;
    const char* file;
    size_t size, align;
    unsigned int nfields;
    const Field* fields;
};
int register_entries(const Entry* e, unsigned int n);
int register_layouts(const Layout* l, unsigned int n);

template <class T>
constexpr ParamInfo param_info() {
    if constexpr (std::is_pointer<T>::value) {
        using P = typename std::remove_cv<typename std::remove_pointer<T>::type>::type;
        if constexpr (std::is_void<P>::value)
            return {(unsigned int)sizeof(T), 0};
        else
            return {(unsigned int)sizeof(T), (int)sizeof(P)};
    } else {
        return {(unsigned int)sizeof(T), -1};
    }
}

template <auto F>
struct EntryOf;
template <class... A, void (*F)(A...)>
struct EntryOf<F> {
    static constexpr unsigned int nparams = sizeof...(A);
    static constexpr ParamInfo params[sizeof...(A) + 1] = {param_info<A>()..., {0, 0}};
    template <size_t... I>
    static void call_with(void** args, std::index_sequence<I...>) {
        F(*static_cast<typename std::remove_reference<A>::type*>(args[I])...);
    }
    static void call(void** args) { call_with(args, std::index_sequence_for<A...>{}); }
};

}  // namespace cuemu

#define threadIdx (::cuemu::g_thread->tid)
#define blockIdx (::cuemu::g_block_idx)
#define blockDim (::cuemu::g_block_dim)
#define gridDim (::cuemu::g_grid_dim)
#define warpSize 32

#define __syncthreads() ::cuemu::syncthreads(__FILE__, __LINE__)
#define __syncwarp(...) ::cuemu::syncwarp(__FILE__, __LINE__, ##__VA_ARGS__)
#define __shfl_sync(mask, v, ...) ::cuemu::shfl(::cuemu::SHFL_IDX, __FILE__, __LINE__, mask, v, __VA_ARGS__)
#define __shfl_up_sync(mask, v, ...) ::cuemu::shfl(::cuemu::SHFL_UP, __FILE__, __LINE__, mask, v, __VA_ARGS__)
#define __shfl_down_sync(mask, v, ...) ::cuemu::shfl(::cuemu::SHFL_DOWN, __FILE__, __LINE__, mask, v, __VA_ARGS__)
#define __shfl_xor_sync(mask, v, ...) ::cuemu::shfl(::cuemu::SHFL_XOR, __FILE__, __LINE__, mask, v, __VA_ARGS__)
#define __ballot_sync(mask, pred) ::cuemu::shfl<unsigned int>(::cuemu::BALLOT, __FILE__, __LINE__, mask, (pred) ? 1u : 0u, 0)
#define __any_sync(mask, pred) (int)::cuemu::shfl<unsigned int>(::cuemu::ANY, __FILE__, __LINE__, mask, (pred) ? 1u : 0u, 0)
#define __all_sync(mask, pred) (int)::cuemu::shfl<unsigned int>(::cuemu::ALL, __FILE__, __LINE__, mask, (pred) ? 1u : 0u, 0)

// One OS thread runs a launch, and fibers switch only at the calls above: fences are
// no-ops and atomics plain read-modify-writes.
inline void __threadfence() {}
inline void __threadfence_block() {}
template <class T> inline T atomicAdd(T* p, T v) { T o = *p; *p = o + v; return o; }
template <class T> inline T atomicMax(T* p, T v) { T o = *p; *p = o < v ? v : o; return o; }
template <class T> inline T atomicMin(T* p, T v) { T o = *p; *p = v < o ? v : o; return o; }
template <class T> inline T atomicExch(T* p, T v) { T o = *p; *p = v; return o; }
template <class T> inline T atomicCAS(T* p, T c, T v) { T o = *p; if (o == c) *p = v; return o; }
template <class T> inline T __ldg(const T* p) { return *p; }

// Device math on the host libm (accuracy differs from the GPU's by a few ulp).
inline float __uint_as_float(unsigned int u) { float f; std::memcpy(&f, &u, 4); return f; }
inline unsigned int __float_as_uint(float f) { unsigned int u; std::memcpy(&u, &f, 4); return u; }
inline float __int_as_float(int u) { float f; std::memcpy(&f, &u, 4); return f; }
inline int __float_as_int(float f) { int u; std::memcpy(&u, &f, 4); return u; }
using std::isfinite;
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __saturatef(float x) { return x < 0.f ? 0.f : (x > 1.f ? 1.f : x); }
// The four signed bytes of a and b multiplied pairwise and summed into c (sm_61+).
inline int __dp4a(int a, int b, int c) {
    for (int j = 0; j < 4; ++j) c += (int)(signed char)(a >> (8 * j)) * (int)(signed char)(b >> (8 * j));
    return c;
}
template <class A, class B>
inline typename std::common_type<A, B>::type min(A a, B b) {
    using C = typename std::common_type<A, B>::type;
    return (C)b < (C)a ? (C)b : (C)a;
}
template <class A, class B>
inline typename std::common_type<A, B>::type max(A a, B b) {
    using C = typename std::common_type<A, B>::type;
    return (C)a < (C)b ? (C)b : (C)a;
}
