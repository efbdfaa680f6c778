/*
 * admission.c: the Redis breaker and the mapping of overload to 429.
 *
 * Per-item queue bounds live in the store's batcher (store.queue_max): a
 * decrement beyond them is answered STORE_OVERLOADED at once, which the
 * write path turns into 429 with Retry-After. What lives here is the other
 * half of admission control: when Redis is down, reads must not pay a
 * deadline each. After `threshold` consecutive failures the breaker opens;
 * while open, one read per probe interval goes to Redis (the one that wins
 * the compare-and-swap on the next probe time), every other read skips it.
 * A successful call closes the breaker.
 */
#include "cachesvc/log.h"
#include "cachesvc/metrics.h"
#include "cachesvc/service.h"

#include <errno.h>

void svc__breaker_init(svc_breaker *b, int threshold, int probe_ms)
{
    atomic_store(&b->failures, 0);
    atomic_store(&b->open_until_ns, 0);
    b->threshold = threshold > 0 ? threshold : 1;
    b->probe_ns = (int64_t)(probe_ms > 0 ? probe_ms : 1) * 1000000;
}

int svc__breaker_allow(svc_breaker *b)
{
    int64_t until = atomic_load_explicit(&b->open_until_ns, memory_order_relaxed);
    if (until == 0)
        return 1;
    int64_t now = rt_now_ns();
    if (now < until) {
        svc_metric_inc(SVC_C_REDIS_SKIPPED);
        return 0;
    }
    /* This read probes; the others keep skipping until the next interval. */
    if (atomic_compare_exchange_strong(&b->open_until_ns, &until, now + b->probe_ns))
        return 1;
    svc_metric_inc(SVC_C_REDIS_SKIPPED);
    return 0;
}

void svc__breaker_result(svc_breaker *b, int ok)
{
    if (ok) {
        if (atomic_load_explicit(&b->failures, memory_order_relaxed) != 0)
            atomic_store(&b->failures, 0);
        int64_t until = atomic_load_explicit(&b->open_until_ns, memory_order_relaxed);
        if (until != 0 && atomic_compare_exchange_strong(&b->open_until_ns, &until, 0))
            SVC_INFO(NULL, "redis breaker closed", NULL);
        return;
    }
    svc_metric_inc(SVC_C_REDIS_ERROR);
    int64_t f = atomic_fetch_add(&b->failures, 1) + 1;
    if (f >= b->threshold) {
        int64_t zero = 0;
        if (atomic_compare_exchange_strong(&b->open_until_ns, &zero, rt_now_ns() + b->probe_ns)) {
            svc_metric_inc(SVC_C_REDIS_BREAKER_OPEN);
            SVC_WARN(NULL, "redis breaker open", "failures=%lld probe_ms=%lld",
                     (long long)f, (long long)(b->probe_ns / 1000000));
        }
    }
}

int svc__breaker_is_open(svc_breaker *b)
{
    return atomic_load_explicit(&b->open_until_ns, memory_order_relaxed) != 0;
}

int svc__redis_failed(int rc)
{
    switch (rc) {
    case RC_ETIMEDOUT:
    case RC_ECONN:
    case RC_EDOWN:
    case RC_EUNAVAIL:
    case RC_EPROTO:
    case RC_EREDIRECT:
    case RC_ENOMEM:
        return 1;
    }
    return 0;
}

int svc__store_err(int err)
{
    switch (err) {
    case -ENOENT: return HTTP_E_NOT_FOUND;
    case -EINVAL: return HTTP_E_BAD_REQUEST;
    case -EBUSY: return HTTP_E_OVERLOADED;
    case -ECONNABORTED: return HTTP_E_OUTCOME_UNKNOWN;
    case -EIO:
    case -ETIMEDOUT:
    case -ENOMEM:
    case -ECANCELED:
        return HTTP_E_UNAVAILABLE;
    }
    return err < 0 ? HTTP_E_UNAVAILABLE : err;
}
