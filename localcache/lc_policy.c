/*
 * lc_policy.c: the writer side of a shard: the index, the two record rings,
 * S3-FIFO eviction, the ghost queue and the floor sketch. Everything here
 * runs under the shard mutex, inside lc__write_begin/lc__write_end.
 *
 * Why S3-FIFO (Yang et al., SOSP'23). A new key enters the small FIFO S
 * (10% of the bytes). When it reaches S's tail it moves to the main FIFO M
 * if it was read since it entered, else it leaves and its fingerprint goes
 * to the ghost queue G; a key found in G on its next insertion goes straight
 * to M. M's tail gives a key with reads another lap (one read less), else
 * drops it. The policy suits this cache for three reasons:
 *   - A hit only needs to raise a 2-bit counter, and only until it reaches
 *     3, so hot keys are read with no shared write at all; LRU moves the
 *     entry on every hit, a write to shared memory under a lock.
 *   - Queues that are FIFOs can be byte rings: no per-entry allocation, no
 *     list pointers, records that never move under a reader unless the
 *     sequence counter says so, and a memory bound that is exact.
 *   - One-hit wonders (a scan of cold skus) leave through S quickly instead
 *     of flushing the hot set, as they do in LRU.
 * Measured on the trace (Zipf 0.99, 10M requests over 1M keys, 32-byte
 * values, a cache of 10% of the keys' bytes; test_localcache and the
 * benchmark print both): hit ratio 0.784 here against 0.751 for an LRU
 * given the same bytes, although the LRU is charged only its entries (the
 * same records plus 24 bytes of links) while this cache counts its index,
 * ghost and sketch (~15%) inside the bound. Moving S keys to M after one
 * read beats moving them after two (0.775).
 */
#include "kit/kit.h"
#include "localcache/lc_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

/* An S record moves to M at S's tail if it was read at least this often. */
#define LC_MOVE_FREQ 1u
/* Most M records given another lap per allocation, so that one store
 * never spends long rotating a ring whose keys are all hot. */
#define LC_ROTATE_BUDGET 1024

static uint64_t pow2_ceil(uint64_t x)
{
    uint64_t p = 1;
    while (p < x)
        p <<= 1;
    return p;
}

size_t lc__shard_overhead(size_t shard_bytes, size_t *index_slots, size_t *ghost_buckets,
                          size_t *sketch_buckets, size_t *ring_bytes)
{
    /* The index is sized for records of ~110 bytes at 85% load (a 64-byte
     * header, a short key, a value of ~40 bytes): smaller records are
     * limited by the index, larger ones by the rings. */
    size_t islots = shard_bytes / 96 > 64 ? shard_bytes / 96 : 64;
    /* The ghost remembers about as many keys as M holds (M is 90% of the
     * rings, ~85% of the shard). */
    size_t gb = shard_bytes / 144 / LC_GHOST_WAYS;
    size_t kb = pow2_ceil(islots / 32 > 8 ? islots / 32 : 8);
    if (gb < 4)
        gb = 4;
    size_t over = islots * 8 + gb * LC_GHOST_WAYS * 8 + kb * LC_SKETCH_WAYS * sizeof(lc_sketch_slot);
    *index_slots = islots;
    *ghost_buckets = gb;
    *sketch_buckets = kb;
    *ring_bytes = over < shard_bytes ? (shard_bytes - over) & ~(size_t)7 : 0;
    return over;
}

/* ---- ghost queue: fingerprints of keys that left S unread --------------- */

/* A ghost slot holds a 32-bit fingerprint and the insertion counter value;
 * an entry counts as present while fewer insertions than M holds records
 * happened after it, which makes G as long as M, as the paper has it. */
static uint64_t *ghost_bucket(const lc_shard *sh, uint64_t h)
{
    return sh->ghost + (((h >> 8) & 0xffffffffull) * sh->gbuckets >> 32) * LC_GHOST_WAYS;
}

static void do_ghost_insert(lc_shard *sh, uint64_t h)
{
    uint64_t *b = ghost_bucket(sh, h);
    uint32_t fp = (uint32_t)(h >> 32) | 1;
    uint32_t seq = ++sh->gseq;
    unsigned victim = 0;
    uint32_t oldest = 0;
    for (unsigned i = 0; i < LC_GHOST_WAYS; i++) {
        uint32_t age = seq - (uint32_t)b[i];
        if (b[i] == 0 || (uint32_t)(b[i] >> 32) == fp) {
            victim = i;
            break;
        }
        if (age > oldest) {
            oldest = age;
            victim = i;
        }
    }
    b[victim] = (uint64_t)fp << 32 | seq;
}

