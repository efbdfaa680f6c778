/*
 * delay.c: the delay consumer (one consumer group for the fleet).
 *
 * One coroutine owns the consumer: it drains librdkafka's queue (woken
 * through the self-pipe, never polling on a timer), adds each event to the
 * delay queue (pending.c), and when entries fall due hands them in batches
 * to applier coroutines, at most `appliers` at once, each making one Redis
 * sink call. An applier marks the messages its call covered as done in their
 * partition's offset tracker and stores the first offset not done
 * (enable.auto.offset.store=false; auto commit then commits what was
 * stored). A failed delete is rescheduled with exponential backoff; its
 * offset stays unstored, so nothing is skipped, even across a restart.
 *
 * Bounded memory: once the messages held reach pending_cap the consumer
 * pauses its partitions (and pauses new ones after a rebalance) until the
 * held count falls to 3/4 of the cap.
 *
 * The state shared between the consumer coroutine, the appliers and the
 * rebalance callback is guarded by a pthread mutex that is never held
 * across a call that can park.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "invalidator/inv_kafka.h"
#include "kit/kit.h"

typedef struct dpart {
    bool assigned;
    uint32_t gen;
    inv_offq offq;
} dpart;

struct inv_delay {
    inv *iv;
    rd_kafka_t *rk;
    rd_kafka_queue_t *q;
    inv_wake wake;
    pthread_mutex_t mu;
    inv_pq pq;
    dpart *parts;                  /* indexed by partition id */
    int nparts;
    bool paused;
    rt_chan *work;                 /* batches for the appliers */
    rt_co **appliers;              /* long-lived applier coroutines */
    int napplier;
    atomic_int busy;               /* batches handed out, not finished */
    int64_t drain_deadline;        /* rt_now_ns(): inv_stop's drain */
    bool flush_all;                /* stopping, embedded: apply all now */
};

typedef struct batch {
    inv_delay *d;
    int n;
    inv_pentry **e;
    inv_del *items;
} batch;

static dpart *part_get(inv_delay *d, int32_t p)
{
    if (p < 0)
        return NULL;
    if (p >= d->nparts) {
        int n = p + 1 > d->nparts * 2 ? p + 1 : d->nparts * 2;
        dpart *np = realloc(d->parts, (size_t)n * sizeof(*np));
        if (np == NULL)
            return NULL;
        for (int i = d->nparts; i < n; i++) {
            memset(&np[i], 0, sizeof(np[i]));
            inv__offq_init(&np[i].offq);
        }
        d->parts = np;
        d->nparts = n;
    }
    return &d->parts[p];
}

static void update_gauges(inv_delay *d)
{
    atomic_store(&d->iv->pending, (long long)d->pq.refs);
    atomic_store(&d->iv->pending_skus, (long long)d->pq.entries);
}

/* Stores the committable position of partition p. Caller holds mu. */
static void do_store_offset(inv_delay *d, int32_t p)
{
    KIT_ASSERT_LOCKED(&d->mu);
    dpart *dp = &d->parts[p];
    int64_t pos = inv__offq_advance(&dp->offq, NULL);
    if (pos < 0)
        return;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, d->iv->topic, p)->offset = pos;
    rd_kafka_offsets_store(d->rk, l);   /* fails only if unassigned: fine */
    rd_kafka_topic_partition_list_destroy(l);
}

/* ---------------------------------------------------------------------- */
/* Pause / resume                                                           */

