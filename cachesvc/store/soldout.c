/*
 * soldout.c: decrements of a sold-out item answered from memory.
 *
 * After a sale sells out, most decrements that still arrive carry an
 * idempotency key, and the store must answer each as serial execution
 * would: the key's original order when it has one (replayed), else
 * limit_exceeded when the buyer is at the per-user limit, else sold_out.
 * Going to the database for that costs a batch transaction per handful of
 * requests. Instead, the first such request after the item sold out reads,
 * in one consistent snapshot, the item row and every order of the item
 * (bounded by cfg.sold_out_max_orders; all sets together by SO_BUDGET
 * times that, the least recently used giving way) into a set tied to the
 * item's version V; later requests that the caller vouches are for the
 * item at V are answered from the set.
 *
 * Why the answer equals the store's. Every transaction that inserts an
 * order of an item also bumps that item's version (one batch, one bump), so
 * the orders of an item are a function of its version: the snapshot's
 * orders are exactly the item's orders for as long as its committed version
 * is V, and with stock 0 at V no order can be added without a write that
 * makes the version V+1. The rules then run in the store's order (decide.c):
 * replay of the key; sale not started (not answered here: the caller goes
 * to the store); per-user limit against the buyer's total in the snapshot;
 * stock, which is 0. A request whose caller knows another version (newer:
 * restocked, or older: a stale copy) is not answered here, and a newer one
 * drops the set; every batch that commits a change to the item drops it as
 * well (it cannot be used any more, the memory is returned at once).
 *
 * What the caller vouches for. The service passes the version of its local
 * copy showing stock 0: on the instance that committed the last write that
 * copy is exact (the commit hook runs before any answer); on another
 * instance it is as current as the broadcast eviction makes every local
 * answer (ARCHITECTURE.md, "Consistency we promise"). A replay is right
 * whatever the version: a committed order never changes.
 *
 * Keys of other items. Idempotency keys are global: a key first used on
 * another item is that item's order, and the store refuses a request for
 * this item under it (idempotency_key_mismatch). The set holds this item's
 * keys only, so a key it does not know is looked up in the database
 * (as store_order_by_key answers it; the keys of requests arriving
 * meanwhile share the read, key_lookup) before the request is refused:
 * the set is complete for this item's orders, not for the key space.
 *
 * Concurrency. The sets live in a small hash of slots under so_lock, a
 * mutex held only for a lookup (two hash probes) and never across a
 * switching call. One request per item loads at a time (slot LOADING);
 * requests meanwhile go to the database as before. A load that finds more
 * orders than the bound, or fails, is remembered for that version (and for
 * a second on errors) so that requests do not retry it each time.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cachesvc/store/store_int.h"
#include "kit/kit.h"

#define SO_NBUCKETS 64
#define SO_RETRY_NS (1000LL * 1000000)   /* after a failed load */

enum { SO_LOADING = 1, SO_READY = 2, SO_REFUSED = 3 };

typedef struct so_row {
    uint32_t key;        /* offset into strs, or UINT32_MAX: no key */
    uint32_t user;       /* offset into strs */
    int64_t qty, order_id, stock, version;
} so_row;

typedef struct so_user {
    uint32_t user;       /* offset into strs */
    int64_t bought;
} so_user;

struct store__so_set {
    char *strs;
    size_t slen, scap;
    so_row *rows;
    size_t nrows, rcap;
    uint32_t *keyidx;    /* open addressing: row index + 1, 0 = empty */
    so_user *users;      /* open addressing: user == UINT32_MAX is empty */
    size_t kmask, umask;
    store__state item;
    int oom;
    store__so_set *next_free;   /* sets unlinked under the lock, freed after */
};

typedef struct so_slot {
    struct so_slot *next;
    char sku[STORE_SKU_MAX + 1];
    int state;
    int64_t version;        /* READY: the set's; REFUSED: the one refused */
    int64_t retry_ns;       /* REFUSED: 0, or a time after which to retry */
    uint64_t token;         /* LOADING: the loader's */
    uint64_t used;          /* READY: so->clock when last answered from */
    store__so_set *set;
} so_slot;

