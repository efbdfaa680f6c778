/*
 * decide.c: the decrement rules, applied in arrival order as serial
 * execution would. The batch transaction runs them between its reads (row
 * lock, keys, purchases) and its writes; the unit tests run them one
 * request at a time as the serial model. Also the store's other pure
 * helpers (validation, names), which need neither runtime nor database.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cachesvc/store/store_int.h"
#include "kit/kit.h"

void store__state_to_item(const store__state *s, const char *sku, store_item *it)
{
    memset(it, 0, sizeof *it);
    snprintf(it->sku, sizeof it->sku, "%s", sku);
    it->stock = s->stock;
    it->version = s->version;
    it->per_user_limit = s->per_user_limit;
    it->sale_starts_at_ms = s->sale_starts_at_ms;
    it->units_supplied = s->units_supplied;
}

static int cmp_outbox(const void *a, const void *b)
{
    int64_t x = ((const store_outbox_row *)a)->id, y = ((const store_outbox_row *)b)->id;
    return x < y ? -1 : x > y;
}

void store__sort_outbox(store_outbox_row *rows, size_t n)
{
    qsort(rows, n, sizeof *rows, cmp_outbox);
}

int store_valid_id(const char *s)
{
    return s != NULL && kit_ident_valid(s, strnlen(s, STORE_SKU_MAX + 1), STORE_SKU_MAX);
}

int store_valid_key(const char *s)
{
    size_t i;
    if (s == NULL)
        return 0;
    for (i = 0; s[i] != '\0'; i++)
        if (i >= STORE_KEY_MAX || (unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e)
            return 0;
    return i > 0;
}

static const char *const outcome_names[STORE_OUTCOME_COUNT_] = {
    [STORE_OK] = "ok",
    [STORE_REPLAYED] = "replayed",
    [STORE_NOT_FOUND] = "not_found",
    [STORE_SOLD_OUT] = "sold_out",
    [STORE_INSUFFICIENT_STOCK] = "insufficient_stock",
    [STORE_LIMIT_EXCEEDED] = "limit_exceeded",
    [STORE_SALE_NOT_STARTED] = "sale_not_started",
    [STORE_OVERLOADED] = "overloaded",
    [STORE_UNAVAILABLE] = "unavailable",
    [STORE_OUTCOME_UNKNOWN] = "outcome_unknown",
    [STORE_KEY_MISMATCH] = "idempotency_key_mismatch",
};

const char *store_outcome_name(store_outcome o)
{
    if ((unsigned)o >= STORE_OUTCOME_COUNT_)
        return "unknown";
    return outcome_names[o];
}

const char *store_strerror(int err)
{
    switch (err) {
    case 0: return "success";
    case -EINVAL: return "invalid argument";
    case -ENOENT: return "no such item";
    case -EBUSY: return "the item's queue is full";
    case -EIO: return "database unavailable; nothing applied";
    case -ETIMEDOUT: return "database timed out; nothing applied";
    case -ECONNABORTED: return "connection lost during commit; outcome unknown";
    case -ENOMEM: return "out of memory";
    default: return "unknown store error";
    }
}

void store_audit_free(store_audit_result *a)
{
    if (a == NULL)
        return;
    free(a->order_ids);
    a->order_ids = NULL;
    a->n_order_ids = 0;
}

/* Applies a put to the state. Returns 0 or -EINVAL. */
static int decide_put(store__state *s, store__op *op)
{
    const store_put *p = &op->put;
    op->created = !s->found;
    if (!s->found && p->stock < 0)
        return -EINVAL;
    if (p->stock >= 0) {
        if (s->found)
            s->units_supplied += p->stock - s->stock;
        else
            s->units_supplied = p->stock;
        s->stock = p->stock;
    }
    if (!s->found) {
        s->per_user_limit = 0;
        s->sale_starts_at_ms = 0;
        s->found = 1;
    }
    if (p->per_user_limit >= 0)
        s->per_user_limit = p->per_user_limit;
    if (p->sale_starts_at_ms >= 0)
        s->sale_starts_at_ms = p->sale_starts_at_ms;
    return 0;
}

static int decide_decr(store__state *s, int64_t now_ms, store__op **ops, int i)
{
    store__op *op = ops[i];
    int j;

    /* A key decided earlier in this batch replays that order; a key the
     * database knew replays the stored order. Either only for the same
     * request: a key sent with another sku, buyer or qty is refused. */
    if (op->key != NULL) {
        for (j = 0; j < i; j++) {
            store__op *o = ops[j];
            if (o->kind == STORE__DECR && o->outcome == STORE_OK && o->key != NULL &&
                strcmp(o->key, op->key) == 0) {
                op->replay_of = j;
                return o->qty == op->qty && strcmp(o->user_id, op->user_id) == 0
                           ? STORE_REPLAYED : STORE_KEY_MISMATCH;
            }
        }
        if (op->key_found)
            return store__same_request(&op->prior, op->sku, op->user_id, op->qty)
                       ? STORE_REPLAYED : STORE_KEY_MISMATCH;
    }
    if (!s->found)
        return STORE_NOT_FOUND;
    if (now_ms < s->sale_starts_at_ms)
        return STORE_SALE_NOT_STARTED;
    if (s->per_user_limit > 0) {
        int64_t bought = op->bought;
        for (j = 0; j < i; j++) {
            store__op *o = ops[j];
            if (o->kind == STORE__DECR && o->outcome == STORE_OK &&
                strcmp(o->user_id, op->user_id) == 0)
                bought += o->qty;
        }
        if (bought + op->qty > s->per_user_limit)
            return STORE_LIMIT_EXCEEDED;
    }
    if (s->stock == 0)
        return STORE_SOLD_OUT;
    if (s->stock < op->qty)
        return STORE_INSUFFICIENT_STOCK;
    s->stock -= op->qty;
    return STORE_OK;
}

