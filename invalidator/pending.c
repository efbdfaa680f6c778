/*
 * pending.c: the delay consumer's bookkeeping, free of Kafka and of the
 * runtime so it can be tested alone.
 *
 * inv_offq keeps, per partition, the offsets read and not yet committed past;
 * the position to commit is the first one not applied, so a restart re-reads
 * everything not applied and never skips (at least once).
 *
 * inv_pq is the delay queue: a min-heap on due time over entries keyed by
 * (sku, partition), each entry standing for every message of that sku read
 * and not yet applied. The entry fires at the earliest due time among its
 * messages with the highest version among them: a version-guarded delete with
 * a higher version removes everything a lower one would, so one call serves
 * every message already due; messages not yet due keep the entry armed until
 * their own due time, so no message's delete happens before it is due.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "invalidator/inv_int.h"
#include "kit/kit.h"

/* ---------------------------------------------------------------------- */
/* Offsets                                                                  */

void inv__offq_init(inv_offq *q)
{
    memset(q, 0, sizeof(*q));
    q->next = -1;
}

void inv__offq_free(inv_offq *q)
{
    free(q->off);
    free(q->done);
    inv__offq_init(q);
}

static int offq_grow(inv_offq *q)
{
    size_t ncap = q->cap ? q->cap * 2 : 64;
    int64_t *off = malloc(ncap * sizeof(*off));
    uint8_t *done = malloc(ncap);
    if (off == NULL || done == NULL) {
        free(off);
        free(done);
        return -ENOMEM;
    }
    for (size_t i = 0; i < q->len; i++) {
        size_t j = (q->head + i) & (q->cap - 1);
        off[i] = q->off[j];
        done[i] = q->done[j];
    }
    free(q->off);
    free(q->done);
    q->off = off;
    q->done = done;
    q->cap = ncap;
    q->head = 0;
    return 0;
}

int inv__offq_add(inv_offq *q, int64_t offset)
{
    if (q->next >= 0 && offset < q->next)
        return -EINVAL;
    if (q->len == q->cap) {
        int rc = offq_grow(q);
        if (rc < 0)
            return rc;
    }
    size_t j = (q->head + q->len) & (q->cap - 1);
    q->off[j] = offset;
    q->done[j] = 0;
    q->len++;
    q->next = offset + 1;
    return 0;
}

int inv__offq_done(inv_offq *q, int64_t offset)
{
    /* Binary search: the ring holds increasing offsets. */
    size_t lo = 0, hi = q->len;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int64_t v = q->off[(q->head + mid) & (q->cap - 1)];
        if (v == offset) {
            q->done[(q->head + mid) & (q->cap - 1)] = 1;
            return 0;
        }
        if (v < offset)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -ENOENT;
}

int64_t inv__offq_advance(inv_offq *q, size_t *popped)
{
    size_t n = 0;
    while (q->len > 0 && q->done[q->head]) {
        q->head = (q->head + 1) & (q->cap - 1);
        q->len--;
        n++;
    }
    if (popped != NULL)
        *popped = n;
    if (q->len > 0)
        return q->off[q->head];
    return q->next;
}

/* ---------------------------------------------------------------------- */
/* Delay queue: heap                                                        */

static void heap_set(inv_pq *pq, size_t i, inv_pentry *e)
{
    pq->heap[i] = e;
    e->heap_idx = (int)i;
}

static void heap_up(inv_pq *pq, size_t i)
{
    inv_pentry *e = pq->heap[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (pq->heap[parent]->due_ms <= e->due_ms)
            break;
        heap_set(pq, i, pq->heap[parent]);
        i = parent;
    }
    heap_set(pq, i, e);
}

static void heap_down(inv_pq *pq, size_t i)
{
    inv_pentry *e = pq->heap[i];
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        int64_t best = e->due_ms;
        if (l < pq->hlen && pq->heap[l]->due_ms < best) {
            m = l;
            best = pq->heap[l]->due_ms;
        }
        if (r < pq->hlen && pq->heap[r]->due_ms < best)
            m = r;
        if (m == i)
            break;
        heap_set(pq, i, pq->heap[m]);
        i = m;
    }
    heap_set(pq, i, e);
}

/* Makes room in the heap for every entry (in flight or not) plus one, so
 * that rearming an entry after its sink call never needs memory. */
