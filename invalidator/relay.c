/*
 * relay.c: the outbox relay. Reads outbox rows in id order, produces one
 * event per row with the idempotent producer (acks=all, key = sku, so one
 * item's events stay in order on one partition) and deletes a row only after
 * Kafka acknowledged it.
 *
 * The cursor is the highest id produced. A row whose delivery failed (Kafka
 * unreachable past message.timeout.ms) is still in the outbox: once nothing
 * is in flight the cursor rewinds to just before the lowest failed id and
 * the rows are read again, in order. A crash between commit and publish
 * loses nothing either: the next relay starts from the beginning of the
 * outbox. Rows in flight are bounded (relay_inflight_max): while Kafka is
 * down they wait in the outbox, not in memory.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "invalidator/inv_kafka.h"

struct inv_relay {
    inv *iv;
    rd_kafka_t *rk;
    rd_kafka_topic_t *rkt;
    rd_kafka_queue_t *mainq;
    inv_wake *wake;                /* the inv's: outlives the relay */
    int64_t cursor;                /* highest id produced */
    int64_t inflight;              /* produced, no delivery report yet */
    int64_t failed_min;            /* lowest failed id; INT64_MAX = none */
    int64_t *acked;                /* ids to delete from the outbox */
    size_t nacked, capacked;
    inv_row *rows;
    int64_t drain_deadline;        /* set by inv_stop */
};

static void mark_failed(inv_relay *r, int64_t id)
{
    if (id < r->failed_min)
        r->failed_min = id;
}

/* Lists id for deletion from the outbox. Without memory the row is treated
 * as failed: it stays in the outbox and is published again (a duplicate,
 * never a loss). */
static void push_ack(inv_relay *r, int64_t id)
{
    if (r->nacked == r->capacked) {
        size_t ncap = r->capacked ? r->capacked * 2 : 1024;
        int64_t *a = realloc(r->acked, ncap * sizeof(*a));
        if (a == NULL) {
            mark_failed(r, id);
            return;
        }
        r->acked = a;
        r->capacked = ncap;
    }
    r->acked[r->nacked++] = id;
}

/* Delivery report, served by rd_kafka_poll() on the relay's coroutine. */
static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m,
                        void *opaque)
{
    (void)rk;
    inv_relay *r = opaque;
    int64_t id = (int64_t)(intptr_t)m->_private;
    r->inflight--;
    if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        INV_INC(r->iv, relay_errors, 1);
        mark_failed(r, id);
        return;
    }
    push_ack(r, id);
}

int inv__relay_new(inv *iv, inv_relay **out)
{
    int rc = 0;
    char err[512];
    char num[32];
    inv_relay *r = calloc(1, sizeof(*r));
    rd_kafka_conf_t *conf = NULL;
    if (r == NULL)
        return -ENOMEM;
    r->iv = iv;
    r->failed_min = INT64_MAX;
    r->wake = &iv->relay_wake;
    r->drain_deadline = INT64_MAX;
    r->rows = calloc((size_t)iv->relay_batch, sizeof(*r->rows));
    if (r->rows == NULL) {
        rc = -ENOMEM;
        goto fail;
    }
    if ((conf = inv__conf_new(iv, "relay")) == NULL) {
        rc = -EIO;
        goto fail;
    }
    snprintf(num, sizeof(num), "%d", iv->message_timeout_ms);
    if (inv__conf_set(conf, "enable.idempotence", "true") < 0 ||
        inv__conf_set(conf, "acks", "all") < 0 ||
        inv__conf_set(conf, "message.timeout.ms", num) < 0 ||
        inv__conf_set(conf, "partitioner", "murmur2_random") < 0) {
        rc = -EIO;
        goto fail;
    }
    snprintf(num, sizeof(num), "%d", iv->linger_ms);
    if (inv__conf_set(conf, "linger.ms", num) < 0) {
        rc = -EIO;
        goto fail;
    }
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_conf_set_opaque(conf, r);
    r->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    if (r->rk == NULL) {
        fprintf(stderr, "invalidator: producer: %s\n", err);
        rc = -EIO;
        goto fail;
    }
    conf = NULL;                   /* owned by rk now */
    r->rkt = rd_kafka_topic_new(r->rk, iv->topic, NULL);
    if (r->rkt == NULL) {
        rc = -EIO;
        goto fail;
    }
    r->mainq = rd_kafka_queue_get_main(r->rk);
    rd_kafka_queue_io_event_enable(r->mainq, r->wake->wfd, "1", 1);
    *out = r;
    return 0;
fail:
    if (conf != NULL)
        rd_kafka_conf_destroy(conf);
    inv__relay_free(r);
    return rc;
}

