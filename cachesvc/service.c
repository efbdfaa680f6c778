/*
 * service.c: the composition root. Opens the components in order (store,
 * Redis, local cache, invalidator), hands the invalidator its source and
 * sinks, and implements the admin, metrics and readiness calls of
 * api/http_service.h. The read and write paths are in read_path.c and
 * write_path.c.
 */
#include "cachesvc/log.h"
#include "cachesvc/metrics.h"
#include "cachesvc/redis_sink.h"
#include "cachesvc/service.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#ifdef CACHESVC_JEMALLOC
#include <jemalloc/jemalloc.h>
#endif

/* ------------------------------------------------------------------------ */
/* The invalidator's source (the store's outbox) and sinks.                  */

/* How long this instance's relay holds the outbox rows it claimed before
 * another relay may take them (its publication then counts as lost). Rows
 * that stay in flight longer (a Kafka outage past the lease) may be
 * published by two relays: a duplicate the version guards absorb. */
#define SVC_OUTBOX_LEASE_MS 10000

static int outbox_fetch(void *ctx, int64_t after_id, int mine, inv_row *rows, int max)
{
    svc *s = ctx;
    if (max <= 0)
        return 0;
    store_outbox_row *tmp = malloc((size_t)max * sizeof *tmp);
    if (tmp == NULL)
        return -ENOMEM;
    int n = store_outbox_claim(s->st, s->cfg.instance_id, SVC_OUTBOX_LEASE_MS, mine, after_id,
                               (size_t)max, tmp);
    for (int i = 0; i < n; i++) {
        rows[i].id = tmp[i].id;
        rows[i].version = tmp[i].version;
        rows[i].committed_at_ms = tmp[i].committed_at_ms;
        memcpy(rows[i].sku, tmp[i].sku, sizeof rows[i].sku);
    }
    free(tmp);
    return n;
}

static int64_t outbox_depth(void *ctx, int64_t *oldest_committed_at_ms)
{
    svc *s = ctx;
    int64_t rows = 0;
    int r = store_outbox_stats(s->st, &rows, oldest_committed_at_ms);
    return r < 0 ? r : rows;
}

static int outbox_ack(void *ctx, const int64_t *ids, int n)
{
    svc *s = ctx;
    return store_outbox_delete(s->st, ids, (size_t)n);
}

static void local_lost(void *ctx)
{
    svc *s = ctx;
    svc__local_distrust(s);
    SVC_WARN(NULL, "broadcast events may have been missed: local copies distrusted", NULL);
}

static void local_purge(void *ctx)
{
    svc *s = ctx;
    svc__local_purge(s);
    SVC_INFO(NULL, "local cache purged by a fleet-wide purge event", NULL);
}

static void local_evict(void *ctx, const char *sku, int64_t version)
{
    svc *s = ctx;
    svc__local_evict(s, sku, version);
    svc__flights_invalidate(s, sku);
}

/* ------------------------------------------------------------------------ */

void svc__slow_check(svc *s, const char *op, const char *sku, int64_t dt, int r)
{
    int64_t limit = atomic_load_explicit(&s->slow_ns, memory_order_relaxed);
    if (limit > 0 && dt > limit)
        SVC_WARN(NULL, "slow request", "op=%s sku=%s ms=%.3f result=%d", op, sku,
                 (double)dt / 1e6, r);
}

static int svc_order_by_key(void *ctx, const char *key, const char *user_id, http_order *out)
{
    svc *s = ctx;
    store_order o;
    int r = store_order_by_key(s->st, key, &o);
    if (r == 0 && strcmp(o.user_id, user_id) != 0)
        r = -ENOENT;   /* another buyer's key answers as no order */
    if (r < 0) {
        if (r != -ENOENT && r != -EINVAL)
            SVC_WARN(NULL, "order lookup failed", "err=\"%s\"", store_strerror(r));
        return r == -EINVAL ? HTTP_E_BAD_REQUEST : svc__store_err(r);
    }
    out->order_id = o.order_id;
    memcpy(out->sku, o.sku, sizeof out->sku);
    memcpy(out->user_id, o.user_id, sizeof out->user_id);
    out->qty = o.qty;
    out->stock = o.stock;
    out->version = o.version;
    return 0;
}

