/*
 * event.c: the invalidation event's JSON codec and the latency histograms.
 *
 * The event has a fixed shape, so it is written with one snprintf and read
 * with a small strict scanner instead of a general JSON library: the
 * consumers decode every message, and a message from the network is never
 * trusted (the fuzz target fuzz_inv_event feeds this parser).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "invalidator/inv_int.h"
#include "kit/kit.h"

int inv__event_encode(const inv_event *ev, char *buf, size_t cap)
{
    if (ev->purge_at_ms > 0) {
        int n = snprintf(buf, cap, "{\"purge_at_ms\":%" PRId64 "}", ev->purge_at_ms);
        return n < 0 || (size_t)n >= cap ? -ENOSPC : n;
    }
    if (!kit_sku_valid(ev->sku, ev->sku_len) || ev->version < 0 ||
        ev->committed_at_ms < 0 || ev->due_at_ms < 0)
        return -EINVAL;
    if (ev->has_item && (ev->item.stock < 0 || ev->item.per_user_limit < 0 ||
                         ev->item.sale_starts_at_ms < 0))
        return -EINVAL;
    int n;
    if (ev->has_item)
        n = snprintf(buf, cap,
                     "{\"sku\":\"%.*s\",\"version\":%" PRId64
                     ",\"committed_at_ms\":%" PRId64 ",\"due_at_ms\":%" PRId64
                     ",\"stock\":%" PRId64 ",\"per_user_limit\":%" PRId64
                     ",\"sale_starts_at_ms\":%" PRId64 "}",
                     (int)ev->sku_len, ev->sku, ev->version, ev->committed_at_ms,
                     ev->due_at_ms, ev->item.stock, ev->item.per_user_limit,
                     ev->item.sale_starts_at_ms);
    else
        n = snprintf(buf, cap,
                     "{\"sku\":\"%.*s\",\"version\":%" PRId64
                     ",\"committed_at_ms\":%" PRId64 ",\"due_at_ms\":%" PRId64
                     "}",
                     (int)ev->sku_len, ev->sku, ev->version,
                     ev->committed_at_ms, ev->due_at_ms);
    if (n < 0 || (size_t)n >= cap)
        return -ENOSPC;
    return n;
}

/* The scanner: p walks buf up to end. Each helper returns false on bad
 * input and leaves p anywhere. */
typedef struct scan {
    const char *p, *end;
} scan;

