// The CPU execution model's scheduler and its process: runs CUDA kernel launches for
// the Rust side (src/cuda/emu/runner.rs) over a pipe. Design: src/cuda/emu/mod.rs.
//
// A launch runs its blocks one after another (in an order the schedule picks); the
// threads of a block are fibers on this one OS thread with their own stacks. A fiber
// runs until it reaches a synchronising call, then the scheduler picks the next
// runnable fiber by the schedule:
//   * __syncthreads: waits until every live (not exited) thread of the block waits at
//     one barrier; threads waiting at different __syncthreads lines are an error.
//   * warp collectives (shuffles, votes, __syncwarp): a rendezvous of exactly the lanes
//     of that warp named in the mask, all with the same collective and mask. A mask that
//     does not name the caller, that names an exited or nonexistent lane, or a shuffle
//     reading a lane outside the mask is an error.
//   * nothing runnable while threads remain: a deadlock, reported with what every
//     thread waits for, by source line.
// The launch itself is checked as the driver would: block size against the entry's
// __launch_bounds__ and 1024, grid limits, static + dynamic shared memory against 48 KiB,
// and the argument list against the kernel's parameter list (count, sizes, pointer or
// value, element size of each buffer).
#include "cuemu.h"

#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdarg>
#include <cstdlib>
#include <string>
#include <unordered_map>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define CUEMU_ASAN 1
#endif

#if defined(__x86_64__)
#define CUEMU_ASM_SWITCH 1
// Saves the callee-saved registers, MXCSR and the x87 control word on the current
// stack, stores the stack pointer in *save, loads `load` and restores from there: the
// whole cost of a fiber switch (ucontext's swapcontext adds a signal-mask system call).
extern "C" void cuemu_switch(void** save, void* load);
asm(R"(
.text
.globl cuemu_switch
.hidden cuemu_switch
.type cuemu_switch,@function
cuemu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
.size cuemu_switch, .-cuemu_switch
)");
#else
#include <ucontext.h>
#endif

namespace cuemu {

ThreadCtx* g_thread;
uint3 g_block_idx;
dim3 g_block_dim;
dim3 g_grid_dim;

static std::vector<const Entry*>& entries() {
    static std::vector<const Entry*> v;
    return v;
}
static std::vector<const Layout*>& layouts() {
    static std::vector<const Layout*> v;
    return v;
}
int register_entries(const Entry* e, unsigned int n) {
    for (unsigned int i = 0; i < n; ++i) entries().push_back(e + i);
    return 0;
}
int register_layouts(const Layout* l, unsigned int n) {
    for (unsigned int i = 0; i < n; ++i) layouts().push_back(l + i);
    return 0;
}

enum class St : unsigned char { Ready, Barrier, Warp, Exited };
enum Schedule : unsigned int { ROUND_ROBIN, REVERSE, LOWEST_FIRST, HIGHEST_FIRST, RANDOM };

struct Fiber {
    ThreadCtx ctx;
    unsigned int lin;
    St st;
    const char* file;
    int line;
    Coll op;
    unsigned int mask;
    int width, arg;
    unsigned long long val, res;
    char* stack;
    size_t stack_size;
#if CUEMU_ASM_SWITCH
    void* sp;
#else
    ucontext_t uc;
#endif
    void* fake_stack;
};

#if CUEMU_ASAN
static const size_t STACK = 1 << 20;   // ASan's redzones make frames larger
#else
static const size_t STACK = 256 << 10;
#endif
static const size_t SMEM_LIMIT = 48 * 1024;

struct Shared {
    const char* site;
    void* p;
    size_t bytes;
};

// The launch being run.
struct Run {
    std::vector<Fiber> f;
    unsigned int n = 0, live = 0, at_bar = 0;
    std::vector<unsigned long long> ready;   // bitset of Ready fibers
    Schedule sched = ROUND_ROBIN;
    unsigned long long rng = 1;
    int last = -1;
    std::string error;
    std::vector<Shared> shared;
    void* dyn = nullptr;
    size_t dyn_bytes = 0, static_bytes = 0;
    void (*call)(void**) = nullptr;
    void** args = nullptr;
    Fiber* cur = nullptr;
    const char* kernel = "";
};
static Run R;

#if CUEMU_ASM_SWITCH
static void* g_main_sp;
#else
static ucontext_t g_main_uc;
#endif
static void* g_main_fake;
static const void* g_main_bottom;
static size_t g_main_size;

static std::string fmt(const char* f, ...) __attribute__((format(printf, 1, 2)));
static std::string fmt(const char* f, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, f);
    vsnprintf(buf, sizeof buf, f, ap);
    va_end(ap);
    return buf;
}