static bool do_ghost_take(lc_shard *sh, uint64_t h)
{
    uint64_t *b = ghost_bucket(sh, h);
    uint32_t fp = (uint32_t)(h >> 32) | 1;
    for (unsigned i = 0; i < LC_GHOST_WAYS; i++) {
        if (b[i] != 0 && (uint32_t)(b[i] >> 32) == fp) {
            bool live = sh->gseq - (uint32_t)b[i] <= sh->ring[LC_Q_MAIN].live;
            b[i] = 0;
            return live;
        }
    }
    return false;
}

/* ---- floor sketch ------------------------------------------------------- */

static lc_sketch_slot *sketch_bucket(const lc_shard *sh, uint64_t h)
{
    return sh->sketch + ((h >> 12) & sh->kmask) * LC_SKETCH_WAYS;
}

uint64_t lc__sketch_floor(const lc_shard *sh, uint64_t h, uint64_t now, uint64_t *expire)
{
    lc_sketch_slot *b = sketch_bucket(sh, h);
    uint64_t floor = 0, exp = 0;
    for (unsigned i = 0; i < LC_SKETCH_WAYS; i++) {
        uint64_t sh_hash = lc__ld(&b[i].hash), e = lc__ld(&b[i].expire);
        if (e > now && (sh_hash == h || sh_hash == 0)) {
            uint64_t v = lc__ld(&b[i].version);
            if (v > floor)
                floor = v;
            if (e > exp)
                exp = e;
        }
    }
    if (expire)
        *expire = exp;
    return floor;
}

bool lc__sketch_covers(const lc_shard *sh, uint64_t h, uint64_t floor, uint64_t until)
{
    lc_sketch_slot *b = sketch_bucket(sh, h);
    for (unsigned i = 0; i < LC_SKETCH_WAYS; i++) {
        uint64_t sh_hash = lc__ld(&b[i].hash);
        if ((sh_hash == h || sh_hash == 0) && lc__ld(&b[i].version) >= floor &&
            lc__ld(&b[i].expire) >= until)
            return true;
    }
    return false;
}

/* Remembers floor for h until expire in the slot already holding h or in a
 * free one; returns false if there is none. With force it never fails and
 * never forgets a live floor: when the bucket is full the entry expiring
 * first becomes a wildcard that keeps the higher of both floors for every
 * key of the bucket (refusing too much for a while is safe; refusing too
 * little is not). */
static bool do_sketch_put(lc_shard *sh, uint64_t h, uint64_t floor, uint64_t expire,
                          uint64_t now, bool force)
{
    lc_sketch_slot *b = sketch_bucket(sh, h), *s = NULL;
    for (unsigned i = 0; i < LC_SKETCH_WAYS && !s; i++)
        if (lc__ld(&b[i].expire) > now && lc__ld(&b[i].hash) == h)
            s = &b[i];
    for (unsigned i = 0; i < LC_SKETCH_WAYS && !s; i++)
        if (lc__ld(&b[i].expire) <= now) {
            s = &b[i];
            lc__st(&s->hash, h);
            lc__st(&s->version, 0);
            lc__st(&s->expire, 0);
        }
    if (!s) {
        if (!force)
            return false;
        s = &b[0];
        for (unsigned i = 1; i < LC_SKETCH_WAYS; i++)
            if (lc__ld(&b[i].expire) < lc__ld(&s->expire))
                s = &b[i];
        lc__st(&s->hash, 0);
    }
    if (floor > lc__ld(&s->version))
        lc__st(&s->version, floor);
    if (expire > lc__ld(&s->expire))
        lc__st(&s->expire, expire);
    sh->n.floors_spilled++;
    return true;
}

/* ---- index -------------------------------------------------------------- */

int64_t do_index_find(const lc_shard *sh, uint64_t h, const uint64_t *kw, size_t nkw,
                      size_t klen)
{
    uint64_t tag = lc__tag(h);
    for (uint64_t i = lc__home(sh, h);; i = lc__next(sh, i)) {
        uint64_t s = lc__ld(&sh->index[i]);
        if (s == 0)
            return -1;
        if (lc__slot_tag(s) != tag)
            continue;
        const uint64_t *r = lc__rec(sh, lc__slot_loc(s));
        uint64_t m = lc__ld(&r[LC_W_META]);
        if (lc__meta_klen(m) != klen || lc__ld(&r[LC_W_HASH]) != h)
            continue;
        bool same = true;
        for (size_t w = 0; w < nkw && same; w++)
            same = lc__ld(&r[LC_HDR_WORDS + w]) == kw[w];
        if (same)
            return (int64_t)i;
    }
}

