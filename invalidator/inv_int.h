/*
 * inv_int.h: internals of the invalidator, for its own files and its tests.
 */
#ifndef CACHESVC_INV_INT_H
#define CACHESVC_INV_INT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "invalidator/inv.h"
#include "kit/kit.h"

/* ---------------------------------------------------------------------- */
/* Event codec (event.c)                                                    */

typedef struct inv_event {
    char sku[INV_SKU_MAX + 1];
    size_t sku_len;
    int64_t version;
    int64_t committed_at_ms;
    int64_t due_at_ms;
    int64_t purge_at_ms;           /* > 0: a purge, {"purge_at_ms":T}: every
                                    * instance drops every cached copy; the
                                    * item fields are unset */
    int has_item;                  /* the committed row at version follows */
    inv_item item;
} inv_event;

/* Longest encoding: the keys, a 64-byte sku and seven 19-digit numbers. */
#define INV_EVENT_JSON_MAX 320

/* Writes ev as JSON into buf (cap bytes, NUL-terminated). Returns the length
 * without the NUL, or -EINVAL (bad sku or negative numbers), -ENOSPC. */
int inv__event_encode(const inv_event *ev, char *buf, size_t cap);

/* Parses one event from buf[0..n-1] (not NUL-terminated). Keys may come in
 * any order, with JSON whitespace; unknown keys with string or integer
 * values are skipped; every item key is required exactly once, or
 * purge_at_ms alone. Returns 0
 * or -EINVAL. Input from the network: never asserts. */
int inv__event_decode(const char *buf, size_t n, inv_event *ev);

/* ---------------------------------------------------------------------- */
/* Histograms (event.c): updated with relaxed atomics from any thread.     */

int inv__hist_index(int64_t ms);
int64_t inv__hist_bucket_hi(int idx);   /* largest value of bucket idx */
void inv__hist_add(inv_hist *h, int64_t ms);
void inv__hist_copy(inv_hist *dst, const inv_hist *src);

/* ---------------------------------------------------------------------- */
/* Contiguous offsets per partition (pending.c)                             */

/* The offsets of one partition the delay consumer read and has not
 * committed past, in increasing order, each with a done flag. The
 * committable position is the first offset not done (or the last + 1). */
typedef struct inv_offq {
    int64_t *off;                  /* ring of offsets */
    uint8_t *done;
    size_t cap, head, len;
    int64_t next;                  /* last offset added + 1; -1 = none */
} inv_offq;

void inv__offq_init(inv_offq *q);
void inv__offq_free(inv_offq *q);
/* Appends offset (greater than every offset added before). 0 or -ENOMEM;
 * -EINVAL if not increasing. */
int inv__offq_add(inv_offq *q, int64_t offset);
/* Marks offset done. Returns 0, or -ENOENT when it is not held. */
int inv__offq_done(inv_offq *q, int64_t offset);
/* Drops the done offsets at the front. Returns the position to commit (the
 * first offset not done, or next when all are done), or -1 when nothing was
 * ever added. *popped (if not NULL) gets how many were dropped. */
int64_t inv__offq_advance(inv_offq *q, size_t *popped);

/* ---------------------------------------------------------------------- */
/* The delay queue (pending.c): one entry per (sku, partition)             */

/* One message an entry stands for. */
typedef struct inv_ref {
    int64_t offset;
    int64_t version;
    int64_t committed_at_ms;
    int64_t due_at_ms;
} inv_ref;

typedef struct inv_pentry {
    struct inv_pentry *hnext;      /* hash chain */
    int32_t partition;
    uint32_t gen;                  /* assignment generation of partition */
    int heap_idx;                  /* -1 when not in the heap */
    bool inflight;                 /* a sink call holds it */
    bool dropped;                  /* revoked while in flight: free later */
    int attempts;                  /* consecutive failed sink calls */
    int64_t version;               /* highest version among refs */
    int64_t due_ms;                /* when to fire (wall clock) */
    int64_t fired_ms;              /* when the in-flight call was made */
    int64_t fired_version;         /* version of the in-flight call */
    inv_ref *refs;
    size_t nrefs, caprefs;
    uint32_t hash;
    uint8_t sku_len;
    char sku[INV_SKU_MAX + 1];
} inv_pentry;

typedef struct inv_pq {
    inv_pentry **heap;             /* min-heap on due_ms */
    size_t hlen, hcap;
    inv_pentry **tab;              /* hash table, power-of-two size */
    size_t tcap, entries;
    size_t refs;                   /* messages held (all entries) */
} inv_pq;

void inv__pq_init(inv_pq *pq);
/* Frees every entry, in flight or not. */
void inv__pq_free(inv_pq *pq);

/* Adds one message. When (sku, partition) already has an entry, the message
 * joins it (the entry's version becomes the higher one, its due time the
 * earlier one) and *coalesced is set. Returns 0 or -ENOMEM. */
int inv__pq_add(inv_pq *pq, const inv_event *ev, int32_t partition,
                uint32_t gen, int64_t offset, bool *coalesced);

/* The due time of the earliest entry not in flight, or INT64_MAX. */
int64_t inv__pq_next_due(const inv_pq *pq);

/* Removes the earliest entry if due at now_ms, marks it in flight (fired
 * at now_ms with its current version) and returns it; NULL when none due. */
inv_pentry *inv__pq_pop_due(inv_pq *pq, int64_t now_ms);

/* Called when the sink call for e (in flight) finished. On success (ok),
 * each ref with due_at_ms <= e->fired_ms and version <= e->fired_version is
 * reported through done(arg, e, ref) and removed; the refs that remain
 * (they arrived during the call) rearm the entry. On failure every ref
 * stays and the entry is rearmed at retry_at_ms. An entry with no refs left
 * (or dropped) is freed. Returns true when e was freed. */
typedef void (*inv_ref_fn)(void *arg, const inv_pentry *e, const inv_ref *r);
bool inv__pq_complete(inv_pq *pq, inv_pentry *e, bool ok,
                      int64_t retry_at_ms, inv_ref_fn done, void *arg);

/* Drops every entry of partition (revoked): entries in the heap are freed,
 * entries in flight are marked dropped (freed at completion). Returns the
 * number of messages dropped. */
size_t inv__pq_drop_partition(inv_pq *pq, int32_t partition);

/* Number of entries in the heap (not in flight). */
size_t inv__pq_waiting(const inv_pq *pq);

#endif /* CACHESVC_INV_INT_H */
