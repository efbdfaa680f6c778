/*
 * inv.c: the invalidator's lifetime, configuration and metrics.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "invalidator/inv_kafka.h"
#include "kit/kit.h"

const char *inv_strerror(int err)
{
    switch (err) {
    case 0:
        return "ok";
    case -EINVAL:
        return "invalid argument or configuration";
    case -ENOMEM:
        return "out of memory";
    case -EIO:
        return "kafka client error";
    case -ETIMEDOUT:
        return "timed out";
    case -ENOSPC:
        return "buffer too small";
    case -EAGAIN:
        return "try again";
    case -EALREADY:
        return "already started";
    default:
        return err < 0 ? strerror(-err) : "unknown error";
    }
}

static char *dup_or(const char *s, const char *dflt)
{
    return strdup(s != NULL && s[0] != '\0' ? s : dflt);
}

static int pos_or(int v, int dflt)
{
    return v > 0 ? v : dflt;
}

void inv_free(inv *iv)
{
    if (iv == NULL)
        return;
    inv__relay_free(iv->relay);
    inv__delay_free(iv->delay);
    inv__bcast_free(iv->bcast);
    inv__wake_close(&iv->relay_wake);
    if (iv->embedded)
        inv__mock_release();
    free(iv->brokers);
    free(iv->topic);
    free(iv->delay_group);
    free(iv->bcast_group);
    free(iv->instance_id);
    free(iv->kafka_debug);
    for (int i = 0; i < iv->nprops; i++) {
        /* Values may be secrets (sasl.password): wipe them. */
        char *v = (char *)iv->props[i].value;
        if (v != NULL)
            explicit_bzero(v, strlen(v));
        free((char *)iv->props[i].key);
        free(v);
    }
    free(iv->props);
    free(iv);
}

/* Copies cfg's librdkafka properties into iv (checked first) and lets those
 * that replace a field set it. Returns 0, -EINVAL (logged, naming the
 * property) or -ENOMEM. */
static int copy_props(inv *iv, const inv_config *cfg)
{
    char err[512], q[600];
    int rc;

    if (cfg->n_kafka_props == 0)
        return 0;
    if ((rc = inv_check_kafka_props(cfg, err, sizeof err)) < 0) {
        rt_log(RT_LOG_ERROR, "inv", "kafka property refused", "err=%s",
               rt_log_q(q, sizeof q, err));
        return rc;
    }
    if ((iv->props = calloc((size_t)cfg->n_kafka_props, sizeof *iv->props)) == NULL)
        return -ENOMEM;
    for (int i = 0; i < cfg->n_kafka_props; i++) {
        iv->props[i].key = strdup(cfg->kafka_props[i].key);
        iv->props[i].value = strdup(cfg->kafka_props[i].value);
        iv->nprops = i + 1;
        if (iv->props[i].key == NULL || iv->props[i].value == NULL)
            return -ENOMEM;
    }
    return inv__props_apply_fields(iv->props, iv->nprops, &iv->message_timeout_ms,
                                   &iv->linger_ms, &iv->session_timeout_ms, err, sizeof err);
}