/* The slot pointing at loc, a record whose hash is h. Every live record
 * has one; if it is missing the shard is corrupt and the process cannot
 * trust anything it would serve from it. */
static uint64_t do_index_find_loc(const lc_shard *sh, uint64_t h, uint32_t loc)
{
    uint64_t i = lc__home(sh, h);
    for (uint64_t n = 0; n < sh->islots; n++, i = lc__next(sh, i)) {
        uint64_t s = lc__ld(&sh->index[i]);
        if (s == 0)
            break;
        if (lc__slot_loc(s) == loc)
            return i;
    }
    KIT_PANIC("localcache: record without an index slot (shard corrupt)");
}

static void do_index_insert(lc_shard *sh, uint64_t h, uint32_t loc, unsigned freq)
{
    uint64_t i = lc__home(sh, h);
    while (lc__ld(&sh->index[i]) != 0)
        i = lc__next(sh, i);
    lc__st(&sh->index[i], lc__slot(h, loc, freq));
    sh->icount++;
}

/* Backward-shift deletion: later slots of the probe chain move up so that
 * lookups never need tombstones. A slot's home comes from its record's
 * hash. */
static void do_index_remove(lc_shard *sh, uint64_t i)
{
    uint64_t j = i;
    for (;;) {
        j = lc__next(sh, j);
        uint64_t s = lc__ld(&sh->index[j]);
        if (s == 0)
            break;
        uint64_t home = lc__home(sh, lc__ld(&lc__rec(sh, lc__slot_loc(s))[LC_W_HASH]));
        /* Move s into the hole at i unless its home lies cyclically in (i, j]. */
        bool stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (!stays) {
            lc__st(&sh->index[i], s);
            i = j;
        }
    }
    lc__st(&sh->index[i], 0);
    sh->icount--;
}

/* ---- records ------------------------------------------------------------ */

static void rec_write(uint64_t *w, uint32_t size, uint64_t h, const uint64_t *kw, size_t klen,
                      const lc_recstate *st)
{
    size_t vlen = st->flags & LC_F_VALUE ? st->vlen : 0;
    size_t nkw = lc__words(klen), nvw = lc__words(vlen);
    lc__st(&w[LC_W_META], lc__meta(size, st->flags, klen, vlen));
    lc__st(&w[LC_W_HASH], h);
    lc__st(&w[LC_W_VERSION], st->version);
    lc__st(&w[LC_W_FLOOR], st->floor);
    lc__st(&w[LC_W_EXPIRE], st->expire);
    lc__st(&w[LC_W_FLOOR_EXPIRE], st->floor_expire);
    lc__st(&w[LC_W_LEASE], st->lease);
    lc__st(&w[LC_W_LEASE_EXPIRE], st->lease_expire);
    for (size_t i = 0; i < nkw; i++)
        lc__st(&w[LC_HDR_WORDS + i], kw[i]);
    uint64_t *vw = w + LC_HDR_WORDS + nkw;
    const unsigned char *v = st->val;
    for (size_t i = 0; i < nvw; i++) {
        uint64_t x = 0;
        memcpy(&x, v + 8 * i, vlen - 8 * i < 8 ? vlen - 8 * i : 8);
        lc__st(&vw[i], x);
    }
}

void do_rec_state(const lc_shard *sh, int64_t i, lc_recstate *st)
{
    const uint64_t *r = lc__rec(sh, lc__slot_loc(lc__ld(&sh->index[i])));
    uint64_t m = r[LC_W_META];
    st->flags = lc__meta_flags(m) & LC_F_VALUE;
    st->val = NULL;
    st->vlen = lc__meta_vlen(m);
    st->version = r[LC_W_VERSION];
    st->floor = r[LC_W_FLOOR];
    st->expire = r[LC_W_EXPIRE];
    st->floor_expire = r[LC_W_FLOOR_EXPIRE];
    st->lease = r[LC_W_LEASE];
    st->lease_expire = r[LC_W_LEASE_EXPIRE];
}

