/*
 * fs_hist.c: log-linear latency histogram (HdrHistogram's bucket layout:
 * linear sub-buckets inside power-of-two octaves).
 */
#include "fs.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>

int fs_hist_init(fs_hist *h, int sub_bits, int max_bits)
{
    if (sub_bits < 2 || sub_bits > 16 || max_bits <= sub_bits || max_bits > 63)
        return -EINVAL;
    size_t half = (size_t)1 << (sub_bits - 1);
    size_t kmax = (size_t)(max_bits - sub_bits);
    h->sub_bits = sub_bits;
    h->max_bits = max_bits;
    h->nbuckets = (kmax + 2) * half;
    h->counts = calloc(h->nbuckets, sizeof(*h->counts));
    if (h->counts == NULL)
        return -ENOMEM;
    atomic_init(&h->total, 0);
    atomic_init(&h->sum, 0);
    atomic_init(&h->max, 0);
    atomic_init(&h->min, UINT64_MAX);
    return 0;
}

void fs_hist_free(fs_hist *h)
{
    free(h->counts);
    h->counts = NULL;
    h->nbuckets = 0;
}

void fs_hist_reset(fs_hist *h)
{
    for (size_t i = 0; i < h->nbuckets; i++)
        atomic_store_explicit(&h->counts[i], 0, memory_order_relaxed);
    atomic_store(&h->total, 0);
    atomic_store(&h->sum, 0);
    atomic_store(&h->max, 0);
    atomic_store(&h->min, UINT64_MAX);
}

size_t fs_hist_index(const fs_hist *h, uint64_t v)
{
    int s = h->sub_bits;
    uint64_t top = ((uint64_t)1 << h->max_bits) - 1;
    if (v > top)
        v = top;
    if (v < ((uint64_t)1 << s))
        return (size_t)v;
    int msb = 63 - __builtin_clzll(v);
    int k = msb - s + 1;
    return ((size_t)k << (s - 1)) + (size_t)(v >> k);
}

static int bucket_shift(const fs_hist *h, size_t idx)
{
    size_t half = (size_t)1 << (h->sub_bits - 1);
    if (idx < 2 * half)
        return 0;
    return (int)(idx / half) - 1;
}

uint64_t fs_hist_lowest(const fs_hist *h, size_t idx)
{
    int k = bucket_shift(h, idx);
    if (k == 0)
        return idx;
    size_t half = (size_t)1 << (h->sub_bits - 1);
    return (uint64_t)(idx - (size_t)k * half) << k;
}

uint64_t fs_hist_highest(const fs_hist *h, size_t idx)
{
    int k = bucket_shift(h, idx);
    return fs_hist_lowest(h, idx) + (((uint64_t)1 << k) - 1);
}

void fs_hist_record_n(fs_hist *h, uint64_t v, uint64_t n)
{
    if (n == 0)
        return;
    atomic_fetch_add_explicit(&h->counts[fs_hist_index(h, v)], n, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->total, n, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum, v * n, memory_order_relaxed);
    uint64_t cur = atomic_load_explicit(&h->max, memory_order_relaxed);
    while (v > cur && !atomic_compare_exchange_weak_explicit(&h->max, &cur, v,
                          memory_order_relaxed, memory_order_relaxed))
        ;
    cur = atomic_load_explicit(&h->min, memory_order_relaxed);
    while (v < cur && !atomic_compare_exchange_weak_explicit(&h->min, &cur, v,
                          memory_order_relaxed, memory_order_relaxed))
        ;
}

void fs_hist_record(fs_hist *h, uint64_t v)
{
    fs_hist_record_n(h, v, 1);
}

int fs_hist_merge(fs_hist *dst, const fs_hist *src)
{
    if (dst->sub_bits != src->sub_bits || dst->max_bits != src->max_bits)
        return -EINVAL;
    for (size_t i = 0; i < src->nbuckets; i++) {
        uint64_t c = atomic_load_explicit(&src->counts[i], memory_order_relaxed);
        if (c)
            atomic_fetch_add_explicit(&dst->counts[i], c, memory_order_relaxed);
    }
    atomic_fetch_add(&dst->total, atomic_load(&src->total));
    atomic_fetch_add(&dst->sum, atomic_load(&src->sum));
    uint64_t smax = atomic_load(&src->max), smin = atomic_load(&src->min);
    uint64_t cur = atomic_load(&dst->max);
    while (smax > cur && !atomic_compare_exchange_weak(&dst->max, &cur, smax))
        ;
    cur = atomic_load(&dst->min);
    while (smin < cur && !atomic_compare_exchange_weak(&dst->min, &cur, smin))
        ;
    return 0;
}

uint64_t fs_hist_count(const fs_hist *h)
{
    return atomic_load_explicit(&h->total, memory_order_relaxed);
}

uint64_t fs_hist_max(const fs_hist *h)
{
    return atomic_load_explicit(&h->max, memory_order_relaxed);
}

uint64_t fs_hist_min(const fs_hist *h)
{
    uint64_t m = atomic_load_explicit(&h->min, memory_order_relaxed);
    return m == UINT64_MAX ? 0 : m;
}

double fs_hist_mean(const fs_hist *h)
{
    uint64_t n = fs_hist_count(h);
    return n ? (double)atomic_load_explicit(&h->sum, memory_order_relaxed) / (double)n : 0.0;
}

uint64_t fs_hist_percentile(const fs_hist *h, double p)
{
    /* Sum the buckets rather than trusting total: concurrent recorders
     * bump a bucket before the total, so the walk always terminates. */
    uint64_t total = 0;
    for (size_t i = 0; i < h->nbuckets; i++)
        total += atomic_load_explicit(&h->counts[i], memory_order_relaxed);
    if (total == 0)
        return 0;
    if (p <= 0.0)
        return fs_hist_min(h);
    if (p > 100.0)
        p = 100.0;
    /* The epsilon keeps 99.9 % of 1000 at 999, not 1000 (binary fractions). */
    uint64_t want = (uint64_t)ceil(p / 100.0 * (double)total - 1e-9);
    if (want < 1)
        want = 1;
    if (want > total)
        want = total;
    uint64_t seen = 0, mx = fs_hist_max(h);
    for (size_t i = 0; i < h->nbuckets; i++) {
        seen += atomic_load_explicit(&h->counts[i], memory_order_relaxed);
        if (seen >= want) {
            uint64_t v = fs_hist_highest(h, i);
            return v < mx ? v : mx;
        }
    }
    return mx;
}
