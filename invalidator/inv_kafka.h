/*
 * inv_kafka.h: the invalidator's Kafka roles and the inv object they share,
 * for invalidator/'s own files and its tests.
 */
#ifndef CACHESVC_INV_KAFKA_H
#define CACHESVC_INV_KAFKA_H

#include <pthread.h>
#include <stdatomic.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "invalidator/inv_int.h"
#include "runtime/rt.h"

/* A self-pipe the runtime waits on. librdkafka writes to it when one of its
 * queues becomes non-empty (rd_kafka_queue_io_event_enable); inv_notify(),
 * finished Redis calls and inv_stop() write to it too. Its owner drains it
 * before draining the queue, so no wakeup is lost. */
typedef struct inv_wake {
    int rfd, wfd;
} inv_wake;

int inv__wake_open(inv_wake *w);      /* 0 or -errno; rfd is registered */
void inv__wake_close(inv_wake *w);
void inv__wake_signal(inv_wake *w);   /* any thread; never blocks */
void inv__wake_drain(inv_wake *w);
/* Parks until signalled or the wall-clock-free monotonic deadline. */
void inv__wake_wait(inv_wake *w, int64_t deadline);

typedef struct inv_relay inv_relay;
typedef struct inv_delay inv_delay;
typedef struct inv_bcast inv_bcast;

struct inv {
    /* Configuration (strings owned). */
    char *brokers;                 /* bootstrap list in use */
    char *topic, *delay_group, *bcast_group, *instance_id, *kafka_debug;
    int roles, pending_cap, partitions, appliers, batch, relay_batch;
    int broadcast_evict;           /* inv_config.broadcast_evict */
    int relay_inflight_max, relay_poll_ms, message_timeout_ms;
    int retry_backoff_max_ms, linger_ms, session_timeout_ms;
    inv_kafka_prop *props;         /* passed-through librdkafka properties;
                                    * keys and values strdup'ed, values
                                    * wiped by inv_free */
    int nprops;
    atomic_llong delay_ms;
    bool embedded;                 /* holds a reference on the mock cluster */
    bool ack_after_apply;          /* embedded, relay and delay here: an
                                    * outbox row is deleted only once its
                                    * Redis delete was applied */

    inv_source source;
    inv_redis_sink redis;
    inv_local_sink local;

    atomic_int stopping;
    bool started;
    rt_co *relay_co, *delay_co, *bcast_co;
    inv_relay *relay;
    inv_wake relay_wake;           /* opened by the first inv_start, closed
                                    * by inv_free, so inv_notify() is safe
                                    * at any time */
    inv_delay *delay;
    inv_bcast *bcast;

    /* Metrics: counters are updated with relaxed atomics from any worker. */
#define INV_X_FIELD(name, help) atomic_ullong name;
    INV_COUNTERS(INV_X_FIELD)
#undef INV_X_FIELD
    atomic_llong outbox_depth, outbox_oldest_ms, relay_inflight, pending, pending_skus;
    atomic_int relay_ready, delay_ready, bcast_ready;
    inv_hist transit, lag, sink, lateness, bcast_lag;
};

#define INV_INC(iv, name, n) \
    atomic_fetch_add_explicit(&(iv)->name, (n), memory_order_relaxed)

/* kafka.c: common configuration and the process-wide embedded cluster. */
rd_kafka_conf_t *inv__conf_new(inv *iv, const char *client_suffix);
/* Adds what both consumers share: group.id, session timeout, low fetch
 * wait. Returns 0 or -EIO. */
int inv__conf_consumer(inv *iv, rd_kafka_conf_t *conf, const char *group);
int inv__conf_set(rd_kafka_conf_t *conf, const char *name, const char *value);
/* Routes conf's librdkafka log lines (log_cb, syslog levels mapped to
 * RT_LOG_*) and errors (error_cb) into rt_log with module=kafka. Every
 * conf the invalidator (and the devbroker) creates gets it. */
void inv__conf_log(rd_kafka_conf_t *conf);
enum { INV_PROPS_GLOBAL = 1, INV_PROPS_PRODUCER = 2, INV_PROPS_CONSUMER = 4 };
/* Sets the operator's properties (iv->props) that concern the kinds of
 * client given (INV_PROPS_* bits; global ones always) on conf, except,
 * with the embedded cluster, the security ones. inv__conf_new does it
 * after the common settings (the relay's producer settings that follow
 * are reserved, or taken from fields inv_new filled from the properties),
 * and inv__consumer_open again right before it creates a consumer, so they
 * override the roles' own consumer settings. Returns 0, or -EINVAL
 * (librdkafka refused one that inv_new had accepted). */
