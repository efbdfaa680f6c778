/*
 * inv.h: the invalidator. Outbox relay -> Kafka -> delay queue -> version-
 * guarded Redis delete, and a broadcast consumer that evicts every
 * instance's local copy.
 *
 * This is the only header of invalidator/ that other folders may include. It
 * never includes a cachesvc/ header: the service hands the invalidator a
 * source (its outbox) and two sinks (Redis, the local cache) as interfaces.
 *
 * Three roles, chosen per instance with inv_config.roles:
 *   INV_ROLE_RELAY  reads outbox rows in id order through inv_source,
 *                   produces one event per row (idempotent producer,
 *                   acks=all, key = sku) and deletes rows only after Kafka
 *                   acknowledged them. inv_notify() wakes it after a commit.
 *   INV_ROLE_DELAY  one consumer group for the fleet: holds each event until
 *                   its due_at_ms (one pending event per sku, the highest
 *                   version wins), calls the Redis sink, then stores the
 *                   offset of the highest contiguous applied message per
 *                   partition. At least once: a restart re-applies.
 *   INV_ROLE_BCAST  one consumer group per instance (group prefix +
 *                   instance id), starting at the end of the log: calls the
 *                   local sink with the event's version as floor.
 *
 * Event on the wire (key = sku, topic default "stock-invalidations"):
 *   {"sku":"hot","version":12,"committed_at_ms":1700000000000,
 *    "due_at_ms":1700000000200,"stock":95,"per_user_limit":1,
 *    "sale_starts_at_ms":0}
 * due_at_ms = committed_at_ms + the delay in force when the relay published.
 * The last three, the item's committed row at version, come whole or not at
 * all: the relay attaches them when the item still stands at the row's
 * version (a later commit's event carries the later row) and
 * broadcast_update is set. An event with the row is installed ("update");
 * one without it evicts.
 *
 * Threads. Everything runs on coroutines of the runtime (runtime/rt.h):
 * inv_start() must be called from a coroutine, and the source and sink
 * callbacks are called from coroutines of the invalidator (they may park on
 * runtime calls, they must not block the thread for long). inv_notify(),
 * inv_set_delay_ms() and inv_stats_get() are callable from any thread.
 *
 * Errors follow the project's convention: 0 on success, a negative errno on
 * failure; inv_strerror() names them.
 */
#ifndef CACHESVC_INV_H
#define CACHESVC_INV_H

#include <stddef.h>
#include <stdint.h>

#include "kit/metrics.h"