int store__same_request(const store_order *o, const char *sku, const char *user_id,
                        int64_t qty)
{
    return o->qty == qty && strcmp(o->user_id, user_id) == 0 &&
           (o->sku[0] == '\0' || sku == NULL || strcmp(o->sku, sku) == 0);
}

int store__decide(store__state *s, int64_t now_ms, store__op **ops, int n)
{
    int changed = 0;
    for (int i = 0; i < n; i++) {
        store__op *op = ops[i];
        op->replay_of = -1;
        op->created = 0;
        if (op->kind == STORE__PUT) {
            op->outcome = decide_put(s, op);
            changed |= op->outcome == 0;
        } else {
            op->outcome = decide_decr(s, now_ms, ops, i);
            changed |= op->outcome == STORE_OK;
        }
    }
    return changed;
}

void store__finish(const store__state *s, store__op **ops, int n)
{
    for (int i = 0; i < n; i++) {
        store__op *op = ops[i];
        op->err = 0;
        op->batch_size = n;
        op->stock = s->found ? s->stock : 0;
        op->version = s->found ? s->version : 0;
        op->after = *s;
        if (op->kind != STORE__DECR ||
            (op->outcome != STORE_REPLAYED && op->outcome != STORE_KEY_MISMATCH))
            continue;
        if (op->replay_of >= 0) {
            const store__op *o = ops[op->replay_of];
            op->prior.order_id = o->order_id;
            op->prior.qty = o->qty;
            op->prior.stock = op->stock;
            op->prior.version = op->version;
            strcpy(op->prior.user_id, o->user_id);
            op->prior.sku[0] = '\0';   /* the batch's sku: store.c fills it */
        }
    }
}

int store__needs_rebuild(const store__state *s0, store__op **ops, int n)
{
    if (!s0->found || s0->per_user_limit > 0)
        return 0;
    for (int i = 0; i < n; i++)
        if (ops[i]->kind == STORE__PUT && ops[i]->put.per_user_limit > 0)
            return 1;
    return 0;
}

int store__keep_purchases(const store__state *final)
{
    return final->per_user_limit > 0;
}

int store__purchase_deltas(store__op **ops, int n, const char **users, int64_t *qtys)
{
    int m = 0;
    for (int i = 0; i < n; i++) {
        store__op *op = ops[i];
        int j;
        if (op->kind != STORE__DECR || op->outcome != STORE_OK)
            continue;
        for (j = 0; j < m; j++)
            if (strcmp(users[j], op->user_id) == 0)
                break;
        if (j == m) {
            users[m] = op->user_id;
            qtys[m++] = 0;
        }
        qtys[j] += op->qty;
    }
    return m;
}

static uint64_t str_hash(const char *s)
{
    uint64_t h = kit_hash(s, strlen(s));
    return h ^ (h >> 32);
}

size_t store__user_slot(const int *slot, size_t cap, const char **users, const char *u)
{
    size_t h = str_hash(u) & (cap - 1);
    while (slot[h] >= 0 && strcmp(users[slot[h]], u) != 0)
        h = (h + 1) & (cap - 1);
    return h;
}

int store__distinct_users(store__op **ops, int n, const char **users)
{
    /* A batch holds up to batch_max buyers (256 by default): an
     * open-addressing set of indexes into users[] keeps this linear. */
    int small[1024], *slot = small, m = 0;
    size_t cap = 16;
    while (cap < (size_t)n * 2)
        cap <<= 1;
    if (cap > sizeof small / sizeof small[0] && (slot = malloc(cap * sizeof *slot)) == NULL) {
        for (int i = 0; i < n; i++) {   /* no memory: the quadratic way */
            int j;
            if (ops[i]->kind != STORE__DECR)
                continue;
            for (j = 0; j < m && strcmp(users[j], ops[i]->user_id) != 0; j++)
                ;
            if (j == m)
                users[m++] = ops[i]->user_id;
        }
        return m;
    }
    memset(slot, -1, cap * sizeof *slot);
    for (int i = 0; i < n; i++) {
        const char *u = ops[i]->user_id;
        if (ops[i]->kind != STORE__DECR)
            continue;
        size_t h = store__user_slot(slot, cap, users, u);
        if (slot[h] < 0) {
            slot[h] = m;
            users[m++] = u;
        }
    }
    if (slot != small)
        free(slot);
    return m;
}
