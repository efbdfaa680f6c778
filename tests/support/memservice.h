/*
 * memservice.h: an in-memory implementation of the service interface
 * (api/http_service.h), for api/'s tests, http-memserver (which the HTTP
 * benchmark and flashsale's own tests run) and the fuzz targets; not part
 * of any installed program. Items, orders, per-user purchases and
 * idempotency keys live in one mutex-guarded map; nothing parks. It follows
 * the decrement rules of ARCHITECTURE.md serially, and can break them on
 * purpose (the faults below) to test a client's checks.
 */
#ifndef CACHESVC_TESTS_MEMSERVICE_H
#define CACHESVC_TESTS_MEMSERVICE_H

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

/* Faults for testing a client of the API (flashsale's verification). Each
 * may be set from any thread; it applies to the calls that start after. */

/* Makes every audit lie in one way: "oversell" (one unit more sold and one
 * less in stock), "lost" (the first order left out), "dup" (a duplicated
 * idempotency key reported), "limit" (a buyer past the per-user limit),
 * "ledger" (one unit more in stock than supplied minus sold); NULL or ""
 * tells the truth again. Returns 0, or -EINVAL for another mode. */
int http_memservice_audit_lie(http_service *svc, const char *mode);

/* Every nth decrement that makes an order answers HTTP_E_OUTCOME_UNKNOWN,
 * the order made all the same (its idempotency key replays it); 0 = none. */
void http_memservice_unknown_every(http_service *svc, int64_t n);

/* With on, reads return the item as it was invalidation_delay_ms ago (the
 * configuration's, which put_config changes): the newest state at least
 * that old, or the oldest one. Every state of every item is kept from then
 * on, so this is for short runs. */
void http_memservice_stale_reads(http_service *svc, int on);

#endif /* CACHESVC_TESTS_MEMSERVICE_H */