int inv_new(const inv_config *cfg, const inv_source *source,
            const inv_redis_sink *redis, const inv_local_sink *local,
            inv **out)
{
    static const inv_config defaults;
    int rc = 0;
    if (cfg == NULL)
        cfg = &defaults;
    inv *iv = calloc(1, sizeof(*iv));
    if (iv == NULL)
        return -ENOMEM;
    iv->relay_wake.rfd = iv->relay_wake.wfd = -1;
    iv->roles = cfg->roles ? cfg->roles : INV_ROLE_ALL;
    if ((iv->roles & ~INV_ROLE_ALL) != 0 ||
        ((iv->roles & INV_ROLE_RELAY) &&
         (source == NULL || source->fetch == NULL || source->ack == NULL)) ||
        ((iv->roles & INV_ROLE_DELAY) && (redis == NULL || redis->del == NULL)) ||
        ((iv->roles & INV_ROLE_BCAST) && (local == NULL || local->evict == NULL))) {
        free(iv);
        return -EINVAL;
    }
    if (source != NULL)
        iv->source = *source;
    if (redis != NULL)
        iv->redis = *redis;
    if (local != NULL)
        iv->local = *local;

    char host[128] = "localhost", inst[192];
    gethostname(host, sizeof(host) - 1);
    snprintf(inst, sizeof(inst), "%s-%d", host, (int)getpid());
    iv->topic = dup_or(cfg->topic, INV_DEFAULT_TOPIC);
    iv->delay_group = dup_or(cfg->delay_group, INV_DEFAULT_DELAY_GROUP);
    iv->bcast_group = dup_or(cfg->bcast_group_prefix, INV_DEFAULT_BCAST_PREFIX);
    iv->instance_id = dup_or(cfg->instance_id, inst);
    iv->kafka_debug = cfg->kafka_debug ? strdup(cfg->kafka_debug) : NULL;
    if (iv->topic == NULL || iv->delay_group == NULL || iv->bcast_group == NULL ||
        iv->instance_id == NULL || (cfg->kafka_debug && iv->kafka_debug == NULL)) {
        rc = -ENOMEM;
        goto fail;
    }
    iv->pending_cap = pos_or(cfg->pending_cap, 100000);
    /* The mock cluster answers a fetch with at most one batch per
     * partition, found by walking the partition's log from its oldest
     * batch: with few partitions a consumer needs one round trip per batch
     * and each walks a longer log, so under sustained writes the consumers
     * fall behind more and more (docs/chaos.md). 16 partitions spread it. */
    iv->partitions = pos_or(cfg->partitions, 16);
    iv->appliers = pos_or(cfg->appliers, 4);
    iv->batch = pos_or(cfg->batch, 128);
    iv->relay_batch = pos_or(cfg->relay_batch, 512);
    iv->broadcast_evict = cfg->broadcast_evict != 0;
    iv->relay_inflight_max = pos_or(cfg->relay_inflight_max, 20000);
    iv->relay_poll_ms = pos_or(cfg->relay_poll_ms, 1000);
    iv->message_timeout_ms = pos_or(cfg->message_timeout_ms, 30000);
    iv->retry_backoff_max_ms = pos_or(cfg->retry_backoff_max_ms, 1000);
    iv->linger_ms = cfg->linger_ms > 0 ? cfg->linger_ms : 1;
    iv->session_timeout_ms = pos_or(cfg->session_timeout_ms, 10000);
    if ((rc = copy_props(iv, cfg)) < 0)
        goto fail;
    inv_set_delay_ms(iv, cfg->delay_ms > 0 ? cfg->delay_ms
                                           : (cfg->delay_ms == 0 ? 500 : 0));

    const char *brokers = cfg->brokers;
    if (brokers == NULL || brokers[0] == '\0' || strcmp(brokers, "embedded") == 0) {
        if ((rc = inv__mock_acquire(iv->topic, iv->partitions, &iv->brokers)) < 0)
            goto fail;
        iv->embedded = true;
        /* The embedded log dies with the process: a row deleted from the
         * outbox once the (in-process) broker has it would be lost by a
         * kill -9 while its event waits for its due time. */
        iv->ack_after_apply = (iv->roles & INV_ROLE_RELAY) && (iv->roles & INV_ROLE_DELAY);
    } else if ((iv->brokers = strdup(brokers)) == NULL) {
        rc = -ENOMEM;
        goto fail;
    }
    *out = iv;
    return 0;
fail:
    inv_free(iv);
    return rc;
}