static std::string thread_name(const Fiber& f) {
    return fmt("thread (%u,%u,%u)", f.ctx.tid.x, f.ctx.tid.y, f.ctx.tid.z);
}
static std::string block_name() {
    return fmt("%s block (%u,%u,%u)", R.kernel, g_block_idx.x, g_block_idx.y, g_block_idx.z);
}
static void fail(std::string why) {
    if (R.error.empty()) R.error = block_name() + ": " + why;
}

static void set_ready(unsigned int i) { R.ready[i / 64] |= 1ull << (i % 64); }
static void clear_ready(unsigned int i) { R.ready[i / 64] &= ~(1ull << (i % 64)); }

// Smallest Ready index >= i, or -1.
static int find_next(int i) {
    if (i < 0) i = 0;
    for (size_t w = i / 64; w < R.ready.size(); ++w) {
        unsigned long long bits = R.ready[w];
        if (w == (size_t)i / 64) bits &= ~0ull << (i % 64);
        if (bits) return (int)(w * 64 + __builtin_ctzll(bits));
    }
    return -1;
}
// Largest Ready index <= i, or -1.
static int find_prev(int i) {
    if (i >= (int)R.n) i = (int)R.n - 1;
    for (int w = i / 64; w >= 0 && i >= 0; --w) {
        unsigned long long bits = R.ready[w];
        if (w == i / 64 && i % 64 != 63) bits &= (1ull << (i % 64 + 1)) - 1;
        if (bits) return w * 64 + 63 - __builtin_clzll(bits);
    }
    return -1;
}

static unsigned long long next_rand() {
    R.rng ^= R.rng << 13;
    R.rng ^= R.rng >> 7;
    R.rng ^= R.rng << 17;
    return R.rng;
}

static int pick() {
    int i = -1;
    switch (R.sched) {
        case ROUND_ROBIN:
            i = find_next(R.last + 1);
            return i >= 0 ? i : find_next(0);
        case REVERSE:
            i = R.last < 0 ? -1 : find_prev(R.last - 1);
            return i >= 0 ? i : find_prev((int)R.n - 1);
        case LOWEST_FIRST: return find_next(0);
        case HIGHEST_FIRST: return find_prev((int)R.n - 1);
        default:
            i = find_next((int)(next_rand() % R.n));
            return i >= 0 ? i : find_next(0);
    }
}

// ---- switching

static void to_main(Fiber* me, bool final) {
#if CUEMU_ASAN
    __sanitizer_start_switch_fiber(final ? nullptr : &me->fake_stack, g_main_bottom, g_main_size);
#else
    (void)final;
#endif
#if CUEMU_ASM_SWITCH
    cuemu_switch(&me->sp, g_main_sp);
#else
    swapcontext(&me->uc, &g_main_uc);
#endif
#if CUEMU_ASAN
    __sanitizer_finish_switch_fiber(me->fake_stack, &g_main_bottom, &g_main_size);
#endif
}

static void to_fiber(Fiber* f) {
    R.cur = f;
    g_thread = &f->ctx;
#if CUEMU_ASAN
    __sanitizer_start_switch_fiber(&g_main_fake, f->stack, f->stack_size);
#endif
#if CUEMU_ASM_SWITCH
    cuemu_switch(&g_main_sp, f->sp);
#else
    swapcontext(&g_main_uc, &f->uc);
#endif
#if CUEMU_ASAN
    __sanitizer_finish_switch_fiber(g_main_fake, nullptr, nullptr);
#endif
}

static void release_barrier();
static void lane_exited(Fiber* me);

static void fiber_main() {
#if CUEMU_ASAN
    __sanitizer_finish_switch_fiber(nullptr, &g_main_bottom, &g_main_size);
#endif
    Fiber* me = R.cur;
    R.call(R.args);
    me->st = St::Exited;
    clear_ready(me->lin);
    R.live--;
    if (R.at_bar > 0 && R.at_bar == R.live) release_barrier();
    lane_exited(me);
    to_main(me, true);
    __builtin_trap();   // an exited fiber is never resumed
}

