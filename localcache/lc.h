/*
 * lc.h: the sharded in-process cache (localcache/).
 *
 * Entries map a key (1..LC_KEY_MAX bytes, e.g. an item's sku) to a small
 * value (bytes, copied in and copied out) with the version the value was
 * read at and an optional expiry. Every key also has a version floor: the
 * lowest version the cache still accepts for it. A floor rises with every
 * stored value and with lc_evict(); a fill carrying an older version is
 * refused with -ESTALE, so the cache never goes back to a version it already
 * knows was replaced.
 *
 * Threads. Every call except lc_new()/lc_free() may be made from any thread
 * at any time, concurrently. Reads (lc_get) take no lock and write no shared
 * memory on the hit path once a key is hot: they read the shard under a
 * sequence counter and retry if a writer changed the shard meanwhile. Writes
 * take the key's shard mutex for a short, bounded critical section. No call
 * blocks on anything but that mutex, none allocates after lc_new(), and none
 * calls back into the caller, so the calls are safe from coroutines of the
 * runtime (they never switch).
 *
 * Errors. Calls return 0 on success and a negative errno value on failure:
 *   -EINVAL   empty or over-long key, value over max_value_bytes, bad config,
 *             or a capacity too small to hold one entry of the largest size
 *   -ENOENT   miss (no value, or the value expired)
 *   -ENOSPC   the caller's buffer is too small (the needed size is returned)
 *   -ESTALE   a store refused: version below the key's floor, or the lease
 *             was cancelled by an evict (or expired and was handed to
 *             another caller)
 *   -EBUSY    another caller holds the key's fill lease
 *   -EEXIST   lc_lease_acquire: the key has a value now; read it instead
 *   -ENOMEM   lc_new could not allocate
 * lc_strerror() names them.
 *
 * Memory. capacity_bytes bounds everything lc_new() allocates: the entry
 * rings (headers, keys, values), the hash index, the ghost queue and the
 * floor sketch. Nothing is allocated afterwards. Entries are evicted with
 * S3-FIFO (see lc_policy.c for the argument and the measured hit ratios).
 */
#ifndef CACHESVC_LC_H
#define CACHESVC_LC_H

#include <stddef.h>
#include <stdint.h>

#include "kit/kit.h"