void inv__relay_free(inv_relay *r)
{
    if (r == NULL)
        return;
    if (r->mainq != NULL) {
        rd_kafka_queue_io_event_enable(r->mainq, -1, NULL, 0);
        rd_kafka_queue_destroy(r->mainq);
    }
    if (r->rkt != NULL)
        rd_kafka_topic_destroy(r->rkt);
    if (r->rk != NULL) {
        /* Undelivered messages are dropped: their rows stay in the outbox
         * and the next relay publishes them. */
        rd_kafka_purge(r->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        inv__kafka_destroy(r->rk);
    }
    free(r->acked);
    free(r->rows);
    free(r);
}

void inv__relay_kick(inv_relay *r)
{
    inv__wake_signal(r->wake);
}

void inv__relay_set_drain(inv_relay *r, int64_t deadline)
{
    r->drain_deadline = deadline;
}

/* Deletes the acknowledged rows from the outbox. On failure they stay
 * listed and the next round retries. */
static void ack_rows(inv_relay *r)
{
    if (r->nacked == 0)
        return;
    int rc = r->iv->source.ack(r->iv->source.ctx, r->acked, (int)r->nacked);
    if (rc < 0) {
        INV_INC(r->iv, relay_errors, 1);
        return;
    }
    INV_INC(r->iv, published, r->nacked);
    r->nacked = 0;
}

/* Produces one row. Returns 0, -EAGAIN when librdkafka's queue is full, or
 * another negative errno (the row is then skipped for now and read again
 * after a rewind). */
static int produce_row(inv_relay *r, const inv_row *row)
{
    inv_event ev;
    char buf[INV_EVENT_JSON_MAX];
    memset(&ev, 0, sizeof(ev));
    size_t n = strnlen(row->sku, sizeof(row->sku));
    memcpy(ev.sku, row->sku, n);
    ev.sku_len = n;
    ev.version = row->version;
    ev.committed_at_ms = row->committed_at_ms;
    ev.due_at_ms = row->committed_at_ms +
                   atomic_load_explicit(&r->iv->delay_ms, memory_order_relaxed);
    int len = inv__event_encode(&ev, buf, sizeof(buf));
    if (len < 0)
        return len;
    if (rd_kafka_produce(r->rkt, RD_KAFKA_PARTITION_UA, RD_KAFKA_MSG_F_COPY,
                         buf, (size_t)len, ev.sku, ev.sku_len,
                         (void *)(intptr_t)row->id) < 0) {
        rd_kafka_resp_err_t err = rd_kafka_last_error();
        return err == RD_KAFKA_RESP_ERR__QUEUE_FULL ? -EAGAIN : -EIO;
    }
    r->inflight++;
    return 0;
}

/* Reads and produces rows until the outbox is drained or the in-flight
 * bound is reached. */
static void publish(inv_relay *r)
{
    inv *iv = r->iv;
    while (r->failed_min == INT64_MAX && r->inflight < iv->relay_inflight_max &&
           !atomic_load(&iv->stopping)) {
        int64_t room = iv->relay_inflight_max - r->inflight;
        int max = room < iv->relay_batch ? (int)room : iv->relay_batch;
        int n = iv->source.fetch(iv->source.ctx, r->cursor, r->rows, max);
        if (n < 0) {
            INV_INC(iv, relay_errors, 1);
            return;
        }
        for (int i = 0; i < n; i++) {
            int rc = produce_row(r, &r->rows[i]);
            if (rc == -EAGAIN)
                return;            /* read again from the cursor later */
            if (rc < 0) {
                /* An invalid row (bad sku) can never be published; it is
                 * acknowledged so it does not block the outbox. */
                fprintf(stderr,
                        "invalidator: outbox row %" PRId64 " not publishable: %s\n",
                        r->rows[i].id, inv_strerror(rc));
                INV_INC(iv, relay_errors, 1);
                if (rc != -EINVAL) {
                    mark_failed(r, r->rows[i].id);
                    return;
                }
                push_ack(r, r->rows[i].id);
            }
            r->cursor = r->rows[i].id;
        }
        if (n < max)
            return;
    }
}

static void update_gauges(inv_relay *r)
{
    inv *iv = r->iv;
    atomic_store(&iv->relay_inflight, r->inflight);
    int64_t depth = r->inflight;
    if (iv->source.depth != NULL) {
        int64_t d = iv->source.depth(iv->source.ctx);
        if (d >= 0)
            depth = d;
    }
    atomic_store(&iv->outbox_depth, depth);
}

void inv__relay_run(void *arg)
{
    inv_relay *r = arg;
    inv *iv = r->iv;
    atomic_store(&iv->relay_ready, 1);
    for (;;) {
        inv__wake_drain(r->wake);
        rd_kafka_poll(r->rk, 0);   /* serves delivery reports */
        ack_rows(r);
        if (r->failed_min != INT64_MAX && r->inflight == 0) {
            /* Everything in flight has settled: read the failed rows (and
             * any after them still in the outbox) again, in order. */
            r->cursor = r->failed_min - 1;
            r->failed_min = INT64_MAX;
            INV_INC(iv, retries, 1);
        }
        if (atomic_load(&iv->stopping)) {
            if (r->inflight == 0 || rt_now_ns() >= r->drain_deadline)
                break;
            inv__wake_wait(r->wake, r->drain_deadline);
            continue;
        }
        publish(r);
        update_gauges(r);
        int64_t wait_ms = iv->relay_poll_ms;
        if (r->failed_min != INT64_MAX || r->nacked > 0)
            wait_ms = wait_ms < 100 ? wait_ms : 100;   /* retry soon */
        inv__wake_wait(r->wake, rt_deadline_ms(wait_ms));
    }
    rd_kafka_poll(r->rk, 0);
    ack_rows(r);
    update_gauges(r);
}