/* The sets of all items together hold at most SO_BUDGET times
 * sold_out_max_orders orders (about 100 bytes each): past it, the sets
 * answered from least recently make room. */
#define SO_BUDGET 4

/* A key lookup waiting to be sent (key_lookup). */
typedef struct so_keyq {
    const char *key;
    store_order o;
    int rc;                 /* 0: o is the key's order; -ENOENT; an error */
    int done;               /* rc and o are set */
    rt_event *ev;
    struct so_keyq *next;
} so_keyq;

/* Keys looked up in one read at most. */
#define SO_KEYQ_MAX 256

struct store__so {
    pthread_mutex_t lock;
    so_keyq *kq_head, *kq_tail;   /* lookups queued */
    int kq_lead;                  /* a lookup is being sent */
    so_slot *buckets[SO_NBUCKETS];
    uint64_t next_token;
    uint64_t clock;
    size_t rows;            /* orders in READY sets */
};

static uint64_t hash_str(const char *s)
{
    uint64_t h = kit_hash(s, strlen(s));
    return h ^ (h >> 29);
}

/* ---- the set ----------------------------------------------------------- */

static store__so_set *set_new(void)
{
    return calloc(1, sizeof(store__so_set));
}

static void set_free(store__so_set *s)
{
    if (s == NULL)
        return;
    free(s->strs);
    free(s->rows);
    free(s->keyidx);
    free(s->users);
    free(s);
}

static uint32_t set_str(store__so_set *s, const char *t)
{
    size_t n = strlen(t) + 1;
    if (s->slen + n > s->scap) {
        size_t cap = s->scap ? s->scap * 2 : 4096;
        while (cap < s->slen + n)
            cap *= 2;
        char *p = cap < UINT32_MAX ? realloc(s->strs, cap) : NULL;
        if (p == NULL) {
            s->oom = 1;
            return 0;
        }
        s->strs = p;
        s->scap = cap;
    }
    memcpy(s->strs + s->slen, t, n);
    s->slen += n;
    return (uint32_t)(s->slen - n);
}

void store__so_set_item(store__so_set *s, const store__state *item)
{
    s->item = *item;
}

int store__so_add(store__so_set *s, const char *user_id, int64_t qty, const char *key,
                  int64_t order_id, int64_t stock_after, int64_t version_after)
{
    if (s->oom)
        return -ENOMEM;
    if (s->nrows == s->rcap) {
        size_t cap = s->rcap ? s->rcap * 2 : 256;
        so_row *p = realloc(s->rows, cap * sizeof *p);
        if (p == NULL) {
            s->oom = 1;
            return -ENOMEM;
        }
        s->rows = p;
        s->rcap = cap;
    }
    so_row *r = &s->rows[s->nrows];
    r->user = set_str(s, user_id);
    r->key = key != NULL ? set_str(s, key) : UINT32_MAX;
    r->qty = qty;
    r->order_id = order_id;
    r->stock = stock_after;
    r->version = version_after;
    if (s->oom)
        return -ENOMEM;
    s->nrows++;
    return 0;
}

size_t store__so_count(const store__so_set *s)
{
    return s->nrows;
}

static size_t pow2_at_least(size_t n)
{
    size_t c = 16;
    while (c < n)
        c <<= 1;
    return c;
}