static int svc_audit(void *ctx, const char *sku, int with_orders, http_audit *out)
{
    svc *s = ctx;
    store_audit_result a;
    int64_t t0 = rt_now_ns();
    int r = store_audit(s->st, sku, with_orders, &a);
    svc__slow_check(s, "audit", sku, rt_now_ns() - t0, r);
    if (r < 0) {
        if (r != -ENOENT)
            SVC_WARN(NULL, "audit failed", "sku=%s err=\"%s\"", sku, store_strerror(r));
        return svc__store_err(r);
    }
    out->stock = a.item.stock;
    out->version = a.item.version;
    out->units_supplied = a.item.units_supplied;
    out->units_sold = a.units_sold;
    out->orders = a.orders;
    out->max_user_qty = a.max_user_qty;
    out->duplicate_idempotency_keys = a.duplicate_idempotency_keys;
    out->order_ids = NULL;
    out->n_order_ids = 0;
    if (with_orders && a.n_order_ids > 0) {
        out->order_ids = malloc(a.n_order_ids * sizeof *out->order_ids);
        if (out->order_ids == NULL) {
            store_audit_free(&a);
            return -ENOMEM;
        }
        memcpy(out->order_ids, a.order_ids, a.n_order_ids * sizeof *out->order_ids);
        out->n_order_ids = a.n_order_ids;
    }
    store_audit_free(&a);
    return 0;
}

static void config_values(svc *s, http_config_values *out)
{
    out->invalidation_delay_ms = atomic_load(&s->invalidation_delay_ms);
    out->local_ttl_ms = atomic_load(&s->local_ttl_ms);
    snprintf(out->log_level, sizeof out->log_level, "%s",
             svc_log_level_name(svc_log_get_level()));
}

static int svc_get_config(void *ctx, http_config_values *out)
{
    config_values(ctx, out);
    return 0;
}

/* POST /admin/cache/purge. Redis first, then this instance, then the
 * broadcast: a copy dropped locally is never refilled from a Redis copy
 * that is still to be purged (other instances refill from the database,
 * through the already purged Redis, until their purge event arrives).
 * Each step can be repeated, so a failed call is simply called again. */
/* A failed purge step: says in out->detail what failed and what was done
 * before it, logs it, and answers 503. */
static int purge_failed(http_purge_res *out, const char *step, const char *err)
{
    if (strcmp(step, "redis") == 0)
        snprintf(out->detail, sizeof out->detail,
                 "Redis purge failed after %llu keys: %s; nothing else was purged, "
                 "call again once Redis is reachable",
                 (unsigned long long)out->redis_keys, err);
    else
        snprintf(out->detail, sizeof out->detail,
                 "Redis (%llu keys) and this instance were purged, but the purge "
                 "event was not acknowledged by Kafka (%s): other instances still "
                 "hold their copies; call again",
                 (unsigned long long)out->redis_keys, err);
    SVC_WARN(NULL, "cache purge failed", "step=%s keys=%llu err=\"%s\"", step,
             (unsigned long long)out->redis_keys, err);
    return HTTP_E_UNAVAILABLE;
}

static int svc_purge_cache(void *ctx, http_purge_res *out)
{
    svc *s = ctx;
    int r;
    if (s->rc != NULL) {
        if ((r = rc_purge_items(s->rc, rt_deadline_ms(10000), &out->redis_keys)) < 0)
            return purge_failed(out, "redis", rc_strerror(r));
        out->redis = 1;
    }
    svc__local_purge(s);
    if (s->iv != NULL) {
        if ((r = inv_purge(s->iv, 10000)) < 0)
            return purge_failed(out, "broadcast", inv_strerror(r));
        out->broadcast = 1;
    }
    SVC_INFO(NULL, "cache purged", "redis_keys=%llu broadcast=%d",
             (unsigned long long)out->redis_keys, out->broadcast);
    return 0;
}

static void set_delay(svc *s, int64_t ms)
{
    atomic_store(&s->invalidation_delay_ms, ms);
    if (s->iv != NULL)
        inv_set_delay_ms(s->iv, ms);
}

