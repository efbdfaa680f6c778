/*
 * service.c: the composition root. Opens the components in order (store,
 * Redis, local cache, invalidator), hands the invalidator its source and
 * sinks, and implements the admin, metrics and readiness calls of
 * api/http_service.h. The read and write paths are in read_path.c and
 * write_path.c.
 */
#include "cachesvc/component_metrics.h"
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
        rows[i].has_item = tmp[i].has_item;
        rows[i].item = (inv_item){.stock = tmp[i].stock,
                                  .per_user_limit = tmp[i].per_user_limit,
                                  .sale_starts_at_ms = tmp[i].sale_starts_at_ms};
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

/* A broadcast event with the committed row: install it unless a newer copy
 * is held (the version guard), raising the floor to it either way, so the
 * item stays warm on every instance while it sells. */
static void local_install(void *ctx, const char *sku, int64_t version, const inv_item *item)
{
    svc *s = ctx;
    svc_entry e = {.stock = item->stock,
                   .version = version,
                   .per_user_limit = item->per_user_limit,
                   .sale_starts_at_ms = item->sale_starts_at_ms};
    svc__local_install(s, sku, &e);
    svc__flights_invalidate(s, sku);
    svc_metric_inc(SVC_C_LOCAL_INSTALLS);
}

/* ------------------------------------------------------------------------ */

/* r is what the operation got: 0, a store outcome (> 0, a decrement's), a
 * negative store errno or a negative HTTP_E_* code; the line names it by
 * the API's error code (ok, sold_out, unavailable, outcome_unknown, ...). */