static void init_fiber(Fiber& f) {
    f.st = St::Ready;
    f.fake_stack = nullptr;
#if CUEMU_ASAN
    // A reused stack still carries the redzones of the frames that last ran on it.
    __asan_unpoison_memory_region(f.stack, f.stack_size);
#endif
#if CUEMU_ASM_SWITCH
    uintptr_t top = ((uintptr_t)(f.stack + f.stack_size)) & ~(uintptr_t)15;
    void** sp = (void**)top;
    *--sp = nullptr;                        // fiber_main's return address (never used)
    *--sp = (void*)&fiber_main;             // popped by cuemu_switch's ret
    for (int r = 0; r < 6; ++r) *--sp = nullptr;   // rbp rbx r12 r13 r14 r15
    --sp;
    unsigned int csr = __builtin_ia32_stmxcsr();
    unsigned short cw = 0x037f;
    std::memcpy(sp, &csr, 4);
    std::memcpy((char*)sp + 4, &cw, 2);
    f.sp = sp;
#else
    getcontext(&f.uc);
    f.uc.uc_stack.ss_sp = f.stack;
    f.uc.uc_stack.ss_size = f.stack_size;
    f.uc.uc_link = nullptr;
    makecontext(&f.uc, fiber_main, 0);
#endif
}

// ---- barriers and warp collectives (called on a fiber)

static const char* coll_name(Coll c) {
    switch (c) {
        case SHFL_IDX: return "__shfl_sync";
        case SHFL_UP: return "__shfl_up_sync";
        case SHFL_DOWN: return "__shfl_down_sync";
        case SHFL_XOR: return "__shfl_xor_sync";
        case SYNCWARP: return "__syncwarp";
        case BALLOT: return "__ballot_sync";
        case ANY: return "__any_sync";
        default: return "__all_sync";
    }
}

static std::string waits_for(const Fiber& f) {
    switch (f.st) {
        case St::Ready: return "runnable";
        case St::Exited: return "exited";
        case St::Barrier: return fmt("__syncthreads at %s:%d", f.file, f.line);
        default: return fmt("%s(mask 0x%08x) at %s:%d", coll_name(f.op), f.mask, f.file, f.line);
    }
}

static void release_barrier() {
    const Fiber* first = nullptr;
    for (auto& f : R.f) {
        if (f.st != St::Barrier) continue;
        if (!first) {
            first = &f;
        } else if (f.line != first->line || std::strcmp(f.file, first->file) != 0) {
            fail(fmt("threads wait at different barriers: %s at %s:%d, %s at %s:%d",
                     thread_name(*first).c_str(), first->file, first->line,
                     thread_name(f).c_str(), f.file, f.line));
            return;
        }
    }
    for (auto& f : R.f)
        if (f.st == St::Barrier) {
            f.st = St::Ready;
            set_ready(f.lin);
        }
    R.at_bar = 0;
}

void syncthreads(const char* file, int line) {
    Fiber* me = R.cur;
    me->st = St::Barrier;
    me->file = file;
    me->line = line;
    clear_ready(me->lin);
    R.at_bar++;
    if (R.at_bar == R.live) release_barrier();
    to_main(me, false);
}

static unsigned int warp_lanes(unsigned int base) { return std::min(32u, R.n - base); }

// A lane exited: a collective still waiting for it can never complete.
static void lane_exited(Fiber* me) {
    unsigned int lane = me->lin % 32, base = me->lin - lane;
    for (unsigned int l = 0; l < warp_lanes(base); ++l) {
        const Fiber& o = R.f[base + l];
        if (o.st == St::Warp && (o.mask >> lane & 1u))
            fail(fmt("%s exited while %s waits for it in %s(mask 0x%08x) at %s:%d",
                     thread_name(*me).c_str(), thread_name(o).c_str(), coll_name(o.op), o.mask,
                     o.file, o.line));
    }
}

