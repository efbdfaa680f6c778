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
 * their lease ends. After a failed delivery or a failed fetch (a claim
 * may have committed with its answer lost) the next round asks for this
 * relay's own claimed rows too.
 *
 * With the embedded broker the log lives in this process, so an event
 * Kafka acknowledged is still lost by a kill -9 while it waits in the
 * delay queue. There a row stays in the outbox (and held) after Kafka's
 * acknowledgement until the delay consumer reports its Redis delete
 * applied (inv__relay_applied); a restarted instance publishes what is
 * left again.
 */
#include <errno.h>
#include <stdbool.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "invalidator/inv_kafka.h"
#include "kit/kit.h"

/* The array a (n used, *cap allocated, elements of size elem) with room
 * for one more: doubled when full, from first. NULL without memory (a is
 * then unchanged). */
static void *room_for_one(void *a, size_t n, size_t *cap, size_t elem, size_t first)
{
    if (n < *cap)
        return a;
    size_t ncap = *cap ? *cap * 2 : first;
    void *na = realloc(a, ncap * elem);
    if (na != NULL)
        *cap = ncap;
    return na;
}

/* An applied delete the delay consumer reported (inv__relay_applied). */
typedef struct inv_applied {
    int64_t version;
    uint8_t sku_len;
    char sku[INV_SKU_MAX];
} inv_applied;

/* Appends to a growable array of inv_applied. 0, -EINVAL or -ENOMEM. */
static int applied_push(inv_applied **a, size_t *n, size_t *cap,
                        const char *sku, size_t sku_len, int64_t version)
{
    if (sku_len > INV_SKU_MAX)
        return -EINVAL;
    inv_applied *na = room_for_one(*a, *n, cap, sizeof(**a), 256);
    if (na == NULL)
        return -ENOMEM;
    *a = na;
    inv_applied *w = &(*a)[(*n)++];
    w->version = version;
    w->sku_len = (uint8_t)sku_len;
    memcpy(w->sku, sku, sku_len);
    return 0;
}

/* ack_after_apply: the rows produced whose Redis delete is not applied yet,
 * indexed by sku, so that an applied report costs the rows of its own sku
 * and not a scan of every row awaiting (delay x write rate of them: a scan
 * per report made the relay quadratic in the write rate). */
typedef struct await_row {
    int64_t id, version;
} await_row;

typedef struct await_sku {
    uint8_t sku_len;               /* 0: a free slot */
    char sku[INV_SKU_MAX];
    size_t n, cap;                 /* rows; n == 0 keeps the slot (and its
                                    * buffer) for the sku's next row until
                                    * the table is rebuilt */
    await_row *rows;
} await_sku;

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

    /* ack_after_apply: rows produced whose Redis delete is not applied yet
     * (listed at produce time, so an applied report always finds its row),
     * and the applied deletes the delay consumer reported. */
    await_sku *await;              /* open addressing by sku */
    size_t awaitcap, awaitused;    /* slots; slots holding a sku */
    size_t nawait;                 /* rows in every slot */
    pthread_mutex_t applied_mu;
    inv_applied *applied;
    size_t napplied, capapplied;
};

/* ---- the awaiting rows, by sku ---------------------------------------- */

/* The first free slot of table t (cap slots, a power of two) on sku's
 * probe sequence. */
static size_t await_free_slot(const await_sku *t, size_t cap, const char *sku, size_t len)
{
    size_t i = (size_t)kit_hash(sku, len) & (cap - 1);
    while (t[i].sku_len != 0)
        i = (i + 1) & (cap - 1);
    return i;
}

/* The slot of sku, or NULL. */
static await_sku *await_find(inv_relay *r, const char *sku, size_t len)
{
    if (r->awaitcap == 0)
        return NULL;
    for (size_t i = (size_t)kit_hash(sku, len) & (r->awaitcap - 1);;
         i = (i + 1) & (r->awaitcap - 1)) {
        await_sku *e = &r->await[i];
        if (e->sku_len == 0)
            return NULL;
        if (e->sku_len == len && memcmp(e->sku, sku, len) == 0)
            return e;
    }
}

/* Rebuilds the table with room for its skus that still have rows (the
 * others' slots and buffers are freed). 0 or -ENOMEM (the table is then
 * unchanged). */