#ifdef __cplusplus
extern "C" {
#endif

#define LC_KEY_MAX 64

/* ttl_ms arguments: LC_TTL_DEFAULT uses the config's default_ttl_ms,
 * LC_TTL_NONE stores a value that never expires. */
#define LC_TTL_DEFAULT 0u
#define LC_TTL_NONE UINT32_MAX

typedef struct lc_cache lc_cache;

typedef struct lc_config {
    /* Number of shards, a power of two (0 means 16). Each shard has its own
     * mutex, sequence counter, index and rings. */
    unsigned shards;
    /* The memory bound in bytes, everything included. Required; at most
     * 16 GiB of records per shard. */
    size_t capacity_bytes;
    /* Largest value accepted (0 means 4096; at most 1 MiB). */
    size_t max_value_bytes;
    /* How long a floor set by lc_evict() is honoured at least, even if its
     * entry is evicted for room (0 means 10000). */
    uint32_t floor_ttl_ms;
    /* TTL of values stored with LC_TTL_DEFAULT (0 means they never expire). */
    uint32_t default_ttl_ms;
    /* How long a fill lease lasts before another caller may take it over
     * (0 means 2000). */
    uint32_t lease_ttl_ms;
    /* Milliseconds on a monotonic clock; NULL uses CLOCK_MONOTONIC_COARSE
     * (a few ms of granularity). Tests inject their own. Called from any
     * thread; must not block. lc_get calls it only for values that have an
     * expiry (and on misses); writes call it once. */
    uint64_t (*clock_ms)(void *ctx);
    void *clock_ctx;
} lc_config;

/* A fill lease: the right to fill one key after a miss, cancelled by any
 * lc_evict() of that key issued after it. Owned by the caller (plain data,
 * may be copied); the key is kept in it so that lc_fill needs nothing else. */
typedef struct lc_lease {
    uint64_t token;
    size_t klen;
    unsigned char key[LC_KEY_MAX];
} lc_lease;

/* Counters (monotonic) and gauges, declared once in the form X(name, help)
 * that the metrics kit (kit/metrics.h) renders. */
#define LC_STATS_COUNTERS(X)                                                   \
    X(hits, "lc_get found a live value")                                      \
    X(misses, "lc_get found none (absent, removed or expired)")               \
    X(sets, "Values stored by lc_set_if_newer or lc_fill")                    \
    X(refused_version, "Stores refused: older than the value cached")         \
    X(refused_floor, "Stores refused: older than the key's floor")            \
    X(refused_lease, "Fills refused: lease cancelled or taken over")          \
    X(removals, "Values removed by lc_evict")                                 \
    X(evictions, "Entries dropped to make room")                              \
    X(expirations, "Expired values dropped")                                  \
    X(leases, "Fill leases granted")                                          \
    X(lease_busy, "Lease requests answered -EBUSY")                           \
    X(floors_spilled, "Floors moved to the sketch when their entry left")
#define LC_STATS_GAUGES(X)                                                     \
    X(entries, "Keys with a value cached (expired ones included until they are dropped)") \
    X(records, "Keys with any state: value, floor or lease")                  \
    X(bytes, "Ring bytes held by those records")                              \
    X(mem_bytes, "Everything allocated by lc_new (at most the capacity)")     \
    X(capacity_bytes, "The configured bound")

typedef struct lc_stats {
    LC_STATS_COUNTERS(KIT_FIELD)
    LC_STATS_GAUGES(KIT_FIELD)
} lc_stats;

/* Creates a cache. On success *out owns it (free with lc_free). Returns
 * -EINVAL for a bad config (shards not a power of two, no capacity, a
 * max_value_bytes over 1 MiB, or a capacity that cannot hold one entry of
 * the largest size in each shard), -ENOMEM. */
int lc_new(const lc_config *cfg, lc_cache **out);

/* Frees the cache. No other call may run on it concurrently or after. */
void lc_free(lc_cache *c);

/* Looks key up. On a hit copies the value into buf (cap bytes), sets *vlen
 * and *version and returns 0. If cap is too small returns -ENOSPC with *vlen
 * and *version set and buf unspecified. On a miss returns -ENOENT and sets
 * *version to the key's floor (0 if none is known): a fill below it would be
 * refused, so the read path can skip a tier that holds an older copy.
 * Lock-free on the hit path, no allocation. vlen/version may be NULL. */
int lc_get(lc_cache *c, const void *key, size_t klen, void *buf, size_t cap,
           size_t *vlen, uint64_t *version);

/* Stores a copy of val at version unless version is below the key's floor
 * (which includes the version of the value cached): then -ESTALE. Equal
 * versions are accepted (they refresh the value and its TTL). The floor
 * rises to version. Returns 0, -ESTALE, -EINVAL. May evict other entries. */
int lc_set_if_newer(lc_cache *c, const void *key, size_t klen, const void *val,
                    size_t vlen, uint64_t version, uint32_t ttl_ms);

/* Raises key's floor to floor_version (kept at least floor_ttl_ms) and
 * removes the cached value if its version is below floor_version; a value
 * at or above the floor is not stale and stays. floor_version 0 removes the
 * value whatever its version (for an eviction whose version is unknown).
 * Cancels any outstanding fill lease of the key. Returns 0 or -EINVAL. */
int lc_evict(lc_cache *c, const void *key, size_t klen, uint64_t floor_version);

/* Asks for the key's fill lease after a miss. Returns 0 and fills *out: the
 * caller should fetch the value and call lc_fill (or lc_lease_release if it
 * gives up). -EBUSY: another caller holds a live lease; wait for its fill
 * (by the caller's own means) and read again. -EEXIST: a value is cached
 * now. -EINVAL: bad key. */
int lc_lease_acquire(lc_cache *c, const void *key, size_t klen, lc_lease *out);

/* Fills the leased key. Returns 0 if stored; -ESTALE if the lease was
 * cancelled by an lc_evict issued after it, or expired and was handed to
 * someone else, or version is below the floor; -EINVAL. The lease is used
 * up whatever the result. */
int lc_fill(lc_cache *c, const lc_lease *l, const void *val, size_t vlen,
            uint64_t version, uint32_t ttl_ms);

/* Gives a lease back without filling (the fetch failed), so another caller
 * can take it at once. Harmless if it was cancelled or used. */
void lc_lease_release(lc_cache *c, const lc_lease *l);

/* Forgets every key: values, floors (the sketch's too) and leases, so a
 * fill under a lease taken before returns -ESTALE and any version is
 * accepted afterwards. For when versions start over (a database restored
 * from a backup). Takes each shard's mutex in turn; readers see either
 * the old state or nothing. */
void lc_clear(lc_cache *c);

/* Sums the counters and gauges over all shards (briefly takes each shard's
 * mutex in turn; not for the hot path). */
void lc_stats_get(lc_cache *c, lc_stats *out);

/* One shard's counters and gauges; hits and misses are counted per thread,
 * not per shard, so they are reported as 0 here. shard < lc_shards(c). */
void lc_stats_shard(lc_cache *c, unsigned shard, lc_stats *out);
unsigned lc_shards(const lc_cache *c);

/* A static string naming an lc_* return code. */
const char *lc_strerror(int rc);

#ifdef __cplusplus
}
#endif
#endif