static void set_paused(inv_delay *d, bool pause)
{
    rd_kafka_topic_partition_list_t *a = NULL;
    if (rd_kafka_assignment(d->rk, &a) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return;
    if (pause)
        rd_kafka_pause_partitions(d->rk, a);
    else
        rd_kafka_resume_partitions(d->rk, a);
    rd_kafka_topic_partition_list_destroy(a);
    d->paused = pause;
    if (pause)
        INV_INC(d->iv, pauses, 1);
}

/* Pauses fetching once the messages held reach the cap, resumes at 3/4 of
 * it. After a pause librdkafka discards what it had fetched for the
 * partitions and fetches again from the position consumed on resume. */
static void check_pause(inv_delay *d)
{
    pthread_mutex_lock(&d->mu);
    size_t held = d->pq.refs;
    pthread_mutex_unlock(&d->mu);
    size_t cap = (size_t)d->iv->pending_cap;
    if (!d->paused && held >= cap)
        set_paused(d, true);
    else if (d->paused && held <= cap / 4 * 3)
        set_paused(d, false);
}

/* ---------------------------------------------------------------------- */
/* Rebalance (served inside rd_kafka_consumer_poll on the consumer coroutine,
 * or inside rd_kafka_consumer_close)                                        */

static void on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    inv_delay *d = opaque;
    INV_INC(d->iv, rebalances, 1);
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        pthread_mutex_lock(&d->mu);
        for (int i = 0; i < parts->cnt; i++) {
            dpart *dp = part_get(d, parts->elems[i].partition);
            if (dp == NULL) {
                rt_log(RT_LOG_ERROR, "inv", "out of memory in rebalance", "fatal=true");
                abort();
            }
            inv__offq_free(&dp->offq);
            dp->assigned = true;
            dp->gen++;
        }
        pthread_mutex_unlock(&d->mu);
        rd_kafka_assign(rk, parts);
        if (d->paused)
            rd_kafka_pause_partitions(rk, parts);
        atomic_store(&d->iv->delay_ready, 1);
        return;
    }
    /* Revoked (or lost): store what is applied, commit it, and forget the
     * partitions' pending events; the next owner re-reads them from the
     * committed position. */
    pthread_mutex_lock(&d->mu);
    for (int i = 0; i < parts->cnt; i++) {
        int32_t p = parts->elems[i].partition;
        if (p < 0 || p >= d->nparts || !d->parts[p].assigned)
            continue;
        do_store_offset(d, p);
        inv__pq_drop_partition(&d->pq, p);
        inv__offq_free(&d->parts[p].offq);
        d->parts[p].assigned = false;
    }
    update_gauges(d);
    pthread_mutex_unlock(&d->mu);
    if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS &&
        !rd_kafka_assignment_lost(rk))
        rd_kafka_commit(rk, NULL, 1 /* async */);
    rd_kafka_assign(rk, NULL);
    atomic_store(&d->iv->delay_ready, 0);
}

/* ---------------------------------------------------------------------- */
/* Consuming                                                                */

static void on_message(void *arg, rd_kafka_message_t *m)
{
    inv_delay *d = arg;
    inv *iv = d->iv;
    if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF && rt_log_enabled(RT_LOG_WARN)) {
            char qe[300];
            rt_log(RT_LOG_WARN, "kafka", "consumer error", "role=delay error=%s err=%s",
                   rd_kafka_err2name(m->err), rt_log_q(qe, sizeof qe, rd_kafka_message_errstr(m)));
        }
        return;
    }
    INV_INC(iv, received, 1);
    inv_event ev;
    int drc = inv__event_decode(m->payload, m->len, &ev);
    pthread_mutex_lock(&d->mu);
    dpart *dp = part_get(d, m->partition);
    if (dp == NULL || !dp->assigned) {
        pthread_mutex_unlock(&d->mu);
        return;                    /* a stale message of a revoked partition */
    }
    if (inv__offq_add(&dp->offq, m->offset) < 0) {
        /* Not increasing: re-delivered after a seek; it is already held. */
        pthread_mutex_unlock(&d->mu);
        return;
    }
    if (drc < 0 || ev.purge_at_ms > 0) {
        /* Not an item's event (a purge is the broadcast consumers'; the
         * operator's call purged Redis itself): nothing to hold. */
        if (drc < 0)
            INV_INC(iv, decode_errors, 1);
        inv__offq_done(&dp->offq, m->offset);
        do_store_offset(d, m->partition);
    } else {
        bool coalesced;
        int64_t now = kit_wall_ms();
        inv__hist_add(&iv->transit, now - ev.committed_at_ms);
        /* The delay counts from receipt, on this process's clock: the
         * commit stamp is taken before the row lock and the commit, on the
         * writer's clock, so due_at_ms alone would shorten the delay by the
         * lock wait, the commit and any clock skew. Receipt comes after
         * the commit (the relay publishes committed rows only), so the
         * Redis copy never goes before commit + delay. */
        int64_t delay = ev.due_at_ms - ev.committed_at_ms;
        if (delay > 0 && ev.due_at_ms < now + delay)
            ev.due_at_ms = now + delay;
        if (inv__pq_add(&d->pq, &ev, m->partition, dp->gen, m->offset,
                        &coalesced) < 0) {
            rt_log(RT_LOG_ERROR, "inv", "out of memory holding an event", "fatal=true");
            abort();
        }
        if (coalesced)
            INV_INC(iv, coalesced, 1);
    }
    update_gauges(d);
    pthread_mutex_unlock(&d->mu);
    check_pause(d);               /* pause at the cap, not a batch later */
}

