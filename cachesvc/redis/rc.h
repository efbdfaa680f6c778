/*
 * rc.h: the Redis Cluster client of cachesvc.
 *
 * One rc_cluster talks to a Redis Cluster (or, transparently, to one plain
 * Redis server). It keeps the slot map learned from CLUSTER SLOTS, routes
 * every command to the node that serves its key's slot, and pipelines
 * automatically: per node connection a writer coroutine gathers the requests
 * that coroutines queued into one write (bounded batch), and a reader
 * coroutine matches the replies in order. MOVED fixes the slot at once and
 * schedules a throttled background refresh of the map; ASK sends ASKING and
 * the command to the named node once; TRYAGAIN, CLUSTERDOWN and LOADING are
 * retried after a jittered backoff; a node that stops answering is marked
 * down, its connection is closed, and the map is refreshed from the other
 * nodes until the cluster is whole again.
 *
 * Every request has a deadline; no caller waits past it, whatever the
 * nodes do. Deadlines are absolute rt_now_ns() values (runtime/rt.h); 0 means
 * "now + the configured command timeout".
 *
 * Threads. Every function here is for coroutines of the runtime (they park
 * the caller, never the worker), except rc_new, rc_strerror, rc_keyslot,
 * rc_item_key, rc_auth_error and rc_metrics_append, which are callable from
 * any thread.
 * One rc_cluster is shared by any number of coroutines on any workers.
 *
 * This header names no hiredis type. The raw command API (rc_command and
 * its replies) is the module's own, for its files and its tests: rc_int.h.
 *
 * Errors. Functions return 0 (or a count) on success and one of the negative
 * RC_E* codes below on failure; rc_strerror() names them. They are negative
 * errno values, so rt_strerror() and strerror(-err) also work.
 */
#ifndef CACHESVC_RC_H
#define CACHESVC_RC_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>

#include "kit/metrics.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct rc_cluster rc_cluster;

/* Error codes. */
#define RC_EINVAL     (-EINVAL)       /* bad argument or configuration */
#define RC_ENOMEM     (-ENOMEM)
#define RC_ETIMEDOUT  (-ETIMEDOUT)    /* the request's deadline passed */
#define RC_ECONN      (-ECONNRESET)   /* connection lost after the command was
                                       * sent: its outcome is unknown */
#define RC_EDOWN      (-EHOSTDOWN)    /* the node is down or unreachable; the
                                       * command was not sent */
#define RC_EUNAVAIL   (-EHOSTUNREACH) /* no node serves the slot (cluster not
                                       * whole, or not connected yet) */
#define RC_ESERVER    (-EREMOTEIO)    /* Redis answered with an error reply */
#define RC_EPROTO     (-EPROTO)       /* the server sent a malformed reply */
#define RC_EREDIRECT  (-ELOOP)        /* more redirects than max_redirects */
#define RC_ECANCELED  (-ECANCELED)    /* the client is shutting down */
#define RC_ENOSPC     (-ENOSPC)       /* the caller's buffer is too small */
#define RC_EBADVALUE  (-EBADMSG)      /* a cached value is not "<version>|..." */
#define RC_EAUTH      (-EACCES)       /* a node refused the credentials (AUTH),
                                       * or asked for some (NOAUTH), or the user
                                       * may not run CLUSTER SLOTS (NOPERM);
                                       * rc_auth_error() says which node and
                                       * what it answered. Retrying does not
                                       * help: the configuration is wrong. */

/* Returns a static description of an RC_E* code (or any negative errno). */
const char *rc_strerror(int err);