static int await_rebuild(inv_relay *r)
{
    size_t live = 0;
    for (size_t i = 0; i < r->awaitcap; i++)
        live += r->await[i].n > 0;
    size_t ncap = 1024;
    while (ncap < live * 4)
        ncap *= 2;
    await_sku *t = calloc(ncap, sizeof(*t));
    if (t == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < r->awaitcap; i++) {
        await_sku *e = &r->await[i];
        if (e->n == 0) {
            free(e->rows);
            continue;
        }
        t[await_free_slot(t, ncap, e->sku, e->sku_len)] = *e;
    }
    free(r->await);
    r->await = t;
    r->awaitcap = ncap;
    r->awaitused = live;
    return 0;
}

/* Lists a produced row under its sku. 0, -EINVAL (sku too long) or -ENOMEM. */
static int await_add(inv_relay *r, int64_t id, const char *sku, size_t len,
                     int64_t version)
{
    if (len == 0 || len > INV_SKU_MAX)
        return -EINVAL;
    await_sku *e = await_find(r, sku, len);
    if (e == NULL) {
        if ((r->awaitused + 1) * 2 > r->awaitcap && await_rebuild(r) < 0)
            return -ENOMEM;
        e = &r->await[await_free_slot(r->await, r->awaitcap, sku, len)];
        e->sku_len = (uint8_t)len;
        memcpy(e->sku, sku, len);
        r->awaitused++;
    }
    await_row *rows = room_for_one(e->rows, e->n, &e->cap, sizeof(*rows), 4);
    if (rows == NULL)
        return -ENOMEM;
    e->rows = rows;
    e->rows[e->n++] = (await_row){id, version};
    r->nawait++;
    return 0;
}

/* Drops row id of sku (its delivery failed, or its produce did). */
static void await_drop(inv_relay *r, const char *sku, size_t len, int64_t id)
{
    await_sku *e = await_find(r, sku, len);
    if (e == NULL)
        return;
    for (size_t i = 0; i < e->n; i++) {
        if (e->rows[i].id == id) {
            e->rows[i] = e->rows[--e->n];
            r->nawait--;
            return;
        }
    }
}

static void await_free(inv_relay *r)
{
    for (size_t i = 0; i < r->awaitcap; i++)
        free(r->await[i].rows);
    free(r->await);
    r->await = NULL;
    r->awaitcap = r->awaitused = r->nawait = 0;
}

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
    int64_t *acked = room_for_one(r->acked, r->nacked, &r->capacked, sizeof(*acked), 1024);
    if (acked == NULL) {
        mark_failed(r, id);
        return;
    }
    r->acked = acked;
    r->acked[r->nacked++] = id;
}

/* A purge event's producer waits on this; the delivery report fills it.
 * Two references: the waiter's (it may give up) and the report's. */
typedef struct purge_wait {
    atomic_int refs;
    atomic_int state;              /* 0 pending, 1 delivered, -1 failed */
} purge_wait;

static void purge_wait_unref(purge_wait *w)
{
    if (atomic_fetch_sub(&w->refs, 1) == 1)
        free(w);
}

int inv__relay_purge(inv_relay *r, int timeout_ms)
{
    inv_event ev;
    char buf[INV_EVENT_JSON_MAX];
    memset(&ev, 0, sizeof(ev));
    ev.purge_at_ms = kit_wall_ms();
    int len = inv__event_encode(&ev, buf, sizeof(buf));
    if (len < 0)
        return len;
    purge_wait *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return -ENOMEM;
    atomic_init(&w->refs, 2);
    /* No key: one partition at random; every broadcast consumer reads all
     * of them. librdkafka's produce is thread-safe. */
    if (rd_kafka_produce(r->rkt, RD_KAFKA_PARTITION_UA, RD_KAFKA_MSG_F_COPY,
                         buf, (size_t)len, NULL, 0, w) < 0) {
        free(w);
        return -EIO;
    }
    inv__wake_signal(r->wake);
    int64_t deadline = rt_deadline_ms(timeout_ms > 0 ? timeout_ms : 0);
    while (atomic_load(&w->state) == 0 && rt_now_ns() < deadline)
        rt_sleep_ns(5 * 1000000LL);
    int state = atomic_load(&w->state);
    purge_wait_unref(w);
    return state > 0 ? 0 : state < 0 ? -EIO : -ETIMEDOUT;
}