int inv__conf_props(inv *iv, rd_kafka_conf_t *conf, int kinds);
/* Which clients librdkafka says the property concerns: INV_PROPS_GLOBAL
 * (both), _PRODUCER, _CONSUMER, or an OR of them; GLOBAL when unknown. */
int inv__prop_kinds(const char *key);
/* Sets *message_timeout_ms, *linger_ms and *session_timeout_ms from the
 * properties among p[0..n-1] that replace them (message.timeout.ms or
 * delivery.timeout.ms, linger.ms or queue.buffering.max.ms,
 * session.timeout.ms); the others are left alone. Returns 0, or -EINVAL
 * with err set when such a value is not a whole number of milliseconds. */
int inv__props_apply_fields(const inv_kafka_prop *p, int n, int *message_timeout_ms,
                            int *linger_ms, int *session_timeout_ms, char *err,
                            size_t errlen);
/* Takes a reference on the in-process mock cluster (created on first use
 * with the topic) and returns its bootstrap list (strdup'ed) in *boot. */
int inv__mock_acquire(const char *topic, int partitions, char **boot);
void inv__mock_release(void);
/* The mock cluster, for tests (broker up/down), or NULL. */
rd_kafka_mock_cluster_t *inv__mock_cluster(void);
typedef void (*inv_rebalance_fn)(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                                 rd_kafka_topic_partition_list_t *parts,
                                 void *opaque);
/* Creates a consumer from conf (consumed, also on failure) with the given
 * rebalance callback and opaque, routes all its events to one queue that
 * wakes w, and subscribes to iv->topic; with cb NULL it does not subscribe
 * (the caller assigns partitions itself: no group join). Sets *rk and *q;
 * returns 0 or -EIO. */
int inv__consumer_open(inv *iv, rd_kafka_conf_t *conf, inv_rebalance_fn cb,
                       void *opaque, inv_wake *w, rd_kafka_t **rk,
                       rd_kafka_queue_t **q);
/* Serves the consumer's queue until it is empty or a budget of messages is
 * spent (then w is signalled so the caller comes back at once), handing
 * each message to fn. Rebalance callbacks run inside. */
void inv__consumer_drain(rd_kafka_t *rk, inv_wake *w,
                         void (*fn)(void *arg, rd_kafka_message_t *m),
                         void *arg);
/* Frees what inv__consumer_open made (either may be NULL). */
void inv__consumer_free(rd_kafka_t *rk, rd_kafka_queue_t *q);
/* Runs rd_kafka_destroy (which joins librdkafka's threads) off the
 * workers. */
void inv__kafka_destroy(rd_kafka_t *rk);

/* The roles: each runs as one coroutine until iv->stopping. */
int inv__relay_new(inv *iv, inv_relay **out);
void inv__relay_run(void *arg);            /* arg = inv_relay */
void inv__relay_free(inv_relay *r);
void inv__relay_kick(inv_relay *r);
void inv__relay_set_drain(inv_relay *r, int64_t deadline);
/* With ack_after_apply: the delay consumer applied the Redis delete of
 * (sku, version). The relay deletes the outbox rows of that sku at or
 * below version it had published. Any thread. */
void inv__relay_applied(inv_relay *r, const char *sku, size_t sku_len,
                        int64_t version);
/* inv_purge's work: produces a purge event and waits for its delivery. */
int inv__relay_purge(inv_relay *r, int timeout_ms);

int inv__delay_new(inv *iv, inv_delay **out);
void inv__delay_run(void *arg);
void inv__delay_free(inv_delay *d);
void inv__delay_kick(inv_delay *d);
/* The deadline of inv_stop's drain (with the embedded broker the delay
 * consumer applies what it holds by then). */
void inv__delay_set_drain(inv_delay *d, int64_t deadline);

int inv__bcast_new(inv *iv, inv_bcast **out);
void inv__bcast_run(void *arg);
void inv__bcast_free(inv_bcast *b);
void inv__bcast_kick(inv_bcast *b);

#endif /* CACHESVC_INV_KAFKA_H */
