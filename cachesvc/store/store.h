/*
 * store.h: cachesvc's database, the only source of truth for stock.
 *
 * Two backends behind one interface, chosen by URL:
 *   "sqlite:<path>"          embedded (WAL, synchronous=FULL); every call
 *                            runs on the runtime's blocking offload;
 *   "postgresql://..." or    libpq, non-blocking on the runtime's netpoll,
 *   "postgres://..."         pipeline mode, a pool of connections.
 * store_open() applies the schema migrations (table schema_version).
 *
 * Decrements and item writes go through a per-item batcher: every request
 * for one sku queues on that sku's batcher; whoever leads the batcher takes
 * everything queued (up to batch_max) into ONE transaction that locks the
 * item row, decides each request in arrival order exactly as serial
 * execution would, inserts the orders, upserts the per-user purchases,
 * updates stock and version once (+1 per batch that changed something) and
 * writes one outbox row. Requests arriving while a batch commits queue for
 * the next one; there is no artificial wait. The queue is bounded
 * (queue_max): beyond it a decrement is answered STORE_OVERLOADED at once.
 *
 * Threads. Every call except store_outcome_name, store_strerror and
 * store_stats_get must be made from a coroutine of the runtime (runtime/
 * rt.h), store_open and store_close included; they park the calling
 * coroutine, never the worker. A store may be used by any number of
 * coroutines at once. store_stats_get is callable from any thread.
 *
 * Errors: 0 or a count on success, a negative errno on failure:
 *   -EINVAL     bad argument (sku, user id, qty, key, url, config)
 *   -ENOENT     no such item
 *   -EBUSY      the item's batcher queue is full (overloaded)
 *   -EIO        the database is down or failed: nothing was applied
 *   -ETIMEDOUT  the deadline or the database timeout passed: nothing applied
 *   -ECONNABORTED  the connection broke during COMMIT: the outcome is
 *               unknown; retry with the same idempotency key
 *   -ENOMEM
 * store_strerror() names them.
 */
#ifndef CACHESVC_STORE_H
#define CACHESVC_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "kit/metrics.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct store store;

#define STORE_SKU_MAX KIT_SKU_MAX /* bytes of [A-Za-z0-9._:-]; user ids the same (kit/kit.h) */
#define STORE_KEY_MAX 128    /* idempotency key: printable ASCII 0x21-0x7e */
#define STORE_QTY_MAX 1000000

/* An item's row as a batch committed it. */
typedef struct store_committed {
    int64_t stock;
    int64_t version;
    int64_t per_user_limit;
    int64_t sale_starts_at_ms;
    int64_t committed_at_ms;   /* wall-clock ms (the outbox row's) */
} store_committed;

/* Called once per committed batch that changed the item, on the coroutine
 * that ran the batch, after COMMIT and before any request of the batch is
 * answered, with the item's committed row. It should be quick; it may call
 * runtime functions. sku and row are valid during the call only. */
typedef void (*store_commit_fn)(void *ctx, const char *sku, const store_committed *row);

typedef struct store_config {
    int pool_size;        /* PostgreSQL connections; 0 = 4 (SQLite: unused) */
    int batch_max;        /* requests per batch transaction; 0 = 256 */
    int pipeline_depth;   /* batches of one item in flight at once; 0 = 1
                           * (one at a time); only PostgreSQL runs more
                           * than one: see docs/store.md, "Pipelined
                           * batches" */
    int queue_max;        /* queued requests per item; 0 = 4096 */
    int timeout_ms;       /* database deadline per batch/call; 0 = 5000 */
    int reconnect_min_ms; /* backoff after a failed connect; 0 = 50 */
    int reconnect_max_ms; /* backoff cap; 0 = 2000 */
    int64_t sold_out_max_orders;  /* store_sold_out: orders an item may have
                                   * for its set to be kept in memory;
                                   * 0 = 100000, < 0 = never */
    store_commit_fn on_commit;  /* may be NULL */
    void *on_commit_ctx;
} store_config;

/* Opens the store at url with cfg (NULL = defaults), creating the schema or
 * migrating it to the current version. On success *out owns the store and
 * store_close() frees it. Returns 0, -EINVAL (url), -EIO (cannot connect or
 * migrate; the reason went to stderr), -ENOMEM. Coroutines only. */
int store_open(const char *url, const store_config *cfg, store **out);

