/*
 * service.h: the cachesvc service, internal to cachesvc/.
 *
 * struct svc is the composition root: it owns the store, the Redis client
 * (NULL when redis.url is none), the local cache and the invalidator, and
 * implements api/http_service.h over them. read_path.c answers item reads
 * through the three tiers, write_path.c decrements and item writes,
 * admission.c the Redis breaker, local.c the local tier, service.c the
 * wiring, admin calls, metrics and readiness; main.c runs it all.
 */
#ifndef CACHESVC_SERVICE_H
#define CACHESVC_SERVICE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "api/http.h"
#include "api/http_service.h"
#include "cachesvc/config.h"
#include "cachesvc/redis/rc.h"
#include "cachesvc/redis_sink.h"
#include "cachesvc/store/store.h"
#include "invalidator/inv.h"
#include "localcache/lc.h"
#include "runtime/rt.h"
#include "kit/kit.h"

#ifdef __cplusplus
extern "C" {
#endif

/* An item as every tier caches it. An absent entry records that the
 * database had no such sku (negative caching, cache.negative_ttl_ms): it
 * has version 0, below every stored item's, so the version guards let the
 * item's creation replace it everywhere and never the other way round. */
typedef struct svc_entry {
    int64_t stock;
    int64_t version;
    int64_t per_user_limit;
    int64_t sale_starts_at_ms;
    int absent;
    int64_t cached_at_ns;        /* rt_now_ns() when installed locally */
} svc_entry;

/* The Redis breaker (admission.c). While closed every read goes to Redis;
 * after `threshold` consecutive failures it opens: reads skip Redis, and one
 * read per probe interval tries it; a success closes it again. */
typedef struct svc_breaker {
    _Atomic int64_t failures;       /* consecutive */
    _Atomic int64_t open_until_ns;  /* 0 = closed; else next probe time */
    int threshold;
    int64_t probe_ns;
} svc_breaker;

struct svc_flights;   /* read_path.c: one fill per item per instance */

typedef struct svc {
    svc_config cfg;              /* as loaded at start (reload keeps static
                                  * settings, see svc_apply_runtime) */
    store *st;
    rc_cluster *rc;              /* NULL: no Redis tier */
    lc_cache *lc;
    inv *iv;                     /* NULL until started */
    rt_co *connector;            /* retries rc_connect; joined at close */
    svc_redis_sink rsink;        /* the delay consumer's deletes (started
                                  * only when that role runs here) */
    struct svc_flights *flights;
    svc_breaker breaker;
    http_service api;

    _Atomic int64_t trust_after_ns;      /* local copies installed before
                                          * this are not trusted (events
                                          * may have been missed) */
    _Atomic int64_t local_ttl_ms;        /* run-time settings */
    _Atomic int64_t invalidation_delay_ms;
    _Atomic int64_t slow_ns;             /* log.slow_ms; 0 = off */
    _Atomic int puts_inflight;           /* item writes of this instance */
    int bcast_update;                    /* kafka.broadcast_mode = update */
    _Atomic int refreshes;               /* svc__redis_refresh coroutines
                                          * running (svc_close waits) */
    _Atomic int draining;
    _Atomic int store_up;                /* last known (round trip or a
                                          * request's outcome), for /readyz
                                          * and cachesvc_dependency_up */
    _Atomic int64_t store_checked_ns;    /* when store_up was last learnt */
    _Atomic int redis_up;                /* the last PING's outcome */
    _Atomic int64_t redis_checked_ns;    /* when it was sent; 0 = never */
    _Atomic uint64_t kafka_published;    /* last seen, for /readyz */
    _Atomic int64_t kafka_progress_ns;   /* when it last moved or idled */
    struct svc_monitor *monitor;         /* NULL: off */
    pthread_mutex_t settings_mu;         /* guards settings */
    svc_config *settings;                /* the running settings, as GET
                                          * /admin/config lists them */
} svc;

/* Opens every component in order (store, Redis, local cache, invalidator)
 * for cfg, which is copied. Returns 0 with *out owned by the caller (free
 * with svc_close), or a negative errno after logging which dependency
 * failed; whatever was opened is closed again. Coroutines only. */
int svc_open(const svc_config *cfg, svc **out);
/* Stops the invalidator (draining the relay for up to drain_ms), then
 * closes Redis, the store and the local cache and frees s. No request may
 * be running. Coroutines only. */
void svc_close(svc *s, int drain_ms);

/* SIGHUP: applies every run-time key (svc_config_runtime) whose value
 * differs between old (the sources as last loaded) and next (as loaded
 * now), logs each change by name, and logs each other key that changed as
 * needing a restart. A key the sources did not change keeps its running
 * value, so a PUT /admin/config change lasts until the sources change that
 * key or the process restarts. The admin token is the HTTP server's: the
 * caller applies it. Returns the number of keys that need a restart. Any
 * thread. */
int svc_apply_runtime(svc *s, const svc_config *old, const svc_config *next);

/* The api/http_service.h implementation (service.c, read_path.c,
 * write_path.c). */
int svc_get_item(void *ctx, const char *sku, http_item *out, http_tier *tier);
int svc_decrement(void *ctx, const http_decrement_req *req, http_decrement_res *out);
int svc_put_item(void *ctx, const http_put_item_req *req, http_item *out, int *created);

/* Read path internals shared with the write path. */
int svc__flights_new(struct svc_flights **out);
void svc__flights_free(struct svc_flights *f);
/* Makes reads that start from now on not join a fill already in flight
 * for sku (it may carry a value read before a commit). Any coroutine. */
void svc__flights_invalidate(svc *s, const char *sku);
/* Reads sku from Redis and the database as a local miss does, filling the
 * tiers above. Returns 0 with *e and *tier, HTTP_E_NOT_FOUND, or another
 * negative code. */
int svc__read_item(svc *s, const char *sku, svc_entry *e, http_tier *tier);
/* Writes e to Redis unless it holds a newer version (a failure only counts
 * against the breaker). Coroutines only. */
void svc__redis_fill(svc *s, const char *sku, const svc_entry *e);
/* With broadcast_mode update: the writer's refresh of the Redis copy with
 * the row it just committed, version-guarded, on a coroutine of its own so
 * that the batch's commit path does not wait for Redis. A no-op otherwise,
 * or without Redis, or when the coroutine cannot be had (the delayed
 * delete and the next reader's fill stand in). */
void svc__redis_refresh(svc *s, const char *sku, const svc_entry *e);

/* The online consistency monitor (monitor.c). svc__monitor_note is called
 * for every read served (any tier) and samples one in
 * monitor.sample_every; never parks. */
typedef struct svc_monitor svc_monitor;
int svc__monitor_start(svc *s);
void svc__monitor_stop(svc *s);
void svc__monitor_note(svc *s, const char *sku, int64_t version, http_tier tier);

/* The local tier (local.c). Values are svc_entry, versions the item's. */
int svc__local_new(svc *s);
void svc__local_free(svc *s);
/* 1 and *e on a hit (which may be an absent entry: e->absent), 0 on a
 * miss (a copy installed before svc__local_distrust counts as one). Never
 * parks. */
int svc__local_get(svc *s, const char *sku, svc_entry *e);
/* Stops trusting every local copy installed so far (broadcast events may
 * have been missed): each is a miss until refilled. Any thread. */
void svc__local_distrust(svc *s);
/* Forgets every local copy and every floor (versions may start over: a
 * database restored from a backup). Fills under leases taken before are
 * refused. Any thread. */
void svc__local_purge(svc *s);
/* Takes sku's fill lease into *l. Returns 1 when held, 0 when none could
 * be had (another holder, or a value appeared); the fill then goes through
 * the version guard alone. */
int svc__local_lease(svc *s, const char *sku, lc_lease *l);
/* Gives an unused lease back (l may be NULL or not held). */
void svc__local_release(svc *s, lc_lease *l, int held);
/* Installs e, under l when held (else l may be NULL); an absent entry
 * expires after cache.negative_ttl_ms. Returns 1 stored, 0
 * refused. *below_floor (may be NULL) is set when the refusal is because a
 * version newer than e's is known (committed or cached). */
int svc__local_fill(svc *s, const char *sku, const lc_lease *l, int held,
                    const svc_entry *e, int *below_floor);
/* Evicts sku leaving floor as the lowest version a later fill may carry.
 * Evictions always carry the committed version (0 only in tests): the
 * lease fallback in svc__local_fill relies on it. */
void svc__local_evict(svc *s, const char *sku, int64_t floor);
/* Installs a committed row known whole (a commit of this instance, or a
 * broadcast event that carried it): older copies and fill leases go, the
 * floor rises to e->version, and e is kept unless a newer copy is held. */
void svc__local_install(svc *s, const char *sku, const svc_entry *e);
/* Appends the local cache's gauges and counters to b. */
struct kit_buf;
void svc__local_metrics(svc *s, struct kit_buf *b);

/* The Redis breaker (admission.c). */
void svc__breaker_init(svc_breaker *b, int threshold, int probe_ms);
/* 1: call Redis now; 0: skip it (open and not this read's turn to probe). */
int svc__breaker_allow(svc_breaker *b);
void svc__breaker_result(svc_breaker *b, int ok);
int svc__breaker_is_open(svc_breaker *b);
/* True for the error codes that mean Redis itself is unwell. */
int svc__redis_failed(int rc);

/* The store's commit hook (write_path.c): the committed row installed
 * locally and refreshed in Redis (broadcast_mode update), or the local
 * copy evicted down to the committed version; flights detached, the relay
 * woken. */
void svc__on_commit(void *ctx, const char *sku, const store_committed *row);

/* Logs a warning "slow request" (with the request id, as every line
 * logged while a request is served) when the operation op on sku took
 * dt_ns (measured by the caller, who times it for its histogram anyway)
 * longer than log.slow_ms; r is its result. Never parks. */
void svc__slow_check(svc *s, const char *op, const char *sku, int64_t dt_ns, int r);

/* Records what a request saw of the database for /readyz and the
 * dependency gauges: ok 1 after an answer, 0 after a failure that means
 * the database is unwell (-EIO, -ETIMEDOUT). Any thread; never parks. */
void svc__store_seen(svc *s, int ok);

/* Maps a store errno to an api error code. */
int svc__store_err(int err);

#ifdef __cplusplus
}
#endif
#endif /* CACHESVC_SERVICE_H */
