/*
 * memservice.h: an in-memory implementation of the service interface
 * (api/http_service.h), for api/'s tests, http-memserver and the HTTP
 * benchmark. Items, orders, per-user purchases and idempotency keys live in
 * one mutex-guarded map; nothing parks. It follows the decrement rules of
 * ARCHITECTURE.md serially.
 */
#ifndef CACHESVC_HTTP_MEMSERVICE_H
#define CACHESVC_HTTP_MEMSERVICE_H

#include "api/http_service.h"

/* Returns a service owned by the caller (free with http_memservice_free),
 * or NULL on -ENOMEM. Callable from any thread; the service's functions are
 * thread-safe. */
http_service *http_memservice_new(void);
void http_memservice_free(http_service *svc);

/* Creates or sets an item, as PUT /v1/items/{sku} does. Returns 0 or
 * -ENOMEM / -EINVAL. */
int http_memservice_put(http_service *svc, const char *sku, int64_t stock,
                        int64_t per_user_limit, int64_t sale_starts_at_ms);

/* Makes every later call fail with err (0 = stop failing), to test the
 * server's error mapping; ready() then reports the store down. A failing
 * decrement hands back retry_after_s as its Retry-After (0 = the server's
 * default). */
void http_memservice_fail(http_service *svc, int err);
void http_memservice_retry_after(http_service *svc, int64_t retry_after_s);

/* Sets what ready() reports for Redis and Kafka (HTTP_DEP_NONE at first)
 * and whether the instance is draining (0 at first). Any thread. */
void http_memservice_set_ready(http_service *svc, http_dep_state redis,
                               http_dep_state kafka, int draining);

#endif /* CACHESVC_HTTP_MEMSERVICE_H */