void do_rec_meta(lc_shard *sh, int64_t i, const lc_recstate *st)
{
    KIT_ASSERT_LOCKED(&sh->mu);
    uint64_t *r = lc__rec(sh, lc__slot_loc(lc__ld(&sh->index[i])));
    uint64_t m = r[LC_W_META];
    bool had = lc__meta_flags(m) & LC_F_VALUE;
    bool has = had && (st->flags & LC_F_VALUE);
    lc__st(&r[LC_W_META], lc__meta(lc__meta_size(m), has ? LC_F_VALUE : 0, lc__meta_klen(m),
                                   has ? lc__meta_vlen(m) : 0));
    lc__st(&r[LC_W_VERSION], st->version);
    lc__st(&r[LC_W_FLOOR], st->floor);
    lc__st(&r[LC_W_EXPIRE], st->expire);
    lc__st(&r[LC_W_FLOOR_EXPIRE], st->floor_expire);
    lc__st(&r[LC_W_LEASE], st->lease);
    lc__st(&r[LC_W_LEASE_EXPIRE], st->lease_expire);
    if (had && !has)
        sh->entries--;
}

void do_rec_drop(lc_shard *sh, int64_t i)
{
    KIT_ASSERT_LOCKED(&sh->mu);
    uint32_t loc = lc__slot_loc(lc__ld(&sh->index[i]));
    uint64_t *r = lc__rec(sh, loc);
    uint64_t m = r[LC_W_META];
    lc_ring *ring = &sh->ring[lc__loc_q(loc)];
    lc__st(&r[LC_W_META], m | (uint64_t)LC_F_DEAD << 24);
    ring->live--;
    ring->live_bytes -= lc__meta_size(m);
    if (lc__meta_flags(m) & LC_F_VALUE)
        sh->entries--;
    do_index_remove(sh, (uint64_t)i);
}

/* Copies n words forward; dst <= src when the regions overlap. */
static void words_move(uint64_t *dst, const uint64_t *src, size_t n)
{
    if (dst == src)
        return;
    for (size_t i = 0; i < n; i++)
        lc__st(&dst[i], src[i]);
}

/* ---- rings -------------------------------------------------------------- */

static void ring_advance_tail(lc_ring *r, uint32_t size)
{
    r->tail += size;
    if (r->tail == r->cap)
        r->tail = 0;
    r->used -= size;
}

/* Reserves size bytes at the head of ring q, with a pad first if the ring's
 * end is too close; the caller checked that they fit. Returns the offset
 * in words. */
static uint64_t ring_take_head(lc_shard *sh, unsigned q, uint32_t size)
{
    lc_ring *r = &sh->ring[q];
    if (r->cap - r->head < size) {
        uint64_t pad = r->cap - r->head;
        lc__st(&sh->ring_words[q][r->head / 8], lc__meta((uint32_t)pad, LC_F_PAD, 0, 0));
        r->used += pad;
        r->head = 0;
    }
    uint64_t off = r->head;
    r->head += size;
    if (r->head == r->cap)
        r->head = 0;
    r->used += size;
    return off / 8;
}

static bool ring_fits(const lc_ring *r, uint32_t size)
{
    uint64_t pad = r->cap - r->head < size ? r->cap - r->head : 0;
    return r->cap - r->used >= size + pad;
}

static void do_tail_step(lc_shard *sh, unsigned q, uint64_t now, unsigned *budget);

/* Makes room for size bytes at ring q's head, evicting from its tail, and
 * reserves them. Returns the offset in words. */
static uint64_t do_ring_alloc(lc_shard *sh, unsigned q, uint32_t size, uint64_t now)
{
    lc_ring *r = &sh->ring[q];
    unsigned budget = LC_ROTATE_BUDGET;
    for (;;) {
        /* An empty ring starts over at offset 0, where any record fits
         * (lc_new made every ring at least one largest record long). */
        if (r->used == 0)
            r->head = r->tail = 0;
        if (ring_fits(r, size))
            break;
        do_tail_step(sh, q, now, &budget);
    }
    return ring_take_head(sh, q, size);
}

/* Drops the record at the tail of a ring (its slot is i): a floor that must
 * survive goes to the sketch (unless saved there already), a key that
 * leaves S unread to the ghost. */
