/*
 * component_metrics.h: Prometheus families of the components that both
 * binaries run, the invalidator (invalidator/inv.h) and the Redis Cluster
 * client (cachesvc/redis/rc.h), written by one function each so that
 * cachesvc and the standalone invalidator export the same names
 * (docs/metrics.md).
 *
 * Callable from any thread or coroutine; they never switch coroutines.
 */
#ifndef CACHESVC_COMPONENT_METRICS_H
#define CACHESVC_COMPONENT_METRICS_H

#include "api/http_service.h"
#include "cachesvc/metrics.h"
#include "cachesvc/redis/rc.h"
#include "invalidator/inv.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The invalidator's counters (cachesvc_inv_<name>_total), gauges and
 * histograms (cachesvc_invalidation_*_seconds, cachesvc_broadcast_lag_seconds,
 * cachesvc_inv_sink_seconds) from st (inv_stats_get). */
void svc_inv_metrics(svc_buf *b, const inv_stats *st);

/* The Redis Cluster client's per-node families (cachesvc_redis_node_*). */
void svc_rc_metrics(svc_buf *b, rc_cluster *rc);

/* cachesvc_dependency_up{dependency}, cachesvc_ready and cachesvc_draining
 * (svc_health_metrics) from the dependencies' states as /readyz sees them;
 * ready is the caller's verdict (1 when /readyz would answer 200). */
void svc_readiness_metrics(svc_buf *b, const http_readiness *rd, int ready);

#ifdef __cplusplus
}
#endif
#endif /* CACHESVC_COMPONENT_METRICS_H */
