/*
 * http_service.h: the service interface the HTTP server calls.
 *
 * cachesvc/ implements it with plain functions over typed structs; api/ owns
 * everything HTTP: JSON parsing and formatting, input validation (sku, user
 * id, qty range, idempotency key), status mapping, the error envelope and
 * headers. tests/support/memservice.c is a small in-memory implementation
 * for tests and benchmarks (tests/support/memservice.h).
 *
 * Calling convention. Every function runs inside the calling connection's
 * coroutine and may park (rt_* calls); it may be called concurrently from
 * many coroutines on several worker threads. It returns 0 on success or a
 * negative HTTP_E_* code (api/http.h) or negative errno on failure; on
 * failure the out structs are ignored except where noted. Strings passed in
 * are NUL-terminated, already validated, and valid only during the call.
 * Function pointers left NULL answer 501 `not_implemented`.
 */
#ifndef CACHESVC_HTTP_SERVICE_H
#define CACHESVC_HTTP_SERVICE_H

#include <stddef.h>
#include <stdint.h>

#include "api/http.h"
#include "kit/kit.h"

#ifdef __cplusplus
extern "C" {
#endif

#define HTTP_SKU_MAX KIT_SKU_MAX /* bytes of [A-Za-z0-9._:-] (kit/kit.h) */
#define HTTP_USER_MAX 64      /* same alphabet as a sku */
#define HTTP_IDEM_KEY_MAX 128 /* printable ASCII */
#define HTTP_QTY_MAX 1000000

/* Which tier answered a read (X-Cache header). */
typedef enum http_tier {
    HTTP_TIER_LOCAL = 0,
    HTTP_TIER_REDIS = 1,
    HTTP_TIER_DB = 2,
} http_tier;

typedef struct http_item {
    char sku[HTTP_SKU_MAX + 1];
    int64_t stock;
    int64_t version;
    int64_t per_user_limit;      /* 0 = none */
    int64_t sale_starts_at_ms;   /* 0 = no start time */
} http_item;

typedef struct http_decrement_req {
    const char *sku;
    const char *user_id;
    int64_t qty;                 /* 1..HTTP_QTY_MAX */
    const char *idempotency_key; /* NULL when the request had none */
} http_decrement_req;

/* The order a decrement made or replayed: with a replay, the original
 * order's sku, buyer and qty (which equal the request's: a key sent with
 * another request is HTTP_E_KEY_MISMATCH). */
typedef struct http_decrement_res {
    int64_t order_id;
    char sku[HTTP_SKU_MAX + 1];
    char user_id[HTTP_USER_MAX + 1];
    int64_t qty;
    int64_t stock;               /* stock after this order */
    int64_t version;             /* item version after this order */
    int replayed;                /* nonzero: an earlier outcome of the key */
    int64_t retry_after_s;       /* read with HTTP_E_OVERLOADED and
                                  * HTTP_E_UNAVAILABLE; 0 = 1 */
    int64_t sale_starts_at_ms;   /* read with HTTP_E_SALE_NOT_STARTED: when
                                  * the sale starts (ms since the epoch);
                                  * 0 = unknown */
} http_decrement_res;

/* PUT /v1/items/{sku}: every field optional but stock for a new item
 * (the service answers HTTP_E_BAD_REQUEST then). */
typedef struct http_put_item_req {
    const char *sku;
    int has_stock;
    int64_t stock;               /* >= 0 */
    int has_per_user_limit;
    int64_t per_user_limit;      /* >= 0 */
    int has_sale_starts_at_ms;
    int64_t sale_starts_at_ms;   /* >= 0 */
} http_put_item_req;

/* GET /v1/orders/by-key: the order an Idempotency-Key made. */
typedef struct http_order {
    int64_t order_id;
    char sku[HTTP_SKU_MAX + 1];
    char user_id[HTTP_USER_MAX + 1];
    int64_t qty;
    int64_t stock;               /* the item right after the order */
    int64_t version;
} http_order;

typedef struct http_audit {
    int64_t stock, version, units_supplied, units_sold, orders;
    int64_t max_user_qty, duplicate_idempotency_keys;
    /* Only when with_orders was set: malloc()ed by the service, freed by
     * the server with free() after the response is formatted. */
    int64_t *order_ids;
    size_t n_order_ids;
} http_audit;

#define HTTP_LOG_LEVEL_MAX 15
typedef struct http_config_values {
    int64_t invalidation_delay_ms;
    int64_t local_ttl_ms;
    char log_level[HTTP_LOG_LEVEL_MAX + 1];
} http_config_values;

/* PUT /admin/config: any subset; values validated >= 0 and log_level one
 * of debug|info|warn|error by the server. */
typedef struct http_config_update {
    int has_invalidation_delay_ms;
    int64_t invalidation_delay_ms;
    int has_local_ttl_ms;
    int64_t local_ttl_ms;
    const char *log_level;       /* NULL = unchanged */
} http_config_update;

typedef enum http_dep_state {
    HTTP_DEP_UP = 0,
    HTTP_DEP_DOWN = 1,
    HTTP_DEP_NONE = 2,           /* not configured */
} http_dep_state;

/* GET /readyz. The instance can sell while its store is up and it is not
 * draining: only then is the answer 503. A Redis or Kafka outage is
 * "degraded" (200, the dependency named), because the service still sells
 * and reads from the database; a load balancer that took every instance out
 * for it would stop the sale. */
typedef struct http_readiness {
    http_dep_state store, redis, kafka;
    int draining;                /* 1 from SIGTERM on: 503 "draining" */
} http_readiness;

/* POST /admin/cache/purge: what was done. On failure detail says which
 * step failed and what was done before it. */
typedef struct http_purge_res {
    int redis;                   /* 1 purged, 0 not configured */
    uint64_t redis_keys;         /* item keys removed from Redis */
    int broadcast;               /* 1 acknowledged by the brokers, 0 no
                                  * broker (one instance) */
    char detail[256];
} http_purge_res;

typedef struct http_service {
    void *ctx;
    /* GET/HEAD /v1/items/{sku}: fills *out and *tier. */
    int (*get_item)(void *ctx, const char *sku, http_item *out,
                    http_tier *tier);
    /* POST /v1/items/{sku}/decrement. With HTTP_E_OVERLOADED or
     * HTTP_E_UNAVAILABLE, out->retry_after_s is read for the Retry-After
     * header; with HTTP_E_SALE_NOT_STARTED, out->sale_starts_at_ms. */
    int (*decrement)(void *ctx, const http_decrement_req *req,
                     http_decrement_res *out);
    /* PUT /v1/items/{sku}: fills *out with the item after the write and sets
     * *created when the item did not exist before. */
    int (*put_item)(void *ctx, const http_put_item_req *req, http_item *out,
                    int *created);
    /* GET /v1/orders/by-key: the order whose idempotency key is key,
     * when it was bought by user_id (else HTTP_E_NOT_FOUND, as for a key
     * no committed order has). Read-only. */
    int (*order_by_key)(void *ctx, const char *key, const char *user_id,
                        http_order *out);
    /* GET /admin/items/{sku}/audit[?orders=true]. */
    int (*audit)(void *ctx, const char *sku, int with_orders,
                 http_audit *out);
    int (*get_config)(void *ctx, http_config_values *out);
    /* Applies upd and fills *out with the whole configuration after it. */
    int (*put_config)(void *ctx, const http_config_update *upd,
                      http_config_values *out);
    /* GET /metrics: appends Prometheus text to out (the server appends its
     * own http_* families after it). Returns 0 or a negative errno. */
    int (*metrics)(void *ctx, kit_buf *out);
    /* POST /admin/cache/purge: drops every cached copy fleet-wide (Redis,
     * this instance's local cache, every other instance's through a
     * broadcast), floors included, for when versions start over. */
    int (*purge_cache)(void *ctx, http_purge_res *out);
    /* GET /readyz: fills *out (see http_readiness for what the answer
     * means). */
    int (*ready)(void *ctx, http_readiness *out);
    /* GET /admin/config also lists every setting: appends one JSON object
     * {"<section>.<key>": {"value": ..., "source": "default|file|env|flag|set"},
     * ...} with secrets as "<redacted>". NULL = the answer has no
     * "settings" member. */
    int (*config_settings)(void *ctx, kit_buf *out);
} http_service;

#ifdef __cplusplus
}
#endif
#endif /* CACHESVC_HTTP_SERVICE_H */