static int svc_put_config(void *ctx, const http_config_update *upd, http_config_values *out)
{
    svc *s = ctx;
    int level = -1;
    const char *bad = NULL;
    if (upd->log_level != NULL && (level = svc_log_level_parse(upd->log_level)) < 0)
        bad = "log_level: not one of debug, info, warn, error";
    else if (upd->has_local_ttl_ms && (upd->local_ttl_ms < 1 || upd->local_ttl_ms > 86400000))
        bad = "local_ttl_ms: not in 1..86400000";
    else if (upd->has_invalidation_delay_ms &&
             (upd->invalidation_delay_ms < 0 || upd->invalidation_delay_ms > 3600000))
        bad = "invalidation_delay_ms: not in 0..3600000";
    if (bad != NULL) {
        SVC_WARN(NULL, "admin config change refused", "why=\"%s\"", bad);
        return HTTP_E_BAD_REQUEST;
    }
    if (upd->has_invalidation_delay_ms)
        set_delay(s, upd->invalidation_delay_ms);
    if (upd->has_local_ttl_ms)
        atomic_store(&s->local_ttl_ms, upd->local_ttl_ms);
    if (level >= 0)
        svc_log_set_level(level);
    config_values(s, out);
    SVC_INFO(NULL, "config changed", "source=admin invalidation_delay_ms=%lld local_ttl_ms=%lld log_level=%s",
             (long long)out->invalidation_delay_ms, (long long)out->local_ttl_ms, out->log_level);
    return 0;
}

void svc_apply_runtime(svc *s, const svc_config *cfg)
{
    set_delay(s, cfg->invalidation_delay_ms);
    atomic_store(&s->slow_ns, (int64_t)cfg->log_slow_ms * 1000000);
    atomic_store(&s->local_ttl_ms, cfg->local_ttl_ms);
    svc_log_set_level(cfg->log_level);
    /* Static settings: compare the dumps key by key would need the table;
     * the ones operators change most are named. */
    if (strcmp(cfg->listen, s->cfg.listen) != 0 || strcmp(cfg->store_url, s->cfg.store_url) != 0 ||
        strcmp(cfg->redis_url, s->cfg.redis_url) != 0 ||
        strcmp(cfg->kafka_brokers, s->cfg.kafka_brokers) != 0 || cfg->workers != s->cfg.workers)
        SVC_WARN(NULL, "reload: static settings changed; they apply after a restart",
                 "listen=%s store_url=%s redis_url=%s kafka_brokers=%s", cfg->listen,
                 cfg->store_url, cfg->redis_url, cfg->kafka_brokers);
    SVC_INFO(NULL, "config reloaded", "invalidation_delay_ms=%d local_ttl_ms=%d log_level=%s slow_ms=%d",
             cfg->invalidation_delay_ms, cfg->local_ttl_ms, svc_log_level_name(cfg->log_level),
             cfg->log_slow_ms);
}

/* ------------------------------------------------------------------------ */
/* /metrics                                                                  */


/* Writes one of the store's histograms (non-cumulative counts per bucket,
 * upper bounds in le, the last bucket being +Inf) as a Prometheus family. */
static void store_histogram(svc_buf *b, const char *name, const char *help,
                            const uint64_t *counts, const double *le, int n, double sum)
{
    char metric[96], lb[64];
    uint64_t cum = 0;
    svc_prom_header(b, name, "histogram", help);
    snprintf(metric, sizeof metric, "%s_bucket", name);
    for (int i = 0; i < n; i++) {
        cum += counts[i];
        if (i == n - 1)
            snprintf(lb, sizeof lb, "le=\"+Inf\"");
        else
            snprintf(lb, sizeof lb, "le=\"%g\"", le[i]);
        svc_prom_sample_u64(b, metric, lb, cum);
    }
    snprintf(metric, sizeof metric, "%s_sum", name);
    svc_prom_sample(b, metric, NULL, sum);
    snprintf(metric, sizeof metric, "%s_count", name);
    svc_prom_sample_u64(b, metric, NULL, cum);
}