static void complete_collective(unsigned int base, unsigned int mask) {
    const Fiber& a = R.f[base + __builtin_ctz(mask)];
    unsigned int ballot = 0;
    for (unsigned int l = 0; l < 32; ++l) {
        if (!(mask >> l & 1u)) continue;
        const Fiber& o = R.f[base + l];
        if (o.op != a.op || o.width != a.width) {
            fail(fmt("lanes of one warp meet at different collectives: %s at %s(width %d) %s:%d, "
                     "%s at %s(width %d) %s:%d",
                     thread_name(a).c_str(), coll_name(a.op), a.width, a.file, a.line,
                     thread_name(o).c_str(), coll_name(o.op), o.width, o.file, o.line));
            return;
        }
        if (o.val) ballot |= 1u << l;
    }
    for (unsigned int l = 0; l < 32; ++l) {
        if (!(mask >> l & 1u)) continue;
        Fiber& o = R.f[base + l];
        const unsigned int w = (unsigned int)o.width, seg = l & ~(w - 1), in = l & (w - 1);
        unsigned int src = l;
        switch (o.op) {
            case SHFL_IDX: src = seg + ((unsigned int)o.arg & (w - 1)); break;
            case SHFL_UP: src = in >= (unsigned int)o.arg ? l - (unsigned int)o.arg : l; break;
            case SHFL_DOWN: src = in + (unsigned int)o.arg < w ? l + (unsigned int)o.arg : l; break;
            case SHFL_XOR:
                src = l ^ ((unsigned int)o.arg & 31u);
                if (src >= seg + w) src = l;
                break;
            default: break;
        }
        if (src != l && !(mask >> src & 1u)) {
            fail(fmt("%s reads lane %u in %s(mask 0x%08x) at %s:%d, but the mask does not name it",
                     thread_name(o).c_str(), src, coll_name(o.op), mask, o.file, o.line));
            return;
        }
        switch (o.op) {
            case BALLOT: o.res = ballot; break;
            case ANY: o.res = ballot != 0; break;
            case ALL: o.res = ballot == mask; break;
            case SYNCWARP: o.res = 0; break;
            default: o.res = R.f[base + src].val; break;
        }
    }
    for (unsigned int l = 0; l < 32; ++l)
        if (mask >> l & 1u) {
            R.f[base + l].st = St::Ready;
            set_ready(base + l);
        }
}

unsigned long long warp_collective(Coll op, const char* file, int line, unsigned int mask,
                                   unsigned long long value, int arg, int width) {
    Fiber* me = R.cur;
    const unsigned int lane = me->lin % 32, base = me->lin - lane, nl = warp_lanes(base);
    me->file = file;
    me->line = line;
    if (!(mask >> lane & 1u)) {
        fail(fmt("%s calls %s with mask 0x%08x, which does not name its own lane %u (%s:%d)",
                 thread_name(*me).c_str(), coll_name(op), mask, lane, file, line));
    } else if (width <= 0 || width > 32 || (width & (width - 1)) != 0) {
        fail(fmt("%s: %s width %d is not a power of two up to 32 (%s:%d)",
                 thread_name(*me).c_str(), coll_name(op), width, file, line));
    } else {
        for (unsigned int l = 0; l < 32; ++l) {
            if (!(mask >> l & 1u)) continue;
            if (l >= nl || R.f[base + l].st == St::Exited) {
                fail(fmt("%s: %s(mask 0x%08x) at %s:%d names lane %u, which has %s",
                         thread_name(*me).c_str(), coll_name(op), mask, file, line, l,
                         l >= nl ? "no thread (partial warp)" : "exited"));
                break;
            }
        }
    }
    if (!R.error.empty()) {
        to_main(me, false);   // the launch is abandoned; never resumed
        return 0;
    }
    me->st = St::Warp;
    me->op = op;
    me->mask = mask;
    me->width = width;
    me->arg = arg;
    me->val = value;
    clear_ready(me->lin);
    bool all = true;
    for (unsigned int l = 0; l < 32 && all; ++l)
        if (mask >> l & 1u)
            all = R.f[base + l].st == St::Warp && R.f[base + l].mask == mask;
    if (all) complete_collective(base, mask);
    to_main(me, false);
    return me->res;
}

// ---- shared memory

static void* poisoned(size_t bytes, size_t align) {
    void* p = nullptr;
    if (posix_memalign(&p, std::max<size_t>(align, 16), bytes ? bytes : 1) != 0) abort();
    std::memset(p, 0xff, bytes);
    return p;
}

void* shared_alloc(const char* site, size_t bytes, size_t align) {
    for (auto& s : R.shared)
        if (std::strcmp(s.site, site) == 0) return s.p;
    void* p = poisoned(bytes, align);
    R.shared.push_back({site, p, bytes});
    R.static_bytes += bytes;
    return p;
}

