/*
 * store_int.h: the store's internals, shared by store.c (API, batcher),
 * decide.c (the serial decision rules), schema.c (migrations), sqlite.c and
 * pg*.c (backends; pg_int.h is what the PostgreSQL files share among
 * themselves). Not for other folders.
 */
#ifndef CACHESVC_STORE_INT_H
#define CACHESVC_STORE_INT_H

#include <pthread.h>
#include <stdint.h>

#include "cachesvc/store/store.h"
#include "runtime/rt.h"
#include "kit/kit.h"

enum { STORE__DECR = 1, STORE__PUT = 2 };

/* The item row as the batch transaction locked it and then changed it. */
typedef struct store__state {
    int found;
    int64_t stock;
    int64_t version;
    int64_t per_user_limit;
    int64_t sale_starts_at_ms;
    int64_t units_supplied;
} store__state;


/* One queued request: a decrement or a put. It lives on the stack of the
 * coroutine that made the request, which stays parked until the request is
 * answered; the batcher links it into its queue through next. */
typedef struct store__op {
    int kind;
    /* Inputs (owned by the caller). */
    const char *sku;
    const char *user_id;
    int64_t qty;
    const char *key;
    store_put put;
    /* Filled by the backend before store__decide(): the order found by
     * key before the batch ran. */
    int key_found;
    store_order prior;
    int64_t bought;      /* the user's purchased qty before this batch */
    /* The decision. For a decrement a store_outcome; for a put 0 or
     * -EINVAL. replay_of is the index in the batch of the earlier request
     * whose order this one replays, or -1. */
    int outcome;
    int replay_of;
    int created;         /* put: the item did not exist */
    int64_t order_id;    /* new orders: set by the backend when inserted */
    /* Answer, filled after the batch. */
    int err;             /* 0, or the batch's failure (negative errno) */
    int64_t stock;       /* the item after the batch */
    int64_t version;
    store__state after;  /* puts: the whole item after the batch */
    int batch_size;
    /* Batcher bookkeeping (store.c). */
    struct store__op *next;
    rt_event *ev;
    int state;
    int lead;
    int lead_yield;      /* the new leader yields one turn first */
    uint64_t seq;
    int64_t deadline;    /* while queued (rt_now_ns clock) */
    int timed_out;       /* answered -ETIMEDOUT while queued */
} store__op;


/* Decides ops[0..n-1] in order against *s exactly as serial execution would
 * (replay, not found, sale start, per-user limit, stock), updating *s
 * (stock, settings, found) but not its version. Requires the backend to have
 * filled key_found/prior and bought for every decrement. Returns 1 when
 * something changed (an order or a put), else 0. */
int store__decide(store__state *s, int64_t now_ms, store__op **ops, int n);

/* 1 when the order o is the request (sku, user_id, qty): a replay; 0 when
 * its key came with another request. An empty o->sku or a NULL sku (the
 * batch's own item) matches any sku. */
int store__same_request(const store_order *o, const char *sku, const char *user_id,
                        int64_t qty);

/* After a commit: fills every op's answer (stock, version, batch size, the
 * order ids of in-batch replays) from the final state s. */
void store__finish(const store__state *s, store__op **ops, int n);

/* Aggregates the batch's new orders per user: fills users[] (pointers into
 * the ops) and qtys[] with one entry per distinct buyer and returns the
 * count. users and qtys have room for n entries. */
int store__purchase_deltas(store__op **ops, int n, const char **users, int64_t *qtys);

/* The distinct buyers of the batch's decrements, in first-seen order;
 * users[] has room for n. Returns the count. */
int store__distinct_users(store__op **ops, int n, const char **users);

/* A set of buyers kept as indexes into the caller's users[], by open
 * addressing: slot[] has cap entries (a power of two at least twice the
 * buyers it will hold), -1 where empty. Returns u's slot: slot[h] is u's
 * index in users[], or -1 when u is not in the set (store its index there
 * to add it). */
size_t store__user_slot(const int *slot, size_t cap, const char **users, const char *u);

/* purchases (each user's total per item) is kept only while the item has
 * a per-user limit. store__needs_rebuild() is 1 when this batch switches a
 * limit on for an existing item that had none: the backend must then
 * rebuild the item's purchases from its orders before reading the buyers'
 * totals. store__keep_purchases() says whether the batch writes its
 * purchase deltas (the final state has a limit). */
int store__needs_rebuild(const store__state *s0, store__op **ops, int n);
int store__keep_purchases(const store__state *final);

/* Copies the state of sku into *it. */
void store__state_to_item(const store__state *s, const char *sku, store_item *it);

/* Sorts outbox rows by id (a claim's RETURNING has no order). */
void store__sort_outbox(store_outbox_row *rows, size_t n);

/* A sold-out item's row and orders (soldout.c). */
typedef struct store__so_set store__so_set;

/* What a batch transaction reports. */
typedef struct store__batch_result {
    store__state state;     /* final: committed values */
    int changed;
    int64_t committed_at_ms;
    /* Set by the caller (or both NULL), called from any thread with ctx.
     * sent (at most once): the batch's writes are on their way and the
     * state they will leave if they commit is what the item's next batch
     * may be decided on; the caller may start that batch now.
     * wait_prior: blocks until every batch of the item started before this
     * one has ended (0), or until deadline (-ETIMEDOUT). A batch started
     * while others ran calls it before it reads: a batch decided on an
     * earlier one's writes fails its checks with that one, and must not
     * take the row lock before that one's rerun (the item's batches commit
     * in the order they were started).
     * ended (at most once, on the thread that ran the transaction): the
     * transaction is over (committed, rolled back or failed, the known
     * state updated) and its connection is back in the pool; the caller
     * may start the item's next batch now, before this one is answered. */
    void (*sent)(void *ctx);
    int (*wait_prior)(void *ctx, int64_t deadline);
    void (*ended)(void *ctx);
    void *ctx;
} store__batch_result;

