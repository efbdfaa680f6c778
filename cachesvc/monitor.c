/*
 * monitor.c: the online consistency monitor.
 *
 * One read in monitor.sample_every (per worker thread, counted without a
 * shared cache line) is noted with its sku, the version it returned, the
 * tier that answered and the wall-clock time it was served. A coroutine
 * checks each noted read once its check is due, after the invalidation
 * delay plus a second (by then every commit that could make the read
 * stale is visible), against the database (store_version_check): the read
 * is a violation when a version above the one it returned had been
 * committed more than the window W before it was served. W is
 * monitor.window_ms, or the delay + 250 ms in force at the read when 0:
 * the promise the tiers make.
 *
 * The commit time is an upper bound (store.h), so a violation counted is
 * a real one, up to the stamp's place before the row lock and the skew
 * between the writer's clock and this one; a read whose newer commit's
 * stamp is not known exactly may be missed. Samples are held in a bounded
 * ring; when it is full (the database cannot keep up), new ones are dropped
 * and counted.
 */
#include "cachesvc/log.h"
#include "cachesvc/metrics.h"
#include "cachesvc/service.h"
#include "kit/kit.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define MONITOR_RING 4096
#define MONITOR_MARGIN_MS 1000
#define MONITOR_TICK_MS 50

typedef struct sample {
    char sku[HTTP_SKU_MAX + 1];
    int64_t version;
    int64_t read_ms;      /* wall clock */
    int64_t window_ms;
    int64_t due_ms;       /* wall clock */
    http_tier tier;
} sample;

struct svc_monitor {
    svc *s;
    pthread_mutex_t mu;
    sample *ring;         /* FIFO: due times grow with read times */
    size_t head, len;
    rt_co *co;
    rt_event *wake;
    _Atomic int stop;
    int64_t last_log_ms;
};

static __thread uint32_t reads_since_sample;

static enum svc_counter_id check_id(http_tier t)
{
    return t == HTTP_TIER_REDIS ? SVC_C_CONSIST_CHECK_REDIS
         : t == HTTP_TIER_DB    ? SVC_C_CONSIST_CHECK_DB
                                : SVC_C_CONSIST_CHECK_LOCAL;
}

static enum svc_counter_id violation_id(http_tier t)
{
    return t == HTTP_TIER_REDIS ? SVC_C_CONSIST_VIOL_REDIS
         : t == HTTP_TIER_DB    ? SVC_C_CONSIST_VIOL_DB
                                : SVC_C_CONSIST_VIOL_LOCAL;
}

void svc__monitor_note(svc *s, const char *sku, int64_t version, http_tier tier)
{
    svc_monitor *m = s->monitor;
    if (m == NULL || ++reads_since_sample < (uint32_t)s->cfg.monitor_sample_every)
        return;
    reads_since_sample = 0;
    int64_t now = kit_wall_ms();
    int64_t delay = atomic_load_explicit(&s->invalidation_delay_ms, memory_order_relaxed);
    sample x;
    size_t n = strnlen(sku, HTTP_SKU_MAX);
    memcpy(x.sku, sku, n);
    x.sku[n] = '\0';
    x.version = version;
    x.read_ms = now;
    x.window_ms = s->cfg.monitor_window_ms > 0 ? s->cfg.monitor_window_ms : delay + 250;
    x.due_ms = now + (delay > x.window_ms ? delay : x.window_ms) + MONITOR_MARGIN_MS;
    x.tier = tier;
    pthread_mutex_lock(&m->mu);
    int full = m->len == MONITOR_RING;
    if (!full)
        m->ring[(m->head + m->len++) % MONITOR_RING] = x;
    pthread_mutex_unlock(&m->mu);
    if (full)
        svc_metric_inc(SVC_C_CONSIST_DROPPED);
}

/* Takes the oldest sample if it is due. */
static int take_due(svc_monitor *m, int64_t now, sample *out)
{
    int got = 0;
    pthread_mutex_lock(&m->mu);
    if (m->len > 0 && m->ring[m->head].due_ms <= now) {
        *out = m->ring[m->head];
        m->head = (m->head + 1) % MONITOR_RING;
        m->len--;
        got = 1;
    }
    pthread_mutex_unlock(&m->mu);
    return got;
}

static const char *tier_name(http_tier t)
{
    return t == HTTP_TIER_REDIS ? "redis" : t == HTTP_TIER_DB ? "db" : "local";
}

static void check(svc_monitor *m, const sample *x)
{
    store_version_info vi;
    int r = store_version_check(m->s->st, x->sku, x->version, &vi);
    if (r == -ENOENT)
        return;                    /* the item is gone: nothing to judge */
    if (r < 0) {
        svc_metric_inc(SVC_C_CONSIST_ERROR);
        return;
    }
    svc_metric_inc(check_id(x->tier));
    if (vi.version <= x->version || vi.first_newer_ms <= 0 ||
        vi.first_newer_ms >= x->read_ms - x->window_ms)
        return;
    svc_metric_inc(violation_id(x->tier));
    int64_t now = kit_wall_ms();
    if (now - m->last_log_ms >= 1000) {   /* at most one line a second */
        m->last_log_ms = now;
        SVC_WARN(NULL, "stale read served", "sku=%s tier=%s version=%lld newer=%lld age_ms=%lld window_ms=%lld",
                 x->sku, tier_name(x->tier), (long long)x->version, (long long)vi.version,
                 (long long)(x->read_ms - vi.first_newer_ms), (long long)x->window_ms);
    }
}

static void monitor_run(void *arg)
{
    svc_monitor *m = arg;
    sample x;
    while (!atomic_load(&m->stop)) {
        while (!atomic_load(&m->stop) && take_due(m, kit_wall_ms(), &x))
            check(m, &x);
        rt_event_wait(m->wake, rt_deadline_ms(MONITOR_TICK_MS));
    }
}

int svc__monitor_start(svc *s)
{
    if (s->cfg.monitor_sample_every <= 0)
        return 0;
    svc_monitor *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return -ENOMEM;
    m->s = s;
    pthread_mutex_init(&m->mu, NULL);
    m->ring = calloc(MONITOR_RING, sizeof(*m->ring));
    m->wake = rt_event_new();
    int r = -ENOMEM;
    if (m->ring == NULL || m->wake == NULL ||
        (r = rt_spawn_ex(&m->co, monitor_run, m,
                         &(rt_spawn_opts){.joinable = 1, .name = "monitor"})) < 0) {
        if (m->wake != NULL)
            rt_event_free(m->wake);
        free(m->ring);
        pthread_mutex_destroy(&m->mu);
        free(m);
        return r;
    }
    s->monitor = m;
    return 0;
}

void svc__monitor_stop(svc *s)
{
    svc_monitor *m = s->monitor;
    if (m == NULL)
        return;
    s->monitor = NULL;             /* reads in flight are done (svc_close) */
    atomic_store(&m->stop, 1);
    rt_event_signal(m->wake);
    rt_join(m->co);
    rt_event_free(m->wake);
    free(m->ring);
    pthread_mutex_destroy(&m->mu);
    free(m);
}
