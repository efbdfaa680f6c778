/*
 * lc_trace.h: workload tools shared by localcache's unit test and its
 * benchmark: a Zipf key generator, trace replay against lc_cache, and the
 * plain LRU that the hit ratio is compared with.
 */
#ifndef CACHESVC_LC_TRACE_H
#define CACHESVC_LC_TRACE_H

#include "localcache/lc.h"

#include <stddef.h>
#include <stdint.h>

/* Zipf(theta) over [0, n) by Gray et al.'s method (as in YCSB): rank 0 is
 * the most popular key. */
typedef struct lct_zipf {
    uint64_t n;
    double theta, alpha, zetan, eta, half_pow;
} lct_zipf;

void lct_zipf_init(lct_zipf *z, uint64_t n, double theta);
uint64_t lct_zipf_next(const lct_zipf *z, uint64_t *rng);

/* A uniform 64-bit step (splitmix64) and a double in [0, 1). */
uint64_t lct_rand(uint64_t *state);
double lct_rand01(uint64_t *state);

/* A trace of len key ranks; malloc'd, the caller frees it. NULL if out of
 * memory. */
uint32_t *lct_trace_new(uint64_t nkeys, size_t len, double theta, uint64_t seed);

/* Formats key id as the key bytes used everywhere ("item:" and 7 digits);
 * returns its length (12). */
size_t lct_key(uint32_t id, char buf[16]);

/* Replays trace against c: lc_get, and lc_set_if_newer of a vlen-byte
 * value on a miss. Returns the hit ratio. */
double lct_run_lc(lc_cache *c, const uint32_t *trace, size_t len, size_t vlen);

/* The bytes an LRU entry of this key and value costs: the record our cache
 * stores (header, key, value) plus the LRU's list links and hash chain
 * (24 bytes). The LRU is charged nothing else: no table, no allocator. */
size_t lct_lru_entry_bytes(size_t klen, size_t vlen);

/* Replays trace against a plain LRU holding at most capacity bytes of
 * entries of entry_bytes each. Returns the hit ratio, or -1 if out of
 * memory. */
double lct_run_lru(size_t capacity, size_t entry_bytes, const uint32_t *trace, size_t len,
                   uint64_t nkeys);

/* The hit-ratio experiment: a Zipf(theta) trace of len requests
 * over nkeys keys, replayed against lc_cache (16 shards) and the plain LRU,
 * both given 10% of the keys' bytes (nkeys / 10 records of vlen-byte
 * values). Returns 0, -ENOMEM or lc_new's error; *bytes gets the budget. */
int lct_hit_ratios(uint64_t nkeys, size_t len, double theta, size_t vlen, double *ours,
                   double *lru, size_t *bytes);

#endif
