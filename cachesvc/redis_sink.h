/*
 * redis_sink.h: the invalidator's Redis sink over the cluster client, shared
 * by the service (service.c, role delay inside the service) and the
 * standalone invalidator binary (invalidator_main.c).
 *
 * Each event becomes one version-guarded delete (rc_delete_if_not_newer) of
 * the item's key. The cluster client carries one request per call and
 * pipelines across coroutines, so the deletes of a batch run through an
 * inv_fanout pool of long-lived coroutines: up to `width` of them in flight
 * at once, without a coroutine spawned per delete.
 *
 * Header-only (static inline) so that both binaries use the same code
 * without another library between invalidator/ and cachesvc/.
 */
#ifndef CACHESVC_REDIS_SINK_H
#define CACHESVC_REDIS_SINK_H

#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "cachesvc/redis/rc.h"
#include "invalidator/inv.h"
#include "runtime/rt.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Deletes in flight at once per sink (the pool's width). */
#define SVC_REDIS_SINK_WIDTH 256

typedef struct svc_redis_sink {
    rc_cluster *rc;          /* not owned; outlives the sink */
    int timeout_ms;          /* deadline of each delete */
    int tomb_ttl_ms;         /* the tombstone each delete leaves */
    int spare_equal;         /* keep a copy at the event's own version
                              * (broadcast_mode update: rc_delete_if_older) */
    inv_fanout *fanout;      /* owned */
} svc_redis_sink;

/* One version-guarded delete: stock:{sku} becomes a tombstone at version
 * (kept tomb_ttl_ms) unless it holds a newer one (or, with spare_equal, a
 * copy at the version itself). Returns 0 when applied (deleted, absent, a newer version
 * kept, or sku no key the service could have written) or a negative
 * rc error (the invalidator retries it). */
static inline int svc_redis_sink_one(void *ctx, const char *sku, int64_t version)
{
    svc_redis_sink *rs = (svc_redis_sink *)ctx;
    char key[INV_SKU_MAX + 16];
    int kl = rc_item_key(key, sizeof key, sku, strlen(sku));
    if (kl < 0)
        return 0;
    int r = rs->spare_equal
                ? rc_delete_if_older(rs->rc, key, (size_t)kl, (uint64_t)version,
                                     rs->tomb_ttl_ms, rt_deadline_ms(rs->timeout_ms))
                : rc_delete_if_not_newer(rs->rc, key, (size_t)kl, (uint64_t)version,
                                         rs->tomb_ttl_ms, rt_deadline_ms(rs->timeout_ms));
    return r < 0 ? r : 0;
}

/* The inv_redis_sink del callback: the batch through the pool. ctx is the
 * svc_redis_sink. Callable from several coroutines at once. */
static inline int svc_redis_sink_del(void *ctx, inv_del *items, int n)
{
    return inv_fanout_del(((svc_redis_sink *)ctx)->fanout, items, n);
}

/* Starts the pool of `width` coroutines. From a coroutine. Returns 0, or
 * inv_fanout_new's error (-ENOMEM, or -ECANCELED when the runtime is
 * stopping; then nothing is left to free). */
static inline int svc_redis_sink_start(svc_redis_sink *rs, rc_cluster *rc, int timeout_ms,
                                       int tomb_ttl_ms, int width)
{
    rs->rc = rc;
    rs->timeout_ms = timeout_ms;
    rs->tomb_ttl_ms = tomb_ttl_ms;
    return inv_fanout_new(width, svc_redis_sink_one, rs, &rs->fanout);
}

/* Stops the pool. No del call may be running (stop the invalidator
 * first). From a coroutine; a sink never started (zeroed) is fine. */
static inline void svc_redis_sink_stop(svc_redis_sink *rs)
{
    inv_fanout_free(rs->fanout);
    rs->fanout = NULL;
}

#ifdef __cplusplus
}
#endif
#endif /* CACHESVC_REDIS_SINK_H */