/* Builds the key index and the buyers' totals. Returns 0 or -ENOMEM. */
static int set_index(store__so_set *s)
{
    size_t kc = pow2_at_least(s->nrows * 2), uc = kc;
    s->keyidx = calloc(kc, sizeof *s->keyidx);
    s->users = malloc(uc * sizeof *s->users);
    if (s->keyidx == NULL || s->users == NULL)
        return -ENOMEM;
    s->kmask = kc - 1;
    s->umask = uc - 1;
    for (size_t i = 0; i < uc; i++)
        s->users[i].user = UINT32_MAX;
    for (size_t i = 0; i < s->nrows; i++) {
        const so_row *r = &s->rows[i];
        size_t h;
        if (r->key != UINT32_MAX) {
            for (h = hash_str(s->strs + r->key) & s->kmask; s->keyidx[h] != 0;
                 h = (h + 1) & s->kmask)
                ;   /* keys are unique (the database's unique index) */
            s->keyidx[h] = (uint32_t)i + 1;
        }
        for (h = hash_str(s->strs + r->user) & s->umask; s->users[h].user != UINT32_MAX;
             h = (h + 1) & s->umask)
            if (strcmp(s->strs + s->users[h].user, s->strs + r->user) == 0)
                break;
        if (s->users[h].user == UINT32_MAX) {
            s->users[h].user = r->user;
            s->users[h].bought = 0;
        }
        s->users[h].bought += r->qty;
    }
    return 0;
}

static const so_row *set_find_key(const store__so_set *s, const char *key)
{
    for (size_t h = hash_str(key) & s->kmask; s->keyidx[h] != 0; h = (h + 1) & s->kmask) {
        const so_row *r = &s->rows[s->keyidx[h] - 1];
        if (strcmp(s->strs + r->key, key) == 0)
            return r;
    }
    return NULL;
}

static int64_t set_bought(const store__so_set *s, const char *user)
{
    for (size_t h = hash_str(user) & s->umask; s->users[h].user != UINT32_MAX;
         h = (h + 1) & s->umask)
        if (strcmp(s->strs + s->users[h].user, user) == 0)
            return s->users[h].bought;
    return 0;
}

/* Answers out from the order o that the request's key found: a replay
 * when the request is o's, else a mismatch (decide.c's rule). */
static void answer_key(const store_order *o, const char *sku, const char *user_id,
                       int64_t qty, store_decrement_result *out)
{
    out->outcome = store__same_request(o, sku, user_id, qty) ? STORE_REPLAYED
                                                             : STORE_KEY_MISMATCH;
    out->order_id = o->order_id;
    out->qty = o->qty;
    snprintf(out->user_id, sizeof out->user_id, "%s", o->user_id);
    snprintf(out->sku, sizeof out->sku, "%s", o->sku);
    out->stock = o->stock;
    out->version = o->version;
}

/* The store's rules (decide.c) for a request against the set, once the
 * sale has started. Returns 1 when a key the set does not hold must still
 * be looked up in the database before the answer stands. */
static int set_decide(const store__so_set *s, const char *sku, const char *user_id,
                      int64_t qty, const char *key, store_decrement_result *out)
{
    const so_row *r = key != NULL ? set_find_key(s, key) : NULL;
    if (r != NULL) {
        store_order o = {.order_id = r->order_id, .qty = r->qty, .stock = r->stock,
                         .version = r->version};
        snprintf(o.sku, sizeof o.sku, "%s", sku);
        snprintf(o.user_id, sizeof o.user_id, "%s", s->strs + r->user);
        answer_key(&o, sku, user_id, qty, out);
        return 0;
    }
    if (s->item.per_user_limit > 0 && set_bought(s, user_id) + qty > s->item.per_user_limit)
        out->outcome = STORE_LIMIT_EXCEEDED;
    else
        out->outcome = STORE_SOLD_OUT;
    out->stock = 0;
    out->version = s->item.version;
    return key != NULL;
}

/* ---- key lookups, together ---------------------------------------------- */

/* Looks up the queued keys w[0..n-1] in one read of the backend. */
static void keys_read(store *st, so_keyq **w, int n)
{
    const char *keys[SO_KEYQ_MAX];
    store_order out[SO_KEYQ_MAX];
    int found[SO_KEYQ_MAX];
    int rc = -ENOSYS;

    store__enter(st);
    STORE__STAT_ADD(st, sold_out_key_reads, 1);
    if (st->be->orders_by_keys != NULL) {
        for (int i = 0; i < n; i++) {
            keys[i] = w[i]->key;
            memset(&out[i], 0, sizeof out[i]);
        }
        rc = st->be->orders_by_keys(st, keys, n, out, found);
        for (int i = 0; i < n; i++) {
            w[i]->rc = rc < 0 ? rc : found[i] ? 0 : -ENOENT;
            if (w[i]->rc == 0)
                w[i]->o = out[i];
        }
    } else {
        for (int i = 0; i < n; i++) {
            memset(&w[i]->o, 0, sizeof w[i]->o);
            w[i]->rc = st->be->order_by_key != NULL
                           ? st->be->order_by_key(st, w[i]->key, &w[i]->o)
                           : rc;
        }
    }
    store__leave(st);
}

