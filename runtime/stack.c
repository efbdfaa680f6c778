/*
 * stack.c: coroutine stacks. Each stack is one mmap: a guard page at the
 * bottom, the usable stack, and the coroutine's own struct at the top, so a
 * spawn from the pool costs no allocation at all. Default-size stacks are
 * pooled per worker up to cfg.stack_pool_max; past it half a pool at a
 * time moves to a global pool (up to cfg.stack_pool_global_max), which
 * empty worker pools refill from, and past that they go back to the OS.
 * The global pool is large because connections take and give back a
 * stack per burst of requests: 512 connections waiting on a database batch
 * together would otherwise map and unmap hundreds of stacks per batch (an
 * unmap is a TLB shootdown on every CPU). Its memory is bounded by
 * rt__stack_trim() instead: about once a second it gives the touched
 * pages of the stacks past the first stack_pool_max / 4 back, and unmaps
 * those it trimmed the time before and nobody took since.
 *
 * Guard pages cost two memory mappings per stack and Linux caps a process
 * at vm.max_map_count mappings (65530 by default), so only the first
 * guard_budget live stacks get a PROT_NONE guard page. The others keep the
 * same page as an untouched spacer, and the stack pointer saved at every
 * switch away from them is checked against it: an overflow is reported
 * after the fact (at the next switch) instead of at the faulting access,
 * and a neighbour is safe only from overflows smaller than the spacer.
 * (A canary word at the bottom would cost a resident page per coroutine.)
 */
#include "runtime/rt_int.h"

#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define RT_HAVE_VALGRIND 1
#endif
#endif

#define RT_CO_SIZE ((sizeof(rt_co) + 63) & ~(size_t)63)

extern void rt__trampoline(void);

static struct sigaction old_segv;

#if defined(RT_TSAN)
/* TSan fibers are costly to create (each carries a large shadow stack that
 * is zeroed), so the fibers of unmapped stacks are kept for new stacks.
 * Under stack_lock. */
typedef struct { void *fiber; unsigned uses; } fiber_slot;
static fiber_slot fiber_pool[4096];
static size_t fiber_pool_len;

static void fiber_get(rt_co *co)
{
    pthread_mutex_lock(&rt__rt.stack_lock);
    if (fiber_pool_len) {
        fiber_pool_len--;
        co->tsan_fiber = fiber_pool[fiber_pool_len].fiber;
        co->tsan_uses = fiber_pool[fiber_pool_len].uses;
        pthread_mutex_unlock(&rt__rt.stack_lock);
        return;
    }
    pthread_mutex_unlock(&rt__rt.stack_lock);
    co->tsan_fiber = __tsan_create_fiber(0);
    co->tsan_uses = 0;
}

static void fiber_put(rt_co *co)
{
    pthread_mutex_lock(&rt__rt.stack_lock);
    if (fiber_pool_len < sizeof fiber_pool / sizeof fiber_pool[0]) {
        fiber_pool[fiber_pool_len].fiber = co->tsan_fiber;
        fiber_pool[fiber_pool_len].uses = co->tsan_uses;
        fiber_pool_len++;
        co->tsan_fiber = NULL;
    }
    pthread_mutex_unlock(&rt__rt.stack_lock);
    if (co->tsan_fiber)
        __tsan_destroy_fiber(co->tsan_fiber);
    co->tsan_fiber = NULL;
}

static void fiber_pool_drain(void)
{
    while (fiber_pool_len)
        __tsan_destroy_fiber(fiber_pool[--fiber_pool_len].fiber);
}
#endif

static size_t round_page(size_t n)
{
    return (n + rt__rt.page_size - 1) & ~(rt__rt.page_size - 1);
}

static size_t read_max_map_count(void)
{
    FILE *f = fopen("/proc/sys/vm/max_map_count", "r");
    unsigned long v = 65530;
    if (f) {
        if (fscanf(f, "%lu", &v) != 1)
            v = 65530;
        fclose(f);
    }
    return v;
}