static int heap_reserve(inv_pq *pq)
{
    if (pq->entries + 1 <= pq->hcap)
        return 0;
    size_t ncap = pq->hcap ? pq->hcap * 2 : 256;
    inv_pentry **h = realloc(pq->heap, ncap * sizeof(*h));
    if (h == NULL)
        return -ENOMEM;
    pq->heap = h;
    pq->hcap = ncap;
    return 0;
}

static void heap_push(inv_pq *pq, inv_pentry *e)
{
    KIT_ASSERT(pq->hlen < pq->hcap);
    pq->heap[pq->hlen] = e;
    e->heap_idx = (int)pq->hlen;
    pq->hlen++;
    heap_up(pq, pq->hlen - 1);
}

static void heap_remove(inv_pq *pq, inv_pentry *e)
{
    size_t i = (size_t)e->heap_idx;
    pq->hlen--;
    e->heap_idx = -1;
    if (i == pq->hlen)
        return;
    heap_set(pq, i, pq->heap[pq->hlen]);
    heap_up(pq, i);
    heap_down(pq, (size_t)pq->heap[i]->heap_idx);
}

/* The entry's due time moved (earlier or later): restore the heap order. */
static void heap_fix(inv_pq *pq, inv_pentry *e)
{
    heap_up(pq, (size_t)e->heap_idx);
    heap_down(pq, (size_t)e->heap_idx);
}

/* ---------------------------------------------------------------------- */
/* Delay queue: hash table on (sku, partition)                              */

static uint32_t key_hash(const char *sku, size_t n, int32_t partition)
{
    uint64_t h = kit_hash_more(KIT_HASH_INIT ^ (uint32_t)partition, sku, n);
    return (uint32_t)(h ^ (h >> 32));
}

static inv_pentry **tab_slot(inv_pq *pq, const char *sku, size_t n,
                             int32_t partition, uint32_t h)
{
    inv_pentry **pp = &pq->tab[h & (pq->tcap - 1)];
    while (*pp != NULL) {
        inv_pentry *e = *pp;
        if (e->hash == h && e->partition == partition && e->sku_len == n &&
            memcmp(e->sku, sku, n) == 0)
            break;
        pp = &e->hnext;
    }
    return pp;
}

static int tab_grow(inv_pq *pq)
{
    size_t ncap = pq->tcap ? pq->tcap * 2 : 1024;
    inv_pentry **t = calloc(ncap, sizeof(*t));
    if (t == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < pq->tcap; i++) {
        inv_pentry *e = pq->tab[i];
        while (e != NULL) {
            inv_pentry *next = e->hnext;
            e->hnext = t[e->hash & (ncap - 1)];
            t[e->hash & (ncap - 1)] = e;
            e = next;
        }
    }
    free(pq->tab);
    pq->tab = t;
    pq->tcap = ncap;
    return 0;
}

static void tab_unlink(inv_pq *pq, inv_pentry *e)
{
    inv_pentry **pp = tab_slot(pq, e->sku, e->sku_len, e->partition, e->hash);
    if (*pp == e)
        *pp = e->hnext;
    e->hnext = NULL;
}

static void entry_free(inv_pq *pq, inv_pentry *e)
{
    pq->refs -= e->nrefs;
    pq->entries--;
    free(e->refs);
    free(e);
}

void inv__pq_init(inv_pq *pq)
{
    memset(pq, 0, sizeof(*pq));
}

void inv__pq_free(inv_pq *pq)
{
    for (size_t i = 0; i < pq->tcap; i++) {
        inv_pentry *e = pq->tab[i];
        while (e != NULL) {
            inv_pentry *next = e->hnext;
            entry_free(pq, e);
            e = next;
        }
    }
    free(pq->tab);
    free(pq->heap);
    inv__pq_init(pq);
}

/* Recomputes version and due time from the refs (after some were removed). */
static void entry_recompute(inv_pentry *e)
{
    e->version = 0;
    e->due_ms = INT64_MAX;
    for (size_t i = 0; i < e->nrefs; i++) {
        if (e->refs[i].version > e->version)
            e->version = e->refs[i].version;
        if (e->refs[i].due_at_ms < e->due_ms)
            e->due_ms = e->refs[i].due_at_ms;
    }
}

