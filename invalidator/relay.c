/*
 * relay.c: the outbox relay. Reads outbox rows in id order, produces one
 * event per row with the idempotent producer (acks=all, key = sku, so one
 * item's events stay in order on one partition) and deletes a row only after
 * Kafka acknowledged it.
 *
 * No cursor. Outbox ids come from a sequence taken at INSERT, and
 * concurrent transactions become visible out of id order: a cursor past
 * the highest id produced would skip a row whose transaction commits
 * later. Instead every round reads the outbox from its start (it holds
 * only rows not yet acknowledged, so that is cheap) and skips the rows it
 * holds: produced and not yet settled, or acknowledged and not yet
 * deleted (the held set, a hash of ids). A row leaves the set when it is
 * deleted from the outbox, or when its delivery failed (Kafka unreachable
 * past message.timeout.ms), and the next round publishes it again. A crash
 * between commit and publish loses nothing either: the next relay reads
 * the whole outbox. Rows in flight are bounded (relay_inflight_max): while
 * Kafka is down they wait in the outbox, not in memory.
 *
 * Several relays (one per instance) share the outbox: the source hands
 * each row to one of them (a claim with a lease), so each event is
 * published once by the fleet and a dead relay's rows go to another when
 * their lease ends. After a failed delivery the next round asks for this
 * relay's own claimed rows too.
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
    int64_t inflight;              /* produced, no delivery report yet */
    int failed;                    /* a delivery failed since the last round */
    int64_t *acked;                /* ids to delete from the outbox */
    size_t nacked, capacked;
    int64_t *held;                 /* open addressing, 0 = empty: ids in
                                    * flight or acknowledged, not deleted */
    size_t heldcap, nheld;
    int64_t depth_next_ns;         /* rt_now_ns() of the next depth query */
    inv_row *rows;
    int64_t drain_deadline;        /* set by inv_stop */
};

/* ---- the held set: linear probing, deletion by backward shift -------- */

static size_t held_slot(const inv_relay *r, int64_t id)
{
    uint64_t h = (uint64_t)id * 0x9e3779b97f4a7c15ull;
    return (size_t)(h >> 17) & (r->heldcap - 1);
}

static int held_has(const inv_relay *r, int64_t id)
{
    if (r->heldcap == 0)
        return 0;
    for (size_t i = held_slot(r, id); r->held[i] != 0; i = (i + 1) & (r->heldcap - 1))
        if (r->held[i] == id)
            return 1;
    return 0;
}

/* Adds id (> 0). Returns 0 or -ENOMEM. */
static int held_add(inv_relay *r, int64_t id)
{
    if ((r->nheld + 1) * 2 > r->heldcap) {
        size_t ncap = r->heldcap ? r->heldcap * 2 : 1024;
        int64_t *n = calloc(ncap, sizeof(*n)), *old = r->held;
        size_t ocap = r->heldcap;
        if (n == NULL)
            return -ENOMEM;
        r->held = n;
        r->heldcap = ncap;
        for (size_t i = 0; i < ocap; i++) {
            if (old[i] == 0)
                continue;
            size_t j = held_slot(r, old[i]);
            while (r->held[j] != 0)
                j = (j + 1) & (ncap - 1);
            r->held[j] = old[i];
        }
        free(old);
    }
    size_t i = held_slot(r, id);
    while (r->held[i] != 0 && r->held[i] != id)
        i = (i + 1) & (r->heldcap - 1);
    if (r->held[i] == 0) {
        r->held[i] = id;
        r->nheld++;
    }
    return 0;
}

static void held_del(inv_relay *r, int64_t id)
{
    size_t mask = r->heldcap - 1, i;
    if (r->heldcap == 0)
        return;
    for (i = held_slot(r, id); r->held[i] != id; i = (i + 1) & mask)
        if (r->held[i] == 0)
            return;
    /* Backward shift: move later members of the run into the hole when
     * their home slot does not lie cyclically in (hole, their slot]. */
    for (size_t j = (i + 1) & mask; r->held[j] != 0; j = (j + 1) & mask) {
        size_t home = held_slot(r, r->held[j]);
        if (((j - home) & mask) >= ((j - i) & mask)) {
            r->held[i] = r->held[j];
            i = j;
        }
    }
    r->held[i] = 0;
    r->nheld--;
}