void* dynamic_shared() { return R.dyn; }

static void free_shared() {
    for (auto& s : R.shared) free(s.p);
    R.shared.clear();
    free(R.dyn);
    R.dyn = nullptr;
}

// ---- one launch

static std::vector<char*> g_stacks;

static char* stack_for(unsigned int i) {
    while (g_stacks.size() <= i) {
        size_t guard = 4096;
        void* m = mmap(nullptr, STACK + guard, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (m == MAP_FAILED) abort();
        mprotect(m, guard, PROT_NONE);   // a stack overflow faults instead of corrupting
        g_stacks.push_back((char*)m + guard);
    }
    return g_stacks[i];
}

static std::string deadlock_report() {
    std::string s = "deadlock: no thread can run; the threads wait as follows:";
    size_t i = 0;
    while (i < R.f.size()) {
        std::string w = waits_for(R.f[i]);
        size_t j = i;
        while (j + 1 < R.f.size() && waits_for(R.f[j + 1]) == w) ++j;
        s += fmt("\n  %s..%s: ", thread_name(R.f[i]).c_str(), thread_name(R.f[j]).c_str()) + w;
        i = j + 1;
    }
    return s;
}

static bool run_block() {
    for (unsigned int i = 0; i < R.n; ++i) {
        Fiber& f = R.f[i];
        f.lin = i;
        f.ctx.tid = {i % g_block_dim.x, (i / g_block_dim.x) % g_block_dim.y,
                     i / (g_block_dim.x * g_block_dim.y)};
        f.stack = stack_for(i);
        f.stack_size = STACK;
        f.file = "";
        f.line = 0;
        init_fiber(f);
    }
    std::fill(R.ready.begin(), R.ready.end(), 0ull);
    for (unsigned int i = 0; i < R.n; ++i) set_ready(i);
    R.live = R.n;
    R.at_bar = 0;
    R.last = -1;
    R.static_bytes = 0;
    R.dyn = poisoned(R.dyn_bytes, 16);
    bool ok = true;
    for (;;) {
        int i = pick();
        if (i < 0) {
            if (R.live != 0) fail(deadlock_report());
            break;
        }
        to_fiber(&R.f[i]);
        R.last = i;
        if (!R.error.empty()) break;
    }
    if (R.error.empty() && R.static_bytes + R.dyn_bytes > SMEM_LIMIT)
        fail(fmt("uses %zu bytes of shared memory (%zu static + %zu dynamic), more than the "
                 "%zu a block may use without an opt-in",
                 R.static_bytes + R.dyn_bytes, R.static_bytes, R.dyn_bytes, SMEM_LIMIT));
    ok = R.error.empty();
    free_shared();
    return ok;
}

struct Arg {
    bool is_buffer;
    unsigned int elem;   // buffers: element size, 0 = any (a dummy)
    std::vector<char> value;
    void* ptr;
};

// Runs a launch; an empty string means success. `static_smem` gets the block's static
// shared memory (measured).
static std::string launch(const std::string& name, dim3 grid, dim3 block, unsigned int smem,
                          Schedule sched, unsigned long long seed, std::vector<Arg>& args,
                          size_t* static_smem) {
    const Entry* e = nullptr;
    for (auto* x : entries())
        if (name == x->name) e = x;
    if (!e) return "no entry point named " + name + " in kernels/";
    R.kernel = e->name;
    if (args.size() != e->nparams)
        return fmt("%s takes %u parameters, %zu arguments were pushed", e->name, e->nparams,
                   args.size());
    std::vector<void*> argv(args.size());
    for (size_t i = 0; i < args.size(); ++i) {
        const ParamInfo& p = e->params[i];
        Arg& a = args[i];
        if (a.is_buffer) {
            if (p.pointee < 0)
                return fmt("%s: parameter %zu is a %u-byte value, a buffer was pushed", e->name,
                           i, p.size);
            if (p.pointee > 0 && a.elem != 0 && (unsigned int)p.pointee != a.elem)
                return fmt("%s: parameter %zu points to %d-byte elements, a buffer of %u-byte "
                           "elements was pushed",
                           e->name, i, p.pointee, a.elem);
            argv[i] = &a.ptr;
        } else {
            if (p.pointee >= 0)
                return fmt("%s: parameter %zu is a pointer, a %zu-byte value was pushed", e->name,
                           i, a.value.size());
            if (a.value.size() != p.size)
                return fmt("%s: parameter %zu is %u bytes, %zu were pushed", e->name, i, p.size,
                           a.value.size());
            argv[i] = a.value.data();
        }
    }
    const unsigned long long threads = (unsigned long long)block.x * block.y * block.z;
    if (threads == 0 || grid.x == 0 || grid.y == 0 || grid.z == 0)
        return fmt("%s: empty grid or block", e->name);
    if (threads > 1024 || block.z > 64)
        return fmt("%s: block (%u,%u,%u) exceeds the device limits", e->name, block.x, block.y,
                   block.z);
    if (threads > e->max_threads)
        return fmt("%s: block of %llu threads exceeds its __launch_bounds__(%u)", e->name,
                   threads, e->max_threads);
    if (grid.y > 65535 || grid.z > 65535 || grid.x > 0x7fffffffu)
        return fmt("%s: grid (%u,%u,%u) exceeds the device limits", e->name, grid.x, grid.y,
                   grid.z);
    if (smem > SMEM_LIMIT)
        return fmt("%s: %u bytes of dynamic shared memory exceed 48 KiB", e->name, smem);

    R.n = (unsigned int)threads;
    R.f.assign(R.n, Fiber{});
    R.ready.assign((R.n + 63) / 64, 0ull);
    R.sched = sched;
    R.rng = seed * 0x9e3779b97f4a7c15ull + 1;
    R.error.clear();
    R.dyn_bytes = smem;
    R.call = e->call;
    R.args = argv.data();
    g_block_dim = block;
    g_grid_dim = grid;

    const unsigned long long nblocks = (unsigned long long)grid.x * grid.y * grid.z;
    std::vector<unsigned long long> order(nblocks);
    for (unsigned long long i = 0; i < nblocks; ++i) order[i] = i;
    if (sched == REVERSE || sched == HIGHEST_FIRST) std::reverse(order.begin(), order.end());
    if (sched == RANDOM)
        for (unsigned long long i = nblocks; i > 1; --i) std::swap(order[i - 1], order[next_rand() % i]);
    *static_smem = 0;
    for (unsigned long long b : order) {
        g_block_idx = {(unsigned int)(b % grid.x), (unsigned int)((b / grid.x) % grid.y),
                       (unsigned int)(b / ((unsigned long long)grid.x * grid.y))};
        if (!run_block()) return R.error;
        *static_smem = R.static_bytes;
    }
    return "";
}

}  // namespace cuemu