static void do_tail_drop(lc_shard *sh, unsigned q, uint64_t i, const uint64_t *r, bool expired,
                         bool saved, uint64_t now)
{
    uint64_t m = r[LC_W_META], h = r[LC_W_HASH];
    if (!saved && r[LC_W_FLOOR_EXPIRE] > now)
        do_sketch_put(sh, h, r[LC_W_FLOOR], r[LC_W_FLOOR_EXPIRE], now, true);
    if (lc__meta_flags(m) & LC_F_VALUE) {
        if (expired)
            sh->n.expirations++;
        else
            sh->n.evictions++;
        if (q == LC_Q_SMALL)
            do_ghost_insert(sh, h);
    }
    do_rec_drop(sh, (int64_t)i);
}

/* Processes the record at ring q's tail: skips a pad or dead record, moves
 * a read S record (or a value-less one holding a live lease or floor) to M,
 * gives a read M record another lap while *budget lasts, drops the rest.
 * A value-less M record whose floor must survive leaves only if the sketch
 * has an exact slot for it, else it laps too, while the budget lasts.
 * Frees the tail's bytes in every case but a lap in a full ring. */
static void do_tail_step(lc_shard *sh, unsigned q, uint64_t now, unsigned *budget)
{
    lc_ring *ring = &sh->ring[q];
    uint64_t toff = ring->tail / 8;
    uint64_t *r = sh->ring_words[q] + toff;
    uint64_t m = r[LC_W_META];
    uint32_t size = lc__meta_size(m);
    unsigned flags = lc__meta_flags(m);
    KIT_ASSERT(ring->used > 0 && size >= 8);

    if (flags & (LC_F_PAD | LC_F_DEAD)) {
        ring_advance_tail(ring, size);
        return;
    }
    uint64_t h = r[LC_W_HASH];
    uint32_t loc = lc__loc(q, toff);
    uint64_t i = do_index_find_loc(sh, h, loc);
    unsigned freq = lc__slot_freq(lc__ld(&sh->index[i]));
    bool expired = (flags & LC_F_VALUE) && r[LC_W_EXPIRE] && r[LC_W_EXPIRE] <= now;
    bool value = (flags & LC_F_VALUE) && !expired;

    bool keep = !value && ((r[LC_W_LEASE] && r[LC_W_LEASE_EXPIRE] > now) ||
                           r[LC_W_FLOOR_EXPIRE] > now);
    if (q == LC_Q_SMALL) {
        if (value ? freq >= LC_MOVE_FREQ : keep) {
            uint64_t moff = do_ring_alloc(sh, LC_Q_MAIN, size, now);
            words_move(sh->ring_words[LC_Q_MAIN] + moff, r, size / 8);
            i = do_index_find_loc(sh, h, loc); /* M's evictions may shift slots */
            lc__st(&sh->index[i], lc__slot(h, lc__loc(LC_Q_MAIN, moff), 0));
            ring->live--;
            ring->live_bytes -= size;
            sh->ring[LC_Q_MAIN].live++;
            sh->ring[LC_Q_MAIN].live_bytes += size;
            lc__st(&r[LC_W_META], m | (uint64_t)LC_F_DEAD << 24);
        } else {
            do_tail_drop(sh, q, i, r, expired, false, now);
        }
        ring_advance_tail(ring, size);
        return;
    }

    bool saved = false;
    if (keep && r[LC_W_FLOOR_EXPIRE] > now && !(r[LC_W_LEASE] && r[LC_W_LEASE_EXPIRE] > now))
        saved = do_sketch_put(sh, h, r[LC_W_FLOOR], r[LC_W_FLOOR_EXPIRE], now, false);
    if (((value && freq > 0) || (keep && !saved)) && *budget > 0) {
        /* Another lap: free the tail, then the record fits at the head
         * without evicting anything (see ring_take_head's callers). */
        (*budget)--;
        ring_advance_tail(ring, size);
        uint64_t noff = ring_take_head(sh, q, size);
        words_move(sh->ring_words[q] + noff, r, size / 8);
        lc__st(&sh->index[i], lc__slot(h, lc__loc(q, noff), freq ? freq - 1 : 0));
        return;
    }
    do_tail_drop(sh, q, i, r, expired, saved, now);
    ring_advance_tail(ring, size);
}

/* Drops one record for room in the index: from S's tail while S holds
 * records (S records may move to M on the way), else from M's. */
static void do_evict_one(lc_shard *sh, uint64_t now)
{
    uint64_t before = sh->icount;
    unsigned budget = LC_ROTATE_BUDGET;
    while (sh->icount >= before) {
        unsigned q = sh->ring[LC_Q_SMALL].live > 0 ? LC_Q_SMALL : LC_Q_MAIN;
        do_tail_step(sh, q, now, &budget);
    }
}

