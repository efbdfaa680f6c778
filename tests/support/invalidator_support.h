/*
 * invalidator_support.h: fixtures of the invalidator's integration tests
 * and benchmark: an in-memory outbox (the source), a throw-away redis-server
 * on loopback, a pipelined Redis sink on hiredis, and a recording local
 * sink. Test code only.
 */
#ifndef CACHESVC_INVALIDATOR_SUPPORT_H
#define CACHESVC_INVALIDATOR_SUPPORT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "invalidator/inv.h"

/* ---- In-memory outbox ---------------------------------------------------- */

typedef struct its_outbox its_outbox;
its_outbox *its_outbox_new(void);
void its_outbox_free(its_outbox *o);
/* Appends a row (next id) committed now (committed_at_ms < 0) or at the
 * given time. Returns its id. Any thread. */
int64_t its_outbox_add(its_outbox *o, const char *sku, int64_t version,
                       int64_t committed_at_ms);
/* The same, with the item's committed row (stock; limit and sale start 0)
 * beside it, as the stores return a row whose item still stands at it. */
int64_t its_outbox_add_item(its_outbox *o, const char *sku, int64_t version, int64_t stock);
int64_t its_outbox_depth(its_outbox *o);
/* Takes the next id for a row whose transaction is still open: fetch does
 * not see it (nor its_outbox_depth) until its_outbox_commit. Returns the
 * id. Any thread. */
int64_t its_outbox_reserve(its_outbox *o);
void its_outbox_commit(its_outbox *o, int64_t id, const char *sku, int64_t version);
/* When set, fetch fails with -EIO (a database outage). */
void its_outbox_set_down(its_outbox *o, bool down);
/* The next n fetches claim the rows they would return (a 10 s lease), then
 * fail with -EIO: a claim committed whose answer the relay never got. */
void its_outbox_lose_replies(its_outbox *o, int n);
inv_source its_outbox_source(its_outbox *o);

/* ---- Redis Cluster ---------------------------------------------------------- */

/* Starts a 3-master Redis Cluster (scripts/redis-cluster, no replicas) on
 * 127.0.0.1:port..port+2 in a fresh temporary directory, and a watchdog
 * process that takes it down when this process exits, however it exits.
 * Learns the slot map for the check helpers below. Returns 0 or -1. Call
 * before any thread exists (it forks). */
int its_cluster_up(const char *top, int port);
void its_cluster_down(void);
/* The seed list ("127.0.0.1:port,...") for the cluster client. */
const char *its_cluster_seeds(void);

/* ---- Redis sink: the cluster client (rc) through an inv_fanout ---------- */

typedef struct its_rsink its_rsink;
/* Connects (from a coroutine). NULL on failure, after printing why to
 * stderr. */
its_rsink *its_rsink_new(const char *seeds, int command_timeout_ms);
void its_rsink_free(its_rsink *s);   /* from a coroutine */
inv_redis_sink its_rsink_sink(its_rsink *s);

/* Plain blocking helpers (hiredis, any thread), routed by slot. */
int its_redis_set(const char *sku, int64_t version);
/* 1 if stock:{sku} holds a copy, 0 if not (absent, or a delete's
 * tombstone), -1 on error; *version (the copy's or the tombstone's) if not
 * NULL. */
int its_redis_get(const char *sku, int64_t *version);
int its_redis_flush(void);
/* How many of stock:{<prefix>0} .. stock:{<prefix><n-1>} hold a copy (not
 * a tombstone), or -1. */
int its_redis_count(const char *prefix, int n);
/* CLIENT PAUSE <ms> WRITE on every master: version-guarded deletes (write
 * scripts) block, reads go on. */
int its_redis_pause_writes(int ms);

/* ---- Recording local sink ------------------------------------------------- */

typedef struct its_lsink its_lsink;
its_lsink *its_lsink_new(void);
void its_lsink_free(its_lsink *l);
inv_local_sink its_lsink_sink(its_lsink *l);
/* Highest version evicted for sku, or -1. */
int64_t its_lsink_version(its_lsink *l, const char *sku);
uint64_t its_lsink_count(its_lsink *l);
/* A sink that also takes installs (events with the row); its_lsink_count
 * counts evictions only, its_lsink_installs the installs and the last
 * one's stock. */
inv_local_sink its_lsink_sink_installing(its_lsink *l);
uint64_t its_lsink_installs(its_lsink *l, int64_t *last_stock);
uint64_t its_lsink_purges(its_lsink *l);   /* purge events received */

/* Waits (parking a coroutine or sleeping a thread, polling every 5 ms) until cond(arg) or timeout_ms.
 * Returns true when cond held. */
bool its_wait_until(bool (*cond)(void *arg), void *arg, int timeout_ms);

#endif