int rt__stacks_init(void)
{
    rt_runtime *rt = &rt__rt;
    size_t maps = read_max_map_count();
    rt->page_size = (size_t)sysconf(_SC_PAGESIZE);
    rt->default_map = rt->page_size + round_page(rt->cfg.stack_size + RT_CO_SIZE);
    rt->guard_budget = maps > 16384 ? (maps - 16384) / 2 : 0;
    rt->all_stacks = NULL;
    rt->guarded_stacks = 0;
    rt->global_pool = NULL;
    rt->global_pool_len = 0;
    pthread_mutex_init(&rt->stack_lock, NULL);
    return 0;
}

static void stack_unmap(rt_co *co)
{
    rt_runtime *rt = &rt__rt;
    pthread_mutex_lock(&rt->stack_lock);
    if (co->all_prev) co->all_prev->all_next = co->all_next;
    else rt->all_stacks = co->all_next;
    if (co->all_next) co->all_next->all_prev = co->all_prev;
    if (co->guarded) rt->guarded_stacks--;
    pthread_mutex_unlock(&rt->stack_lock);
#if defined(RT_HAVE_VALGRIND)
    VALGRIND_STACK_DEREGISTER(co->vg_id);
#endif
#if defined(RT_TSAN)
    if (co->tsan_fiber)
        fiber_put(co);
#endif
    char *base = co->map_base;
    size_t size = co->map_size;
#if defined(RT_ASAN)
    __asan_unpoison_memory_region(base, size);
#endif
    munmap(base, size);
}

/* Prepares a pooled stack for its next coroutine. Under ASan the previous
 * coroutine's frames may still be poisoned in the shadow (a coroutine that
 * ends never unwinds its stack), which would make the next one report false
 * stack-buffer errors; the stack is cleared in the shadow first. */
static inline rt_co *stack_reuse(rt_co *co)
{
#if defined(RT_ASAN)
    __asan_unpoison_memory_region(co->map_base, co->map_size);
#endif
    return co;
}