static void skip_ws(scan *s)
{
    while (s->p < s->end &&
           (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
        s->p++;
}

static bool expect(scan *s, char c)
{
    skip_ws(s);
    if (s->p >= s->end || *s->p != c)
        return false;
    s->p++;
    return true;
}

/* A string without escapes (neither keys nor skus need any); *str and *len
 * point into the buffer. */
static bool scan_string(scan *s, const char **str, size_t *len)
{
    if (!expect(s, '"'))
        return false;
    const char *start = s->p;
    while (s->p < s->end && *s->p != '"') {
        unsigned char c = (unsigned char)*s->p;
        if (c == '\\' || c < 0x20)
            return false;
        s->p++;
    }
    if (s->p >= s->end)
        return false;
    *str = start;
    *len = (size_t)(s->p - start);
    s->p++;
    return true;
}

/* A non-negative JSON integer that fits int64 (no sign, fraction or
 * exponent, no leading zeros). */
static bool scan_int(scan *s, int64_t *out)
{
    skip_ws(s);
    const char *start = s->p;
    int64_t v = 0;
    while (s->p < s->end && *s->p >= '0' && *s->p <= '9') {
        int d = *s->p - '0';
        if (v > (INT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
        s->p++;
    }
    size_t n = (size_t)(s->p - start);
    if (n == 0 || (n > 1 && *start == '0'))
        return false;
    if (s->p < s->end && (*s->p == '.' || *s->p == 'e' || *s->p == 'E'))
        return false;
    *out = v;
    return true;
}

static bool key_is(const char *k, size_t n, const char *lit)
{
    return strlen(lit) == n && memcmp(k, lit, n) == 0;
}

int inv__event_decode(const char *buf, size_t n, inv_event *ev)
{
    scan s = {buf, buf + n};
    enum {
        F_SKU = 1, F_VER = 2, F_COMMIT = 4, F_DUE = 8, F_ALL = 15, F_PURGE = 16,
        F_STOCK = 32, F_LIMIT = 64, F_START = 128, F_ITEM = 224,
    };
    int seen = 0;

    memset(ev, 0, sizeof(*ev));
    if (!expect(&s, '{'))
        return -EINVAL;
    skip_ws(&s);
    if (s.p < s.end && *s.p == '}')
        return -EINVAL;           /* empty object: keys are required */
    for (;;) {
        const char *k;
        size_t klen;
        if (!scan_string(&s, &k, &klen) || !expect(&s, ':'))
            return -EINVAL;
        int bit = 0;
        int64_t *num = NULL;
        if (key_is(k, klen, "sku")) {
            bit = F_SKU;
        } else if (key_is(k, klen, "version")) {
            bit = F_VER;
            num = &ev->version;
        } else if (key_is(k, klen, "committed_at_ms")) {
            bit = F_COMMIT;
            num = &ev->committed_at_ms;
        } else if (key_is(k, klen, "due_at_ms")) {
            bit = F_DUE;
            num = &ev->due_at_ms;
        } else if (key_is(k, klen, "stock")) {
            bit = F_STOCK;
            num = &ev->item.stock;
        } else if (key_is(k, klen, "per_user_limit")) {
            bit = F_LIMIT;
            num = &ev->item.per_user_limit;
        } else if (key_is(k, klen, "sale_starts_at_ms")) {
            bit = F_START;
            num = &ev->item.sale_starts_at_ms;
        } else if (key_is(k, klen, "purge_at_ms")) {
            bit = F_PURGE;
            num = &ev->purge_at_ms;
        }
        if (bit & seen)
            return -EINVAL;       /* a key given twice */
        seen |= bit;
        if (bit == F_SKU) {
            const char *v;
            size_t vlen;
            if (!scan_string(&s, &v, &vlen) || !kit_sku_valid(v, vlen))
                return -EINVAL;
            memcpy(ev->sku, v, vlen);
            ev->sku[vlen] = '\0';
            ev->sku_len = vlen;
        } else if (num != NULL) {
            if (!scan_int(&s, num))
                return -EINVAL;
        } else {
            /* Unknown key: a string or an integer value is skipped. */
            skip_ws(&s);
            const char *v;
            size_t vlen;
            int64_t iv;
            if (s.p < s.end && *s.p == '"') {
                if (!scan_string(&s, &v, &vlen))
                    return -EINVAL;
            } else if (!scan_int(&s, &iv)) {
                return -EINVAL;
            }
        }
        skip_ws(&s);
        if (s.p < s.end && *s.p == ',') {
            s.p++;
            continue;
        }
        if (!expect(&s, '}'))
            return -EINVAL;
        break;
    }
    skip_ws(&s);
    if (s.p != s.end)
        return -EINVAL;
    if (seen == F_PURGE)
        return ev->purge_at_ms > 0 ? 0 : -EINVAL;
    /* The item's row comes whole (stock, limit, sale start) or not at all:
     * an event without it (an older writer, or broadcast_mode evict) only
     * evicts. */
    if ((seen & F_ITEM) != 0 && (seen & F_ITEM) != F_ITEM)
        return -EINVAL;
    ev->has_item = (seen & F_ITEM) == F_ITEM;
    if ((seen & ~F_ITEM) != F_ALL)
        return -EINVAL;
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Histograms                                                               */

int inv__hist_index(int64_t ms)
{
    if (ms < 64)
        return ms < 0 ? 0 : (int)ms;
    int k = 63 - __builtin_clzll((unsigned long long)ms);   /* >= 6 */
    if (k > 19)
        return INV_HIST_BUCKETS - 1;
    int sub = (int)((ms >> (k - 4)) & 15);
    return 64 + (k - 6) * 16 + sub;
}

int64_t inv__hist_bucket_hi(int idx)
{
    if (idx < 64)
        return idx;
    int k = 6 + (idx - 64) / 16;
    int sub = (idx - 64) % 16;
    int64_t lo = (int64_t)(16 + sub) << (k - 4);
    return lo + ((int64_t)1 << (k - 4)) - 1;
}

void inv__hist_add(inv_hist *h, int64_t ms)
{
    if (ms < 0)
        ms = 0;
    __atomic_fetch_add(&h->b[inv__hist_index(ms)], 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&h->sum_ms, (uint64_t)ms, __ATOMIC_RELAXED);
    __atomic_fetch_add(&h->count, 1, __ATOMIC_RELAXED);
}

void inv__hist_copy(inv_hist *dst, const inv_hist *src)
{
    uint64_t total = 0;
    for (int i = 0; i < INV_HIST_BUCKETS; i++) {
        dst->b[i] = __atomic_load_n(&src->b[i], __ATOMIC_RELAXED);
        total += dst->b[i];
    }
    /* The count is the sum of what was copied, so the copy is coherent
     * even while samples are being added. */
    dst->count = total;
    dst->sum_ms = __atomic_load_n(&src->sum_ms, __ATOMIC_RELAXED);
}

int64_t inv_hist_quantile(const inv_hist *h, double q)
{
    uint64_t total = 0;
    for (int i = 0; i < INV_HIST_BUCKETS; i++)
        total += h->b[i];
    if (total == 0)
        return 0;
    if (q < 0)
        q = 0;
    if (q > 1)
        q = 1;
    uint64_t rank = (uint64_t)(q * (double)total + 0.5);
    if (rank < 1)
        rank = 1;
    uint64_t seen = 0;
    for (int i = 0; i < INV_HIST_BUCKETS; i++) {
        seen += h->b[i];
        if (seen >= rank)
            return inv__hist_bucket_hi(i);
    }
    return inv__hist_bucket_hi(INV_HIST_BUCKETS - 1);
}

uint64_t inv_hist_count_le(const inv_hist *h, int64_t le_ms)
{
    uint64_t n = 0;
    for (int i = 0; i < INV_HIST_BUCKETS && inv__hist_bucket_hi(i) <= le_ms;
         i++)
        n += h->b[i];
    return n;
}
