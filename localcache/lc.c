/*
 * lc.c: localcache's public calls. The read path (lc_get) is an optimistic
 * seqlock reader; every other call takes the key's shard mutex and hands
 * the record changes to lc_policy.c.
 */
#include "kit/kit.h"
#include "localcache/lc_int.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define lc_cpu_relax() _mm_pause()
#elif defined(__aarch64__)
#define lc_cpu_relax() __asm__ __volatile__("yield" ::: "memory")
#else
#define lc_cpu_relax() ((void)0)
#endif

/* Optimistic read attempts before a reader takes the shard mutex, so that
 * a reader never spins long behind a writer that was descheduled. */
#define LC_READ_SPINS 64

/* ---- lifetime ----------------------------------------------------------- */

static uint64_t default_clock_ms(void *ctx)
{
    (void)ctx;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static bool is_pow2(unsigned x) { return x && !(x & (x - 1)); }

static void *alloc_aligned(size_t size)
{
    void *p = NULL;
    if (posix_memalign(&p, LC_CACHELINE, size) != 0)
        return NULL;
    memset(p, 0, size);
    return p;
}

/* A shard's block (index, ghost, sketch, rings), zeroed. Large blocks are
 * mapped directly and asked for transparent huge pages: lookups land on
 * random lines of the index and rings, and with 4 KiB pages nearly every
 * one of them would also miss the TLB. */
#define LC_MAP_MIN (2u << 20)

static void *block_alloc(size_t size)
{
    if (size < LC_MAP_MIN)
        return calloc(1, size);
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
#ifdef MADV_HUGEPAGE
    (void)madvise(p, size, MADV_HUGEPAGE); /* advice only: fine if refused */
#endif
    return p;
}

static void block_free(void *p, size_t size)
{
    if (size < LC_MAP_MIN)
        free(p);
    else if (p)
        munmap(p, size);
}

int lc_new(const lc_config *cfg, lc_cache **out)
{
    int rc = 0;
    lc_cache *c = NULL;
    unsigned nshards = cfg->shards ? cfg->shards : 16;
    size_t max_value = cfg->max_value_bytes ? cfg->max_value_bytes : 4096;
    size_t fixed, shard_bytes, islots, gbuckets, kbuckets, ring_bytes, over;

    *out = NULL;
    if (!is_pow2(nshards) || nshards > (1u << 16) || cfg->capacity_bytes == 0 ||
        max_value > LC_VALUE_LIMIT)
        return -EINVAL;
    fixed = sizeof(lc_cache) + nshards * sizeof(lc_shard) + LC_STRIPES * sizeof(lc_stripe);
    if (cfg->capacity_bytes <= fixed)
        return -EINVAL;
    shard_bytes = (cfg->capacity_bytes - fixed) / nshards;
    over = lc__shard_overhead(shard_bytes, &islots, &gbuckets, &kbuckets, &ring_bytes);
    /* S gets 10% of the ring bytes and must hold the largest record; ring
     * offsets are 31-bit word counts (more shards for more than 16 GiB). */
    size_t small = (ring_bytes / 10) & ~(size_t)7;
    if (small < lc__rec_size(LC_KEY_MAX, max_value) || ring_bytes / 8 >= (1ull << 31))
        return -EINVAL;

    if ((c = calloc(1, sizeof(*c))) == NULL)
        return -ENOMEM;
    c->nshards = nshards;
    c->shard_shift = 64 - (unsigned)__builtin_ctz(nshards);
    c->max_value = max_value;
    c->floor_ttl_ms = cfg->floor_ttl_ms ? cfg->floor_ttl_ms : 10000;
    c->default_ttl_ms = cfg->default_ttl_ms;
    c->lease_ttl_ms = cfg->lease_ttl_ms ? cfg->lease_ttl_ms : 2000;
    c->clock_ms = cfg->clock_ms ? cfg->clock_ms : default_clock_ms;
    c->clock_ctx = cfg->clock_ms ? cfg->clock_ctx : NULL;
    c->capacity = cfg->capacity_bytes;
    c->block_bytes = over + ring_bytes;
    c->mem_bytes = fixed + nshards * c->block_bytes;
    if ((c->shards = alloc_aligned(nshards * sizeof(lc_shard))) == NULL ||
        (c->stripes = alloc_aligned(LC_STRIPES * sizeof(lc_stripe))) == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    for (unsigned s = 0; s < nshards; s++) {
        lc_shard *sh = &c->shards[s];
        /* One block per shard: index, ghost, sketch, then the rings. */
        unsigned char *mem = block_alloc(over + ring_bytes);
        if (mem == NULL) {
            rc = -ENOMEM;
            goto out;
        }
        pthread_mutex_init(&sh->mu, NULL);
        sh->cache = c;
        sh->index = (uint64_t *)mem;
        sh->islots = islots;
        sh->ilimit = islots * 85 / 100;
        sh->ghost = sh->index + islots;
        sh->gbuckets = gbuckets;
        sh->sketch = (lc_sketch_slot *)(sh->ghost + gbuckets * LC_GHOST_WAYS);
        sh->kmask = kbuckets - 1;
        sh->ring_words[LC_Q_SMALL] = (uint64_t *)(mem + over);
        sh->ring_words[LC_Q_MAIN] = sh->ring_words[LC_Q_SMALL] + small / 8;
        sh->ring[LC_Q_SMALL].cap = small;
        sh->ring[LC_Q_MAIN].cap = ring_bytes - small;
        sh->ring_capw[LC_Q_SMALL] = small / 8;
        sh->ring_capw[LC_Q_MAIN] = (ring_bytes - small) / 8;
        sh->next_token = 1;
    }
    *out = c;
    c = NULL;
out:
    lc_free(c);
    return rc;
}

void lc_free(lc_cache *c)
{
    if (c == NULL)
        return;
    if (c->shards) {
        for (unsigned s = 0; s < c->nshards; s++) {
            if (c->shards[s].index) {
                pthread_mutex_destroy(&c->shards[s].mu);
                block_free(c->shards[s].index, c->block_bytes);
            }
        }
    }
    free(c->shards);
    free(c->stripes);
    free(c);
}

unsigned lc_shards(const lc_cache *c) { return c->nshards; }

/* ---- reads -------------------------------------------------------------- */

/* The calling thread's counter stripe. Kept out of line: it is the only
 * thread-local access, and the runtime's rule is that a thread-local's
 * address must not be cached across a coroutine switch (lc_* never switch,
 * so reading it afresh on every call is enough). */
static _Atomic unsigned next_stripe;
static __thread unsigned thread_stripe = UINT_MAX;

__attribute__((noinline)) static lc_stripe *my_stripe(lc_cache *c)
{
    if (thread_stripe == UINT_MAX)
        thread_stripe = atomic_fetch_add_explicit(&next_stripe, 1, memory_order_relaxed) % LC_STRIPES;
    return &c->stripes[thread_stripe];
}

/* Adds one to a stripe counter. A plain load and store, not a locked
 * read-modify-write: a stripe belongs to one thread unless more than
 * LC_STRIPES threads use the cache, and then a count may be lost, which
 * statistics can afford. */
static inline void stripe_inc(_Atomic uint64_t *n)
{
    atomic_store_explicit(n, atomic_load_explicit(n, memory_order_relaxed) + 1,
                          memory_order_relaxed);
}

typedef struct lc_read {
    uint64_t *slotp;    /* the key's index slot, on a hit */
    uint64_t slot;      /* its value when read */
    uint64_t version;   /* value version (hit, -ENOSPC) or floor (miss) */
    size_t vlen;
} lc_read;

/* One optimistic pass over the shard: finds key and copies its value out.
 * Everything it loads may be torn by a concurrent writer, so every length
 * and offset is bounds-checked before use; the caller discards the result
 * unless the shard's sequence did not move. */
static int read_pass(lc_cache *c, const lc_shard *sh, uint64_t h, const uint64_t *kw,
                     size_t nkw, size_t klen, void *buf, size_t cap, lc_read *rd)
{
    uint64_t tag = lc__tag(h);
    uint64_t i = lc__home(sh, h);
    for (uint64_t n = 0; n < sh->islots; n++, i = lc__next(sh, i)) {
        uint64_t s = lc__ld(&sh->index[i]);
        if (s == 0)
            break;
        if (lc__slot_tag(s) != tag)
            continue;
        uint32_t loc = lc__slot_loc(s);
        unsigned q = lc__loc_q(loc);
        uint64_t off = lc__loc_off(loc);
        if (off + LC_HDR_WORDS + nkw > sh->ring_capw[q])
            continue;
        const uint64_t *r = sh->ring_words[q] + off;
        uint64_t m = lc__ld(&r[LC_W_META]);
        if (lc__meta_klen(m) != klen || lc__ld(&r[LC_W_HASH]) != h)
            continue;
        size_t w = 0;
        while (w < nkw && lc__ld(&r[LC_HDR_WORDS + w]) == kw[w])
            w++;
        if (w < nkw)
            continue;

        uint64_t exp = lc__ld(&r[LC_W_EXPIRE]);
        if (!(lc__meta_flags(m) & LC_F_VALUE) || (exp && exp <= lc__now(c))) {
            rd->version = lc__ld(&r[LC_W_FLOOR]);
            return -ENOENT;
        }
        size_t vlen = lc__meta_vlen(m), nvw = lc__words(vlen);
        rd->slotp = &sh->index[i];
        rd->slot = s;
        rd->version = lc__ld(&r[LC_W_VERSION]);
        rd->vlen = vlen;
        if (vlen > cap)
            return -ENOSPC;
        if (off + LC_HDR_WORDS + nkw + nvw > sh->ring_capw[q])
            return -EAGAIN; /* torn: retried */
        const uint64_t *vw = r + LC_HDR_WORDS + nkw;
        unsigned char *out = buf;
        size_t full = vlen / 8;
        for (size_t k = 0; k < full; k++) {
            uint64_t x = lc__ld(&vw[k]);
            memcpy(out + 8 * k, &x, 8);
        }
        if (vlen % 8) {
            uint64_t x = lc__ld(&vw[full]);
            memcpy(out + 8 * full, &x, vlen % 8);
        }
        return 0;
    }
    rd->version = lc__sketch_floor(sh, h, lc__now(c), NULL);
    return -ENOENT;
}

int lc_get(lc_cache *c, const void *key, size_t klen, void *buf, size_t cap, size_t *vlen,
           uint64_t *version)
{
    uint64_t kw[LC_KEY_WORDS];
    lc_read rd = {0};
    int rc;

    if (klen == 0 || klen > LC_KEY_MAX)
        return -EINVAL;
    size_t nkw = lc__key_words(key, klen, kw);
    uint64_t h = lc__hash(kw, nkw, klen);
    lc_shard *sh = lc__shard(c, h);

    for (unsigned attempt = c->locked_reads ? LC_READ_SPINS : 0;; attempt++) {
        if (attempt >= LC_READ_SPINS) {
            pthread_mutex_lock(&sh->mu);
            rc = read_pass(c, sh, h, kw, nkw, klen, buf, cap, &rd);
            pthread_mutex_unlock(&sh->mu);
            break;
        }
        uint32_t s1 = atomic_load_explicit(&sh->seq, memory_order_acquire);
        if (s1 & 1) {
            lc_cpu_relax();
            continue;
        }
        rc = read_pass(c, sh, h, kw, nkw, klen, buf, cap, &rd);
        if (atomic_load_explicit(&sh->seq, memory_order_relaxed) == s1 && rc != -EAGAIN)
            break;
    }
    KIT_ASSERT(rc != -EAGAIN);

    lc_stripe *st = my_stripe(c);
    if (rc == -ENOENT) {
        stripe_inc(&st->misses);
    } else {
        stripe_inc(&st->hits);
        /* S3-FIFO's access count: written only until it saturates, so a
         * hot key's slot stays read-only. The CAS fails harmlessly if a
         * writer changed the slot since it was read. */
        if (lc__slot_freq(rd.slot) < LC_FREQ_MAX)
            __atomic_compare_exchange_n(rd.slotp, &rd.slot, rd.slot + LC_SLOT_FREQ_ONE, false,
                                        __ATOMIC_RELAXED, __ATOMIC_RELAXED);
    }
    if (vlen && rc != -ENOENT)
        *vlen = rd.vlen;
    if (version)
        *version = rd.version;
    return rc;
}

/* ---- writes ------------------------------------------------------------- */

static uint64_t expiry(const lc_cache *c, uint32_t ttl_ms, uint64_t now)
{
    if (ttl_ms == LC_TTL_DEFAULT)
        ttl_ms = c->default_ttl_ms ? c->default_ttl_ms : LC_TTL_NONE;
    return ttl_ms == LC_TTL_NONE ? 0 : now + ttl_ms;
}

/* A write call's view of its key: the locked shard, the key's words and
 * hash, its slot (-1 if no record) and the record's state. */
typedef struct lc_wctx {
    lc_shard *sh;
    uint64_t kw[LC_KEY_WORDS];
    size_t nkw, klen;
    uint64_t h, now;
    int64_t slot;
    lc_recstate st;
} lc_wctx;

/* Validates key, locks its shard and loads its state (for a key without a
 * record: no value and the floor the sketch remembers). */
static int wctx_open(lc_cache *c, const void *key, size_t klen, lc_wctx *w)
{
    if (klen == 0 || klen > LC_KEY_MAX)
        return -EINVAL;
    w->klen = klen;
    w->nkw = lc__key_words(key, klen, w->kw);
    w->h = lc__hash(w->kw, w->nkw, klen);
    w->sh = lc__shard(c, w->h);
    w->now = lc__now(c);
    pthread_mutex_lock(&w->sh->mu);
    w->slot = do_index_find(w->sh, w->h, w->kw, w->nkw, klen);
    if (w->slot >= 0) {
        do_rec_state(w->sh, w->slot, &w->st);
    } else {
        memset(&w->st, 0, sizeof(w->st));
        w->st.floor = lc__sketch_floor(w->sh, w->h, w->now, &w->st.floor_expire);
    }
    return 0;
}

static void wctx_close(lc_wctx *w) { pthread_mutex_unlock(&w->sh->mu); }

/* Writes w->st's header fields to the key's record (a new value-less
 * record if the key has none). */
static void wctx_put_meta(lc_wctx *w)
{
    lc__write_begin(w->sh);
    if (w->slot >= 0)
        do_rec_meta(w->sh, w->slot, &w->st);
    else
        do_rec_put(w->sh, -1, w->h, w->kw, w->klen, &w->st, w->now);
    lc__write_end(w->sh);
}

static bool has_live_value(const lc_recstate *st, uint64_t now)
{
    return (st->flags & LC_F_VALUE) && !(st->expire && st->expire <= now);
}

/* Stores val at version in the open key unless refused by its floor. */
static int do_store(lc_cache *c, lc_wctx *w, const void *val, size_t vlen, uint64_t version,
                    uint32_t ttl_ms)
{
    KIT_ASSERT_LOCKED(&w->sh->mu);
    lc_shard *sh = w->sh;
    lc_recstate *st = &w->st;
    if (version < st->floor) {
        if ((st->flags & LC_F_VALUE) && version < st->version)
            sh->n.refused_version++;
        else
            sh->n.refused_floor++;
        return -ESTALE;
    }
    st->flags = LC_F_VALUE;
    st->val = val;
    st->vlen = vlen;
    st->version = version;
    st->floor = version;
    st->expire = expiry(c, ttl_ms, w->now);
    lc__write_begin(sh);
    do_rec_put(sh, w->slot, w->h, w->kw, w->klen, st, w->now);
    lc__write_end(sh);
    sh->n.sets++;
    return 0;
}

int lc_set_if_newer(lc_cache *c, const void *key, size_t klen, const void *val, size_t vlen,
                    uint64_t version, uint32_t ttl_ms)
{
    lc_wctx w;
    int rc;
    if (vlen > c->max_value || (val == NULL && vlen > 0))
        return -EINVAL;
    if ((rc = wctx_open(c, key, klen, &w)) < 0)
        return rc;
    rc = do_store(c, &w, val, vlen, version, ttl_ms);
    wctx_close(&w);
    return rc;
}

int lc_evict(lc_cache *c, const void *key, size_t klen, uint64_t floor_version)
{
    lc_wctx w;
    int rc = wctx_open(c, key, klen, &w);
    if (rc < 0)
        return rc;
    lc_recstate *st = &w.st;
    /* Nothing cached, and the sketch holds this floor at least as long as
     * the evict would: nothing to raise or renew. (An evict whose floor
     * the sketch held at its version, but for less time, used to stop
     * here, and the floor expired a lifetime after the first evict.) */
    if (w.slot < 0 && (floor_version == 0 ||
                       lc__sketch_covers(w.sh, w.h, floor_version, w.now + c->floor_ttl_ms)))
        goto out;
    if ((st->flags & LC_F_VALUE) && (floor_version == 0 || st->version < floor_version)) {
        st->flags = 0;
        w.sh->n.removals++;
    }
    if (floor_version > st->floor)
        st->floor = floor_version;
    if (w.now + c->floor_ttl_ms > st->floor_expire)
        st->floor_expire = w.now + c->floor_ttl_ms;
    st->lease = 0;
    wctx_put_meta(&w);
out:
    wctx_close(&w);
    return 0;
}

int lc_lease_acquire(lc_cache *c, const void *key, size_t klen, lc_lease *out)
{
    lc_wctx w;
    int rc;
    if ((rc = wctx_open(c, key, klen, &w)) < 0)
        return rc;
    lc_shard *sh = w.sh;
    lc_recstate *st = &w.st;
    if (has_live_value(st, w.now)) {
        rc = -EEXIST;
        goto out;
    }
    if (st->lease && st->lease_expire > w.now) {
        sh->n.lease_busy++;
        rc = -EBUSY;
        goto out;
    }
    st->lease = sh->next_token++;
    st->lease_expire = w.now + c->lease_ttl_ms;
    wctx_put_meta(&w);
    sh->n.leases++;
    out->token = st->lease;
    out->klen = klen;
    memcpy(out->key, key, klen);
out:
    wctx_close(&w);
    return rc;
}

int lc_fill(lc_cache *c, const lc_lease *l, const void *val, size_t vlen, uint64_t version,
            uint32_t ttl_ms)
{
    lc_wctx w;
    int rc;
    if (vlen > c->max_value || (val == NULL && vlen > 0) || l->klen > LC_KEY_MAX)
        return -EINVAL;
    if ((rc = wctx_open(c, l->key, l->klen, &w)) < 0)
        return rc;
    lc_shard *sh = w.sh;
    if (w.slot < 0 || w.st.lease != l->token) {
        sh->n.refused_lease++;
        rc = -ESTALE;
        goto out;
    }
    w.st.lease = 0;
    if ((rc = do_store(c, &w, val, vlen, version, ttl_ms)) < 0)
        wctx_put_meta(&w); /* refused: the lease is used up all the same */
out:
    wctx_close(&w);
    return rc;
}

void lc_lease_release(lc_cache *c, const lc_lease *l)
{
    lc_wctx w;
    if (l->klen > LC_KEY_MAX || wctx_open(c, l->key, l->klen, &w) < 0)
        return;
    if (w.slot >= 0 && w.st.lease == l->token) {
        w.st.lease = 0;
        lc__write_begin(w.sh);
        if (!(w.st.flags & LC_F_VALUE) && w.st.floor_expire <= w.now)
            do_rec_drop(w.sh, w.slot); /* it only held the lease */
        else
            do_rec_meta(w.sh, w.slot, &w.st);
        lc__write_end(w.sh);
    }
    wctx_close(&w);
}

void lc_clear(lc_cache *c)
{
    for (unsigned s = 0; s < c->nshards; s++) {
        lc_shard *sh = &c->shards[s];
        pthread_mutex_lock(&sh->mu);
        lc__write_begin(sh);
        for (uint64_t i = 0; i < sh->islots; i++)
            lc__st(&sh->index[i], 0);
        for (uint64_t i = 0; i < (sh->kmask + 1) * LC_SKETCH_WAYS; i++) {
            lc__st(&sh->sketch[i].hash, 0);
            lc__st(&sh->sketch[i].version, 0);
            lc__st(&sh->sketch[i].expire, 0);
        }
        memset(sh->ghost, 0, sh->gbuckets * LC_GHOST_WAYS * sizeof(*sh->ghost));
        for (int q = 0; q < 2; q++) {
            lc_ring *r = &sh->ring[q];
            r->head = r->tail = r->used = r->live = r->live_bytes = 0;
        }
        sh->icount = 0;
        sh->entries = 0;
        lc__write_end(sh);
        pthread_mutex_unlock(&sh->mu);
    }
}

/* ---- stats -------------------------------------------------------------- */

static void add_shard(lc_shard *sh, lc_stats *out)
{
    pthread_mutex_lock(&sh->mu);
#define LC_ADD_(name, help) out->name += sh->n.name;
    LC_STATS_COUNTERS(LC_ADD_)
#undef LC_ADD_
    out->entries += sh->entries;
    out->records += sh->icount;
    out->bytes += sh->ring[LC_Q_SMALL].live_bytes + sh->ring[LC_Q_MAIN].live_bytes;
    pthread_mutex_unlock(&sh->mu);
}

void lc_stats_get(lc_cache *c, lc_stats *out)
{
    memset(out, 0, sizeof(*out));
    for (unsigned s = 0; s < c->nshards; s++)
        add_shard(&c->shards[s], out);
    out->hits = out->misses = 0;
    for (unsigned i = 0; i < LC_STRIPES; i++) {
        out->hits += atomic_load_explicit(&c->stripes[i].hits, memory_order_relaxed);
        out->misses += atomic_load_explicit(&c->stripes[i].misses, memory_order_relaxed);
    }
    out->mem_bytes = c->mem_bytes;
    out->capacity_bytes = c->capacity;
}

void lc_stats_shard(lc_cache *c, unsigned shard, lc_stats *out)
{
    memset(out, 0, sizeof(*out));
    if (shard < c->nshards)
        add_shard(&c->shards[shard], out);
    out->mem_bytes = c->mem_bytes / c->nshards;
    out->capacity_bytes = c->capacity / c->nshards;
}

const char *lc_strerror(int rc)
{
    switch (rc) {
    case 0: return "ok";
    case -EINVAL: return "invalid argument (key, value size or config)";
    case -ENOENT: return "not cached";
    case -ENOSPC: return "buffer too small for the value";
    case -ESTALE: return "refused: version below the key's floor or lease cancelled";
    case -EBUSY: return "another caller holds the fill lease";
    case -EEXIST: return "a value is cached";
    case -ENOMEM: return "out of memory";
    default: return "unknown localcache error";
    }
}