/* ---------------------------------------------------------------------- */
/* Applying                                                                 */

static void on_ref_done(void *arg, const inv_pentry *e, const inv_ref *r)
{
    inv_delay *d = arg;
    int64_t now = kit_wall_ms();
    dpart *dp = &d->parts[e->partition];
    if (dp->assigned && dp->gen == e->gen)
        inv__offq_done(&dp->offq, r->offset);
    INV_INC(d->iv, applied, 1);
    if (d->iv->ack_after_apply && d->iv->relay != NULL)
        inv__relay_applied(d->iv->relay, e->sku, e->sku_len, r->version);
    inv__hist_add(&d->iv->lag, now - r->committed_at_ms);
    inv__hist_add(&d->iv->lateness, now - r->due_at_ms);
}

static int64_t backoff_ms(inv_delay *d, int attempts)
{
    int64_t ms = 10;
    for (int i = 0; i < attempts && ms < d->iv->retry_backoff_max_ms; i++)
        ms *= 2;
    return ms < d->iv->retry_backoff_max_ms ? ms : d->iv->retry_backoff_max_ms;
}

static void batch_free(batch *b)
{
    free(b->e);
    free(b->items);
    free(b);
}

/* Applies one batch: one Redis sink call, then the bookkeeping. */
static void apply_batch(inv_delay *d, batch *b)
{
    inv *iv = d->iv;
    int64_t t0 = rt_now_ns();
    int rc = iv->redis.del(iv->redis.ctx, b->items, b->n);
    int64_t now = kit_wall_ms();
    INV_INC(iv, sink_calls, 1);
    inv__hist_add(&iv->sink, (rt_now_ns() - t0) / 1000000);

    /* The partitions whose positions may have moved, each stored once. */
    int32_t touched[16];
    int ntouched = 0;
    bool overflow = false;
    pthread_mutex_lock(&d->mu);
    for (int i = 0; i < b->n; i++) {
        inv_pentry *e = b->e[i];
        bool ok = rc == 0 && b->items[i].result == 0;
        int32_t p = e->partition;
        int64_t retry_at = 0;
        if (!ok) {
            INV_INC(iv, errors, 1);
            INV_INC(iv, retries, 1);
            retry_at = now + backoff_ms(d, e->attempts + 1);
        }
        inv__pq_complete(&d->pq, e, ok, retry_at, on_ref_done, d);
        if (!ok)
            continue;
        int k = 0;
        while (k < ntouched && touched[k] != p)
            k++;
        if (k == ntouched) {
            if (ntouched < 16)
                touched[ntouched++] = p;
            else
                overflow = true;
        }
    }
    if (overflow) {
        for (int32_t p = 0; p < d->nparts; p++)
            if (d->parts[p].assigned)
                do_store_offset(d, p);
    } else {
        for (int k = 0; k < ntouched; k++)
            if (touched[k] < d->nparts && d->parts[touched[k]].assigned)
                do_store_offset(d, touched[k]);
    }
    update_gauges(d);
    pthread_mutex_unlock(&d->mu);
}

/* An applier: takes batches until the channel closes. */
static void applier(void *arg)
{
    inv_delay *d = arg;
    batch *b;
    while (rt_chan_recv(d->work, &b, RT_NO_DEADLINE) == 0) {
        apply_batch(d, b);
        batch_free(b);
        atomic_fetch_sub(&d->busy, 1);
        inv__wake_signal(&d->wake);   /* rearmed entries, a free applier */
    }
}

/* Takes due entries off the queue in batches and starts an applier for
 * each while slots are free. */