// ---- the process: length-prefixed requests on stdin, replies on the original stdout
// (kernel printf goes to stderr).

namespace {

int g_in = 0, g_out = 1;

bool read_exact(void* p, size_t n) {
    char* c = (char*)p;
    while (n) {
        ssize_t r = read(g_in, c, n);
        if (r <= 0) return false;
        c += r;
        n -= (size_t)r;
    }
    return true;
}

void write_exact(const void* p, size_t n) {
    const char* c = (const char*)p;
    while (n) {
        ssize_t r = write(g_out, c, n);
        if (r <= 0) _exit(2);
        c += r;
        n -= (size_t)r;
    }
}

struct Reader {
    const std::vector<char>& b;
    size_t at = 0;
    template <class T>
    T get() {
        T v{};
        if (at + sizeof(T) > b.size()) _exit(3);
        std::memcpy(&v, b.data() + at, sizeof(T));
        at += sizeof(T);
        return v;
    }
    std::vector<char> bytes(size_t n) {
        if (at + n > b.size()) _exit(3);
        std::vector<char> v(b.begin() + at, b.begin() + at + n);
        at += n;
        return v;
    }
};

void reply(unsigned char status, const std::string& body) {
    unsigned long long len = 1 + body.size();
    write_exact(&len, 8);
    write_exact(&status, 1);
    write_exact(body.data(), body.size());
}

struct Buf {
    void* p;
    size_t n;
};
std::unordered_map<unsigned long long, Buf> g_bufs;

const char* g_alarm_kernel = "";
void on_alarm(int) {
    char msg[512];
    int n = snprintf(msg, sizeof msg,
                     "cuda-cpu: launch of %s exceeded its time limit (a thread that never "
                     "reaches a barrier or shuffle?)\n",
                     g_alarm_kernel);
    if (n > 0) (void)!write(2, msg, (size_t)n);
    _exit(124);
}

std::string info() {
    std::string s;
    for (auto* e : cuemu::entries()) {
        s += cuemu::fmt("entry %s %s %u", e->name, e->file, e->max_threads);
        for (unsigned int i = 0; i < e->nparams; ++i)
            s += cuemu::fmt(" %u:%d", e->params[i].size, e->params[i].pointee);
        s += "\n";
    }
    for (auto* l : cuemu::layouts()) {
        s += cuemu::fmt("layout %s %s %zu %zu", l->name, l->file, l->size, l->align);
        for (unsigned int i = 0; i < l->nfields; ++i)
            s += cuemu::fmt(" %s:%zu:%zu:%d", l->fields[i].name, l->fields[i].offset,
                            l->fields[i].size, l->fields[i].is_float);
        s += "\n";
    }
    return s;
}

}  // namespace