/* Delivery report, served by rd_kafka_poll() on the relay's coroutine. */
static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m,
                        void *opaque)
{
    (void)rk;
    inv_relay *r = opaque;
    if (m->key_len == 0) {         /* a purge (rows always have a sku key) */
        purge_wait *w = m->_private;
        atomic_store(&w->state, m->err == RD_KAFKA_RESP_ERR_NO_ERROR ? 1 : -1);
        purge_wait_unref(w);
        return;
    }
    int64_t id = (int64_t)(intptr_t)m->_private;
    r->inflight--;
    if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        INV_INC(r->iv, relay_errors, 1);
        /* Published again next round. */
        await_drop(r, m->key, m->key_len, id);
        mark_failed(r, id);
        return;
    }
    if (r->iv->ack_after_apply)
        return;                    /* deleted once the delay consumer applied it */
    push_ack(r, id);
}

void inv__relay_applied(inv_relay *r, const char *sku, size_t sku_len,
                        int64_t version)
{
    pthread_mutex_lock(&r->applied_mu);
    bool first = r->napplied == 0;
    int rc = applied_push(&r->applied, &r->napplied, &r->capapplied, sku, sku_len,
                          version);
    pthread_mutex_unlock(&r->applied_mu);
    if (rc < 0)
        rt_log(RT_LOG_WARN, "inv",
               "out of memory noting an applied delete; its outbox row is published again later",
               "sku=%.*s version=%" PRId64, (int)sku_len, sku, version);
    /* One wakeup per list: the report that found the list empty signals,
     * and the relay drains its wakeups before it takes the whole list, so
     * the reports added meanwhile go with it (a write per report was a
     * system call per applied event). */
    if (first)
        inv__wake_signal(r->wake);
}

/* Moves the awaiting rows whose Redis delete was applied (same sku,
 * version at or below an applied one) to the rows to delete. */
static void collect_applied(inv_relay *r)
{
    pthread_mutex_lock(&r->applied_mu);
    inv_applied *ap = r->applied;
    size_t nap = r->napplied;
    r->applied = NULL;
    r->napplied = r->capapplied = 0;
    pthread_mutex_unlock(&r->applied_mu);
    for (size_t k = 0; k < nap; k++) {
        await_sku *e = await_find(r, ap[k].sku, ap[k].sku_len);
        if (e == NULL)
            continue;
        uint32_t keep = 0;
        for (size_t i = 0; i < e->n; i++) {
            if (e->rows[i].version <= ap[k].version)
                push_ack(r, e->rows[i].id);
            else
                e->rows[keep++] = e->rows[i];
        }
        r->nawait -= e->n - keep;
        e->n = keep;
    }
    free(ap);
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
    pthread_mutex_init(&r->applied_mu, NULL);
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
        char qe[560];
        rt_log(RT_LOG_ERROR, "kafka", "producer not created", "err=%s",
               rt_log_q(qe, sizeof qe, err));
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
    await_free(r);
    free(r->applied);
    pthread_mutex_destroy(&r->applied_mu);
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
    if (row->has_item && !r->iv->broadcast_evict) {
        ev.has_item = 1;
        ev.item = row->item;
    }
    int len = inv__event_encode(&ev, buf, sizeof(buf));
    if (len < 0)
        return len;
    if (held_add(r, row->id) < 0)
        return -EAGAIN;
    int awaiting = r->iv->ack_after_apply;
    if (awaiting && await_add(r, row->id, ev.sku, ev.sku_len, ev.version) < 0) {
        held_del(r, row->id);
        return -EAGAIN;
    }
    if (rd_kafka_produce(r->rkt, RD_KAFKA_PARTITION_UA, RD_KAFKA_MSG_F_COPY,
                         buf, (size_t)len, ev.sku, ev.sku_len,
                         (void *)(intptr_t)row->id) < 0) {
        rd_kafka_resp_err_t err = rd_kafka_last_error();
        held_del(r, row->id);
        if (awaiting)
            await_drop(r, ev.sku, ev.sku_len, row->id);   /* listed just above */
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
            /* The claim may have committed with its answer lost (the
             * database died between them): those rows are ours for the
             * lease, and only a fetch of our own claims finds them. */
            INV_INC(iv, relay_errors, 1);
            r->failed = 1;
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
                rt_log(RT_LOG_WARN, "inv", "outbox row not publishable", "row=%" PRId64 " err=\"%s\"",
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
        collect_applied(r);
        ack_rows(r);
        if (r->failed)
            INV_INC(iv, retries, 1);   /* the next round publishes them again */
        if (atomic_load(&iv->stopping)) {
            /* With ack_after_apply the delay consumer applies everything
             * at stop: wait for its reports too. */
            if ((r->inflight == 0 && r->nawait == 0) || rt_now_ns() >= r->drain_deadline)
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
    collect_applied(r);
    ack_rows(r);
    update_gauges(r);
}