static void store_metrics(svc *s, svc_buf *b)
{
    store_stats st;
    store_stats_get(s->st, &st);
#define X(f, name, help) svc_prom_header(b, "cachesvc_" name, "counter", help); \
    svc_prom_sample_u64(b, "cachesvc_" name, NULL, st.f);
    STORE_COUNTERS(X)
#undef X
    svc_prom_header(b, "cachesvc_store_queued", "gauge", "Decrements waiting in item batchers.");
    svc_prom_sample_u64(b, "cachesvc_store_queued", NULL, st.queued);

    store_histogram(b, "cachesvc_store_batch_size", "Requests per batch transaction.",
                    st.batch_size_bucket, store_batch_bucket_le, STORE_BATCH_BUCKETS,
                    (double)st.batch_size_sum);
    store_histogram(b, "cachesvc_store_commit_seconds",
                    "Batch transaction latency, first statement to COMMIT's answer.",
                    st.latency_bucket, store_latency_bucket_le, STORE_LATENCY_BUCKETS,
                    st.latency_sum_s);
}

static void redis_metrics(svc *s, svc_buf *b)
{
    enum { MAXN = 64 };
    rc_node_stats *ns = calloc(MAXN, sizeof *ns);
    if (ns == NULL)
        return;
    int n = rc_stats(s->rc, ns, MAXN);
    if (n > MAXN)
        n = MAXN;
    char lb[128], name[96];
    /* Counters end in _total; inflight is the one gauge. */
#define X(f, help)                                                                        \
    {                                                                                     \
        int gauge = strcmp(#f, "inflight") == 0;                                          \
        snprintf(name, sizeof name, "cachesvc_redis_node_%s%s", #f, gauge ? "" : "_total"); \
        svc_prom_header(b, name, gauge ? "gauge" : "counter", help);                      \
        for (int i = 0; i < n; i++) {                                                     \
            snprintf(lb, sizeof lb, "node=\"%s\",role=\"%s\"", ns[i].addr,                \
                     ns[i].master ? "master" : "replica");                                \
            svc_prom_sample_u64(b, name, lb, ns[i].f);                                    \
        }                                                                                 \
    }
    RC_NODE_COUNTERS(X)
#undef X
    svc_prom_header(b, "cachesvc_redis_node_up", "gauge", "1 while the node is not marked down.");
    for (int i = 0; i < n; i++) {
        snprintf(lb, sizeof lb, "node=\"%s\"", ns[i].addr);
        svc_prom_sample_u64(b, "cachesvc_redis_node_up", lb, (uint64_t)ns[i].up);
    }
    svc_prom_header(b, "cachesvc_redis_breaker_open", "gauge", "1 while reads skip Redis.");
    svc_prom_sample_u64(b, "cachesvc_redis_breaker_open", NULL,
                        (uint64_t)svc__breaker_is_open(&s->breaker));
    free(ns);
}

static void inv_hist_render(svc_buf *b, const char *name, const char *help, const inv_hist *h)
{
    static const int64_t le_ms[] = {1, 2, 5, 10, 25, 50, 100, 200, 300, 500, 750, 1000,
                                    1500, 2000, 3000, 5000, 10000, 30000, 60000};
    char lb[64], n2[128];
    svc_prom_header(b, name, "histogram", help);
    snprintf(n2, sizeof n2, "%s_bucket", name);
    for (size_t i = 0; i < sizeof le_ms / sizeof le_ms[0]; i++) {
        snprintf(lb, sizeof lb, "le=\"%g\"", (double)le_ms[i] / 1000.0);
        svc_prom_sample_u64(b, n2, lb, inv_hist_count_le(h, le_ms[i]));
    }
    svc_prom_sample_u64(b, n2, "le=\"+Inf\"", h->count);
    snprintf(n2, sizeof n2, "%s_sum", name);
    svc_prom_sample(b, n2, NULL, (double)h->sum_ms / 1000.0);
    snprintf(n2, sizeof n2, "%s_count", name);
    svc_prom_sample_u64(b, n2, NULL, h->count);
}

static void inv_metrics(svc *s, svc_buf *b)
{
    inv_stats *st = malloc(sizeof *st);
    if (st == NULL)
        return;
    inv_stats_get(s->iv, st);
    const uint64_t v[] = {
#define X(f, help) st->f,
        INV_COUNTERS(X)
#undef X
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        char name[96];
        snprintf(name, sizeof name, "cachesvc_inv_%s_total", inv_counter_names[i]);
        svc_prom_header(b, name, "counter", inv_counter_help[i]);
        svc_prom_sample_u64(b, name, NULL, v[i]);
    }
    struct { const char *name, *help; int64_t v; } g[] = {
        {"cachesvc_inv_outbox_depth", "Outbox rows in the database, not yet acknowledged by Kafka (read once a second).", st->outbox_depth},
        {"cachesvc_inv_relay_inflight", "Events produced, not yet acknowledged.", st->relay_inflight},
        {"cachesvc_inv_pending", "Events held by the delay consumer.", st->pending},
        {"cachesvc_inv_pending_skus", "Distinct items held by the delay consumer.", st->pending_skus},
        {"cachesvc_inv_delay_ms", "The invalidation delay in force.", st->delay_ms},
    };
    for (size_t i = 0; i < sizeof g / sizeof g[0]; i++) {
        svc_prom_header(b, g[i].name, "gauge", g[i].help);
        svc_prom_sample(b, g[i].name, NULL, (double)g[i].v);
    }
    svc_prom_header(b, "cachesvc_inv_outbox_oldest_age_seconds", "gauge",
                    "Age of the oldest outbox row (0 when empty): a row that stays is an event not published.");
    svc_prom_sample(b, "cachesvc_inv_outbox_oldest_age_seconds", NULL,
                    (double)st->outbox_oldest_age_ms / 1000.0);
    inv_hist_render(b, "cachesvc_invalidation_lag_seconds",
                    "Commit to version-guarded Redis delete.", &st->lag);
    inv_hist_render(b, "cachesvc_invalidation_lateness_seconds",
                    "Due time to Redis delete.", &st->lateness);
    inv_hist_render(b, "cachesvc_broadcast_lag_seconds",
                    "Commit to local eviction on this instance.", &st->bcast_lag);
    free(st);
}

static void runtime_metrics(svc_buf *b)
{
    int n = rt_workers();
    rt_worker_stats *ws = calloc((size_t)(n > 0 ? n : 1), sizeof *ws);
    if (ws == NULL)
        return;
    for (int i = 0; i < n; i++)
        rt_worker_stats_get(i, &ws[i]);
    char lb[32];
#define W(f, type, help)                                                  \
    svc_prom_header(b, "cachesvc_rt_worker_" #f, type, help);             \
    for (int i = 0; i < n; i++) {                                         \
        snprintf(lb, sizeof lb, "worker=\"%d\"", i);                      \
        svc_prom_sample_u64(b, "cachesvc_rt_worker_" #f, lb, ws[i].f);    \
    }
    W(spawns, "counter", "Coroutines spawned by the worker.")
    W(switches, "counter", "Context switches into coroutines.")
    W(steals, "counter", "Successful steals by the worker.")
    W(stolen_tasks, "counter", "Coroutines moved by those steals.")
    W(parks, "counter", "Times the worker went idle.")
    W(polls, "counter", "Netpoll calls by the worker.")
    W(runq_depth, "gauge", "Coroutines in the worker's local queue.")
#undef W
    free(ws);
    rt_stats st;
    rt_stats_get(&st);
    svc_prom_header(b, "cachesvc_rt_coroutines", "gauge", "Coroutines alive.");
    svc_prom_sample_u64(b, "cachesvc_rt_coroutines", NULL, st.live);
    svc_prom_header(b, "cachesvc_rt_hogs_total", "counter", "Coroutines reported running too long.");
    svc_prom_sample_u64(b, "cachesvc_rt_hogs_total", NULL, st.hogs);
    svc_prom_header(b, "cachesvc_rt_blocking_calls_total", "counter", "Calls offloaded to blocking threads.");
    svc_prom_sample_u64(b, "cachesvc_rt_blocking_calls_total", NULL, st.blocking_calls);
}

static void jemalloc_metrics(svc_buf *b)
{
#ifdef CACHESVC_JEMALLOC
    uint64_t epoch = 1;
    size_t sz = sizeof epoch;
    mallctl("epoch", &epoch, &sz, &epoch, sz);
    size_t allocated = 0, resident = 0;
    sz = sizeof allocated;
    mallctl("stats.allocated", &allocated, &sz, NULL, 0);
    sz = sizeof resident;
    mallctl("stats.resident", &resident, &sz, NULL, 0);
    svc_prom_header(b, "cachesvc_jemalloc_allocated_bytes", "gauge", "Bytes allocated by the application.");
    svc_prom_sample_u64(b, "cachesvc_jemalloc_allocated_bytes", NULL, allocated);
    svc_prom_header(b, "cachesvc_jemalloc_resident_bytes", "gauge", "Bytes in physically resident data pages.");
    svc_prom_sample_u64(b, "cachesvc_jemalloc_resident_bytes", NULL, resident);
#else
    (void)b;
#endif
}

static int svc_metrics(void *ctx, http_buf *out)
{
    svc *s = ctx;
    svc_buf b = {0};
    svc_metrics_render(&b);
    svc__local_metrics(s, &b);
    store_metrics(s, &b);
    if (s->rc != NULL)
        redis_metrics(s, &b);
    if (s->iv != NULL)
        inv_metrics(s, &b);
    runtime_metrics(&b);
    jemalloc_metrics(&b);
    int r = b.oom ? -ENOMEM : http_buf_append(out, b.p, b.len);
    svc_buf_free(&b);
    return r;
}

/* ------------------------------------------------------------------------ */
/* /readyz                                                                   */

/* Kafka counts as up once the relay runs and the broadcast consumer holds
 * its positions (the fleet's delay group may still be joining), unless
 * this relay has events in flight and Kafka has acknowledged none of them
 * for KAFKA_STALL_NS (a broker outage: rows wait in the outbox
 * meanwhile). */
#define KAFKA_STALL_NS (5 * 1000000000LL)
static int kafka_up(svc *s)
{
    if (s->iv == NULL || !inv_ready_to_serve(s->iv))
        return 0;
    inv_stats *st = malloc(sizeof *st);
    if (st == NULL)
        return 1;
    inv_stats_get(s->iv, st);
    int64_t now = rt_now_ns();
    int waiting = st->relay_inflight > 0;   /* the outbox holds other relays' rows too */
    uint64_t pub = st->published;
    free(st);
    if (!waiting || pub != atomic_exchange(&s->kafka_published, pub)) {
        atomic_store(&s->kafka_progress_ns, now);
        return 1;
    }
    int64_t since = atomic_load(&s->kafka_progress_ns);
    if (since == 0) {
        atomic_store(&s->kafka_progress_ns, now);
        return 1;
    }
    return now - since < KAFKA_STALL_NS;
}

static int svc_ready(void *ctx, http_readiness *out)
{
    svc *s = ctx;
    int r = store_ping(s->st);
    atomic_store(&s->store_up, r == 0);
    out->store = r == 0 ? HTTP_DEP_UP : HTTP_DEP_DOWN;
    if (s->rc == NULL) {
        out->redis = HTTP_DEP_NONE;
    } else {
        const char *argv[] = {"PING"};
        rc_reply *rep = NULL;
        int pr = rc_command(s->rc, 1, argv, NULL, rt_deadline_ms(s->cfg.redis_timeout_ms), &rep);
        rc_reply_free(rep);
        out->redis = pr == 0 ? HTTP_DEP_UP : HTTP_DEP_DOWN;
    }
    if (strcmp(s->cfg.kafka_brokers, "none") == 0)
        out->kafka = HTTP_DEP_NONE;
    else
        out->kafka = kafka_up(s) ? HTTP_DEP_UP : HTTP_DEP_DOWN;
    if (atomic_load(&s->draining))
        out->store = HTTP_DEP_DOWN;   /* leaving: take us out of rotation */
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Lifetime                                                                  */

/* Keeps trying to reach Redis while the client is not connected; the
 * breaker covers the reads meanwhile. */
static void redis_connector(void *arg)
{
    svc *s = arg;
    while (!atomic_load(&s->draining)) {
        int r = rc_connect(s->rc, rt_deadline_ms(s->cfg.redis_timeout_ms * 5 + 1000));
        if (r == 0) {
            SVC_INFO(NULL, "redis connected", "seeds=%s", s->cfg.redis_url);
            svc__breaker_result(&s->breaker, 1);
            return;
        }
        if (rt_sleep(s->cfg.redis_breaker_probe_ms) < 0)
            return;
    }
}

static intptr_t local_new_blocking(void *arg)
{
    return svc__local_new(arg);
}

struct inv_new_args {
    const inv_config *cfg;
    const inv_source *src;
    const inv_redis_sink *rs;
    const inv_local_sink *ls;
    inv *out;
};

static intptr_t inv_new_blocking(void *arg)
{
    struct inv_new_args *a = arg;
    return inv_new(a->cfg, a->src, a->rs, a->ls, &a->out);
}

static intptr_t inv_free_blocking(void *arg)
{
    inv_free(arg);
    return 0;
}

int svc_open(const svc_config *cfg, svc **out)
{
    int r;
    svc *s = calloc(1, sizeof *s);
    if (s == NULL)
        return -ENOMEM;
    s->cfg = *cfg;
    svc_metrics_set_worker_id(rt_worker_id);   /* each worker its own slot */
    /* Lines logged while a request is served carry its X-Request-Id. */
    svc_log_set_reqid_source(http_request_id);
    atomic_store(&s->local_ttl_ms, cfg->local_ttl_ms);
    atomic_store(&s->invalidation_delay_ms, cfg->invalidation_delay_ms);
    atomic_store(&s->slow_ns, (int64_t)cfg->log_slow_ms * 1000000);
    svc__breaker_init(&s->breaker, cfg->redis_breaker_failures, cfg->redis_breaker_probe_ms);
    if ((r = svc__flights_new(&s->flights)) < 0)
        goto fail;

    store_config sc = {
        .pool_size = cfg->store_pool_size,
        .batch_max = cfg->store_batch_max,
        .queue_max = cfg->store_queue_max,
        .timeout_ms = cfg->store_timeout_ms,
        /* The store reads 0 as its default; here 0 turns it off. */
        .sold_out_max_orders = cfg->store_sold_out_max_orders > 0 ? cfg->store_sold_out_max_orders : -1,
        .on_commit = svc__on_commit,
        .on_commit_ctx = s,
    };
    if ((r = store_open(cfg->store_url, &sc, &s->st)) < 0) {
        SVC_ERROR(NULL, "store open failed", "url=\"%s\" err=\"%s\"", cfg->store_url, store_strerror(r));
        goto fail;
    }

    if (strcmp(cfg->redis_url, "none") != 0) {
        const char *seeds = cfg->redis_url;
        if (strncmp(seeds, "redis://", 8) == 0)
            seeds += 8;
        rc_config rcfg = {
            .seeds = seeds,
            .conns_per_node = cfg->redis_connections,
            .connect_timeout_ms = cfg->redis_timeout_ms * 5 > 1000 ? 1000 : cfg->redis_timeout_ms * 5,
            .command_timeout_ms = cfg->redis_timeout_ms,
        };
        if ((s->rc = rc_new(&rcfg)) == NULL) {
            SVC_ERROR(NULL, "redis client refused its configuration", "url=%s", cfg->redis_url);
            r = -EINVAL;
            goto fail;
        }
        r = rc_connect(s->rc, rt_deadline_ms(2000));
        if (r < 0) {
            SVC_WARN(NULL, "redis not reachable; reads skip it until it is",
                     "url=%s err=\"%s\"", cfg->redis_url, rc_strerror(r));
            for (int i = 0; i < s->breaker.threshold; i++)
                svc__breaker_result(&s->breaker, 0);
            rt_spawn(&s->connector, redis_connector, s);
        }
    }

    /* lc_new allocates and touches its whole bound, inv_new may start the
     * embedded Kafka cluster: both on the blocking pool, not a worker. */
    if ((r = (int)rt_blocking(local_new_blocking, s)) < 0) {
        SVC_ERROR(NULL, "local cache refused its configuration", "err=\"%s\"", lc_strerror(r));
        goto fail;
    }

    inv_config ic = {
        .brokers = cfg->kafka_brokers,
        .topic = cfg->kafka_topic,
        .delay_group = cfg->kafka_group,
        .instance_id = cfg->instance_id,
        .delay_ms = cfg->invalidation_delay_ms,
        .roles = INV_ROLE_RELAY | INV_ROLE_BCAST |
                 (s->rc != NULL && cfg->relay_delay_consumer ? INV_ROLE_DELAY : 0),
    };
    inv_source src = {.fetch = outbox_fetch, .ack = outbox_ack, .depth = outbox_depth, .ctx = s};
    /* The delay consumer's deletes go through the same fan-out pool as the
     * standalone invalidator's (redis_sink.h). */
    inv_redis_sink rs = {.del = svc_redis_sink_del, .ctx = &s->rsink};
    inv_local_sink ls = {.evict = local_evict, .lost = local_lost, .purge = local_purge, .ctx = s};
    struct inv_new_args na = {&ic, &src, (ic.roles & INV_ROLE_DELAY) ? &rs : NULL, &ls, NULL};
    inv *iv = NULL;
    if (strcmp(cfg->kafka_brokers, "none") == 0) {
        /* No invalidation events: one instance without Redis (config.c
         * refuses anything else). Outbox rows are left in the database. */
        SVC_WARN(NULL, "kafka.brokers = none: no invalidation events are published", NULL);
        goto wired;
    }
    if ((ic.roles & INV_ROLE_DELAY) &&
        (r = svc_redis_sink_start(&s->rsink, s->rc, cfg->redis_timeout_ms,
                                  cfg->redis_tombstone_ttl_ms,
                                  SVC_REDIS_SINK_WIDTH)) < 0) {
        SVC_ERROR(NULL, "redis delete pool did not start", "err=\"%s\"", strerror(-r));
        goto fail;
    }
    r = (int)rt_blocking(inv_new_blocking, &na);
    iv = na.out;
    if (r < 0) {
        SVC_ERROR(NULL, "invalidator refused its configuration", "brokers=%s err=\"%s\"",
                  cfg->kafka_brokers, inv_strerror(r));
        goto fail;
    }
    if ((r = inv_start(iv)) < 0) {
        SVC_ERROR(NULL, "invalidator did not start", "err=\"%s\"", inv_strerror(r));
        inv_free(iv);
        goto fail;
    }
    s->iv = iv;

wired:
    s->api = (http_service){
        .ctx = s,
        .get_item = svc_get_item,
        .decrement = svc_decrement,
        .put_item = svc_put_item,
        .audit = svc_audit,
        .order_by_key = svc_order_by_key,
        .purge_cache = svc_purge_cache,
        .get_config = svc_get_config,
        .put_config = svc_put_config,
        .metrics = svc_metrics,
        .ready = svc_ready,
    };
    if ((r = svc__monitor_start(s)) < 0) {
        SVC_ERROR(NULL, "consistency monitor did not start", "err=\"%s\"", strerror(-r));
        goto fail;
    }
    SVC_INFO(NULL, "service open", "store=\"%s\" redis=%s kafka=%s bootstrap=%s",
             cfg->store_url, cfg->redis_url, cfg->kafka_brokers, iv ? inv_bootstraps(iv) : "none");
    *out = s;
    return 0;
fail:
    svc_close(s, 0);
    return r;
}

void svc_close(svc *s, int drain_ms)
{
    if (s == NULL)
        return;
    atomic_store(&s->draining, 1);
    int64_t t0 = rt_now_ns(), t1 = t0, t2;
    if (s->iv != NULL) {
        int r = inv_stop(s->iv, drain_ms);
        t1 = rt_now_ns();
        rt_blocking(inv_free_blocking, s->iv);
        s->iv = NULL;
        if (r < 0)
            SVC_WARN(NULL, "invalidator stopped before Kafka acknowledged everything; "
                     "the outbox keeps the rest", "err=\"%s\"", inv_strerror(r));
    }
    svc_redis_sink_stop(&s->rsink);   /* no delete runs once inv is freed */
    svc__monitor_stop(s);             /* before the store it reads */
    t2 = rt_now_ns();
    if (s->connector != NULL)
        rt_join(s->connector);
    if (s->rc != NULL)
        rc_free(s->rc);
    if (s->st != NULL)
        store_close(s->st);
    SVC_INFO(NULL, "components closed", "inv_stop_ms=%lld inv_free_ms=%lld rest_ms=%lld",
             (long long)((t1 - t0) / 1000000), (long long)((t2 - t1) / 1000000),
             (long long)((rt_now_ns() - t2) / 1000000));
    svc__local_free(s);
    svc__flights_free(s->flights);
    free(s);
}
