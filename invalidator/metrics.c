/*
 * metrics.c: the invalidator's Prometheus families, written with the
 * metrics kit (kit/metrics.h); served by cachesvc and by the standalone
 * invalidator.
 */
#include "invalidator/inv.h"

#include <stdio.h>

/* Upper bounds (ms) of the invalidator's histograms as exported. */
static const int64_t inv_le_ms[] = {1,   2,   5,    10,   25,   50,   100,   200,   300,  500,
                                    750, 1000, 1500, 2000, 3000, 5000, 10000, 30000, 60000};
#define INV_NLE ((int)(sizeof inv_le_ms / sizeof inv_le_ms[0]))

static void inv_hist_family(kit_buf *b, const char *name, const char *help, const inv_hist *h)
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
    kit_prom_header(b, name, "histogram", help);
    kit_prom_hist(b, name, NULL, le, counts, INV_NLE, (double)h->sum_ms / 1000.0);
}

void inv_metrics_append(const inv_stats *st, kit_buf *b)
{
    static const kit_metric counters[] = {INV_COUNTERS(KIT_METRIC)};
#define X(name, help) st->name,
    const uint64_t v[] = {INV_COUNTERS(X)};
#undef X
    kit_prom_list(b, "cachesvc_inv_", "_total", "counter", "Invalidator: ", counters, v,
                  sizeof v / sizeof v[0]);
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
        kit_prom_header(b, g[i].name, "gauge", g[i].help);
        kit_prom_sample(b, g[i].name, NULL, g[i].v);
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