/* Closes every connection and frees st. No call on st may start. A call
 * still running (a batch whose callers gave up, a read) is waited for: it
 * ends within its database timeout; should calls still run after twice
 * timeout_ms and a second, st is left open (a line to stderr) rather than
 * freed under them. Coroutines only. */
void store_close(store *st);

/* The decrement's outcome. The names (store_outcome_name) are the API's
 * error codes: "ok", "replayed", "not_found", "sold_out",
 * "insufficient_stock", "limit_exceeded", "sale_not_started", "overloaded",
 * "unavailable", "outcome_unknown", "idempotency_key_mismatch". */
typedef enum store_outcome {
    STORE_OK = 0,
    STORE_REPLAYED,            /* the key was used before: original order */
    STORE_NOT_FOUND,
    STORE_SOLD_OUT,            /* stock == 0 */
    STORE_INSUFFICIENT_STOCK,  /* 0 < stock < qty */
    STORE_LIMIT_EXCEEDED,      /* bought + qty > per_user_limit */
    STORE_SALE_NOT_STARTED,    /* now < sale_starts_at_ms */
    STORE_OVERLOADED,          /* the item's queue is full: nothing queued */
    STORE_UNAVAILABLE,         /* database down / timeout: nothing applied */
    STORE_OUTCOME_UNKNOWN,     /* connection lost in COMMIT: retry, same key */
    STORE_KEY_MISMATCH,        /* the key's order is for another sku, user
                                * or qty: nothing applied; the result
                                * describes that order */
    STORE_OUTCOME_COUNT_
} store_outcome;

const char *store_outcome_name(store_outcome o);

typedef struct store_decrement_result {
    store_outcome outcome;
    int64_t order_id;     /* OK, REPLAYED, KEY_MISMATCH: the order; else 0 */
    int64_t qty;          /* OK: qty; REPLAYED, KEY_MISMATCH: the original
                           * order's qty */
    char user_id[STORE_SKU_MAX + 1];   /* REPLAYED, KEY_MISMATCH: the
                                        * original buyer */
    char sku[STORE_SKU_MAX + 1];       /* REPLAYED, KEY_MISMATCH: the
                                        * original order's sku */
    int64_t stock;        /* the item after the batch (REPLAYED: after the */
    int64_t version;      /* original batch); 0 for the failure outcomes   */
                          /* that never read the item                      */
    uint64_t seq;         /* arrival position on the item's batcher (per
                           * process, increasing): for tests and logs */
    int batch_size;       /* requests decided in the same transaction */
} store_decrement_result;

/* Decrements sku's stock by qty for user_id through the item's batcher and
 * parks the caller until its batch committed (or failed). key (1-128
 * printable ASCII bytes) or NULL is the idempotency key: a key seen before
 * (on any sku: keys are global, and kept as long as their order) answers
 * STORE_REPLAYED with the original order when the request is the same
 * (sku, user_id, qty), STORE_KEY_MISMATCH when it is not, and applies
 * nothing either way; only successful orders record their key. deadline (rt_now_ns
 * clock, RT_NO_DEADLINE) bounds the time spent queued: a request still
 * queued then is answered STORE_UNAVAILABLE when the batch running ahead of
 * it ends (so at most one batch, itself bounded by timeout_ms, late); once
 * the request is in a transaction the database timeout bounds it instead. Returns 0 with
 * *out filled for every outcome, or -EINVAL for bad input (nothing queued).
 * The strings are copied; the caller keeps ownership of its arguments. */
int store_decrement(store *st, const char *sku, const char *user_id,
                    int64_t qty, const char *key, int64_t deadline,
                    store_decrement_result *out);

/* Answers a decrement of an item the caller holds at committed version
 * `version` with stock 0 from memory, exactly as store_decrement would
 * decide it against that version: the key's order of this item
 * (STORE_REPLAYED with the original order, or STORE_KEY_MISMATCH),
 * STORE_LIMIT_EXCEEDED (the buyer's orders of the item plus qty pass the
 * per-user limit) or STORE_SOLD_OUT. The first call for a version reads
 * the item and its orders in one snapshot (it parks for that round trip;
 * calls meanwhile answer 0); a batch that changes the item forgets them. A
 * key that is not among the item's orders is looked up in the database
 * (store_order_by_key) before the request is refused: it may be another
 * item's. Returns 1 with *out
 * filled, 0 when it cannot tell (no set for this version yet, the sale has
 * not started, more than cfg.sold_out_max_orders orders, the item is not
 * sold out at the database): the caller then goes through
 * store_decrement, and out->version is the item's committed version when
 * this call saw one above `version` (the caller's copy is stale: it should
 * drop it), else 0. A replay's out->version above `version` says the same.
 * -EINVAL for bad input. Coroutines only. */