void do_rec_put(lc_shard *sh, int64_t slot, uint64_t h, const uint64_t *kw, size_t klen,
                const lc_recstate *st, uint64_t now)
{
    KIT_ASSERT_LOCKED(&sh->mu);
    uint32_t size = lc__rec_size(klen, st->flags & LC_F_VALUE ? st->vlen : 0);
    unsigned q, freq = 0;
    if (slot >= 0) {
        uint32_t loc = lc__slot_loc(lc__ld(&sh->index[slot]));
        uint64_t *r = lc__rec(sh, loc);
        uint64_t m = r[LC_W_META];
        uint32_t old = lc__meta_size(m);
        if (size <= old) {
            bool had = lc__meta_flags(m) & LC_F_VALUE;
            rec_write(r, old, h, kw, klen, st);
            sh->entries += (st->flags & LC_F_VALUE ? 1 : 0) - (had ? 1 : 0);
            return;
        }
        q = lc__loc_q(loc);
        freq = lc__slot_freq(lc__ld(&sh->index[slot]));
        do_rec_drop(sh, slot);
    } else {
        q = do_ghost_take(sh, h) ? LC_Q_MAIN : LC_Q_SMALL;
    }
    while (sh->icount >= sh->ilimit)
        do_evict_one(sh, now);
    uint64_t off = do_ring_alloc(sh, q, size, now);
    rec_write(sh->ring_words[q] + off, size, h, kw, klen, st);
    do_index_insert(sh, h, lc__loc(q, off), freq);
    sh->ring[q].live++;
    sh->ring[q].live_bytes += size;
    if (st->flags & LC_F_VALUE)
        sh->entries++;
}

/* ---- self-check (tests) ------------------------------------------------- */

/* Walks one ring from tail to head: sizes add up to used, every live record
 * is the one its index slot points at. Returns 0 or -EFAULT. */
static int do_check_ring(const lc_shard *sh, unsigned q, uint64_t *entries)
{
    const lc_ring *ring = &sh->ring[q];
    uint64_t pos = ring->tail, left = ring->used, live = 0, bytes = 0;
    while (left > 0) {
        const uint64_t *r = sh->ring_words[q] + pos / 8;
        uint64_t m = r[LC_W_META];
        uint32_t size = lc__meta_size(m);
        unsigned flags = lc__meta_flags(m);
        if (size < 8 || size > left || pos + size > ring->cap)
            return -EFAULT;
        if (!(flags & (LC_F_PAD | LC_F_DEAD))) {
            uint64_t h = r[LC_W_HASH];
            size_t klen = lc__meta_klen(m);
            if (klen == 0 || klen > LC_KEY_MAX ||
                size < lc__rec_size(klen, flags & LC_F_VALUE ? lc__meta_vlen(m) : 0))
                return -EFAULT;
            int64_t i = do_index_find(sh, h, r + LC_HDR_WORDS, lc__words(klen), klen);
            if (i < 0 || lc__slot_loc(lc__ld(&sh->index[i])) != lc__loc(q, pos / 8))
                return -EFAULT;
            live++;
            bytes += size;
            *entries += (flags & LC_F_VALUE) != 0;
        }
        pos += size;
        if (pos == ring->cap)
            pos = 0;
        left -= size;
    }
    if (pos != ring->head || live != ring->live || bytes != ring->live_bytes ||
        ring->used > ring->cap)
        return -EFAULT;
    return 0;
}

int lc__check(lc_cache *c)
{
    int rc = 0;
    for (unsigned s = 0; s < c->nshards && rc == 0; s++) {
        lc_shard *sh = &c->shards[s];
        uint64_t used = 0, entries = 0;
        pthread_mutex_lock(&sh->mu);
        for (uint64_t i = 0; i < sh->islots; i++)
            used += lc__ld(&sh->index[i]) != 0;
        if (used != sh->icount || used != sh->ring[0].live + sh->ring[1].live ||
            used > sh->ilimit)
            rc = -EFAULT;
        if (rc == 0)
            rc = do_check_ring(sh, LC_Q_SMALL, &entries);
        if (rc == 0)
            rc = do_check_ring(sh, LC_Q_MAIN, &entries);
        if (rc == 0 && entries != sh->entries)
            rc = -EFAULT;
        pthread_mutex_unlock(&sh->mu);
    }
    return rc;
}