/* A row whose delivery failed goes back to the outbox's readers: the next
 * round publishes it again. */
static void mark_failed(inv_relay *r, int64_t id)
{
    held_del(r, id);
    r->failed = 1;
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
    r->failed = 1;                 /* the first round takes back the rows a
                                    * previous run of this instance claimed */
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
    free(r->held);
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
    for (size_t i = 0; i < r->nacked; i++)
        held_del(r, r->acked[i]);
    r->nacked = 0;
}

/* Produces one row and holds its id. Returns 0, -EAGAIN when librdkafka's
 * queue is full, or another negative errno (the row is then skipped for now
 * and read again next round). */
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
    if (held_add(r, row->id) < 0)
        return -EAGAIN;
    if (rd_kafka_produce(r->rkt, RD_KAFKA_PARTITION_UA, RD_KAFKA_MSG_F_COPY,
                         buf, (size_t)len, ev.sku, ev.sku_len,
                         (void *)(intptr_t)row->id) < 0) {
        rd_kafka_resp_err_t err = rd_kafka_last_error();
        held_del(r, row->id);
        return err == RD_KAFKA_RESP_ERR__QUEUE_FULL ? -EAGAIN : -EIO;
    }
    r->inflight++;
    return 0;
}

/* Reads the outbox from its start and produces every row it does not hold,
 * until the outbox is read through or the in-flight bound is reached. */
static void publish(inv_relay *r)
{
    inv *iv = r->iv;
    int64_t after = 0;
    int mine = r->failed;          /* after a failure: our own rows too */
    r->failed = 0;
    while (r->inflight < iv->relay_inflight_max && !atomic_load(&iv->stopping)) {
        int max = iv->relay_batch;
        int n = iv->source.fetch(iv->source.ctx, after, mine, r->rows, max);
        if (n < 0) {
            INV_INC(iv, relay_errors, 1);
            return;
        }
        for (int i = 0; i < n; i++) {
            after = r->rows[i].id;
            if (held_has(r, after))
                continue;          /* in flight, or acknowledged */
            if (r->inflight >= iv->relay_inflight_max)
                return;
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
                    r->failed = 1;
                    return;
                }
                if (held_add(r, r->rows[i].id) == 0)
                    push_ack(r, r->rows[i].id);
            }
        }
        if (n < max)
            return;
    }
}

/* The gauges. The outbox's own count (rows in the database, not only
 * those in flight) and its oldest row are asked at most once a second: the
 * loop runs after every commit. */
static void update_gauges(inv_relay *r)
{
    inv *iv = r->iv;
    atomic_store(&iv->relay_inflight, r->inflight);
    if (iv->source.depth == NULL) {
        atomic_store(&iv->outbox_depth, r->inflight);
        return;
    }
    int64_t now = rt_now_ns();
    if (now < r->depth_next_ns)
        return;
    r->depth_next_ns = now + 1000000000LL;
    int64_t oldest = 0;
    int64_t d = iv->source.depth(iv->source.ctx, &oldest);
    if (d >= 0) {
        atomic_store(&iv->outbox_depth, d);
        atomic_store(&iv->outbox_oldest_ms, d > 0 ? oldest : 0);
    }
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
        if (r->failed)
            INV_INC(iv, retries, 1);   /* the next round publishes them again */
        if (atomic_load(&iv->stopping)) {
            if (r->inflight == 0 || rt_now_ns() >= r->drain_deadline)
                break;
            inv__wake_wait(r->wake, r->drain_deadline);
            continue;
        }
        publish(r);
        update_gauges(r);
        int64_t wait_ms = iv->relay_poll_ms;
        if (r->failed || r->nacked > 0)
            wait_ms = wait_ms < 100 ? wait_ms : 100;   /* retry soon */
        inv__wake_wait(r->wake, rt_deadline_ms(wait_ms));
    }
    rd_kafka_poll(r->rk, 0);
    ack_rows(r);
    update_gauges(r);
}
