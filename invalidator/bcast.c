/*
 * bcast.c: the broadcast consumer. Every instance reads every event and
 * hands it to the local sink: an event that carries the item's committed
 * row is installed unless a newer copy is held, one without it evicts the
 * item; either leaves the event's version as the item's floor. Offsets are never committed: a restart starts at
 * the end again (a fresh instance has nothing cached).
 *
 * No consumer group: the consumer assigns itself every partition of the
 * topic, each at its high watermark (asked from the brokers on a thread of
 * the blocking pool), so "ready" (inv_ready) means every event published
 * from then on is seen. A group would cost a join at every start (a
 * restarted instance waited for its dead predecessor's session to time
 * out) and a rebalance after a broker outage, whose new assignment started
 * at the end of the log and skipped what was published meanwhile. With its
 * own assignment the consumer keeps its position through an outage and
 * reads the backlog when the brokers return. Should its position fall out
 * of the log (the log was truncated, or a broker lost it), events may have
 * been missed: the local sink is told (lost) and the consumer starts at the
 * end again. Partitions added to the topic later are not read until the
 * instance restarts.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "invalidator/inv_kafka.h"
#include "kit/kit.h"

struct inv_bcast {
    inv *iv;
    rd_kafka_t *rk;
    rd_kafka_queue_t *q;
    inv_wake wake;
    _Atomic int reassign;          /* start again at the end of the log */
};

/* Assigns every partition of the topic at its high watermark. Blocks for
 * the brokers' round trips: runs on the blocking pool. Returns 0 or
 * -EAGAIN (no metadata yet, the topic does not exist yet, a broker did not
 * answer: the caller tries again). */
static intptr_t assign_at_end(void *arg)
{
    inv_bcast *b = arg;
    const rd_kafka_metadata_t *md = NULL;
    rd_kafka_topic_t *t = rd_kafka_topic_new(b->rk, b->iv->topic, NULL);
    if (t == NULL)
        return -EAGAIN;
    rd_kafka_resp_err_t err = rd_kafka_metadata(b->rk, 0, t, &md, 2000);
    rd_kafka_topic_destroy(t);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR || md->topic_cnt != 1 ||
        md->topics[0].err != RD_KAFKA_RESP_ERR_NO_ERROR || md->topics[0].partition_cnt == 0) {
        if (md != NULL)
            rd_kafka_metadata_destroy(md);
        return -EAGAIN;
    }
    int n = md->topics[0].partition_cnt;
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(n);
    for (int i = 0; i < n; i++) {
        int32_t p = md->topics[0].partitions[i].id;
        int64_t lo = 0, hi = 0;
        rd_kafka_topic_partition_t *tp =
            rd_kafka_topic_partition_list_add(parts, b->iv->topic, p);
        if (rd_kafka_query_watermark_offsets(b->rk, b->iv->topic, p, &lo, &hi, 2000) !=
            RD_KAFKA_RESP_ERR_NO_ERROR) {
            rd_kafka_topic_partition_list_destroy(parts);
            rd_kafka_metadata_destroy(md);
            return -EAGAIN;
        }
        tp->offset = hi;
    }
    rd_kafka_metadata_destroy(md);
    err = rd_kafka_assign(b->rk, parts);
    rd_kafka_topic_partition_list_destroy(parts);
    return err == RD_KAFKA_RESP_ERR_NO_ERROR ? 0 : -EAGAIN;
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
    /* A position that falls out of the log is an error to act on (lost),
     * not a silent jump to its end. */
    if (inv__conf_consumer(iv, conf, group) < 0 ||
        inv__conf_set(conf, "enable.auto.commit", "false") < 0 ||
        inv__conf_set(conf, "auto.offset.reset", "error") < 0) {
        rc = -EIO;
        goto fail;
    }
    rc = inv__consumer_open(iv, conf, NULL, b, &b->wake, &b->rk, &b->q);
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
        if (m->err == RD_KAFKA_RESP_ERR__AUTO_OFFSET_RESET ||
            m->err == RD_KAFKA_RESP_ERR_OFFSET_OUT_OF_RANGE) {
            /* Events between our position and the log's start are gone. */
            INV_INC(iv, bcast_gaps, 1);
            if (iv->local.lost != NULL)
                iv->local.lost(iv->local.ctx);
            atomic_store(&b->reassign, 1);
            return;
        }
        if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF && rt_log_enabled(RT_LOG_WARN)) {
            char qe[300];
            rt_log(RT_LOG_WARN, "kafka", "consumer error", "role=broadcast error=%s err=%s",
                   rd_kafka_err2name(m->err), rt_log_q(qe, sizeof qe, rd_kafka_message_errstr(m)));
        }
        return;
    }
    inv_event ev;
    if (inv__event_decode(m->payload, m->len, &ev) < 0) {
        INV_INC(iv, decode_errors, 1);
        return;
    }
    if (ev.purge_at_ms > 0) {
        if (iv->local.purge != NULL)
            iv->local.purge(iv->local.ctx);
        else if (iv->local.lost != NULL)
            iv->local.lost(iv->local.ctx);
        INV_INC(iv, purges, 1);
        return;
    }
    if (ev.has_item && iv->local.install != NULL && !iv->broadcast_evict) {
        iv->local.install(iv->local.ctx, ev.sku, ev.version, &ev.item);
        INV_INC(iv, installed, 1);
    } else {
        iv->local.evict(iv->local.ctx, ev.sku, ev.version);
        INV_INC(iv, evicted, 1);
    }
    inv__hist_add(&iv->bcast_lag, kit_wall_ms() - ev.committed_at_ms);
}

void inv__bcast_run(void *arg)
{
    inv_bcast *b = arg;
    inv *iv = b->iv;
    atomic_store(&b->reassign, 1);
    while (!atomic_load(&iv->stopping)) {
        if (atomic_load(&b->reassign)) {
            atomic_store(&iv->bcast_ready, 0);
            if (rt_blocking(assign_at_end, b) < 0) {
                inv__wake_wait(&b->wake, rt_deadline_ms(200));
                continue;
            }
            atomic_store(&b->reassign, 0);
            atomic_store(&iv->bcast_ready, 1);
        }
        inv__wake_drain(&b->wake);
        inv__consumer_drain(b->rk, &b->wake, on_message, b);
        inv__wake_wait(&b->wake, rt_deadline_ms(1000));
    }
    rd_kafka_queue_io_event_enable(b->q, -1, NULL, 0);
    rt_blocking(close_blocking, b->rk);
    atomic_store(&iv->bcast_ready, 0);
}