static void dispatch(inv_delay *d)
{
    inv *iv = d->iv;
    while (atomic_load(&d->busy) < d->napplier) {
        batch *b = calloc(1, sizeof(*b));
        if (b != NULL) {
            b->e = calloc((size_t)iv->batch, sizeof(*b->e));
            b->items = calloc((size_t)iv->batch, sizeof(*b->items));
        }
        if (b == NULL || b->e == NULL || b->items == NULL) {
            if (b != NULL)
                batch_free(b);
            return;                /* try again on the next wakeup */
        }
        b->d = d;
        int64_t now = d->flush_all ? INT64_MAX : kit_wall_ms();
        pthread_mutex_lock(&d->mu);
        while (b->n < iv->batch) {
            inv_pentry *e = inv__pq_pop_due(&d->pq, now);
            if (e == NULL)
                break;
            b->e[b->n] = e;
            b->items[b->n].sku = e->sku;
            b->items[b->n].version = e->fired_version;
            b->items[b->n].result = 0;
            b->n++;
        }
        pthread_mutex_unlock(&d->mu);
        if (b->n == 0) {
            batch_free(b);
            return;
        }
        atomic_fetch_add(&d->busy, 1);
        /* Never blocks: at most napplier batches are out, the channel holds
         * that many. */
        if (rt_chan_try_send(d->work, &b) < 0) {
            atomic_fetch_sub(&d->busy, 1);
            apply_batch(d, b);     /* cannot hand it out: apply it here */
            batch_free(b);
        }
    }
}

/* ---------------------------------------------------------------------- */
/* Lifetime                                                                 */

int inv__delay_new(inv *iv, inv_delay **out)
{
    int rc = 0;
    inv_delay *d = calloc(1, sizeof(*d));
    rd_kafka_conf_t *conf = NULL;
    if (d == NULL)
        return -ENOMEM;
    d->iv = iv;
    d->wake.rfd = d->wake.wfd = -1;
    pthread_mutex_init(&d->mu, NULL);
    inv__pq_init(&d->pq);
    d->work = rt_chan_new(sizeof(batch *), (size_t)iv->appliers);
    d->appliers = calloc((size_t)iv->appliers, sizeof(*d->appliers));
    if (d->work == NULL || d->appliers == NULL) {
        rc = -ENOMEM;
        goto fail;
    }
    rt_spawn_opts o = {.joinable = 1, .name = "inv-applier",
                       .stack_size = 256 * 1024};
    for (; d->napplier < iv->appliers; d->napplier++) {
        if ((rc = rt_spawn_ex(&d->appliers[d->napplier], applier, d, &o)) < 0)
            goto fail;
    }
    if ((rc = inv__wake_open(&d->wake)) < 0)
        goto fail;
    if ((conf = inv__conf_new(iv, "delay")) == NULL) {
        rc = -EIO;
        goto fail;
    }
    if (inv__conf_consumer(iv, conf, iv->delay_group) < 0 ||
        inv__conf_set(conf, "enable.auto.offset.store", "false") < 0 ||
        inv__conf_set(conf, "enable.auto.commit", "true") < 0 ||
        inv__conf_set(conf, "auto.commit.interval.ms", "1000") < 0 ||
        inv__conf_set(conf, "auto.offset.reset", "earliest") < 0) {
        rc = -EIO;
        goto fail;
    }
    rc = inv__consumer_open(iv, conf, on_rebalance, d, &d->wake, &d->rk, &d->q);
    conf = NULL;
    if (rc < 0)
        goto fail;
    *out = d;
    return 0;
fail:
    if (conf != NULL)
        rd_kafka_conf_destroy(conf);
    inv__delay_free(d);
    return rc;
}

/* Closes the work channel and waits for the appliers: the batches they
 * hold finish and store their offsets. Idempotent. */
static void stop_appliers(inv_delay *d)
{
    if (d->work != NULL)
        rt_chan_close(d->work);
    for (int i = 0; i < d->napplier; i++)
        rt_join(d->appliers[i]);
    d->napplier = 0;
}

static intptr_t close_blocking(void *arg)
{
    inv_delay *d = arg;
    rd_kafka_commit(d->rk, NULL, 0);   /* what was stored, synchronously */
    rd_kafka_consumer_close(d->rk);     /* serves the final revoke */
    return 0;
}

void inv__delay_free(inv_delay *d)
{
    if (d == NULL)
        return;
    inv__consumer_free(d->rk, d->q);
    inv__wake_close(&d->wake);
    inv__pq_free(&d->pq);
    for (int i = 0; i < d->nparts; i++)
        inv__offq_free(&d->parts[i].offq);
    free(d->parts);
    stop_appliers(d);
    free(d->appliers);
    if (d->work != NULL)
        rt_chan_free(d->work);
    pthread_mutex_destroy(&d->mu);
    free(d);
}

