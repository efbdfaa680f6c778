/*
 * lc_trace.c: Zipf traces, their replay against lc_cache and a plain LRU.
 */
#include "tests/bench/localcache/lc_trace.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

uint64_t lct_rand(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

double lct_rand01(uint64_t *state) { return (double)(lct_rand(state) >> 11) * 0x1.0p-53; }

void lct_zipf_init(lct_zipf *z, uint64_t n, double theta)
{
    double zetan = 0, zeta2 = 1.0 + pow(0.5, theta);
    for (uint64_t i = 1; i <= n; i++)
        zetan += 1.0 / pow((double)i, theta);
    z->n = n;
    z->theta = theta;
    z->zetan = zetan;
    z->alpha = 1.0 / (1.0 - theta);
    z->eta = (1.0 - pow(2.0 / (double)n, 1.0 - theta)) / (1.0 - zeta2 / zetan);
    z->half_pow = 1.0 + pow(0.5, theta);
}

uint64_t lct_zipf_next(const lct_zipf *z, uint64_t *rng)
{
    double u = lct_rand01(rng), uz = u * z->zetan;
    if (uz < 1.0)
        return 0;
    if (uz < z->half_pow)
        return 1;
    uint64_t r = (uint64_t)((double)z->n * pow(z->eta * u - z->eta + 1.0, z->alpha));
    return r < z->n ? r : z->n - 1;
}

uint32_t *lct_trace_new(uint64_t nkeys, size_t len, double theta, uint64_t seed)
{
    uint32_t *t = malloc(len * sizeof(*t));
    if (t == NULL)
        return NULL;
    lct_zipf z;
    lct_zipf_init(&z, nkeys, theta);
    for (size_t i = 0; i < len; i++)
        t[i] = (uint32_t)lct_zipf_next(&z, &seed);
    return t;
}

size_t lct_key(uint32_t id, char buf[16])
{
    memcpy(buf, "item:", 5);
    for (int i = 11; i >= 5; i--) {
        buf[i] = (char)('0' + id % 10);
        id /= 10;
    }
    buf[12] = 0;
    return 12;
}

double lct_run_lc(lc_cache *c, const uint32_t *trace, size_t len, size_t vlen)
{
    unsigned char val[4096], out[4096];
    size_t hits = 0, got;
    char key[16];
    memset(val, 'v', sizeof(val));
    for (size_t i = 0; i < len; i++) {
        size_t kl = lct_key(trace[i], key);
        if (lc_get(c, key, kl, out, sizeof(out), &got, NULL) == 0)
            hits++;
        else
            lc_set_if_newer(c, key, kl, val, vlen, 1, LC_TTL_NONE);
    }
    return (double)hits / (double)len;
}

size_t lct_lru_entry_bytes(size_t klen, size_t vlen)
{
    return 64 + (klen + 7) / 8 * 8 + (vlen + 7) / 8 * 8 + 24;
}

double lct_run_lru(size_t capacity, size_t entry_bytes, const uint32_t *trace, size_t len,
                   uint64_t nkeys)
{
    size_t max = capacity / entry_bytes, count = 0, hits = 0;
    int32_t *where = malloc(nkeys * sizeof(*where));
    int32_t *prev = malloc(max * sizeof(*prev)), *next = malloc(max * sizeof(*next));
    uint32_t *id = malloc(max * sizeof(*id));
    double ratio = -1;
    int32_t head = -1, tail = -1;
    if (!where || !prev || !next || !id || max == 0)
        goto out;
    memset(where, 0xff, nkeys * sizeof(*where));
    for (size_t i = 0; i < len; i++) {
        uint32_t k = trace[i];
        int32_t n = where[k];
        if (n >= 0) {
            hits++;
            if (n == head)
                continue;
            /* unlink, then push to the front */
            next[prev[n]] = next[n];
            if (next[n] >= 0)
                prev[next[n]] = prev[n];
            else
                tail = prev[n];
        } else if (count < max) {
            n = (int32_t)count++;
        } else {
            n = tail;
            where[id[n]] = -1;
            tail = prev[n];
            if (tail >= 0)
                next[tail] = -1;
            else
                head = -1;
        }
        id[n] = k;
        where[k] = n;
        prev[n] = -1;
        next[n] = head;
        if (head >= 0)
            prev[head] = n;
        head = n;
        if (tail < 0)
            tail = n;
    }
    ratio = (double)hits / (double)len;
out:
    free(where);
    free(prev);
    free(next);
    free(id);
    return ratio;
}

int lct_hit_ratios(uint64_t nkeys, size_t len, double theta, size_t vlen, double *ours,
                   double *lru, size_t *bytes)
{
    int rc = 0;
    lc_cache *c = NULL;
    uint32_t *trace = lct_trace_new(nkeys, len, theta, 7);
    size_t capacity = nkeys / 10 * (64 + 16 + (vlen + 7) / 8 * 8);
    lc_config cfg = {.shards = 16, .capacity_bytes = capacity, .max_value_bytes = 256};
    if (trace == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    if ((rc = lc_new(&cfg, &c)) < 0)
        goto out;
    *ours = lct_run_lc(c, trace, len, vlen);
    *lru = lct_run_lru(capacity, lct_lru_entry_bytes(12, vlen), trace, len, nkeys);
    *bytes = capacity;
    if (*lru < 0)
        rc = -ENOMEM;
out:
    lc_free(c);
    free(trace);
    return rc;
}