void svc__slow_check(svc *s, const char *op, const char *sku, int64_t dt, int r)
{
    int64_t limit = atomic_load_explicit(&s->slow_ns, memory_order_relaxed);
    if (limit <= 0 || dt <= limit)
        return;
    const char *error = r == 0 ? "ok"
                        : r > 0 ? store_outcome_name((store_outcome)r)
                        : http_error_code(r <= HTTP_E_BAD_REQUEST ? r : svc__store_err(r));
    SVC_WARN(NULL, "slow request", "op=%s sku=%s ms=%.3f error=%s", op, sku, (double)dt / 1e6,
             error);
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

/* A PUT /admin/config change, recorded in the listed settings as "set". */
static void settings_set(svc *s, const char *key, const char *value)
{
    pthread_mutex_lock(&s->settings_mu);
    svc_config_set(s->settings, key, value, NULL, 0);
    pthread_mutex_unlock(&s->settings_mu);
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
    char v[32];
    if (upd->has_invalidation_delay_ms) {
        set_delay(s, upd->invalidation_delay_ms);
        snprintf(v, sizeof v, "%lld", (long long)upd->invalidation_delay_ms);
        settings_set(s, "kafka.invalidation_delay_ms", v);
    }
    if (upd->has_local_ttl_ms) {
        atomic_store(&s->local_ttl_ms, upd->local_ttl_ms);
        snprintf(v, sizeof v, "%lld", (long long)upd->local_ttl_ms);
        settings_set(s, "cache.local_ttl_ms", v);
    }
    if (level >= 0) {
        svc_log_set_level(level);
        settings_set(s, "log.level", svc_log_level_name(level));
    }
    config_values(s, out);
    SVC_INFO(NULL, "config changed", "source=admin invalidation_delay_ms=%lld local_ttl_ms=%lld log_level=%s",
             (long long)out->invalidation_delay_ms, (long long)out->local_ttl_ms, out->log_level);
    return 0;
}

struct reload_ctx {
    svc *s;
    const svc_config *next;
    int restart;
};

static void reload_key(void *arg, const char *key, int runtime)
{
    struct reload_ctx *c = arg;
    svc *s = c->s;
    const svc_config *n = c->next;
    char value[SVC_CFG_STR + 16] = "";
    svc_config_get(n, key, 1, value, sizeof value);
    if (!runtime) {
        c->restart++;
        SVC_WARN(NULL, "reload: this setting applies after a restart", "key=%s value=\"%s\"",
                 key, value);
        return;
    }
    if (strcmp(key, "kafka.invalidation_delay_ms") == 0)
        set_delay(s, n->invalidation_delay_ms);
    else if (strcmp(key, "cache.local_ttl_ms") == 0)
        atomic_store(&s->local_ttl_ms, n->local_ttl_ms);
    else if (strcmp(key, "log.level") == 0)
        svc_log_set_level(n->log_level);
    else if (strcmp(key, "log.slow_ms") == 0)
        atomic_store(&s->slow_ns, (int64_t)n->log_slow_ms * 1000000);
    /* server.admin_token(_file): the HTTP server's, applied by the caller. */
    pthread_mutex_lock(&s->settings_mu);
    svc_config_copy_key(s->settings, n, key);
    pthread_mutex_unlock(&s->settings_mu);
    SVC_INFO(NULL, "reload: setting applied", "key=%s value=\"%s\"", key, value);
}

int svc_apply_runtime(svc *s, const svc_config *old, const svc_config *next)
{
    struct reload_ctx c = {s, next, 0};
    int n = svc_config_diff(old, next, reload_key, &c);
    SVC_INFO(NULL, "config reloaded", "changed=%d need_restart=%d", n, c.restart);
    return c.restart;
}

/* GET /admin/config's "settings": the running settings and their sources. */
static int svc_config_settings(void *ctx, kit_buf *out)
{
    svc *s = ctx;
    pthread_mutex_lock(&s->settings_mu);
    char *json = svc_config_json(s->settings);
    pthread_mutex_unlock(&s->settings_mu);
    if (json == NULL)
        return -ENOMEM;
    int r = kit_buf_append(out, json, strlen(json));
    free(json);
    return r;
}

/* ------------------------------------------------------------------------ */
/* /metrics                                                                  */


static void store_metrics(svc *s, kit_buf *b)
{
    store_stats st;
    store_stats_get(s->st, &st);
    static const kit_metric counters[] = {STORE_COUNTERS(KIT_METRIC)};
    const uint64_t v[] = {
#define X(name, help) st.name,
        STORE_COUNTERS(X)
#undef X
    };
    kit_prom_list(b, "cachesvc_store_", "_total", "counter", "", counters, v,
                  sizeof v / sizeof v[0]);
    kit_prom_one_u64(b, "cachesvc_store_queued", "gauge", "Decrements waiting in item batchers",
                     st.queued);
    kit_prom_one_u64(b, "cachesvc_store_queue_max", "gauge",
                     "Decrements an item's batcher holds before answering overloaded "
                     "(store.queue_max)",
                     st.queue_max);

    /* The store's histograms hold n buckets, the last one +Inf. */
    kit_prom_header(b, "cachesvc_store_batch_size", "histogram", "Requests per batch transaction.");
    kit_prom_hist(b, "cachesvc_store_batch_size", NULL, store_batch_bucket_le,
                  st.batch_size_bucket, STORE_BATCH_BUCKETS - 1, (double)st.batch_size_sum);
    kit_prom_header(b, "cachesvc_store_commit_seconds", "histogram",
                    "Batch transaction latency, first statement to COMMIT's answer.");
    kit_prom_hist(b, "cachesvc_store_commit_seconds", NULL, store_latency_bucket_le,
                  st.latency_bucket, STORE_LATENCY_BUCKETS - 1, st.latency_sum_s);
}

static void redis_metrics(svc *s, kit_buf *b)
{
    rc_metrics_append(s->rc, b);
    kit_prom_one_u64(b, "cachesvc_redis_breaker_open", "gauge", "1 while reads skip Redis",
                     (uint64_t)svc__breaker_is_open(&s->breaker));
}

static void inv_metrics(svc *s, kit_buf *b)
{
    inv_stats *st = malloc(sizeof *st);   /* about 12 KiB: not on the stack */
    if (st == NULL) {
        b->oom = 1;
        return;
    }
    inv_stats_get(s->iv, st);
    inv_metrics_append(st, b);
    free(st);
}

/* The runtime's per-worker statistics, declared once in rt.h. */
static void runtime_metrics(kit_buf *b)
{
    int n = rt_workers();
    rt_worker_stats *ws = calloc((size_t)(n > 0 ? n : 1), sizeof *ws);
    if (ws == NULL) {
        b->oom = 1;
        return;
    }
    for (int i = 0; i < n; i++)
        rt_worker_stats_get(i, &ws[i]);
    char lb[32], name[64];
#define W(f, help, suffix, type)                                          \
    snprintf(name, sizeof name, "cachesvc_rt_worker_%s%s", #f, suffix);   \
    kit_buf_printf(b, "# HELP %s %s.\n", name, help);                     \
    kit_buf_printf(b, "# TYPE %s %s\n", name, type);                      \
    for (int i = 0; i < n; i++) {                                         \
        snprintf(lb, sizeof lb, "worker=\"%d\"", i);                      \
        kit_prom_sample_u64(b, name, lb, ws[i].f);                        \
    }
#define C(f, help) W(f, help, "_total", "counter")
#define G(f, help) W(f, help, "", "gauge")
    RT_WORKER_COUNTERS(C)
    RT_WORKER_GAUGES(G)
#undef G
#undef C
#undef W
    free(ws);
    rt_stats st;
    rt_stats_get(&st);
    kit_prom_one_u64(b, "cachesvc_rt_coroutines", "gauge", "Coroutines alive", st.live);
    kit_prom_one_u64(b, "cachesvc_rt_hogs_total", "counter", "Coroutines reported running too long",
                     st.hogs);
    kit_prom_one_u64(b, "cachesvc_rt_blocking_calls_total", "counter",
                     "Calls offloaded to blocking threads", st.blocking_calls);
}

static void jemalloc_metrics(kit_buf *b)
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
    kit_prom_one_u64(b, "cachesvc_jemalloc_allocated_bytes", "gauge",
                     "Bytes allocated by the application", allocated);
    kit_prom_one_u64(b, "cachesvc_jemalloc_resident_bytes", "gauge",
                     "Bytes in physically resident data pages", resident);
#else
    (void)b;
#endif
}

static void deps_state(svc *s, int live, http_readiness *out);

static int svc_metrics(void *ctx, kit_buf *out)
{
    svc *s = ctx;
    http_readiness rd = {0};
    deps_state(s, 0, &rd);
    svc_build_info_metrics(out);
    svc_readiness_metrics(out, &rd, !rd.draining && rd.store != HTTP_DEP_DOWN);
    svc_metrics_render(out);
    svc__local_metrics(s, out);
    store_metrics(s, out);
    if (s->rc != NULL)
        redis_metrics(s, out);
    if (s->iv != NULL)
        inv_metrics(s, out);
    runtime_metrics(out);
    jemalloc_metrics(out);
    kit_prom_process(out);
    return out->oom ? -ENOMEM : 0;
}

/* ------------------------------------------------------------------------ */
/* /readyz                                                                   */

/* Kafka counts as up once the relay runs and the broadcast consumer holds
 * its positions (the fleet's delay group may still be joining), unless
 * this relay has events in flight and Kafka has acknowledged none of them
 * for KAFKA_STALL_NS (a broker outage: rows wait in the outbox
 * meanwhile). Reads counters only: no round trip. */
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

/* What is known of a dependency stays good this long; a scrape older than
 * that checks it afresh (a /readyz always does). */
#define DEPS_FRESH_NS (5 * 1000000000LL)

void svc__store_seen(svc *s, int ok)
{
    int64_t now = rt_now_ns();
    /* Under load every database read reports: write only on a change or
     * every 100 ms, so readers do not bounce the line. */
    if (atomic_load_explicit(&s->store_up, memory_order_relaxed) != ok)
        atomic_store_explicit(&s->store_up, ok, memory_order_relaxed);
    else if (now - atomic_load_explicit(&s->store_checked_ns, memory_order_relaxed) < 100000000)
        return;
    atomic_store_explicit(&s->store_checked_ns, now, memory_order_relaxed);
}

/* Fills out->store, redis, kafka and draining. With live set (a /readyz),
 * or when what is known is older than DEPS_FRESH_NS, the store and Redis
 * are checked with a round trip (store_ping, a Redis PING); otherwise the
 * last round trip or request outcome is used. Redis is also down while
 * its breaker is open; Kafka is judged from the relay's counters
 * (kafka_up). Coroutines only (it may park on the round trips). */
static void deps_state(svc *s, int live, http_readiness *out)
{
    int64_t now = rt_now_ns();
    if (live || now - atomic_load(&s->store_checked_ns) > DEPS_FRESH_NS) {
        int r = store_ping(s->st);
        atomic_store(&s->store_up, r == 0);
        atomic_store(&s->store_checked_ns, rt_now_ns());
    }
    out->store = atomic_load(&s->store_up) ? HTTP_DEP_UP : HTTP_DEP_DOWN;
    if (s->rc == NULL) {
        out->redis = HTTP_DEP_NONE;
    } else {
        if (live || now - atomic_load(&s->redis_checked_ns) > DEPS_FRESH_NS) {
            int pr = rc_ping(s->rc, rt_deadline_ms(s->cfg.redis_timeout_ms));
            atomic_store(&s->redis_up, pr == 0);
            atomic_store(&s->redis_checked_ns, rt_now_ns());
        }
        int up = atomic_load(&s->redis_up) && !svc__breaker_is_open(&s->breaker);
        out->redis = up ? HTTP_DEP_UP : HTTP_DEP_DOWN;
    }
    if (strcmp(s->cfg.kafka_brokers, "none") == 0)
        out->kafka = HTTP_DEP_NONE;
    else
        out->kafka = kafka_up(s) ? HTTP_DEP_UP : HTTP_DEP_DOWN;
    out->draining = atomic_load(&s->draining) != 0;
}

static int svc_ready(void *ctx, http_readiness *out)
{
    deps_state(ctx, 1, out);
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
    s->bcast_update = strcmp(cfg->kafka_broadcast_mode, "evict") != 0;
    pthread_mutex_init(&s->settings_mu, NULL);
    if ((s->settings = malloc(sizeof *s->settings)) == NULL) {
        free(s);
        return -ENOMEM;
    }
    *s->settings = *cfg;
    /* Lines logged while a request is served carry its X-Request-Id; every
     * module's lines (store, redis, inv, rt, kafka) come through this
     * logger, rate-limited and redacted. */
    svc_log_set_reqid_source(http_request_id);
    svc_log_install();
    atomic_store(&s->local_ttl_ms, cfg->local_ttl_ms);
    atomic_store(&s->invalidation_delay_ms, cfg->invalidation_delay_ms);
    atomic_store(&s->slow_ns, (int64_t)cfg->log_slow_ms * 1000000);
    svc__breaker_init(&s->breaker, cfg->redis_breaker_failures, cfg->redis_breaker_probe_ms);
    if ((r = svc__flights_new(&s->flights)) < 0)
        goto fail;

    store_config sc = {
        .pool_size = cfg->store_pool_size,
        .pipeline_depth = cfg->store_pipeline_depth,
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
            /* Every connection the client opens sends AUTH with these. */
            .user = cfg->redis_user,
            .password = cfg->redis_password,
        };
        if ((r = rc_new(&rcfg, &s->rc)) < 0) {
            /* On RC_EINVAL the client logged what it refused. */
            SVC_ERROR(NULL, r == RC_EINVAL ? "redis client refused its configuration" : "redis client not created",
                      "url=%s err=\"%s\"", cfg->redis_url, rc_strerror(r));
            goto fail;
        }
        r = rc_connect(s->rc, rt_deadline_ms(2000));
        if (r == RC_EAUTH) {
            /* Wrong credentials do not heal by waiting: refuse to start.
             * The node's answer names it; the password is never logged. */
            char why[256], q[300];
            rc_auth_error(s->rc, why, sizeof why);
            SVC_ERROR(NULL, "redis refused the credentials", "url=%s user=%s err=%s", cfg->redis_url,
                      cfg->redis_user[0] ? cfg->redis_user : "default", rt_log_q(q, sizeof q, why));
            goto fail;
        }
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
        .broadcast_evict = strcmp(cfg->kafka_broadcast_mode, "evict") == 0,
    };
    /* [kafka] keys with a dot: librdkafka properties, passed through. */
    inv_kafka_prop kprops[SVC_KAFKA_PROPS_MAX];
    for (int i = 0; i < cfg->n_kafka_props && i < SVC_KAFKA_PROPS_MAX; i++)
        kprops[i] = (inv_kafka_prop){cfg->kafka_props[i].key, cfg->kafka_props[i].value};
    ic.kafka_props = kprops;
    ic.n_kafka_props = cfg->n_kafka_props < SVC_KAFKA_PROPS_MAX ? cfg->n_kafka_props : SVC_KAFKA_PROPS_MAX;
    inv_source src = {.fetch = outbox_fetch, .ack = outbox_ack, .depth = outbox_depth, .ctx = s};
    /* The delay consumer's deletes go through the same fan-out pool as the
     * standalone invalidator's (redis_sink.h). */
    inv_redis_sink rs = {.del = svc_redis_sink_del, .ctx = &s->rsink};
    inv_local_sink ls = {.evict = local_evict, .install = local_install, .lost = local_lost,
                         .purge = local_purge, .ctx = s};
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
    s->rsink.spare_equal = !ic.broadcast_evict;
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
        .config_settings = svc_config_settings,
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
    /* Writers' Redis refreshes still running (each ends by its Redis
     * deadline; draining stops new ones). */
    while (atomic_load(&s->refreshes) > 0)
        rt_sleep(1);
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
    pthread_mutex_destroy(&s->settings_mu);
    free(s->settings);
    free(s);
}
