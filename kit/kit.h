/*
 * kit.h: what every layer needs and none owns: invariants, the sku rule,
 * the string hash and the wall clock. Header only, depends on nothing, so
 * that every module (localcache and the tests included) can use it.
 */
#ifndef KIT_KIT_H
#define KIT_KIT_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Invariants. KIT_ASSERT holds in every build (a cheap check whose failure
 * means the process can no longer be trusted: it aborts with the file,
 * line and condition on stderr, for the core dump and the supervisor's
 * restart). KIT_DASSERT is the costly kind, compiled only into builds with
 * KIT_DEBUG_CHECKS (Debug and the sanitizer builds); elsewhere its
 * condition is not evaluated. KIT_PANIC is the unconditional failure. */
__attribute__((noreturn, cold)) static inline void kit_panic(const char *file, int line,
                                                            const char *what)
{
    fprintf(stderr, "cachesvc: panic at %s:%d: %s\n", file, line, what);
    fflush(stderr);
    abort();
}

#define KIT_PANIC(what) kit_panic(__FILE__, __LINE__, (what))
#define KIT_ASSERT(cond)                                                      \
    do {                                                                      \
        if (__builtin_expect(!(cond), 0))                                     \
            kit_panic(__FILE__, __LINE__, "assertion failed: " #cond);        \
    } while (0)
#ifdef KIT_DEBUG_CHECKS
#define KIT_DASSERT(cond) KIT_ASSERT(cond)
#else
#define KIT_DASSERT(cond) ((void)sizeof(!(cond)))
#endif

/* For the do_* functions that must run under a lock: 1 when m is locked
 * (by anyone; a caller that forgot the lock finds it free). It takes and
 * drops the lock when free, so it is a KIT_DASSERT check:
 * KIT_ASSERT_LOCKED(&st->lock). */
static inline int kit_mutex_locked(pthread_mutex_t *m)
{
    if (pthread_mutex_trylock(m) != 0)
        return 1;
    pthread_mutex_unlock(m);
    return 0;
}
#define KIT_ASSERT_LOCKED(m) KIT_DASSERT(kit_mutex_locked(m))

/* Metrics lists (kit/metrics.h): a module declares its metrics once as an
 * X-macro of the form X(name, help); KIT_METRIC makes a line a kit_metric,
 * KIT_FIELD a uint64_t field of a stats struct. Here, not in metrics.h, so
 * that modules which depend on nothing (localcache, the runtime) can
 * declare their lists in that form too. */
typedef struct kit_metric {
    const char *name;
    const char *help;
} kit_metric;
#define KIT_METRIC(name, help) {#name, help},
#define KIT_FIELD(name, help) uint64_t name;

/* Skus, user ids and idempotency-key-like identifiers: 1 to KIT_SKU_MAX
 * bytes of [A-Za-z0-9._:-]. Buffers that hold one are KIT_SKU_MAX + 1. */
#define KIT_SKU_MAX 64

/* 1 when s[0..n) is a valid identifier (see KIT_SKU_MAX), else 0. */
static inline int kit_ident_valid(const char *s, size_t n, size_t max)
{
    if (n < 1 || n > max)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == ':' || c == '-'))
            return 0;
    }
    return 1;
}

static inline int kit_sku_valid(const char *s, size_t n)
{
    return kit_ident_valid(s, n, KIT_SKU_MAX);
}

/* 64-bit FNV-1a of p[0..n): the string hash of every table in the tree
 * (not for anything an attacker may choose to collide on unbounded). */
#define KIT_HASH_INIT 14695981039346656037ull
static inline uint64_t kit_hash_more(uint64_t h, const void *p, size_t n)
{
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++) {
        h ^= s[i];
        h *= 1099511628211ull;
    }
    return h;
}

static inline uint64_t kit_hash(const void *p, size_t n)
{
    return kit_hash_more(KIT_HASH_INIT, p, n);
}

/* Milliseconds since the epoch (CLOCK_REALTIME): commit times, due times
 * and anything compared across processes. Durations use a monotonic
 * clock instead. */
static inline int64_t kit_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

#ifdef __cplusplus
}
#endif
#endif /* KIT_KIT_H */