int store_sold_out(store *st, const char *sku, int64_t version, const char *user_id,
                   int64_t qty, const char *key, store_decrement_result *out);

/* An order as its idempotency key finds it. */
typedef struct store_order {
    int64_t order_id;
    char sku[STORE_SKU_MAX + 1];
    char user_id[STORE_SKU_MAX + 1];
    int64_t qty;
    int64_t stock;     /* the item right after the order's batch */
    int64_t version;
} store_order;

/* Reads the order whose idempotency key is key straight from the
 * database. Returns 0 with *out, -ENOENT (no committed order has the key),
 * -EINVAL, -EIO, -ETIMEDOUT. Coroutines only. */
int store_order_by_key(store *st, const char *key, store_order *out);

typedef struct store_item {
    char sku[STORE_SKU_MAX + 1];
    int64_t stock;
    int64_t version;
    int64_t per_user_limit;     /* 0 = none */
    int64_t sale_starts_at_ms;  /* wall clock; 0 = on sale */
    int64_t units_supplied;     /* initial stock plus every restock delta */
} store_item;

/* Reads sku straight from the database into *out. Returns 0, -ENOENT,
 * -EIO, -ETIMEDOUT, -EINVAL. */
int store_get_item(store *st, const char *sku, store_item *out);

/* What the consistency monitor needs to judge a read of sku that returned
 * version: the item's version now and when the first version above the
 * read's was committed, as an upper bound (0 when there is none). Exact
 * when that commit is the row's last one (its updated_at_ms) or a batch of
 * orders among the item's 64 latest; otherwise (an item write came first,
 * or more than 64 orders since) the earlier of the first newer order's
 * stamp and the row's last commit. Stamps are taken before the row lock,
 * on the writer's clock. */
typedef struct store_version_info {
    int64_t version;
    int64_t first_newer_ms;
} store_version_info;

/* Returns 0, -ENOENT, -EIO, -ETIMEDOUT, -EINVAL. */
int store_version_check(store *st, const char *sku, int64_t version,
                        store_version_info *out);

/* A create/restock/settings write; a field < 0 leaves it unchanged. stock
 * is required (>= 0) when the item is new. */
typedef struct store_put {
    int64_t stock;
    int64_t per_user_limit;
    int64_t sale_starts_at_ms;
} store_put;

/* Creates or updates sku through its batcher (ordered with the item's
 * decrements), bumping version and writing an outbox row; a restock adds
 * stock - old stock to units_supplied. Fills *out with the committed item
 * and *created (may be NULL) with 1 when the item is new. Returns 0,
 * -EINVAL (bad values, or no stock for a new item), -EBUSY, -EIO,
 * -ETIMEDOUT, -ECONNABORTED. */
int store_put_item(store *st, const char *sku, const store_put *p,
                   int64_t deadline, store_item *out, int *created);

typedef struct store_audit_result {
    store_item item;
    int64_t units_sold;        /* sum of the item's order qty */
    int64_t orders;            /* count of its orders */
    int64_t max_user_qty;      /* the largest total qty one user bought */
    int64_t duplicate_idempotency_keys;  /* keys on more than one order */
    int64_t *order_ids;        /* with_orders: ascending; free with
                                * store_audit_free(); else NULL */
    size_t n_order_ids;
} store_audit_result;

/* Reads the audit of sku straight from the database (one consistent
 * snapshot). Returns 0, -ENOENT, -EIO, -ETIMEDOUT, -ENOMEM. */
int store_audit(store *st, const char *sku, int with_orders, store_audit_result *out);
void store_audit_free(store_audit_result *a);

/* The outbox, for the invalidator's relay. */
typedef struct store_outbox_row {
    int64_t id;
    char sku[STORE_SKU_MAX + 1];
    int64_t version;
    int64_t committed_at_ms;
    /* The item's row when it still stands at this version (read with the
     * outbox row); has_item 0 when a later commit moved it on, whose own
     * row carries the later state. */
    int has_item;
    int64_t stock, per_user_limit, sale_starts_at_ms;
} store_outbox_row;