/* The order of key, as store_order_by_key answers it. Buyers of a sold-out
 * item who send new keys each need one, all at once: a request queues its
 * key, and the first to find no read under way sends every key queued
 * (up to SO_KEYQ_MAX) in one read and keeps doing so until its own is
 * answered, then hands the lead to the next key queued. A read per key
 * was a round trip and a query per request. */
static int key_lookup(store *st, const char *key, store_order *o)
{
    struct store__so *so = st->so;
    so_keyq me = {.key = key};
    so_keyq *batch[SO_KEYQ_MAX];

    if ((me.ev = rt_event_new()) == NULL) {
        so_keyq *one = &me;
        keys_read(st, &one, 1);
        *o = me.o;
        return me.rc;
    }
    pthread_mutex_lock(&so->lock);
    if (so->kq_tail != NULL)
        so->kq_tail->next = &me;
    else
        so->kq_head = &me;
    so->kq_tail = &me;
    int lead = !so->kq_lead;
    so->kq_lead = 1;
    pthread_mutex_unlock(&so->lock);
    for (;;) {
        if (!lead) {
            rt_event_wait(me.ev, RT_NO_DEADLINE);
            pthread_mutex_lock(&so->lock);
            int done = me.done;
            pthread_mutex_unlock(&so->lock);
            if (done)
                break;
            /* Handed the lead. */
        }
        while (!me.done) {
            int n = 0;
            pthread_mutex_lock(&so->lock);
            while (so->kq_head != NULL && n < SO_KEYQ_MAX) {
                batch[n++] = so->kq_head;
                so->kq_head = so->kq_head->next;
            }
            if (so->kq_head == NULL)
                so->kq_tail = NULL;
            pthread_mutex_unlock(&so->lock);
            keys_read(st, batch, n);
            pthread_mutex_lock(&so->lock);
            for (int i = 0; i < n; i++)
                batch[i]->done = 1;
            pthread_mutex_unlock(&so->lock);
            for (int i = 0; i < n; i++)
                if (batch[i] != &me)
                    rt_event_signal(batch[i]->ev);
        }
        pthread_mutex_lock(&so->lock);
        so_keyq *next = so->kq_head;
        so->kq_lead = next != NULL;
        pthread_mutex_unlock(&so->lock);
        if (next != NULL)
            rt_event_signal(next->ev);
        break;
    }
    rt_event_free(me.ev);
    *o = me.o;
    return me.rc;
}

/* ---- slots --------------------------------------------------------------- */

int store__so_new(store *st)
{
    if ((st->so = calloc(1, sizeof *st->so)) == NULL)
        return -ENOMEM;
    pthread_mutex_init(&st->so->lock, NULL);
    return 0;
}

void store__so_free(store *st)
{
    if (st->so == NULL)
        return;
    for (int i = 0; i < SO_NBUCKETS; i++) {
        so_slot *n;
        for (so_slot *sl = st->so->buckets[i]; sl != NULL; sl = n) {
            n = sl->next;
            set_free(sl->set);
            free(sl);
        }
    }
    pthread_mutex_destroy(&st->so->lock);
    free(st->so);
    st->so = NULL;
}

static so_slot **do_slot_find(struct store__so *so, const char *sku)
{
    KIT_ASSERT_LOCKED(&so->lock);
    so_slot **pp = &so->buckets[hash_str(sku) % SO_NBUCKETS];
    while (*pp != NULL && strcmp((*pp)->sku, sku) != 0)
        pp = &(*pp)->next;
    return pp;
}

