/*
 * component_metrics.h: what both binaries (cachesvc and the standalone
 * invalidator) add to the components' own families: the readiness gauges.
 * The components write their families themselves with the metrics kit
 * (inv_metrics_append, rc_metrics_append, http_metrics_append), so both
 * binaries export the same names (docs/metrics.md).
 *
 * Callable from any thread or coroutine; never switches coroutines.
 */
#ifndef CACHESVC_COMPONENT_METRICS_H
#define CACHESVC_COMPONENT_METRICS_H

#include "api/http_service.h"
#include "cachesvc/metrics.h"

#ifdef __cplusplus
extern "C" {
#endif

/* cachesvc_dependency_up{dependency}, cachesvc_ready and cachesvc_draining
 * (svc_health_metrics) from the dependencies' states as /readyz sees them;
 * ready is the caller's verdict (1 when /readyz would answer 200). */
void svc_readiness_metrics(kit_buf *b, const http_readiness *rd, int ready);

#ifdef __cplusplus
}
#endif
#endif /* CACHESVC_COMPONENT_METRICS_H */
