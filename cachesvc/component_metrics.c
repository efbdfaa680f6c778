/*
 * component_metrics.c: the readiness gauges of cachesvc and the standalone
 * invalidator.
 */
#include "cachesvc/component_metrics.h"

static enum svc_dep dep_of(http_dep_state st)
{
    return st == HTTP_DEP_UP ? SVC_DEP_UP : st == HTTP_DEP_NONE ? SVC_DEP_ABSENT : SVC_DEP_DOWN;
}

void svc_readiness_metrics(kit_buf *b, const http_readiness *rd, int ready)
{
    svc_health_metrics(b, dep_of(rd->store), dep_of(rd->redis), dep_of(rd->kafka), ready,
                       rd->draining);
}