#ifdef __cplusplus
extern "C" {
#endif

#define INV_SKU_MAX KIT_SKU_MAX /* kit/kit.h */
#define INV_DEFAULT_TOPIC "stock-invalidations"
#define INV_DEFAULT_DELAY_GROUP "cachesvc-invalidator"
#define INV_DEFAULT_BCAST_PREFIX "cachesvc-bcast-"

typedef struct inv inv;

/* An item's committed row (besides its sku and version). */
typedef struct inv_item {
    int64_t stock;
    int64_t per_user_limit;
    int64_t sale_starts_at_ms;
} inv_item;

/* One outbox row, as the source returns it. sku is NUL-terminated. */
typedef struct inv_row {
    int64_t id;
    int64_t version;
    int64_t committed_at_ms;       /* wall clock (epoch) milliseconds */
    char sku[INV_SKU_MAX + 1];
    int has_item;                  /* item holds the row committed at version
                                    * (0: the item has moved on, or the
                                    * source does not tell) */
    inv_item item;
} inv_row;

/* The outbox, supplied by the service (the store). */
typedef struct inv_source {
    /* Fills rows[0..max-1] with rows whose id > after_id, in id order,
     * that this relay is to publish. A source shared by several relays (one
     * per instance) hands each row to one of them at a time (a claim with
     * a lease, so a dead relay's rows go to another); with mine set it also
     * returns the rows this relay was handed before (to publish again after
     * a failed delivery). Returns the number filled (0 when none) or a
     * negative errno (the relay retries later). */
    int (*fetch)(void *ctx, int64_t after_id, int mine, inv_row *rows, int max);
    /* Deletes the rows ids[0..n-1]: Kafka acknowledged them. Returns 0 or a
     * negative errno (the relay keeps the ids and retries). */
    int (*ack)(void *ctx, const int64_t *ids, int n);
    /* Optional: rows in the outbox now (a gauge), or a negative errno, and
     * in *oldest_committed_at_ms the commit time of the oldest (0 when
     * empty). Called at most once a second. */
    int64_t (*depth)(void *ctx, int64_t *oldest_committed_at_ms);
    void *ctx;
} inv_source;

/* One version-guarded delete handed to the Redis sink. */
typedef struct inv_del {
    const char *sku;               /* NUL-terminated; valid during the call */
    int64_t version;
    int result;                    /* set by the sink: 0 applied (deleted, or
                                    * absent, or a newer version kept), or a
                                    * negative errno: not applied, retried */
} inv_del;

/* The Redis copy: for each item, delete key stock:{<sku>} only if its cached
 * version <= items[i].version. The sink should pipeline the batch. Returns 0
 * (then items[i].result says each outcome) or a negative errno for the whole
 * batch (every item is retried). Several calls may be in flight at once,
 * from different coroutines. */
typedef struct inv_redis_sink {
    int (*del)(void *ctx, inv_del *items, int n);
    void *ctx;
} inv_redis_sink;

/* A building block for Redis sinks whose client carries one request per
 * call and pipelines across coroutines (the cluster client does): a pool of
 * `width` long-lived coroutines, each running one(ctx, sku, version) for
 * one item at a time, so up to width deletes are in flight at once without
 * spawning a coroutine per item. */
typedef struct inv_fanout inv_fanout;

/* Starts the pool in *out (width < 1 counts as 1). Call from a coroutine.
 * Returns 0; -EINVAL when one is NULL; -ENOMEM; or -ECANCELED when the
 * runtime is stopping (rt_spawn's errors). *out is NULL on failure. Owned
 * by the caller, freed with inv_fanout_free. */
int inv_fanout_new(int width, int (*one)(void *ctx, const char *sku, int64_t version),
                   void *ctx, inv_fanout **out);
/* Runs every item through the pool and waits for all of them: sets
 * items[i].result to 0, or to one's return value when negative. Usable as
 * the body of an inv_redis_sink del. Callable from any number of coroutines
 * at once. Returns 0, or -ENOMEM (then no item was attempted). */
int inv_fanout_del(inv_fanout *f, inv_del *items, int n);
/* Stops the pool (no call may be running) and frees it. From a coroutine. */
void inv_fanout_free(inv_fanout *f);

/* The local cache: evict sku, leaving version as the floor below which no
 * copy may be installed again. Must not park for long. */
typedef struct inv_local_sink {
    void (*evict)(void *ctx, const char *sku, int64_t version);
    /* Optional: the event carried the item's committed row at version:
     * install it unless a newer copy is held, and raise the floor to
     * version either way. Without it (or with broadcast_update off), evict. */
    void (*install)(void *ctx, const char *sku, int64_t version, const inv_item *item);
    /* Optional: events may have been missed (the log moved past the
     * consumer's position, a broker lost its log): no local copy cached so
     * far may be trusted any more. */
    void (*lost)(void *ctx);
    /* Optional: an operator purged every tier (inv_purge, from any
     * instance): forget every copy and every floor. Without it, lost. */
    void (*purge)(void *ctx);
    void *ctx;
} inv_local_sink;

enum {
    INV_ROLE_RELAY = 1,
    INV_ROLE_DELAY = 2,
    INV_ROLE_BCAST = 4,
    INV_ROLE_ALL = 7,
};

/* One librdkafka property passed through to every producer and consumer
 * the invalidator creates (inv_config.kafka_props). */
typedef struct inv_kafka_prop {
    const char *key;               /* e.g. "security.protocol" */
    const char *value;             /* e.g. "SASL_SSL" */
} inv_kafka_prop;

/* Zero or NULL in any field means its default. Strings are copied. */
typedef struct inv_config {
    const char *brokers;           /* "embedded" (default) or "h:p,h:p" */
    const char *topic;             /* INV_DEFAULT_TOPIC */
    const char *delay_group;       /* INV_DEFAULT_DELAY_GROUP */
    const char *bcast_group_prefix;/* INV_DEFAULT_BCAST_PREFIX */
    const char *instance_id;       /* default "<hostname>-<pid>" */
    int64_t delay_ms;              /* 0 = default 500; < 0 = no delay */
    int pending_cap;               /* messages held by the delay consumer
                                    * before it pauses fetching; 100000 */
    int roles;                     /* INV_ROLE_* bits; 0 = INV_ROLE_ALL */
    int partitions;                /* of the embedded cluster's topic; 16 */
    int appliers;                  /* Redis sink calls in flight; 4 */
    int batch;                     /* items per Redis sink call; 128 */
    int relay_batch;               /* outbox rows per fetch; 512 */
    int relay_inflight_max;        /* rows produced, not acked; 20000 */
    int relay_poll_ms;             /* outbox poll without notify; 1000 */
    int message_timeout_ms;        /* producer delivery timeout; 30000 */
    int retry_backoff_max_ms;      /* Redis retry backoff cap; 1000 */
    int linger_ms;                 /* producer linger; 1 */
    int session_timeout_ms;        /* consumer group session timeout: how
                                    * soon a dead consumer's partitions move;
                                    * 10000 */
    int broadcast_evict;           /* 1: the old protocol ("evict"): the
                                    * relay sends no item rows and the
                                    * broadcast consumer evicts on every
                                    * event; 0 (default, "update"): rows are
                                    * sent and installed */
    const char *kafka_debug;       /* librdkafka "debug" property; NULL */
    /* librdkafka properties (copied) set with rd_kafka_conf_set on every
     * producer and consumer configuration, after the invalidator's own
     * settings, so they override them (socket.timeout.ms, client.id,
     * fetch.wait.max.ms, ...). message.timeout.ms (delivery.timeout.ms),
     * linger.ms (queue.buffering.max.ms, whole milliseconds) and
     * session.timeout.ms replace the fields above. Refused (inv_new fails
     * with -EINVAL): an unknown property, a value librdkafka rejects, and
     * the properties the invalidator's guarantees rest on, listed by
     * inv_kafka_prop_reserved(). With brokers "embedded" the security.*,
     * sasl.* and ssl.* properties are checked but not applied: the
     * in-process cluster speaks plaintext. */
    const inv_kafka_prop *kafka_props;
    int n_kafka_props;
} inv_config;

/* Checks cfg->kafka_props as inv_new() would, without creating anything.
 * Returns 0, or -EINVAL with a one-line reason in err (errlen bytes,
 * NUL-terminated) that names the first bad property; a value is quoted
 * only when the property's name says neither password, secret nor token.
 * Callable from any thread. */
int inv_check_kafka_props(const inv_config *cfg, char *err, size_t errlen);

/* If key is a property the invalidator sets itself and an operator must
 * not override, returns why (a static sentence naming what to use
 * instead); otherwise NULL. */
const char *inv_kafka_prop_reserved(const char *key);

/* Creates an invalidator. source is needed for INV_ROLE_RELAY, redis for
 * INV_ROLE_DELAY, local for INV_ROLE_BCAST (others may be NULL); the
 * structs are copied, their ctx pointers must outlive the inv. With brokers
 * "embedded" the first inv of the process creates librdkafka's mock cluster
 * in process (shared by later invs, destroyed with the last). Nothing runs
 * until inv_start(). On success *out owns the inv (inv_free). Callable from
 * any thread. Returns 0, -EINVAL (bad config), -ENOMEM, or -EIO (librdkafka
 * refused the configuration). */
int inv_new(const inv_config *cfg, const inv_source *source,
            const inv_redis_sink *redis, const inv_local_sink *local,
            inv **out);

/* Starts the configured roles as coroutines. Call from a coroutine. Returns
 * 0 or a negative errno (nothing runs then). */
int inv_start(inv *iv);

/* Stops the roles: the relay stops fetching and waits up to drain_ms for
 * Kafka to acknowledge what it produced; the delay consumer waits for its
 * in-flight Redis calls, stores and commits the applied offsets and leaves
 * its group; events still pending are re-delivered to the next consumer.
 * Call from a coroutine. Returns 0 or -ETIMEDOUT (stopped anyway). */
int inv_stop(inv *iv, int drain_ms);

/* Frees a stopped (or never started) inv. */
void inv_free(inv *iv);

/* Tells the relay that outbox rows were committed: it fetches at once.
 * Callable from any thread or coroutine, at any time between inv_new and
 * inv_free (a no-op before inv_start or after inv_stop); never blocks. */
void inv_notify(inv *iv);

/* Publishes a purge event: every instance's broadcast consumer (this one
 * too) hands it to its local sink's purge, consumers that are cut off read
 * it when they are back. Waits up to timeout_ms for the brokers'
 * acknowledgement. Call from a coroutine, between inv_start and inv_stop.
 * Returns 0, -ENOTSUP without the relay role, -ETIMEDOUT, or -EIO (not
 * acknowledged: call again). */
int inv_purge(inv *iv, int timeout_ms);

/* Sets the delay applied to events published from now on (atomic).
 * Callable from any thread. */
void inv_set_delay_ms(inv *iv, int64_t ms);
int64_t inv_delay_ms(const inv *iv);

/* True once every started consumer role holds its partition assignment
 * (the broadcast consumer with its positions resolved): events published
 * after this are seen. Callable from any thread. */
int inv_ready(const inv *iv);
/* True once the roles this instance's answers depend on are running: the
 * relay, and the broadcast consumer with its positions resolved. The delay
 * consumer's group (the fleet's) may still be joining: its events wait in
 * Kafka meanwhile. Callable from any thread. */
int inv_ready_to_serve(const inv *iv);

/* The bootstrap address list the inv uses (for "embedded", the mock
 * cluster's). Owned by iv. */
const char *inv_bootstraps(const inv *iv);

/* ---------------------------------------------------------------------- */
/* Metrics                                                                  */

/* A latency histogram in milliseconds: exact below 64 ms, then 16
 * log-linear sub-buckets per power of two (under 6.25 % relative error), up
 * to about 17 minutes (larger values land in the last bucket). 2.3 KiB. */
#define INV_HIST_BUCKETS (64 + 16 * 14)
typedef struct inv_hist {
    uint64_t count;
    uint64_t sum_ms;
    uint64_t b[INV_HIST_BUCKETS];
} inv_hist;

/* The value (ms) below which a fraction q (0..1) of the samples lie; 0 when
 * empty. */
int64_t inv_hist_quantile(const inv_hist *h, double q);
/* Samples <= le_ms (for Prometheus' cumulative buckets). */
uint64_t inv_hist_count_le(const inv_hist *h, int64_t le_ms);

/* Counters (monotonic), declared once. */
#define INV_COUNTERS(X)                                                       \
    X(published, "outbox rows published and deleted (with the embedded broker: once their Redis delete is applied)") \
    X(relay_errors, "failed deliveries and outbox fetch/ack errors")          \
    X(received, "events read by the delay consumer")                          \
    X(applied, "events whose version-guarded Redis delete completed")          \
    X(coalesced, "events merged into a pending event of the same sku")         \
    X(errors, "Redis sink failures (per item)")                               \
    X(retries, "Redis deletes rescheduled after a failure")                   \
    X(decode_errors, "messages that were not a valid event (skipped)")        \
    X(evicted, "broadcast events handed to the local sink to evict")          \
    X(installed, "broadcast events whose committed row went to the local sink to install") \
    X(purges, "purge events handed to the local sink")                        \
    X(bcast_gaps, "times the broadcast consumer's position fell out of the log (local copies distrusted)") \
    X(sink_calls, "Redis sink calls (batches)")                               \
    X(pauses, "times the delay consumer paused fetching (pending full)")      \
    X(rebalances, "partition assignments and revocations")

typedef struct inv_stats {
    INV_COUNTERS(KIT_FIELD)
    int64_t outbox_depth;          /* gauge: source depth, or rows in flight */
    int64_t outbox_oldest_age_ms;  /* gauge: age of the oldest outbox row
                                    * (0 when empty or unknown) */
    int64_t relay_inflight;        /* gauge: produced, not yet acknowledged */
    int64_t pending;               /* gauge: events held, not yet applied */
    int64_t pending_skus;          /* gauge: distinct (sku, partition) held */
    int64_t delay_ms;              /* gauge: the current delay */
    inv_hist transit;              /* committed_at -> read by the delay
                                    * consumer (outbox + Kafka) */
    inv_hist lag;                  /* committed_at -> Redis delete applied */
    inv_hist sink;                 /* duration of one Redis sink call */
    inv_hist lateness;             /* due_at -> Redis delete applied */
    inv_hist bcast_lag;            /* committed_at -> local install or eviction */
} inv_stats;

/* Copies the current figures into *out (about 12 KiB: keep it off small
 * coroutine stacks). Callable from any thread. */
void inv_stats_get(const inv *iv, inv_stats *out);

/* Appends the invalidator's families from st in Prometheus text (the
 * metrics kit, kit/metrics.h): counters cachesvc_inv_<name>_total, gauges,
 * histograms cachesvc_invalidation_{lag,lateness,transit}_seconds,
 * cachesvc_inv_sink_seconds, cachesvc_broadcast_lag_seconds. Failures show
 * as b->oom. */
void inv_metrics_append(const inv_stats *st, kit_buf *b);

const char *inv_strerror(int err);

#ifdef __cplusplus
}
#endif
#endif /* CACHESVC_INV_H */