/* Copies up to max rows with id > after_id, in id order, into rows[].
 * Returns the count (0..max) or a negative errno. */
int store_outbox_fetch(store *st, int64_t after_id, size_t max, store_outbox_row *rows);

/* Claims up to max rows with id > after_id for claimer (1-128 bytes) for
 * lease_ms on the database's clock, and copies them, in id order, into
 * rows[]: rows nobody holds, rows whose lease ended (their relay died or
 * stalled) and, with mine set, rows claimer already holds (to publish
 * again after a failed delivery). Each row is thus handed to one claimer at
 * a time. SQLite, whose database one process owns, reads the rows without
 * claiming them (the process's one relay holds what it publishes). Returns
 * the count (0..max) or a negative errno. */
int store_outbox_claim(store *st, const char *claimer, int64_t lease_ms, int mine,
                       int64_t after_id, size_t max, store_outbox_row *rows);
/* Deletes the rows with these ids (missing ids are ignored). Returns 0 or a
 * negative errno. */
int store_outbox_delete(store *st, const int64_t *ids, size_t n);

/* The outbox's rows now and the commit time of its oldest (0 when
 * empty), read from the database, for the operator's gauges. Returns 0 or a
 * negative errno. */
int store_outbox_stats(store *st, int64_t *rows, int64_t *oldest_committed_at_ms);

/* Round trip to the database, for /readyz. Returns 0, -EIO or -ETIMEDOUT. */
int store_ping(store *st);

/* Counters (monotonic) and histograms for /metrics. STORE_COUNTERS is an
 * X-macro list in the metrics kit's form X(name, help), exported as
 * cachesvc_store_<name>_total (kit/metrics.h). */
#define STORE_COUNTERS(X) \
    X(batches, "Batch transactions run") \
    X(batched_requests, "Requests decided in batches") \
    X(commits, "Batches committed that changed an item") \
    X(orders, "Orders created") \
    X(replays, "Decrements answered from an earlier idempotency key") \
    X(rejects, "Decrements refused: sold out, limit, not started, not found") \
    X(overloaded, "Decrements refused because the item queue was full") \
    X(errors, "Batches or calls that failed: nothing applied") \
    X(unknown_outcomes, "Batches whose COMMIT outcome is unknown") \
    X(retries, "Batches rerun after a unique-key conflict") \
    X(one_trip_batches, "Batches decided on the item's known state and run in one round trip") \
    X(one_trip_stale, "One-round-trip batches whose checks failed: rerun with reads") \
    X(pipelined, "Batches started while the item's batch before them was still committing") \
    X(sold_out_answers, "Decrements of sold-out items answered from memory") \
    X(sold_out_loads, "Snapshots of sold-out items read into memory") \
    X(sold_out_key_reads, "Reads of keys a sold-out set does not hold (each for every key queued)") \
    X(reconnects, "Database connections (re)established")

/* Histogram bounds: batch size (requests) and commit latency (seconds,
 * from the transaction's first statement to COMMIT's answer). */
#define STORE_BATCH_BUCKETS 12   /* 1,2,4,...,1024, +Inf */
#define STORE_LATENCY_BUCKETS 16 /* 0.0001 .. 5 s, +Inf */
extern const double store_batch_bucket_le[STORE_BATCH_BUCKETS];
extern const double store_latency_bucket_le[STORE_LATENCY_BUCKETS];

typedef struct store_stats {
    STORE_COUNTERS(KIT_FIELD)
    uint64_t batch_size_bucket[STORE_BATCH_BUCKETS];     /* non-cumulative */
    uint64_t batch_size_sum;
    uint64_t latency_bucket[STORE_LATENCY_BUCKETS];      /* non-cumulative */
    double latency_sum_s;
    uint64_t queued;          /* gauge: requests waiting in batchers */
    uint64_t queue_max;       /* the bound per item (store_config.queue_max) */
} store_stats;

/* Copies the counters. Callable from any thread. */
void store_stats_get(store *st, store_stats *out);

const char *store_strerror(int err);

/* Validators the API may share: 1 when s is a valid sku / user id
 * (1-64 bytes of [A-Za-z0-9._:-]) / idempotency key. */
int store_valid_id(const char *s);
int store_valid_key(const char *s);

#ifdef __cplusplus
}
#endif
#endif /* CACHESVC_STORE_H */