int inv__pq_add(inv_pq *pq, const inv_event *ev, int32_t partition,
                uint32_t gen, int64_t offset, bool *coalesced)
{
    int rc;
    *coalesced = false;
    if ((pq->entries + 1) * 4 > pq->tcap * 3 && (rc = tab_grow(pq)) < 0)
        return rc;
    if ((rc = heap_reserve(pq)) < 0)
        return rc;
    uint32_t h = key_hash(ev->sku, ev->sku_len, partition);
    inv_pentry **pp = tab_slot(pq, ev->sku, ev->sku_len, partition, h);
    inv_pentry *e = *pp;
    bool fresh = false;
    if (e == NULL) {
        e = calloc(1, sizeof(*e));
        if (e == NULL)
            return -ENOMEM;
        memcpy(e->sku, ev->sku, ev->sku_len);
        e->sku_len = (uint8_t)ev->sku_len;
        e->partition = partition;
        e->gen = gen;
        e->hash = h;
        e->heap_idx = -1;
        e->due_ms = INT64_MAX;
        fresh = true;
    }
    if (e->nrefs == e->caprefs) {
        size_t ncap = e->caprefs ? e->caprefs * 2 : 2;
        inv_ref *r = realloc(e->refs, ncap * sizeof(*r));
        if (r == NULL) {
            if (fresh)
                free(e);
            return -ENOMEM;
        }
        e->refs = r;
        e->caprefs = ncap;
    }
    if (fresh) {
        heap_push(pq, e);
        e->hnext = NULL;
        *pp = e;
        pq->entries++;
    } else {
        *coalesced = true;
    }
    e->refs[e->nrefs++] = (inv_ref){offset, ev->version, ev->committed_at_ms,
                                    ev->due_at_ms};
    pq->refs++;
    if (ev->version > e->version)
        e->version = ev->version;
    if (ev->due_at_ms < e->due_ms) {
        e->due_ms = ev->due_at_ms;
        if (e->heap_idx >= 0)
            heap_fix(pq, e);
    }
    return 0;
}

int64_t inv__pq_next_due(const inv_pq *pq)
{
    return pq->hlen > 0 ? pq->heap[0]->due_ms : INT64_MAX;
}

size_t inv__pq_waiting(const inv_pq *pq)
{
    return pq->hlen;
}

inv_pentry *inv__pq_pop_due(inv_pq *pq, int64_t now_ms)
{
    if (pq->hlen == 0 || pq->heap[0]->due_ms > now_ms)
        return NULL;
    inv_pentry *e = pq->heap[0];
    heap_remove(pq, e);
    e->inflight = true;
    e->fired_ms = now_ms;
    e->fired_version = e->version;
    return e;
}

bool inv__pq_complete(inv_pq *pq, inv_pentry *e, bool ok,
                      int64_t retry_at_ms, inv_ref_fn done, void *arg)
{
    e->inflight = false;
    if (e->dropped) {
        entry_free(pq, e);        /* already unlinked from the table */
        return true;
    }
    if (ok) {
        e->attempts = 0;
        size_t keep = 0;
        for (size_t i = 0; i < e->nrefs; i++) {
            inv_ref *r = &e->refs[i];
            if (r->due_at_ms <= e->fired_ms && r->version <= e->fired_version) {
                if (done != NULL)
                    done(arg, e, r);
                pq->refs--;
            } else {
                e->refs[keep++] = *r;
            }
        }
        e->nrefs = keep;
        if (keep == 0) {
            tab_unlink(pq, e);
            entry_free(pq, e);
            return true;
        }
        entry_recompute(e);
    } else {
        e->attempts++;
        entry_recompute(e);
        if (retry_at_ms > e->due_ms)
            e->due_ms = retry_at_ms;
    }
    heap_push(pq, e);             /* heap_reserve made room for it */
    return false;
}

size_t inv__pq_drop_partition(inv_pq *pq, int32_t partition)
{
    size_t dropped = 0;
    for (size_t i = 0; i < pq->tcap; i++) {
        inv_pentry **pp = &pq->tab[i];
        while (*pp != NULL) {
            inv_pentry *e = *pp;
            if (e->partition != partition) {
                pp = &e->hnext;
                continue;
            }
            *pp = e->hnext;
            e->hnext = NULL;
            dropped += e->nrefs;
            if (e->inflight) {
                e->dropped = true;
            } else {
                heap_remove(pq, e);
                entry_free(pq, e);
            }
        }
    }
    return dropped;
}
