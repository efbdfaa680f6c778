/*
 * component_metrics.c: the invalidator's and the Redis Cluster client's
 * Prometheus families, shared by cachesvc and the standalone invalidator.
 */
#include "cachesvc/component_metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Upper bounds (ms) of the invalidator's histograms as exported. */
static const int64_t inv_le_ms[] = {1,   2,   5,    10,   25,   50,   100,   200,   300,  500,
                                    750, 1000, 1500, 2000, 3000, 5000, 10000, 30000, 60000};
#define INV_NLE ((int)(sizeof inv_le_ms / sizeof inv_le_ms[0]))

static void inv_hist_family(svc_buf *b, const char *name, const char *help, const inv_hist *h)
{
    double le[INV_NLE];
    uint64_t counts[INV_NLE + 1], below = 0;
    for (int i = 0; i < INV_NLE; i++) {
        uint64_t c = inv_hist_count_le(h, inv_le_ms[i]);
        le[i] = (double)inv_le_ms[i] / 1000.0;
        counts[i] = c >= below ? c - below : 0;
        below = c > below ? c : below;
    }
    counts[INV_NLE] = h->count >= below ? h->count - below : 0;
    svc_prom_header(b, name, "histogram", help);
    svc_prom_hist(b, name, NULL, le, counts, INV_NLE, (double)h->sum_ms / 1000.0);
}

void svc_inv_metrics(svc_buf *b, const inv_stats *st)
{
#define X(f, help)                                                                  \
    svc_prom_header(b, "cachesvc_inv_" #f "_total", "counter", "Invalidator: " help "."); \
    svc_prom_sample_u64(b, "cachesvc_inv_" #f "_total", NULL, st->f);
    INV_COUNTERS(X)
#undef X
    const struct { const char *name, *help; double v; } g[] = {
        {"cachesvc_inv_outbox_depth",
         "Outbox rows in the database, not yet acknowledged by Kafka (read once a second).",
         (double)st->outbox_depth},
        {"cachesvc_inv_relay_inflight", "Events produced, not yet acknowledged.",
         (double)st->relay_inflight},
        {"cachesvc_inv_pending", "Events held by the delay consumer.", (double)st->pending},
        {"cachesvc_inv_pending_skus", "Distinct items held by the delay consumer.",
         (double)st->pending_skus},
        {"cachesvc_inv_delay_seconds",
         "The invalidation delay in force (kafka.invalidation_delay_ms), which the relay "
         "stamps on the events it publishes.",
         (double)st->delay_ms / 1000.0},
        {"cachesvc_inv_outbox_oldest_age_seconds",
         "Age of the oldest outbox row (0 when empty): a row that stays is an event not "
         "published.",
         (double)st->outbox_oldest_age_ms / 1000.0},
    };
    for (size_t i = 0; i < sizeof g / sizeof g[0]; i++) {
        svc_prom_header(b, g[i].name, "gauge", g[i].help);
        svc_prom_sample(b, g[i].name, NULL, g[i].v);
    }
    inv_hist_family(b, "cachesvc_invalidation_lag_seconds", "Commit to version-guarded Redis delete.",
             &st->lag);
    inv_hist_family(b, "cachesvc_invalidation_lateness_seconds", "Due time to Redis delete.",
             &st->lateness);
    inv_hist_family(b, "cachesvc_invalidation_transit_seconds",
             "Commit to the delay consumer's read of the event (outbox and Kafka).",
             &st->transit);
    inv_hist_family(b, "cachesvc_inv_sink_seconds",
             "Duration of one call of the Redis sink (a batch of version-guarded deletes).",
             &st->sink);
    inv_hist_family(b, "cachesvc_broadcast_lag_seconds", "Commit to local install or eviction on this instance.",
             &st->bcast_lag);
}

void svc_rc_metrics(svc_buf *b, rc_cluster *rc)
{
    enum { MAXN = 64 };
    rc_node_stats *ns = calloc(MAXN, sizeof *ns);
    if (ns == NULL) {
        b->oom = 1;
        return;
    }
    int n = rc_stats(rc, ns, MAXN);
    if (n > MAXN)
        n = MAXN;
    char lb[128], name[96];
    /* Counters end in _total; inflight is the one gauge. */
#define X(f, help)                                                                          \
    {                                                                                       \
        int gauge = strcmp(#f, "inflight") == 0;                                            \
        snprintf(name, sizeof name, "cachesvc_redis_node_%s%s", #f, gauge ? "" : "_total");   \
        svc_prom_header(b, name, gauge ? "gauge" : "counter", "Redis node: " help ".");      \
        for (int i = 0; i < n; i++) {                                                       \
            snprintf(lb, sizeof lb, "node=\"%s\",role=\"%s\"", ns[i].addr,                  \
                     ns[i].master ? "master" : "replica");                                  \
            svc_prom_sample_u64(b, name, lb, ns[i].f);                                      \
        }                                                                                   \
    }
    RC_NODE_COUNTERS(X)
#undef X
    svc_prom_header(b, "cachesvc_redis_node_up", "gauge", "1 while the node is not marked down.");
    for (int i = 0; i < n; i++) {
        snprintf(lb, sizeof lb, "node=\"%s\"", ns[i].addr);
        svc_prom_sample_u64(b, "cachesvc_redis_node_up", lb, (uint64_t)ns[i].up);
    }
    free(ns);
}

static enum svc_dep dep_of(http_dep_state st)
{
    return st == HTTP_DEP_UP ? SVC_DEP_UP : st == HTTP_DEP_NONE ? SVC_DEP_ABSENT : SVC_DEP_DOWN;
}

void svc_readiness_metrics(svc_buf *b, const http_readiness *rd, int ready)
{
    svc_health_metrics(b, dep_of(rd->store), dep_of(rd->redis), dep_of(rd->kafka), ready,
                       rd->draining);
}