void inv__delay_kick(inv_delay *d)
{
    inv__wake_signal(&d->wake);
}

void inv__delay_set_drain(inv_delay *d, int64_t deadline)
{
    d->drain_deadline = deadline;
}

/* With the embedded broker the log dies with the process, so events held
 * for their due time would be lost at stop: apply every event held or
 * still arriving (the relay's last ones) now, until none is left or the
 * drain deadline passes. Applying early costs only what the delay buys
 * (Redis load); the version guards and tombstones keep Redis right. */
/* 1 when the consumer holds partitions and has read each up to its high
 * watermark. Asks the (in-process) brokers: runs on the blocking pool. */
static intptr_t caught_up_blocking(void *arg)
{
    inv_delay *d = arg;
    rd_kafka_topic_partition_list_t *parts = NULL;
    if (rd_kafka_assignment(d->rk, &parts) != RD_KAFKA_RESP_ERR_NO_ERROR || parts == NULL)
        return 0;
    int ok = parts->cnt > 0 && rd_kafka_position(d->rk, parts) == RD_KAFKA_RESP_ERR_NO_ERROR;
    for (int i = 0; ok && i < parts->cnt; i++) {
        rd_kafka_topic_partition_t *tp = &parts->elems[i];
        int64_t lo = 0, hi = 0;
        if (rd_kafka_query_watermark_offsets(d->rk, tp->topic, tp->partition, &lo, &hi, 1000) !=
            RD_KAFKA_RESP_ERR_NO_ERROR)
            ok = 0;
        else if (hi > lo && tp->offset < hi)
            ok = 0;   /* RD_KAFKA_OFFSET_INVALID (< 0) included: nothing read */
    }
    rd_kafka_topic_partition_list_destroy(parts);
    return ok;
}

static void flush_at_stop(inv_delay *d)
{
    inv *iv = d->iv;
    d->flush_all = true;
    while (rt_now_ns() < d->drain_deadline) {
        inv__wake_drain(&d->wake);
        inv__consumer_drain(d->rk, &d->wake, on_message, d);
        dispatch(d);
        pthread_mutex_lock(&d->mu);
        size_t held = d->pq.refs;
        pthread_mutex_unlock(&d->mu);
        if (held == 0 && atomic_load(&d->busy) == 0 &&
            atomic_load(&iv->relay_inflight) == 0 && rt_blocking(caught_up_blocking, d) == 1)
            break;
        inv__wake_wait(&d->wake, rt_deadline_ms(10));
    }
}

/* Milliseconds of wall clock until the next entry falls due, converted to
 * a monotonic deadline. While every applier is busy there is nothing to
 * dispatch: the next one to finish signals the pipe. */
static int64_t next_deadline(inv_delay *d)
{
    if (atomic_load(&d->busy) >= d->napplier)
        return rt_deadline_ms(1000);
    pthread_mutex_lock(&d->mu);
    int64_t due = inv__pq_next_due(&d->pq);
    pthread_mutex_unlock(&d->mu);
    if (due == INT64_MAX)
        return rt_deadline_ms(1000);
    int64_t wait = due - kit_wall_ms();
    if (wait < 0)
        wait = 0;
    if (wait > 1000)
        wait = 1000;
    return rt_now_ns() + wait * 1000000;
}

void inv__delay_run(void *arg)
{
    inv_delay *d = arg;
    inv *iv = d->iv;
    while (!atomic_load(&iv->stopping)) {
        inv__wake_drain(&d->wake);
        /* Drain the queue: messages, rebalances, errors. A bounded number
         * per round so due entries are not held up behind a backlog. */
        inv__consumer_drain(d->rk, &d->wake, on_message, d);
        check_pause(d);
        dispatch(d);
        inv__wake_wait(&d->wake, next_deadline(d));
    }
    if (iv->embedded)
        flush_at_stop(d);
    /* Let the Redis calls in flight finish and store their offsets, then
     * commit and leave the group: pending events go to the next owner. */
    stop_appliers(d);
    rd_kafka_queue_io_event_enable(d->q, -1, NULL, 0);
    rt_blocking(close_blocking, d);
    atomic_store(&iv->delay_ready, 0);
}