int inv_start(inv *iv)
{
    int rc = 0;
    if (iv->started)
        return -EALREADY;
    atomic_store(&iv->stopping, 0);
    if ((iv->roles & INV_ROLE_RELAY) && iv->relay_wake.rfd < 0 &&
        (rc = inv__wake_open(&iv->relay_wake)) < 0)
        return rc;
    if ((iv->roles & INV_ROLE_RELAY) && (rc = inv__relay_new(iv, &iv->relay)) < 0)
        goto fail;
    if ((iv->roles & INV_ROLE_DELAY) && (rc = inv__delay_new(iv, &iv->delay)) < 0)
        goto fail;
    if ((iv->roles & INV_ROLE_BCAST) && (rc = inv__bcast_new(iv, &iv->bcast)) < 0)
        goto fail;
    rt_spawn_opts o = {.joinable = 1, .stack_size = 256 * 1024};
    if (iv->relay != NULL) {
        o.name = "inv-relay";
        if ((rc = rt_spawn_ex(&iv->relay_co, inv__relay_run, iv->relay, &o)) < 0)
            goto fail;
    }
    if (iv->delay != NULL) {
        o.name = "inv-delay";
        if ((rc = rt_spawn_ex(&iv->delay_co, inv__delay_run, iv->delay, &o)) < 0)
            goto fail;
    }
    if (iv->bcast != NULL) {
        o.name = "inv-bcast";
        if ((rc = rt_spawn_ex(&iv->bcast_co, inv__bcast_run, iv->bcast, &o)) < 0)
            goto fail;
    }
    iv->started = true;
    return 0;
fail:
    iv->started = true;
    inv_stop(iv, 0);
    return rc;
}

int inv_stop(inv *iv, int drain_ms)
{
    if (!iv->started)
        return 0;
    int rc = 0;
    int64_t deadline = rt_deadline_ms(drain_ms > 0 ? drain_ms : 0);
    if (iv->relay != NULL)
        inv__relay_set_drain(iv->relay, deadline);
    if (iv->delay != NULL)
        inv__delay_set_drain(iv->delay, deadline);
    atomic_store(&iv->stopping, 1);
    if (iv->relay != NULL)
        inv__relay_kick(iv->relay);
    if (iv->delay != NULL)
        inv__delay_kick(iv->delay);
    if (iv->bcast != NULL)
        inv__bcast_kick(iv->bcast);
    if (iv->relay_co != NULL)
        rt_join(iv->relay_co);
    if (iv->delay_co != NULL)
        rt_join(iv->delay_co);
    if (iv->bcast_co != NULL)
        rt_join(iv->bcast_co);
    iv->relay_co = iv->delay_co = iv->bcast_co = NULL;
    if (iv->relay != NULL && atomic_load(&iv->relay_inflight) > 0)
        rc = -ETIMEDOUT;
    inv__relay_free(iv->relay);
    inv__delay_free(iv->delay);
    inv__bcast_free(iv->bcast);
    iv->relay = NULL;
    iv->delay = NULL;
    iv->bcast = NULL;
    iv->started = false;
    return rc;
}

int inv_purge(inv *iv, int timeout_ms)
{
    if (!iv->started || iv->relay == NULL)
        return -ENOTSUP;
    return inv__relay_purge(iv->relay, timeout_ms);
}

void inv_notify(inv *iv)
{
    /* The pipe lives as long as iv, so a writer racing inv_stop() is
     * harmless: a wakeup nobody reads. Before inv_start wfd is -1. */
    if (__atomic_load_n(&iv->relay_wake.wfd, __ATOMIC_ACQUIRE) >= 0)
        inv__wake_signal(&iv->relay_wake);
}

void inv_set_delay_ms(inv *iv, int64_t ms)
{
    atomic_store(&iv->delay_ms, ms < 0 ? 0 : ms);
}

int64_t inv_delay_ms(const inv *iv)
{
    return atomic_load(&((inv *)iv)->delay_ms);
}

int inv_ready(const inv *iv)
{
    inv *m = (inv *)iv;
    if (iv->delay != NULL && !atomic_load(&m->delay_ready))
        return 0;
    return inv_ready_to_serve(iv);
}

int inv_ready_to_serve(const inv *iv)
{
    inv *m = (inv *)iv;
    if (iv->relay != NULL && !atomic_load(&m->relay_ready))
        return 0;
    if (iv->bcast != NULL && !atomic_load(&m->bcast_ready))
        return 0;
    return iv->started;
}

const char *inv_bootstraps(const inv *iv)
{
    return iv->brokers;
}

