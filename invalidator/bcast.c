/*
 * bcast.c: the broadcast consumer. One consumer group per instance, so
 * every instance sees every event; it starts at the end of the log (a fresh
 * instance has nothing cached) and hands each event to the local sink, which
 * evicts the item leaving the event's version as its floor. Offsets are
 * never committed: a restart starts at the end again.
 *
 * On assignment the consumer asks the brokers for each partition's high
 * watermark and starts there explicitly, so "ready" (inv_ready) means every
 * event published from then on is seen. That query blocks the worker for a
 * round trip, once per rebalance.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "invalidator/inv_kafka.h"

struct inv_bcast {
    inv *iv;
    rd_kafka_t *rk;
    rd_kafka_queue_t *q;
    inv_wake wake;
};

static void on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    inv_bcast *b = opaque;
    INV_INC(b->iv, rebalances, 1);
    if (err != RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        rd_kafka_assign(rk, NULL);
        atomic_store(&b->iv->bcast_ready, 0);
        return;
    }
    for (int i = 0; i < parts->cnt; i++) {
        int64_t lo = 0, hi = 0;
        rd_kafka_topic_partition_t *tp = &parts->elems[i];
        if (rd_kafka_query_watermark_offsets(rk, tp->topic, tp->partition, &lo,
                                             &hi, 5000) ==
            RD_KAFKA_RESP_ERR_NO_ERROR)
            tp->offset = hi;
        else
            tp->offset = RD_KAFKA_OFFSET_END;
    }
    rd_kafka_assign(rk, parts);
    atomic_store(&b->iv->bcast_ready, 1);
}

int inv__bcast_new(inv *iv, inv_bcast **out)
{
    int rc = 0;
    char group[512];
    inv_bcast *b = calloc(1, sizeof(*b));
    rd_kafka_conf_t *conf = NULL;
    if (b == NULL)
        return -ENOMEM;
    b->iv = iv;
    b->wake.rfd = b->wake.wfd = -1;
    if ((rc = inv__wake_open(&b->wake)) < 0)
        goto fail;
    if ((conf = inv__conf_new(iv, "bcast")) == NULL) {
        rc = -EIO;
        goto fail;
    }
    snprintf(group, sizeof(group), "%s%s", iv->bcast_group, iv->instance_id);
    if (inv__conf_consumer(iv, conf, group) < 0 ||
        inv__conf_set(conf, "enable.auto.commit", "false") < 0 ||
        inv__conf_set(conf, "auto.offset.reset", "latest") < 0) {
        rc = -EIO;
        goto fail;
    }
    rc = inv__consumer_open(iv, conf, on_rebalance, b, &b->wake, &b->rk, &b->q);
    conf = NULL;
    if (rc < 0)
        goto fail;
    *out = b;
    return 0;
fail:
    if (conf != NULL)
        rd_kafka_conf_destroy(conf);
    inv__bcast_free(b);
    return rc;
}

static intptr_t close_blocking(void *arg)
{
    rd_kafka_consumer_close(arg);
    return 0;
}

void inv__bcast_free(inv_bcast *b)
{
    if (b == NULL)
        return;
    inv__consumer_free(b->rk, b->q);
    inv__wake_close(&b->wake);
    free(b);
}

void inv__bcast_kick(inv_bcast *b)
{
    inv__wake_signal(&b->wake);
}

static void on_message(void *arg, rd_kafka_message_t *m)
{
    inv_bcast *b = arg;
    inv *iv = b->iv;
    if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
            fprintf(stderr, "invalidator: broadcast consumer: %s\n",
                    rd_kafka_message_errstr(m));
        return;
    }
    inv_event ev;
    if (inv__event_decode(m->payload, m->len, &ev) < 0) {
        INV_INC(iv, decode_errors, 1);
        return;
    }
    iv->local.evict(iv->local.ctx, ev.sku, ev.version);
    INV_INC(iv, evicted, 1);
    inv__hist_add(&iv->bcast_lag, inv__wall_ms() - ev.committed_at_ms);
}

void inv__bcast_run(void *arg)
{
    inv_bcast *b = arg;
    inv *iv = b->iv;
    while (!atomic_load(&iv->stopping)) {
        inv__wake_drain(&b->wake);
        inv__consumer_drain(b->rk, &b->wake, on_message, b);
        inv__wake_wait(&b->wake, rt_deadline_ms(1000));
    }
    rd_kafka_queue_io_event_enable(b->q, -1, NULL, 0);
    rt_blocking(close_blocking, b->rk);
    atomic_store(&iv->bcast_ready, 0);
}