/* Unlinks *pp; returns its set for the caller to free outside the lock. */
static store__so_set *do_slot_remove(struct store__so *so, so_slot **pp)
{
    so_slot *sl = *pp;
    store__so_set *set = sl->set;
    if (set != NULL)
        so->rows -= set->nrows;
    *pp = sl->next;
    free(sl);
    return set;
}

/* Makes room for n more orders within the budget by unlinking the least
 * recently used READY sets but keep (onto *freelist). */
static void do_make_room(struct store__so *so, size_t budget, size_t n, const so_slot *keep,
                         store__so_set **freelist)
{
    KIT_ASSERT_LOCKED(&so->lock);
    while (so->rows + n > budget) {
        so_slot **victim = NULL;
        for (int i = 0; i < SO_NBUCKETS; i++)
            for (so_slot **pp = &so->buckets[i]; *pp != NULL; pp = &(*pp)->next)
                if ((*pp)->state == SO_READY && *pp != keep &&
                    (victim == NULL || (*pp)->used < (*victim)->used))
                    victim = pp;
        if (victim == NULL)
            return;
        store__so_set *set = do_slot_remove(so, victim);
        set->next_free = *freelist;
        *freelist = set;
    }
}

void store__so_drop(store *st, const char *sku)
{
    struct store__so *so = st->so;
    store__so_set *set = NULL;
    if (so == NULL)
        return;
    pthread_mutex_lock(&so->lock);
    so_slot **pp = do_slot_find(so, sku);
    /* A loader's slot stays: its snapshot may predate this commit, which
     * the version check catches when it is used. */
    if (*pp != NULL && (*pp)->state != SO_LOADING)
        set = do_slot_remove(so, pp);
    pthread_mutex_unlock(&so->lock);
    set_free(set);
}

/* Loads sku's set as the holder of token; installs it when the snapshot
 * shows the item sold out. */
/* Loads sku's set for the caller's version. Returns the item's committed
 * version as read (-1 when the read failed or found no item). */
static int64_t load(store *st, const char *sku, int64_t version, uint64_t token)
{
    struct store__so *so = st->so;
    store__so_set *set = set_new(), *old = NULL, *evicted = NULL;
    int64_t max = st->cfg.sold_out_max_orders;
    int rc = set == NULL ? -ENOMEM : st->be->sold_out_read(st, sku, max, set);
    if (rc == 0 && set->oom)
        rc = -ENOMEM;
    if (rc == 0 && (!set->item.found || set->item.stock != 0))
        rc = -ESTALE;      /* the caller's copy is not current */
    int64_t seen = (rc == 0 || rc == -ESTALE || rc == -E2BIG) && set->item.found
                       ? set->item.version : -1;
    if (rc == 0)
        rc = set_index(set);
    STORE__STAT_ADD(st, sold_out_loads, 1);

    pthread_mutex_lock(&so->lock);
    so_slot **pp = do_slot_find(so, sku);
    /* Loads are exclusive: the slot is this load's. */
    KIT_DASSERT(*pp != NULL && (*pp)->state == SO_LOADING && (*pp)->token == token);
    if (*pp == NULL || (*pp)->state != SO_LOADING || (*pp)->token != token) {
        pthread_mutex_unlock(&so->lock);
        set_free(set);
        return seen;
    }
    so_slot *sl = *pp;
    if (rc == 0) {
        size_t budget = (uint64_t)max > SIZE_MAX / SO_BUDGET ? SIZE_MAX : (size_t)max * SO_BUDGET;
        do_make_room(so, budget, set->nrows, sl, &evicted);
        sl->state = SO_READY;
        sl->version = set->item.version;
        sl->used = ++so->clock;
        sl->set = set;
        so->rows += set->nrows;
        set = NULL;
    } else if (rc == -E2BIG) {
        sl->state = SO_REFUSED;       /* until the version moves */
        sl->version = set->item.version > version ? set->item.version : version;
        sl->retry_ns = 0;
    } else if (rc == -ESTALE) {
        old = do_slot_remove(so, pp);     /* nothing to remember */
    } else {
        sl->state = SO_REFUSED;
        sl->version = version;
        sl->retry_ns = rt_now_ns() + SO_RETRY_NS;
    }
    pthread_mutex_unlock(&so->lock);
    set_free(set);
    set_free(old);
    while (evicted != NULL) {
        store__so_set *n = evicted->next_free;
        set_free(evicted);
        evicted = n;
    }
    return seen;
}