/* rt__stack_alloc() (rt_int.h) past its fast path. */
rt_co *rt__stack_alloc_slow(rt_worker *w, size_t stack_size)
{
    rt_runtime *rt = &rt__rt;
    rt_co *co;
    int pooled = stack_size == 0 || stack_size == rt->cfg.stack_size;

    if (pooled) {
        if (w && w->pool) {
            co = w->pool;
            w->pool = co->next;
            RT_STAT_ADD(w->pool_len, -1);
            return stack_reuse(co);
        }
        {
            /* Take one stack from the global pool and, for a worker, up to
             * half a local pool more in the same lock: a worker that spawns
             * what others run (the poller starting rt_fd_await handlers)
             * would otherwise map a stack per spawn while theirs unmap. */
            size_t batch = w ? rt->cfg.stack_pool_max / 2 : 0;
            pthread_mutex_lock(&rt->stack_lock);
            co = rt->global_pool;
            if (co) {
                rt->global_pool = co->next;
                rt->global_pool_len--;
                while (batch-- > 0 && rt->global_pool) {
                    rt_co *more = rt->global_pool;
                    rt->global_pool = more->next;
                    rt->global_pool_len--;
                    more->next = w->pool;
                    w->pool = more;
                    RT_STAT_ADD(w->pool_len, 1);
                }
            }
            pthread_mutex_unlock(&rt->stack_lock);
            if (co)
                return stack_reuse(co);
        }
        stack_size = rt->cfg.stack_size;
    }
    size_t map_size = rt->page_size + round_page(stack_size + RT_CO_SIZE);
    char *base = mmap(NULL, map_size, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (base == MAP_FAILED)
        return NULL;
    co = (rt_co *)(base + map_size - RT_CO_SIZE);
    memset(co, 0, sizeof(*co));
    co->map_base = base;
    co->map_size = map_size;
    co->pool_class = pooled;

    pthread_mutex_lock(&rt->stack_lock);
    if (rt->guarded_stacks < rt->guard_budget &&
        mprotect(base, rt->page_size, PROT_NONE) == 0) {
        co->guarded = 1;
        rt->guarded_stacks++;
    }
    co->all_prev = NULL;
    co->all_next = rt->all_stacks;
    if (rt->all_stacks) rt->all_stacks->all_prev = co;
    rt->all_stacks = co;
    pthread_mutex_unlock(&rt->stack_lock);

    char *lo = base + rt->page_size;
    co->stack_size = (size_t)((char *)co - lo);
#if defined(RT_HAVE_VALGRIND)
    co->vg_id = VALGRIND_STACK_REGISTER(lo, (char *)co);
#endif
#if defined(RT_TSAN)
    /* One TSan fiber per stack, reused by the coroutines that run on it
     * (creating one per spawn makes 1,000,000 spawns take minutes). */
    fiber_get(co);
#endif
    return co;
}

/* rt__stack_free() (rt_int.h) past its fast path. */
void rt__stack_free_slow(rt_worker *w, rt_co *co)
{
    rt_runtime *rt = &rt__rt;
    if (co->pool_class) {
        if (w && w->pool_len < rt->cfg.stack_pool_max) {
            co->next = w->pool;
            w->pool = co;
            RT_STAT_ADD(w->pool_len, 1);
            return;
        }
        /* The worker's pool is full (or a foreign thread frees): co and,
         * from a worker, half of its pool go to the global pool in one
         * lock, up to stack_pool_global_max in all; the rest is
         * unmapped. */
        size_t cap = rt->cfg.stack_pool_global_max;
        size_t batch = w ? rt->cfg.stack_pool_max / 2 : 0;
        pthread_mutex_lock(&rt->stack_lock);
        if (rt->global_pool_len < cap) {
            co->cold = 0;
            co->next = rt->global_pool;
            rt->global_pool = co;
            rt->global_pool_len++;
            while (batch-- > 0 && w->pool && rt->global_pool_len < cap) {
                rt_co *more = w->pool;
                w->pool = more->next;
                RT_STAT_ADD(w->pool_len, -1);
                more->cold = 0;
                more->next = rt->global_pool;
                rt->global_pool = more;
                rt->global_pool_len++;
            }
            pthread_mutex_unlock(&rt->stack_lock);
            return;
        }
        pthread_mutex_unlock(&rt->stack_lock);
    }
    stack_unmap(co);
}

void rt__stack_trim(void)
{
    rt_runtime *rt = &rt__rt;
    size_t keep = rt->cfg.stack_pool_max / 4, i = 0;
    rt_co *gone = NULL, **link;
    pthread_mutex_lock(&rt->stack_lock);
    for (link = &rt->global_pool; *link != NULL; i++) {
        rt_co *co = *link;
        if (i < keep) {
            link = &co->next;
            continue;
        }
        if (co->cold) {
            /* Trimmed at the last pass and not taken since: unmapped, so
             * neither its struct's page nor its mapping outlives a burst.
             * Only stacks idle for a second go this way: a pool unmapping
             * on every free made a TLB shootdown per connection. */
            *link = co->next;
            rt->global_pool_len--;
            co->next = gone;
            gone = co;
            continue;
        }
        /* Everything below the page that holds the struct (and, at the
         * next spawn, the first frame); the guard page stays as it is. */
        char *lo = co->map_base + rt->page_size;
        char *hi = (char *)((uintptr_t)co & ~(uintptr_t)(rt->page_size - 1));
        if (hi > lo)
            madvise(lo, (size_t)(hi - lo), MADV_DONTNEED);
        co->cold = 1;
        link = &co->next;
    }
    pthread_mutex_unlock(&rt->stack_lock);
    while (gone != NULL) {
        rt_co *co = gone;
        gone = co->next;
        stack_unmap(co);
    }
}

/* Shutdown: every stack the runtime mapped, pooled or still in use by a
 * parked coroutine, goes back to the OS. */
void rt__stack_release_all(void)
{
    rt_runtime *rt = &rt__rt;
    while (rt->all_stacks)
        stack_unmap(rt->all_stacks);
    for (int i = 0; i < rt->nworkers; i++) {
        rt->workers[i].pool = NULL;
        rt->workers[i].pool_len = 0;
    }
    rt->global_pool = NULL;
    rt->global_pool_len = 0;
}

void rt__stacks_fini(void)
{
    rt__stack_release_all();
#if defined(RT_TSAN)
    fiber_pool_drain();
#endif
    pthread_mutex_destroy(&rt__rt.stack_lock);
}

/* Reports an overflow of an unguarded stack: its saved stack pointer
 * reached the spacer page. */
void rt__stack_check_unguarded(rt_co *co)
{
    if ((char *)co->sp < co->map_base + rt__rt.page_size + 256)
        rt__panic("rt: stack overflow in coroutine %llu (%s): stack of %zu bytes "
                  "(unguarded stack, found at a switch)\n",
                  (unsigned long long)co->id, co->name ? co->name : "?", co->stack_size);
}

/* Builds the initial frame so that the first switch into co "returns" into
 * rt__trampoline, which calls entry(co). */
void rt__co_prepare(rt_co *co, void (*entry)(rt_co *))
{
    uintptr_t top = (uintptr_t)co & ~(uintptr_t)15;
#if defined(__x86_64__)
    uint64_t *sp = (uint64_t *)(top - 64);
    uint32_t fpctl[2] = {0x1F80, 0x037F};  /* MXCSR, x87 control word */
    memcpy(&sp[0], fpctl, 8);
    sp[1] = 0;                            /* r15 */
    sp[2] = 0;                            /* r14 */
    sp[3] = 0;                            /* r13 */
    sp[4] = (uint64_t)(uintptr_t)entry;   /* r12 */
    sp[5] = (uint64_t)(uintptr_t)co;      /* rbx */
    sp[6] = 0;                            /* rbp */
    sp[7] = (uint64_t)(uintptr_t)rt__trampoline;
    co->sp = sp;
#elif defined(__aarch64__)
    uint64_t *sp = (uint64_t *)(top - 176);
    memset(sp, 0, 176);
    sp[0] = (uint64_t)(uintptr_t)co;      /* x19 */
    sp[1] = (uint64_t)(uintptr_t)entry;   /* x20 */
    sp[11] = (uint64_t)(uintptr_t)rt__trampoline; /* x30 */
    co->sp = sp;
#else
#error "rt: no context switch for this architecture"
#endif
}

/* SIGSEGV on the alternate stack: a fault inside the running coroutine's
 * guard page is a stack overflow; anything else goes to the previous
 * handler (or the default action) by returning into the fault again. */
static void segv_handler(int sig, siginfo_t *si, void *uctx)
{
    rt_worker *w = rt__cur_worker();
    rt_co *co = w ? w->cur : NULL;
    char *addr = si->si_addr;
    if (co && co->guarded && addr >= co->map_base - 65536 &&
        addr < co->map_base + rt__rt.page_size) {
        char msg[256];
        int n = snprintf(msg, sizeof msg,
                         "rt: stack overflow in coroutine %llu (%s): stack of %zu bytes, "
                         "fault at %p\n",
                         (unsigned long long)co->id, co->name ? co->name : "?",
                         co->stack_size, (void *)addr);
        if (n > 0 && write(2, msg, (size_t)n) < 0) { /* nothing to do */ }
        signal(SIGABRT, SIG_DFL);
        abort();
    }
    if (old_segv.sa_flags & SA_SIGINFO) {
        if (old_segv.sa_sigaction) {
            old_segv.sa_sigaction(sig, si, uctx);
            return;
        }
    } else if (old_segv.sa_handler != SIG_DFL && old_segv.sa_handler != SIG_IGN) {
        old_segv.sa_handler(sig);
        return;
    }
    signal(SIGSEGV, SIG_DFL);
}

int rt__altstack_init(rt_worker *w)
{
    size_t sz = 64 * 1024;
    stack_t ss;
    w->altstack = malloc(sz);
    if (!w->altstack)
        return -ENOMEM;
    ss.ss_sp = w->altstack;
    ss.ss_size = sz;
    ss.ss_flags = 0;
    if (sigaltstack(&ss, NULL) != 0) {
        free(w->altstack);
        w->altstack = NULL;
        return 0;
    }
    return 0;
}

/* Installs the overflow reporter unless it is installed already (a test
 * harness may have replaced it since the last start). */
void rt__segv_install(void)
{
    struct sigaction cur;
    if (sigaction(SIGSEGV, NULL, &cur) == 0 && (cur.sa_flags & SA_SIGINFO) &&
        cur.sa_sigaction == segv_handler)
        return;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = segv_handler;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &old_segv);
}

void rt__altstack_fini(rt_worker *w)
{
    if (!w->altstack)
        return;
    stack_t ss;
    memset(&ss, 0, sizeof ss);
    ss.ss_flags = SS_DISABLE;
    sigaltstack(&ss, NULL);
    free(w->altstack);
    w->altstack = NULL;
}