int main() {
    g_out = dup(1);
    dup2(2, 1);
    signal(SIGALRM, on_alarm);
    std::vector<char> msg;
    for (;;) {
        unsigned long long len;
        if (!read_exact(&len, 8)) return 0;
        msg.resize(len);
        if (!read_exact(msg.data(), len)) return 0;
        Reader r{msg};
        const unsigned char op = r.get<unsigned char>();
        if (op == 1 || op == 2) {   // alloc / write: id, then data
            const auto id = r.get<unsigned long long>();
            if (op == 1) {
                const auto n = r.get<unsigned long long>();
                void* p = nullptr;
                if (posix_memalign(&p, 256, n ? n : 1) != 0) _exit(4);
                std::memset(p, 0, n);
                g_bufs[id] = {p, n};
            }
            auto it = g_bufs.find(id);
            if (it == g_bufs.end()) { reply(1, "no such buffer"); continue; }
            size_t rest = msg.size() - r.at;
            if (rest > it->second.n) { reply(1, "write past the end of a buffer"); continue; }
            std::memcpy(it->second.p, msg.data() + r.at, rest);
            reply(0, "");
        } else if (op == 3) {   // read
            auto it = g_bufs.find(r.get<unsigned long long>());
            if (it == g_bufs.end()) { reply(1, "no such buffer"); continue; }
            reply(0, std::string((const char*)it->second.p, it->second.n));
        } else if (op == 4) {   // free
            auto it = g_bufs.find(r.get<unsigned long long>());
            if (it != g_bufs.end()) {
                free(it->second.p);
                g_bufs.erase(it);
            }
            reply(0, "");
        } else if (op == 5) {   // launch
            auto name_len = r.get<unsigned int>();
            auto nb = r.bytes(name_len);
            std::string name(nb.begin(), nb.end());
            dim3 grid{r.get<unsigned int>(), r.get<unsigned int>(), r.get<unsigned int>()};
            dim3 block{r.get<unsigned int>(), r.get<unsigned int>(), r.get<unsigned int>()};
            auto smem = r.get<unsigned int>();
            auto sched = (cuemu::Schedule)r.get<unsigned int>();
            auto seed = r.get<unsigned long long>();
            auto timeout = r.get<unsigned int>();
            auto nargs = r.get<unsigned int>();
            std::vector<cuemu::Arg> args(nargs);
            std::string bad;
            for (auto& a : args) {
                a.is_buffer = r.get<unsigned char>() != 0;
                if (a.is_buffer) {
                    auto id = r.get<unsigned long long>();
                    a.elem = r.get<unsigned int>();
                    auto it = g_bufs.find(id);
                    if (it == g_bufs.end()) bad = "a pushed buffer does not exist";
                    else a.ptr = it->second.p;
                } else {
                    a.value = r.bytes(r.get<unsigned int>());
                }
            }
            if (!bad.empty()) { reply(1, bad); continue; }
            g_alarm_kernel = strdup(name.c_str());
            alarm(timeout);
            size_t static_smem = 0;
            std::string err = cuemu::launch(name, grid, block, smem, sched, seed, args, &static_smem);
            alarm(0);
            if (err.empty()) {
                unsigned long long s = static_smem;
                reply(0, std::string((const char*)&s, 8));
            } else {
                reply(1, err);
            }
        } else if (op == 6) {
            reply(0, info());
        } else {
            _exit(5);
        }
    }
}