void inv_stats_get(const inv *iv, inv_stats *out)
{
    inv *m = (inv *)iv;
    memset(out, 0, sizeof(*out));
#define INV_X_COPY(name, help) out->name = atomic_load_explicit(&m->name, memory_order_relaxed);
    INV_COUNTERS(INV_X_COPY)
#undef INV_X_COPY
    out->outbox_depth = atomic_load(&m->outbox_depth);
    int64_t oldest = atomic_load(&m->outbox_oldest_ms);
    out->outbox_oldest_age_ms = oldest > 0 ? kit_wall_ms() - oldest : 0;
    if (out->outbox_oldest_age_ms < 0)
        out->outbox_oldest_age_ms = 0;
    out->relay_inflight = atomic_load(&m->relay_inflight);
    out->pending = atomic_load(&m->pending);
    out->pending_skus = atomic_load(&m->pending_skus);
    out->delay_ms = atomic_load(&m->delay_ms);
    inv__hist_copy(&out->transit, &m->transit);
    inv__hist_copy(&out->lag, &m->lag);
    inv__hist_copy(&out->sink, &m->sink);
    inv__hist_copy(&out->lateness, &m->lateness);
    inv__hist_copy(&out->bcast_lag, &m->bcast_lag);
}

/* ---------------------------------------------------------------------- */
/* Fan-out pool for Redis sinks                                             */

typedef struct fanout_job {
    inv_del *item;
    rt_wg *done;
} fanout_job;

struct inv_fanout {
    int width;
    int (*one)(void *ctx, const char *sku, int64_t version);
    void *ctx;
    rt_chan *jobs;
    rt_co **cos;
};

static void fanout_worker(void *arg)
{
    inv_fanout *f = arg;
    fanout_job j;
    while (rt_chan_recv(f->jobs, &j, RT_NO_DEADLINE) == 0) {
        int rc = f->one(f->ctx, j.item->sku, j.item->version);
        j.item->result = rc < 0 ? rc : 0;
        rt_wg_done(j.done);
    }
}

int inv_fanout_new(int width, int (*one)(void *ctx, const char *sku, int64_t version),
                   void *ctx, inv_fanout **out)
{
    int rc = -ENOMEM;
    *out = NULL;
    if (one == NULL)
        return -EINVAL;
    inv_fanout *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return -ENOMEM;
    f->width = width < 1 ? 1 : width;
    f->one = one;
    f->ctx = ctx;
    f->jobs = rt_chan_new(sizeof(fanout_job), (size_t)f->width * 2);
    f->cos = calloc((size_t)f->width, sizeof(*f->cos));
    if (f->jobs == NULL || f->cos == NULL)
        goto fail;
    rt_spawn_opts o = {.joinable = 1, .name = "inv-fanout"};
    for (int i = 0; i < f->width; i++) {
        if ((rc = rt_spawn_ex(&f->cos[i], fanout_worker, f, &o)) < 0) {
            f->width = i;
            goto fail;
        }
    }
    *out = f;
    return 0;
fail:
    inv_fanout_free(f);
    return rc;
}

int inv_fanout_del(inv_fanout *f, inv_del *items, int n)
{
    if (n <= 0)
        return 0;
    rt_wg *wg = rt_wg_new();
    if (wg == NULL)
        return -ENOMEM;
    rt_wg_add(wg, n);
    for (int i = 0; i < n; i++) {
        fanout_job j = {&items[i], wg};
        if (rt_chan_send(f->jobs, &j, RT_NO_DEADLINE) < 0) {
            items[i].result = -ECANCELED;
            rt_wg_done(wg);
        }
    }
    rt_wg_wait(wg, RT_NO_DEADLINE);
    rt_wg_free(wg);
    return 0;
}

void inv_fanout_free(inv_fanout *f)
{
    if (f == NULL)
        return;
    if (f->jobs != NULL)
        rt_chan_close(f->jobs);
    for (int i = 0; f->cos != NULL && i < f->width; i++)
        rt_join(f->cos[i]);
    if (f->jobs != NULL)
        rt_chan_free(f->jobs);
    free(f->cos);
    free(f);
}