typedef struct rc_config {
    const char *seeds;        /* "host:port,host:port,..." (copied); IPv6 as
                               * "[::1]:6379"; names are resolved */
    int conns_per_node;       /* pipelined connections per node; 0 = 1 */
    int connect_timeout_ms;   /* 0 = 1000 */
    int command_timeout_ms;   /* default deadline of a request; 0 = 1000 */
    int dead_timeout_ms;      /* age at which an unanswered request declares
                               * its connection dead (black-holed node): the
                               * connection is closed and the node marked
                               * down; 0 = max(2 x command_timeout_ms, 1000) */
    int replica_reads;        /* nonzero: GET and rc_get_versioned read from
                               * replicas (READONLY), masters as fallback */
    int max_redirects;        /* MOVED/ASK hops per request; 0 = 5 */
    int max_batch;            /* requests per pipelined write; 0 = 512 */
    int pipeline_window;      /* writes in flight per connection before the
                               * writer waits for replies (queued requests
                               * then go out together); 0 = 2 */
    int refresh_cooldown_ms;  /* minimum gap between slot map refreshes;
                               * 0 = 100 */
    int refresh_interval_ms;  /* periodic refresh while healthy; 0 = 30000,
                               * -1 = only on demand */
    const char *user;         /* ACL user for AUTH (copied); NULL or "" =
                               * "AUTH <password>", the default user; set
                               * only together with a password */
    const char *password;     /* NULL or "" = no AUTH; otherwise every
                               * connection the client opens (seeds,
                               * discovered nodes, replicas, redirect
                               * targets, reconnects, every pooled
                               * connection) sends AUTH first and is used
                               * only once the node accepted it. Copied;
                               * the copy is wiped by rc_free. */
} rc_config;

/* Creates a client for cfg in *out. Does no I/O and starts no coroutine;
 * call rc_connect() next. Returns 0; RC_EINVAL for a bad configuration (no
 * seeds, a seed that is not host:port, a user without a password), after
 * logging which (module=redis, msg="configuration refused", why=...); or
 * RC_ENOMEM. *out is NULL on failure. The caller owns the client and frees
 * it with rc_free(). Callable from any thread. */
int rc_new(const rc_config *cfg, rc_cluster **out);

/* Learns the slot map from the first seed (or known node) that answers
 * CLUSTER SLOTS, detects a standalone server, loads the versioned scripts
 * on every master (SCRIPT LOAD), and starts the background refresher.
 * Returns 0, RC_ETIMEDOUT if no seed answered before deadline, RC_EAUTH
 * when no node answered and at least one refused the credentials (at
 * once, without waiting for the deadline), or another RC_E* code. May be
 * called again (it then only refreshes). */
int rc_connect(rc_cluster *c, int64_t deadline);

/* Stops the client: every connection is closed, requests still queued fail
 * with RC_ECANCELED, the client's coroutines are joined, memory is freed.
 * No other call on c may be running or follow. Call from a coroutine. */
void rc_free(rc_cluster *c);

/* Sends PING to some master and waits for its answer. Returns 0 when a
 * node answered (+PONG or any non-error reply), RC_ESERVER when it
 * answered with an error, or another RC_E* code. For readiness checks. */
int rc_ping(rc_cluster *c, int64_t deadline);

/* Copies into buf (cap bytes, NUL-terminated when cap > 0) the most
 * recent refusal of the client's credentials: the node and what it
 * answered, e.g. "127.0.0.1:7000 answered AUTH with WRONGPASS invalid
 * username-password pair or user is disabled.". The server's text never
 * contains the password, and neither does this. Returns the text's length
 * (like snprintf), 0 when no node has refused them. Any thread. */
int rc_auth_error(rc_cluster *c, char *buf, size_t cap);

/* The cluster hash slot (0..16383) of a key, hash tags ({...}) honoured.
 * Any thread (the invalidator's tests route their own clients with it). */
unsigned rc_keyslot(const char *key, size_t len);

/* ------------------------------------------------------------------------ */
/* Versioned cached items.                                                   */
/*                                                                           */
/* An item's Redis key is "stock:{<sku>}" and its value the string          */
/* "<version>|<payload>": the version in decimal (uint64, no leading zeros),*/
/* '|', then the payload bytes.                                              */

