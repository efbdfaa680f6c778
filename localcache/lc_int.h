/*
 * lc_int.h: localcache internals, shared by lc.c (the public calls) and
 * lc_policy.c (rings, index, S3-FIFO eviction, ghost queue, floor sketch).
 * Not for other folders.
 *
 * Layout of a shard. Records live in two byte rings, S (small, 10% of the
 * ring bytes) and M (main, 90%), never freed while the cache lives, so an
 * optimistic reader that follows a stale offset reads garbage at worst,
 * never freed memory; the shard's sequence counter tells it to retry.
 * A linear-probing index maps a key's hash to its record's ring offset.
 *
 * Concurrency. Writers hold the shard mutex and bracket every change that a
 * reader could see with lc__write_begin/lc__write_end (sequence odd while
 * changing). Readers take no lock: they load the sequence, read, and retry
 * if it moved. Every word that readers may load concurrently (ring words,
 * index slots, sketch slots) is accessed atomically (lc__ld/lc__st), as
 * C11 requires for a seqlock, which also keeps ThreadSanitizer quiet.
 * Functions named do_* expect the shard mutex held.
 */
#ifndef CACHESVC_LC_INT_H
#define CACHESVC_LC_INT_H

#include "localcache/lc.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>

#include "kit/kit.h"

#define LC_CACHELINE 64
#define LC_KEY_WORDS (LC_KEY_MAX / 8)
#define LC_VALUE_LIMIT (1u << 20)     /* max_value_bytes upper bound */
#define LC_STRIPES 64                 /* hit/miss counter stripes */

/* ---- records in a ring ------------------------------------------------- */

/* A record is LC_HDR_WORDS header words, the key padded with zeros to whole
 * words, then the value padded to whole words. Word 0 packs the record size
 * in bytes (24 bits), flags (8), key length (8) and value length (24). */
enum {
    LC_W_META = 0,
    LC_W_HASH,          /* the key's 64-bit hash */
    LC_W_VERSION,       /* version of the value (meaningful with LC_F_VALUE) */
    LC_W_FLOOR,         /* lowest version accepted; >= every version stored */
    LC_W_EXPIRE,        /* value expiry in clock ms, 0 = never */
    LC_W_FLOOR_EXPIRE,  /* until when the floor must survive eviction */
    LC_W_LEASE,         /* outstanding fill lease token, 0 = none */
    LC_W_LEASE_EXPIRE,  /* lease deadline in clock ms */
    LC_HDR_WORDS
};
#define LC_HDR_BYTES (LC_HDR_WORDS * 8)

enum {
    LC_F_VALUE = 1u << 0, /* the record holds a value */
    LC_F_DEAD = 1u << 1,  /* replaced or dropped: space for the tail to skip */
    LC_F_PAD = 1u << 2,   /* filler up to the ring's end */
};

static inline uint64_t lc__meta(uint32_t size, unsigned flags, size_t klen, size_t vlen)
{
    return (uint64_t)size | (uint64_t)(flags & 0xff) << 24 | (uint64_t)klen << 32 |
           (uint64_t)vlen << 40;
}
static inline uint32_t lc__meta_size(uint64_t m) { return (uint32_t)(m & 0xffffff); }
static inline unsigned lc__meta_flags(uint64_t m) { return (unsigned)(m >> 24) & 0xff; }
static inline size_t lc__meta_klen(uint64_t m) { return (size_t)(m >> 32) & 0xff; }
static inline size_t lc__meta_vlen(uint64_t m) { return (size_t)(m >> 40); }

static inline size_t lc__words(size_t bytes) { return (bytes + 7) / 8; }
static inline uint32_t lc__rec_size(size_t klen, size_t vlen)
{
    return (uint32_t)(LC_HDR_BYTES + 8 * lc__words(klen) + 8 * lc__words(vlen));
}

/* Atomic word access for everything readers may load concurrently. Loads
 * are acquire and stores release, which orders a reader's closing load of
 * the sequence after its data loads, and a writer's opening (odd) sequence
 * store before its data stores, without standalone fences (which
 * ThreadSanitizer does not model). On x86 both are plain moves. */
