/*
 * kit.h: what every layer needs and none owns: the sku rule, the string
 * hash and the wall clock. Header only, depends on nothing, so that every
 * module (localcache and the tests included) can use it.
 */
#ifndef KIT_KIT_H
#define KIT_KIT_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#ifdef __cplusplus
extern "C" {
#endif

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
