/*
 * local.c: the local tier over localcache/lc.h.
 *
 * Values are svc_entry structs copied in and out (40 bytes, no parsing on
 * the hit path); the cache's version is the item's. Every store carries the
 * run-time local TTL, the last line of defence should an invalidation be
 * lost.
 */
#include "cachesvc/metrics.h"
#include "cachesvc/service.h"

#include <errno.h>
#include <string.h>

int svc__local_new(svc *s)
{
    lc_config c = {0};
    unsigned shards = 1;
    while (shards < (unsigned)s->cfg.cache_shards)
        shards <<= 1;
    c.shards = shards;
    c.capacity_bytes = (size_t)s->cfg.cache_capacity_mb << 20;
    c.max_value_bytes = 256;
    c.floor_ttl_ms = (uint32_t)s->cfg.floor_ttl_ms;
    c.default_ttl_ms = (uint32_t)s->cfg.local_ttl_ms;
    c.lease_ttl_ms = (uint32_t)s->cfg.fill_wait_ms;
    return lc_new(&c, &s->lc);
}

void svc__local_free(svc *s)
{
    if (s->lc != NULL)
        lc_free(s->lc);
    s->lc = NULL;
}

int svc__local_get(svc *s, const char *sku, svc_entry *e)
{
    size_t len = 0;
    uint64_t ver = 0;
    if (lc_get(s->lc, sku, strlen(sku), e, sizeof *e, &len, &ver) != 0 || len != sizeof *e)
        return 0;
    if (e->cached_at_ns < atomic_load_explicit(&s->trust_after_ns, memory_order_relaxed))
        return 0;
    e->version = (int64_t)ver;
    return 1;
}

void svc__local_distrust(svc *s)
{
    atomic_store(&s->trust_after_ns, rt_now_ns());
    svc_metric_inc(SVC_C_LOCAL_DISTRUST);
}

void svc__local_purge(svc *s)
{
    atomic_store(&s->trust_after_ns, rt_now_ns());
    lc_clear(s->lc);
    svc_metric_inc(SVC_C_LOCAL_PURGE);
}

int svc__local_lease(svc *s, const char *sku, lc_lease *l)
{
    return lc_lease_acquire(s->lc, sku, strlen(sku), l) == 0;
}

void svc__local_release(svc *s, lc_lease *l, int held)
{
    if (held && l != NULL)
        lc_lease_release(s->lc, l);
}

static uint32_t ttl(svc *s, const svc_entry *e)
{
    if (e->absent)
        return (uint32_t)s->cfg.negative_ttl_ms;
    int64_t t = atomic_load_explicit(&s->local_ttl_ms, memory_order_relaxed);
    return t > 0 && t < (int64_t)UINT32_MAX ? (uint32_t)t : LC_TTL_DEFAULT;
}

/* The version the cache knows for sku: the value's on a hit, the floor on
 * a miss (0 when it knows nothing). */
static uint64_t known_version(svc *s, const char *sku, size_t klen)
{
    uint64_t known = 0;
    svc_entry tmp;
    lc_get(s->lc, sku, klen, &tmp, sizeof tmp, NULL, &known);
    return known;
}

int svc__local_fill(svc *s, const char *sku, const lc_lease *l, int held,
                    const svc_entry *in, int *below_floor)
{
    size_t klen = strlen(sku);
    svc_entry copy = *in, *e = &copy;
    int r;
    copy.cached_at_ns = rt_now_ns();
    if (e->absent && s->cfg.negative_ttl_ms == 0) {
        svc__local_release(s, (lc_lease *)l, held);
        if (below_floor != NULL)
            *below_floor = 0;
        return 0;
    }
    if (held && l != NULL) {
        r = lc_fill(s->lc, l, e, sizeof *e, (uint64_t)e->version, ttl(s, e));
        /* -ESTALE from a lease: an eviction came after it was issued. Every
         * eviction here carries the committed version as floor, so a value
         * at or above the floor is still current (typically the broadcast
         * of this very commit arriving late): store it under the version
         * guard alone. */
        if (r == -ESTALE && known_version(s, sku, klen) <= (uint64_t)e->version)
            r = lc_set_if_newer(s->lc, sku, klen, e, sizeof *e, (uint64_t)e->version, ttl(s, e));
    } else {
        r = lc_set_if_newer(s->lc, sku, klen, e, sizeof *e, (uint64_t)e->version, ttl(s, e));
    }
    if (below_floor != NULL)
        *below_floor = 0;
    if (r == 0)
        return 1;
    svc_metric_inc(SVC_C_LOCAL_FILL_REFUSED);
    if (below_floor != NULL)
        *below_floor = known_version(s, sku, klen) > (uint64_t)e->version;
    return 0;
}

void svc__local_evict(svc *s, const char *sku, int64_t floor)
{
    lc_evict(s->lc, sku, strlen(sku), floor > 0 ? (uint64_t)floor : 0);
}

void svc__local_install(svc *s, const char *sku, const svc_entry *e)
{
    svc__local_evict(s, sku, e->version);
    svc__local_fill(s, sku, NULL, 0, e, NULL);
}

void svc__local_metrics(svc *s, kit_buf *b)
{
    lc_stats st;
    lc_stats_get(s->lc, &st);
    static const kit_metric counters[] = {LC_STATS_COUNTERS(KIT_METRIC)};
    static const kit_metric gauges[] = {LC_STATS_GAUGES(KIT_METRIC)};
#define X(name, help) st.name,
    const uint64_t cv[] = {LC_STATS_COUNTERS(X)};
    const uint64_t gv[] = {LC_STATS_GAUGES(X)};
#undef X
    kit_prom_list(b, "cachesvc_local_", "_total", "counter", "Local cache: ", counters, cv,
                  sizeof cv / sizeof cv[0]);
    kit_prom_list(b, "cachesvc_local_", "", "gauge", "Local cache: ", gauges, gv,
                  sizeof gv / sizeof gv[0]);
}
