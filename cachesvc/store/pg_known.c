/*
 * pg_known.c: what this instance knows of the items it sells, for the
 * one-round-trip batch (batch_known in pg_batch.c): per item, the state its
 * last batch committed (or read), how often its tries failed, and, under a
 * per-user limit, the totals of the buyers its batches have seen.
 *
 * None of it is trusted: the one-round-trip batch sends it along with the
 * writes and the database checks it under the item's row lock (the
 * version and settings by PS_GUARD, the buyers' totals by PS_CHECK_BUYERS,
 * which writes the new ones in the same statement).
 * A wrong or missing entry costs a failed try and a batch with reads,
 * never a wrong answer; so the totals may be dropped at any time (a full
 * table, no memory, an item's slot taken by another).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cachesvc/store/pg_int.h"

typedef struct store__pg_known known;
typedef struct store__pg_buyer buyer;

static known *slot_of(store__pg *p, const char *sku)
{
    return &p->known[kit_hash(sku, strlen(sku)) % PG_KNOWN];
}

static void buyers_clear(known *k)
{
    for (uint32_t i = 0; i < k->cap; i++)
        free(k->buyers[i].user);
    free(k->buyers);
    k->buyers = NULL;
    k->nbuyers = k->cap = 0;
    k->units = 0;
}

/* sku's slot, taken over from another item when needed (p->mu held). */
static known *slot_take(store__pg *p, const char *sku)
{
    known *k = slot_of(p, sku);
    if (strcmp(k->sku, sku) != 0) {
        buyers_clear(k);
        memset(k, 0, sizeof *k);
        snprintf(k->sku, sizeof k->sku, "%s", sku);
    }
    return k;
}

int store__pg_known_get(store__pg *p, const char *sku, store__state *s)
{
    pthread_mutex_lock(&p->mu);
    known *k = slot_of(p, sku);
    int have = strcmp(k->sku, sku) == 0 && k->valid;
    if (have && k->skip > 0) {
        k->skip--;
        have = 0;
    }
    if (have)
        *s = k->s;
    pthread_mutex_unlock(&p->mu);
    return have;
}

void store__pg_known_set(store__pg *p, const char *sku, const store__state *s)
{
    pthread_mutex_lock(&p->mu);
    known *k = slot_take(p, sku);
    k->valid = s != NULL;
    if (s != NULL)
        k->s = *s;
    if (s == NULL || s->per_user_limit <= 0)
        buyers_clear(k);
    pthread_mutex_unlock(&p->mu);
}

/* Failed tries cost a round trip and a rollback, so the next 4, 8 ... 64
 * batches of the item read first: two instances selling one item, or
 * buyers retrying with their keys, then pay for a try only now and then. */
void store__pg_known_tried(store__pg *p, const char *sku, int ok)
{
    pthread_mutex_lock(&p->mu);
    known *k = slot_of(p, sku);
    if (strcmp(k->sku, sku) == 0) {
        if (ok) {
            k->penalty = 0;
        } else {
            k->penalty = k->penalty == 0 ? 4 : k->penalty < 64 ? 2 * k->penalty : 64;
            k->skip = k->penalty;
        }
    }
    pthread_mutex_unlock(&p->mu);
}

void store__pg_known_forget_locked(store__pg *p)
{
    KIT_ASSERT_LOCKED(&p->mu);
    for (int i = 0; i < PG_KNOWN; i++) {
        p->known[i].valid = 0;
        buyers_clear(&p->known[i]);
    }
}

void store__pg_known_free(store__pg *p)
{
    for (int i = 0; i < PG_KNOWN; i++)
        buyers_clear(&p->known[i]);
}

/* The slot of user in k's table: its entry, or the free slot it would
 * take. k->cap > k->nbuyers. */
static buyer *buyer_find(const known *k, const char *user, uint64_t h)
{
    uint32_t mask = k->cap - 1;
    for (uint32_t i = (uint32_t)h & mask;; i = (i + 1) & mask) {
        buyer *b = &k->buyers[i];
        if (b->user == NULL || (b->hash == h && strcmp(b->user, user) == 0))
            return b;
    }
}

/* Doubles k's table (at least 64 slots). -ENOMEM leaves it as it was. */
static int buyers_grow(known *k)
{
    uint32_t cap = k->cap ? k->cap * 2 : 64;
    buyer *old = k->buyers, *nb = calloc(cap, sizeof *nb);
    uint32_t ocap = k->cap;
    if (nb == NULL)
        return -ENOMEM;
    k->buyers = nb;
    k->cap = cap;
    for (uint32_t i = 0; i < ocap; i++)
        if (old[i].user != NULL)
            *buyer_find(k, old[i].user, old[i].hash) = old[i];
    free(old);
    return 0;
}

int store__pg_buyers_get(store__pg *p, const char *sku, store__op **ops, int n)
{
    pthread_mutex_lock(&p->mu);
    known *k = slot_of(p, sku);
    int mine = strcmp(k->sku, sku) == 0;
    int all = mine && k->valid && k->units == k->s.units_supplied - k->s.stock;
    int unseen = 0;
    for (int i = 0; i < n; i++) {
        store__op *op = ops[i];
        op->bought = 0;
        if (op->kind != STORE__DECR)
            continue;
        const buyer *b = NULL;
        if (mine && k->nbuyers > 0)
            b = buyer_find(k, op->user_id, kit_hash(op->user_id, strlen(op->user_id)));
        if (b != NULL && b->user != NULL)
            op->bought = b->total;
        else
            unseen += !all;
    }
    pthread_mutex_unlock(&p->mu);
    return unseen;
}

/* user's entry in k, added at total 0 when missing (k has room: see
 * store__pg_buyers_record); NULL without memory. */
static buyer *buyer_take(known *k, const char *user)
{
    uint64_t h = kit_hash(user, strlen(user));
    buyer *b = buyer_find(k, user, h);
    if (b->user == NULL) {
        if ((b->user = strdup(user)) == NULL)
            return NULL;
        b->hash = h;
        b->total = 0;
        k->nbuyers++;
    }
    return b;
}

void store__pg_buyers_record(store__pg *p, const char *sku, store__op **ops, int n)
{
    pthread_mutex_lock(&p->mu);
    known *k = slot_take(p, sku);
    /* Room for every buyer of the batch first. Past PG_BUYERS_MAX the
     * totals start over, and without memory they are forgotten: either
     * costs a failed check per returning buyer, never a wrong answer. */
    if (k->nbuyers + (uint32_t)n > PG_BUYERS_MAX)
        buyers_clear(k);
    while ((k->nbuyers + (uint32_t)n) * 4 > k->cap * 3)
        if (buyers_grow(k) < 0)
            goto fail;
    /* Each buyer's total before the batch (every decrement of a buyer
     * holds the same), then the batch's orders on top. */
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < n; i++) {
            store__op *op = ops[i];
            if (op->kind != STORE__DECR || (pass == 1 && op->outcome != STORE_OK))
                continue;
            buyer *b = buyer_take(k, op->user_id);
            if (b == NULL)
                goto fail;
            int64_t total = pass == 0 ? op->bought : b->total + op->qty;
            k->units += total - b->total;
            b->total = total;
        }
    pthread_mutex_unlock(&p->mu);
    return;
fail:
    buyers_clear(k);
    pthread_mutex_unlock(&p->mu);
}