int store_sold_out(store *st, const char *sku, int64_t version, const char *user_id,
                   int64_t qty, const char *key, store_decrement_result *out)
{
    struct store__so *so = st->so;
    store__so_set *stale = NULL;
    uint64_t token = 0;
    int answered = 0, lookup = 0;
    int64_t newer = 0;     /* a committed version above the caller's, seen */

    memset(out, 0, sizeof *out);
    if (!store_valid_id(sku) || !store_valid_id(user_id) || qty < 1 || qty > STORE_QTY_MAX ||
        (key != NULL && !store_valid_key(key)) || version < 0)
        return -EINVAL;
    if (so == NULL || st->cfg.sold_out_max_orders < 0 || st->be->sold_out_read == NULL)
        return 0;

    for (int pass = 0; pass < 2 && !answered; pass++) {
        pthread_mutex_lock(&so->lock);
        so_slot **pp = do_slot_find(so, sku), *sl = *pp;
        if (sl != NULL && sl->state == SO_READY && sl->version == version) {
            if (kit_wall_ms() >= sl->set->item.sale_starts_at_ms) {
                lookup = set_decide(sl->set, sku, user_id, qty, key, out);
                sl->used = ++so->clock;
                answered = 1;
            }
            pthread_mutex_unlock(&so->lock);
            break;
        }
        if (sl != NULL && sl->state != SO_LOADING && sl->version > version)
            newer = sl->version;
        if (pass == 1 || (sl != NULL && sl->state == SO_LOADING) ||
            (sl != NULL && sl->version > version) ||
            (sl != NULL && sl->state == SO_REFUSED && sl->version == version &&
             (sl->retry_ns == 0 || rt_now_ns() < sl->retry_ns))) {
            pthread_mutex_unlock(&so->lock);
            break;   /* loading, refused, or the caller's copy is older */
        }
        /* No set for this version (none, an older one, a refusal to
         * retry): this request loads it. */
        if (sl == NULL) {
            if ((sl = calloc(1, sizeof *sl)) == NULL) {
                pthread_mutex_unlock(&so->lock);
                break;
            }
            strcpy(sl->sku, sku);
            sl->next = NULL;
            *pp = sl;
        }
        stale = sl->set;
        if (stale != NULL)
            so->rows -= stale->nrows;
        sl->set = NULL;
        sl->state = SO_LOADING;
        sl->version = version;
        sl->token = token = ++so->next_token;
        pthread_mutex_unlock(&so->lock);
        set_free(stale);
        stale = NULL;
        store__enter(st);   /* store_close waits for the read */
        int64_t seen = load(st, sku, version, token);
        store__leave(st);
        if (seen > version)
            newer = seen;
    }
    if (answered && lookup) {
        /* The key is not one of this item's orders; it may be another's. */
        store_order o;
        memset(&o, 0, sizeof o);
        int r = key_lookup(st, key, &o);
        if (r == 0)
            answer_key(&o, sku, user_id, qty, out);
        else if (r != -ENOENT)
            answered = 0;   /* cannot tell: the batcher decides */
    }
    if (!answered) {
        memset(out, 0, sizeof *out);
        out->version = newer;
    }
    if (answered) {
        STORE__STAT_ADD(st, sold_out_answers, 1);
        if (out->outcome == STORE_REPLAYED)
            STORE__STAT_ADD(st, replays, 1);
        else
            STORE__STAT_ADD(st, rejects, 1);
    }
    return answered;
}