static inline uint64_t lc__ld(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline void lc__st(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }

/* ---- hashing ------------------------------------------------------------ */

/* Copies key into zeroed whole words (the form keys have in the ring) and
 * returns the number of words. */
static inline size_t lc__key_words(const void *key, size_t klen, uint64_t kw[LC_KEY_WORDS])
{
    size_t n = lc__words(klen);
    kw[n - 1] = 0;
    memcpy(kw, key, klen);
    return n;
}

static inline uint64_t lc__fmix(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}

/* The key's hash, never 0 (0 marks a wildcard in the floor sketch). */
static inline uint64_t lc__hash(const uint64_t *kw, size_t nkw, size_t klen)
{
    uint64_t h = 0x9e3779b97f4a7c15ull ^ klen;
    for (size_t i = 0; i < nkw; i++) {
        h ^= kw[i] * 0x87c37b91114253d5ull;
        h = (h << 31 | h >> 33) * 0x4cf5ad432745937full;
    }
    h = lc__fmix(h);
    return h ? h : 1;
}

/* ---- index slots -------------------------------------------------------- */

/* A slot is 64 bits: freq (2, the S3-FIFO access count, bumped by readers
 * with a CAS) | tag (30 bits of the hash, never 0) | loc (ring bit and the
 * record's offset in words, 32). 0 is an empty slot. */
#define LC_SLOT_FREQ_SHIFT 62
#define LC_SLOT_FREQ_ONE (1ull << LC_SLOT_FREQ_SHIFT)
#define LC_FREQ_MAX 3u
static inline uint64_t lc__tag(uint64_t h) { return ((h >> 32) & 0x3fffffffull) | 1; }
static inline uint64_t lc__slot(uint64_t h, uint32_t loc, unsigned freq)
{
    return (uint64_t)freq << LC_SLOT_FREQ_SHIFT | lc__tag(h) << 32 | loc;
}
static inline uint64_t lc__slot_tag(uint64_t s) { return (s >> 32) & 0x3fffffffull; }
static inline unsigned lc__slot_freq(uint64_t s) { return (unsigned)(s >> LC_SLOT_FREQ_SHIFT); }
static inline uint32_t lc__slot_loc(uint64_t s) { return (uint32_t)s; }
static inline uint32_t lc__loc(unsigned q, uint64_t off_words)
{
    return (uint32_t)q << 31 | (uint32_t)off_words;
}
static inline unsigned lc__loc_q(uint32_t loc) { return loc >> 31; }
static inline uint64_t lc__loc_off(uint32_t loc) { return loc & 0x7fffffffu; }

/* ---- shards ------------------------------------------------------------- */

enum { LC_Q_SMALL = 0, LC_Q_MAIN = 1 };

/* A FIFO of records in a byte ring. head/tail are byte offsets in
 * [0, cap); used counts the bytes between them, pads and dead records
 * included. Written only under the shard mutex. */
typedef struct lc_ring {
    uint64_t cap, head, tail, used;
    uint64_t live;       /* records in this ring that the index points to */
    uint64_t live_bytes; /* their bytes */
} lc_ring;

/* A floor sketch slot: floors of records dropped for room while the floor
 * had to survive. hash 0 is a wildcard covering every key of the bucket.
 * A slot is free once expired. */
typedef struct lc_sketch_slot {
    uint64_t hash, version, expire;
} lc_sketch_slot;
#define LC_SKETCH_WAYS 4
#define LC_GHOST_WAYS 4

/* Per-shard counters kept under the shard mutex (hits and misses are per
 * thread stripe, in lc_cache). */
typedef struct lc_shard_counters {
    LC_STATS_COUNTERS(KIT_FIELD)
} lc_shard_counters;

typedef struct lc_shard {
    /* First line: what readers load. seq is written by writers only. */
    _Alignas(LC_CACHELINE) _Atomic uint32_t seq;
    uint64_t *index;           /* islots slots */
    uint64_t islots;
    uint64_t *ring_words[2];   /* ring memory, cap / 8 words each */
    uint64_t ring_capw[2];     /* ring capacity in words */
    lc_sketch_slot *sketch;    /* (kmask + 1) * LC_SKETCH_WAYS slots */
    uint64_t kmask;

    /* Writer state, under mu, on lines of its own. */
    _Alignas(LC_CACHELINE) pthread_mutex_t mu;
    lc_ring ring[2];
    uint64_t icount, ilimit;   /* used index slots and the cap on them */
    uint64_t *ghost;           /* gbuckets * LC_GHOST_WAYS fingerprints */
    uint64_t gbuckets;
    uint32_t gseq;             /* ghost insertion counter */
    uint64_t next_token;       /* lease tokens */
    uint64_t entries;          /* records holding a value */
    lc_shard_counters n;
    struct lc_cache *cache;
} lc_shard;

typedef struct lc_stripe {
    _Alignas(LC_CACHELINE) _Atomic uint64_t hits;
    _Atomic uint64_t misses;
} lc_stripe;

struct lc_cache {
    lc_shard *shards;
    unsigned nshards, shard_shift;
    size_t max_value;
    uint32_t floor_ttl_ms, default_ttl_ms, lease_ttl_ms;
    uint64_t (*clock_ms)(void *ctx);
    void *clock_ctx;
    size_t mem_bytes, capacity;
    size_t block_bytes;        /* each shard's allocation */
    lc_stripe *stripes;        /* LC_STRIPES */
    bool locked_reads;         /* benchmark knob: lc_get takes the mutex */
};

static inline lc_shard *lc__shard(lc_cache *c, uint64_t h)
{
    return &c->shards[c->shard_shift >= 64 ? 0 : h >> c->shard_shift];
}

static inline uint64_t lc__now(const lc_cache *c) { return c->clock_ms(c->clock_ctx); }

static inline void lc__write_begin(lc_shard *sh)
{
    uint32_t s = atomic_load_explicit(&sh->seq, memory_order_relaxed);
    atomic_store_explicit(&sh->seq, s + 1, memory_order_relaxed);
}
static inline void lc__write_end(lc_shard *sh)
{
    uint32_t s = atomic_load_explicit(&sh->seq, memory_order_relaxed);
    atomic_store_explicit(&sh->seq, s + 1, memory_order_release);
}

/* A hash's home slot (the multiply-shift range reduction of its low 32
 * bits, so the index need not be a power of two) and the next slot. */
static inline uint64_t lc__home(const lc_shard *sh, uint64_t h)
{
    return ((h & 0xffffffffull) * sh->islots) >> 32;
}
static inline uint64_t lc__next(const lc_shard *sh, uint64_t i)
{
    return i + 1 == sh->islots ? 0 : i + 1;
}

static inline uint64_t *lc__rec(const lc_shard *sh, uint32_t loc)
{
    return sh->ring_words[lc__loc_q(loc)] + lc__loc_off(loc);
}

/* ---- lc_policy.c: the writer side, all under the shard mutex ------------ */

/* Sizes a shard's structures for ring_bytes of total record space; returns
 * the bytes the shard needs beyond the rings (index, ghost, sketch). */
size_t lc__shard_overhead(size_t shard_bytes, size_t *index_slots, size_t *ghost_buckets,
                          size_t *sketch_buckets, size_t *ring_bytes);

/* Finds key's slot; returns its index or -1. */
int64_t do_index_find(const lc_shard *sh, uint64_t h, const uint64_t *kw, size_t nkw,
                      size_t klen);

/* Floor recorded in the sketch for h (0 if none); callable by readers
 * (atomic loads) and writers. *expire gets the latest expiry found. */
uint64_t lc__sketch_floor(const lc_shard *sh, uint64_t h, uint64_t now, uint64_t *expire);
/* Whether one sketch slot covering h holds a floor of at least floor
 * until at least until. */
bool lc__sketch_covers(const lc_shard *sh, uint64_t h, uint64_t floor, uint64_t until);

/* What a writer wants a key's record to become. */
typedef struct lc_recstate {
    unsigned flags;           /* LC_F_VALUE or 0 */
    const void *val;
    size_t vlen;
    uint64_t version, floor, expire, floor_expire, lease, lease_expire;
} lc_recstate;

/* Reads the state held by the record at slot i (value pointer excluded). */
void do_rec_state(const lc_shard *sh, int64_t i, lc_recstate *st);

/* Makes key's record hold st (st->val is copied when st->flags has
 * LC_F_VALUE): in place if the record is large enough, else as a new record (in the old record's queue, or
 * for a new key in M if the ghost remembers it, else in S). Evicts others
 * for room as needed. Caller brackets it with write_begin/end. slot is the
 * key's current slot or -1. */
void do_rec_put(lc_shard *sh, int64_t slot, uint64_t h, const uint64_t *kw, size_t klen,
                const lc_recstate *st, uint64_t now);

/* Rewrites the header of the record at slot i from st, value untouched;
 * st may remove the value (clear LC_F_VALUE) but not add one. Caller
 * brackets it with write_begin/end. */
void do_rec_meta(lc_shard *sh, int64_t i, const lc_recstate *st);

/* Drops the record at slot i now (no space reclaimed until the tail passes
 * it). Caller brackets it with write_begin/end. */
void do_rec_drop(lc_shard *sh, int64_t i);

/* Verifies a cache's invariants (index against rings, byte and record
 * counts); 0 or -EFAULT. For tests; takes each shard's mutex. */
int lc__check(lc_cache *c);

#endif