/* Writes "stock:{<sku>}" and a NUL into dst. Returns the key's length, or
 * RC_ENOSPC if cap is too small (cap >= skulen + 9 always suffices). */
int rc_item_key(char *dst, size_t cap, const char *sku, size_t skulen);

/* Reads a versioned value. Returns 1 and sets *version, copies the payload
 * into buf and its length into *len; 2 for a tombstone (a delete's mark,
 * see rc_delete_if_not_newer) with *version its version and *len 0, which a
 * reader takes as a miss below whose version nothing is current; 0 if the
 * key is absent; RC_ENOSPC if
 * the payload is longer than cap (*len then tells the size needed);
 * RC_EBADVALUE if the value is not "<version>|..."; or another RC_E*.
 * Reads a replica when replica_reads is configured. */
int rc_get_versioned(rc_cluster *c, const char *key, size_t keylen,
                     uint64_t *version, char *buf, size_t cap, size_t *len,
                     int64_t deadline);

/* Writes "<version>|<payload>" with a time to live of px_ms (<= 0: none)
 * only if the key is absent, holds a lower version, or holds a tombstone
 * at this version or a lower one; an equal or higher value, or a newer
 * tombstone, is kept. Returns 1 written, 0 refused, RC_EINVAL for the
 * payload "~" (the tombstone's mark), or an RC_E* code. Runs a Lua script
 * by EVALSHA, falling back to EVAL on NOSCRIPT. */
int rc_fill_if_newer(rc_cluster *c, const char *key, size_t keylen,
                     uint64_t version, const void *payload, size_t len,
                     int64_t px_ms, int64_t deadline);

/* Deletes the copy if its version is <= version (a value that does not
 * parse counts as older) by replacing it with a tombstone, "<version>|~",
 * that expires after tomb_px_ms (> 0; it must outlast any reader's window
 * between its database read and its fill). The tombstone is written on an
 * empty key too, and over an older tombstone. Returns 1 when the key holds
 * the tombstone, 0 when a newer copy or tombstone was kept, or an RC_E*
 * code. EVALSHA with EVAL fallback, like rc_fill_if_newer. */
int rc_delete_if_not_newer(rc_cluster *c, const char *key, size_t keylen,
                           uint64_t version, int64_t tomb_px_ms, int64_t deadline);

/* The same, but a copy at exactly version is spared (returns 0): it is the
 * row committed at version, which a writer's refresh or a reader after the
 * commit put there (docs/invalidator.md, "Update events"). */
int rc_delete_if_older(rc_cluster *c, const char *key, size_t keylen,
                       uint64_t version, int64_t tomb_px_ms, int64_t deadline);

/* Deletes every item key ("stock:{*": values, tombstones, absent marks) on
 * every master: refreshes the slot map, then SCANs each master and UNLINKs
 * what it finds. Sets *deleted (may be NULL) to the keys removed. Returns
 * 0, or the first RC_E* code (a master down or the deadline passed; what
 * was deleted stays deleted, and calling again finishes the job). Keys
 * written meanwhile may survive: they are fills from the database. */
int rc_purge_items(rc_cluster *c, int64_t deadline, uint64_t *deleted);

/* ------------------------------------------------------------------------ */
/* Metrics.                                                                  */

/* Appends the client's families in Prometheus text (the metrics kit,
 * kit/metrics.h), as /metrics serves them: cachesvc_redis_node_<name>_total
 * {node="host:port",role="master|replica"} per node counter (the list,
 * RC_NODE_COUNTERS, is in rc_int.h; docs/redis.md names them),
 * the gauge cachesvc_redis_node_inflight, cachesvc_redis_node_up{node} and
 * cachesvc_redis_slot_refreshes_total. Failures show as b->oom. Any thread. */
void rc_metrics_append(rc_cluster *c, kit_buf *b);

#ifdef __cplusplus
}
#endif
#endif /* CACHESVC_RC_H */