/* A backend. Every function is called from a coroutine and returns 0 or a
 * negative errno as store.h lists. batch() runs one transaction for the
 * ops of one sku (see store.h), calling store__decide between its reads and
 * writes and setting order_id on the new orders; on -EIO/-ETIMEDOUT nothing
 * was applied, on -ECONNABORTED the outcome is unknown. */
typedef struct store__backend {
    const char *name;
    int (*batch)(store *st, const char *sku, store__op **ops, int n, store__batch_result *r);
    int (*get_item)(store *st, const char *sku, store_item *out);
    /* Fills version, first_newer_ms with the stamp of the first order
     * above version among the item's latest 64 (0 when none is newer),
     * *order_version with that order's version_after and *updated_at_ms
     * with the item's last write; store.c combines them. */
    int (*version_check)(store *st, const char *sku, int64_t version,
                         store_version_info *out, int64_t *order_version,
                         int64_t *updated_at_ms);
    int (*order_by_key)(store *st, const char *key, store_order *out);
    /* The orders of keys[0..n-1] in one read: found[i] says whether
     * out[i] holds one (optional: order_by_key per key otherwise). Waits,
     * like order_by_key, until any order found is durable. */
    int (*orders_by_keys)(store *st, const char *const *keys, int n, store_order *out,
                          int *found);
    int (*audit)(store *st, const char *sku, int with_orders, store_audit_result *out);
    int (*outbox_fetch)(store *st, int64_t after_id, size_t max, store_outbox_row *rows);
    int (*outbox_delete)(store *st, const int64_t *ids, size_t n);
    int (*outbox_claim)(store *st, const char *claimer, int64_t lease_ms, int mine,
                        int64_t after_id, size_t max, store_outbox_row *rows);
    int (*outbox_stats)(store *st, int64_t *rows, int64_t *oldest_ms);
    int (*ping)(store *st);
    /* Reads, in one consistent snapshot, sku's row into the set
     * (store__so_set_item) and, when its stock is 0, its orders
     * (store__so_add each); -E2BIG when they are more than max. */
    int (*sold_out_read)(store *st, const char *sku, int64_t max, store__so_set *set);
    void (*close)(store *st);
} store__backend;

typedef struct store__batcher store__batcher;

#define STORE__NBUCKETS 1024

struct store {
    const store__backend *be;
    void *impl;                 /* the backend's state */
    store_config cfg;
    pthread_mutex_t lock;       /* batchers map and queues; never held
                                 * across a switching call */
    pthread_cond_t ended;       /* with lock: a batch ended (wait_prior) */
    store__batcher *buckets[STORE__NBUCKETS];
    uint64_t next_seq;
    struct store__so *so;       /* soldout.c: sets of sold-out items */
    store_stats stats;          /* updated with __atomic builtins */
    int inflight;               /* calls that may reach the backend, running
                                 * now (store__enter/leave; store_close waits
                                 * for none) */
};

#define STORE__STAT_ADD(st, f, n) __atomic_fetch_add(&(st)->stats.f, (n), __ATOMIC_RELAXED)

/* Around every call that may reach the backend (a batch on a thread of the
 * blocking pool, a read): leave is the call's last access to st. */
static inline void store__enter(store *st)
{
    __atomic_fetch_add(&st->inflight, 1, __ATOMIC_ACQ_REL);
}

static inline void store__leave(store *st)
{
    __atomic_fetch_sub(&st->inflight, 1, __ATOMIC_RELEASE);
}

/* Sold-out items answered from memory (soldout.c). */
int store__so_new(store *st);
void store__so_free(store *st);
/* Forgets sku's set (a batch changed the item). Any coroutine. */
void store__so_drop(store *st, const char *sku);
/* For backends' sold_out_read: the item row, then one call per order
 * (key may be NULL). store__so_add returns 0 or -ENOMEM. */
void store__so_set_item(store__so_set *s, const store__state *item);
int store__so_add(store__so_set *s, const char *user_id, int64_t qty, const char *key,
                  int64_t order_id, int64_t stock_after, int64_t version_after);
size_t store__so_count(const store__so_set *s);

/* Backends' open functions: parse the part of the url after the scheme,
 * connect, migrate, set st->be and st->impl. */
int store__sqlite_open(store *st, const char *path);
int store__pg_open(store *st, const char *url);

/* Fault injection for tests (SQLite's way): while positive, each
 * PostgreSQL batch that sends its COMMIT decrements it and then breaks its
 * connection before reading the answer, so the outcome is unknown to the
 * caller. Zero in production. */
extern int store__fault_break_after_commit;

/* Migrations: the statements of version v for a dialect, NULL past the
 * last one. */
enum { STORE__SQLITE = 0, STORE__PG = 1 };
const char *store__migration(int dialect, int v);
int store__schema_version(void);

#endif /* CACHESVC_STORE_INT_H */
