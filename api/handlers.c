/*
 * handlers.c: routes a complete request and answers it: admin auth (and
 * the admin token's run-time swap), input validation, JSON bodies (json.c
 * in, direct formatting out), the service call and the mapping of its
 * result to a status, the error envelope and its headers.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "api/http_int.h"
#include "kit/kit.h"

#define JSON "application/json"

/* The value of header name (lower case) in the current request, or NULL. */
static const char *header(const http_conn *c, const char *name, size_t *len)
{
    size_t n = strlen(name);
    for (int i = 0; i < c->req->nhdr; i++) {
        const http__hdr *h = &c->req->hdr[i];
        if (h->name_len == n &&
            strncasecmp(c->in + c->req_start + h->name_off, name, n) == 0) {
            *len = h->val_len;
            return c->in + c->req_start + h->val_off;
        }
    }
    return NULL;
}

static void reply_json(http_conn *c, int route, int status,
                       const char *extra, size_t extra_len)
{
    http__reply(c, route, status, JSON, extra, extra_len, c->body.data,
                c->body.len);
}

/* Answers a service error. A 429 or 503 carries Retry-After:
 * retry_after_s when the service gave one (> 0), else 1 (response.c adds
 * that default). */
static void reply_err(http_conn *c, int route, int err, int64_t retry_after_s)
{
    char extra[48];
    const char *ex = NULL;
    int status = http_error_status(err);
    if ((status == 429 || status == 503) && retry_after_s > 1) {
        ex = extra;
        snprintf(extra, sizeof extra, "Retry-After: %lld\r\n", (long long)retry_after_s);
    }
    http__reply_error(c, route, status, http_error_code(err), http_strerror(err), ex);
}

/* Answers 425 sale_not_started. When the service knows the start
 * (starts_at_ms > 0) the envelope gets "sale_starts_at_ms" and
 * Retry-After is the seconds until then, rounded up, at least 1; when it
 * does not, Retry-After is 1. */
static void reply_not_started(http_conn *c, int route, int64_t starts_at_ms)
{
    char extra[48];
    int64_t wait_s = 1;
    if (starts_at_ms > 0) {
        int64_t left = starts_at_ms - kit_wall_ms();
        if (left > 1000)
            wait_s = left / 1000 + (left % 1000 != 0);
    }
    snprintf(extra, sizeof extra, "Retry-After: %lld\r\n", (long long)wait_s);
    const char *detail = http_strerror(HTTP_E_SALE_NOT_STARTED);
    kit_buf *b = &c->body;
    kit_buf_reset(b);
    int e = kit_buf_puts(b, "{\"error\":\"sale_not_started\",\"detail\":");
    e |= http_buf_json_str(b, detail, strlen(detail));
    if (starts_at_ms > 0) {
        e |= kit_buf_puts(b, ",\"sale_starts_at_ms\":");
        e |= http_buf_i64(b, starts_at_ms);
    }
    e |= kit_buf_puts(b, "}");
    if (e < 0) {
        c->closing = 1;
        return;
    }
    http__reply(c, route, 425, JSON, extra, strlen(extra), b->data, b->len);
}

static void bad_request(http_conn *c, int route, const char *detail)
{
    http__reply_error(c, route, 400, "bad_request", detail, NULL);
}

/* The Idempotency-Key header into key (NUL-terminated). Returns 1 when
 * present and valid, 0 when absent; -1 when invalid (400 answered). */
static int idempotency_key(http_conn *c, int route, char key[HTTP_IDEM_KEY_MAX + 1])
{
    size_t klen;
    const char *k = header(c, "idempotency-key", &klen);
    if (k == NULL)
        return 0;
    int ok = klen > 0 && klen <= HTTP_IDEM_KEY_MAX;
    for (size_t i = 0; ok && i < klen; i++)
        ok = k[i] >= 0x20 && k[i] <= 0x7e;
    if (!ok) {
        bad_request(c, route, "Idempotency-Key must be 1-128 printable ASCII bytes");
        return -1;
    }
    memcpy(key, k, klen);
    key[klen] = 0;
    return 1;
}

/* The value of query parameter name (not decoded), or NULL. */
static const char *query_param(const char *q, size_t qlen, const char *name, size_t *vlen)
{
    size_t n = strlen(name);
    const char *end = q + qlen;
    while (q < end) {
        const char *amp = memchr(q, '&', (size_t)(end - q));
        const char *e = amp ? amp : end;
        if ((size_t)(e - q) > n && memcmp(q, name, n) == 0 && q[n] == '=') {
            *vlen = (size_t)(e - q) - n - 1;
            return q + n + 1;
        }
        q = amp ? amp + 1 : end;
    }
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* JSON helpers                                                              */

#define PUT_LIT(o, lit) (memcpy((o), (lit), sizeof(lit) - 1), (o) + sizeof(lit) - 1)

/* Appends the item as JSON with one reservation: the GET hot path. A sku
 * the service hands back is an identifier (nothing to escape); any other
 * string goes through the escaping writer. */
static int json_item(kit_buf *b, const http_item *it)
{
    size_t n = strnlen(it->sku, sizeof it->sku);
    if (!kit_ident_valid(it->sku, n, HTTP_SKU_MAX)) {
        int rc = kit_buf_puts(b, "{\"sku\":");
        rc |= http_buf_json_str(b, it->sku, n);
        if (rc < 0 || kit_buf_reserve(b, 160) < 0)
            return -ENOMEM;
    } else {
        if (kit_buf_reserve(b, n + 176) < 0)
            return -ENOMEM;
        char *o = b->data + b->len;
        o = PUT_LIT(o, "{\"sku\":\"");
        memcpy(o, it->sku, n);
        o += n;
        *o++ = '"';
        b->len = (size_t)(o - b->data);
    }
    char *o = b->data + b->len;
    o = PUT_LIT(o, ",\"stock\":");
    o += http__fmt_i64(o, it->stock);
    o = PUT_LIT(o, ",\"version\":");
    o += http__fmt_i64(o, it->version);
    o = PUT_LIT(o, ",\"per_user_limit\":");
    o += http__fmt_i64(o, it->per_user_limit);
    o = PUT_LIT(o, ",\"sale_starts_at_ms\":");
    o += http__fmt_i64(o, it->sale_starts_at_ms);
    *o++ = '}';
    b->len = (size_t)(o - b->data);
    return 0;
}

/* Reads an integer member in [lo, hi]. Returns 1 when present and valid,
 * 0 when absent, -1 when present but not an integer literal in range (a
 * fraction or exponent is refused even when its value is whole). */
static int json_int(const http__jobj *o, const char *name, int64_t lo,
                    int64_t hi, int64_t *out)
{
    const http__jmember *m = http__json_get(o, name);
    if (m == NULL)
        return 0;
    if (m->type != HTTP__J_NUMBER || !m->int_ok || m->i < lo || m->i > hi)
        return -1;
    *out = m->i;
    return 1;
}

/* Reads a string member into dst (NUL-terminated) when it is 1..max bytes
 * of the identifier alphabet. Returns 1, 0 when absent, -1 otherwise. */
static int json_ident(const http__jobj *o, const char *name, char *dst, size_t max)
{
    const http__jmember *m = http__json_get(o, name);
    if (m == NULL)
        return 0;
    if (m->type != HTTP__J_STRING || !kit_ident_valid(m->str, m->str_len, max))
        return -1;
    memcpy(dst, m->str, m->str_len);
    dst[m->str_len] = '\0';
    return 1;
}

/* Reads the request body as a flat JSON object into *o. On failure answers
 * 400 (saying what is wrong and where) and returns -1. */
static int parse_body(http_conn *c, int route, http__jobj *o)
{
    char detail[160];
    if (c->req->body_len == 0) {
        bad_request(c, route, "the body must be a JSON object; it is empty");
        return -1;
    }
    if (http__json_object(c->in + c->req_start + c->req->body_off,
                          c->req->body_len, o) == 0)
        return 0;
    snprintf(detail, sizeof detail, "the body is not accepted JSON: %s (at byte %zu)",
             o->err, o->err_at);
    bad_request(c, route, detail);
    return -1;
}

/* ------------------------------------------------------------------------ */
/* Handlers                                                                  */

static const char *tier_name(http_tier t)
{
    switch (t) {
    case HTTP_TIER_REDIS: return "X-Cache: redis\r\n";
    case HTTP_TIER_DB:    return "X-Cache: db\r\n";
    default:              return "X-Cache: local\r\n";
    }
}

static void h_get_item(http_conn *c, const char *sku)
{
    const http_service *s = c->srv->svc;
    http_item it;
    http_tier tier = HTTP_TIER_LOCAL;
    int rc = s->get_item(s->ctx, sku, &it, &tier);
    if (rc == HTTP_E_NOT_FOUND) {
        /* An absent item is an answer of a tier too (negative caching). */
        http__reply_error(c, HTTP__R_GET_ITEM, 404, "not_found",
                          http_strerror(rc), tier_name(tier));
        return;
    }
    if (rc < 0) {
        reply_err(c, HTTP__R_GET_ITEM, rc, 0);
        return;
    }
    kit_buf_reset(&c->body);
    if (json_item(&c->body, &it) < 0) {
        c->closing = 1;
        return;
    }
    const char *x = tier_name(tier);
    reply_json(c, HTTP__R_GET_ITEM, 200, x, strlen(x));
}

/* Answers 200 with the order o as JSON, then tail (which closes the
 * object). */
static void reply_order(http_conn *c, int route, const http_order *o, const char *tail)
{
    kit_buf *b = &c->body;
    kit_buf_reset(b);
    int e = kit_buf_puts(b, "{\"order_id\":");
    e |= http_buf_i64(b, o->order_id);
    e |= kit_buf_puts(b, ",\"sku\":");
    e |= http_buf_json_str(b, o->sku, strnlen(o->sku, sizeof o->sku));
    e |= kit_buf_puts(b, ",\"user_id\":");
    e |= http_buf_json_str(b, o->user_id, strnlen(o->user_id, sizeof o->user_id));
    e |= kit_buf_puts(b, ",\"qty\":");
    e |= http_buf_i64(b, o->qty);
    e |= kit_buf_puts(b, ",\"stock\":");
    e |= http_buf_i64(b, o->stock);
    e |= kit_buf_puts(b, ",\"version\":");
    e |= http_buf_i64(b, o->version);
    e |= kit_buf_puts(b, tail);
    if (e < 0) {
        c->closing = 1;
        return;
    }
    reply_json(c, route, 200, NULL, 0);
}

static void h_decrement(http_conn *c, const char *sku)
{
    const int R = HTTP__R_DECREMENT;
    const http_service *s = c->srv->svc;
    char user[HTTP_USER_MAX + 1], key[HTTP_IDEM_KEY_MAX + 1];
    http_decrement_req req = {.sku = sku, .user_id = user};
    int k = idempotency_key(c, R, key);
    if (k < 0)
        return;
    if (k > 0)
        req.idempotency_key = key;
    http__jobj j;
    if (parse_body(c, R, &j) < 0)
        return;
    if (json_ident(&j, "user_id", user, HTTP_USER_MAX) != 1) {
        bad_request(c, R, "user_id must be 1-64 bytes of [A-Za-z0-9._:-]");
        return;
    }
    int q = json_int(&j, "qty", 1, HTTP_QTY_MAX, &req.qty);
    if (q != 1) {
        bad_request(c, R, "qty must be an integer from 1 to 1000000");
        return;
    }
    http_decrement_res res;
    memset(&res, 0, sizeof res);
    int rc = s->decrement(s->ctx, &req, &res);
    if (rc == HTTP_E_SALE_NOT_STARTED) {
        reply_not_started(c, R, res.sale_starts_at_ms);
        return;
    }
    if (rc < 0) {
        reply_err(c, R, rc, res.retry_after_s);
        return;
    }
    /* The body describes the order as stored (a replay's is the original,
     * equal to this request by the service's contract), never the
     * request's own fields. */
    http_order o = {.order_id = res.order_id, .qty = res.qty, .stock = res.stock,
                    .version = res.version};
    memcpy(o.sku, res.sku, sizeof o.sku);
    memcpy(o.user_id, res.user_id, sizeof o.user_id);
    reply_order(c, R, &o, res.replayed ? ",\"replayed\":true}" : ",\"replayed\":false}");
}

static void h_order_by_key(http_conn *c, const char *q, size_t qlen)
{
    const int R = HTTP__R_ORDER_BY_KEY;
    const http_service *s = c->srv->svc;
    char key[HTTP_IDEM_KEY_MAX + 1], user[HTTP_USER_MAX + 1];
    int k = idempotency_key(c, R, key);
    if (k < 0)
        return;
    if (k == 0) {
        bad_request(c, R, "send the order's key in the Idempotency-Key header");
        return;
    }
    size_t ulen = 0;
    const char *u = query_param(q, qlen, "user_id", &ulen);
    if (u == NULL || !kit_ident_valid(u, ulen, HTTP_USER_MAX)) {
        bad_request(c, R, "the user_id query parameter must be 1-64 bytes of [A-Za-z0-9._:-]");
        return;
    }
    memcpy(user, u, ulen);
    user[ulen] = 0;
    http_order o;
    memset(&o, 0, sizeof o);
    int rc = s->order_by_key(s->ctx, key, user, &o);
    if (rc < 0) {
        if (rc == HTTP_E_NOT_FOUND)
            http__reply_error(c, R, 404, "not_found",
                              "no committed order of this user has this Idempotency-Key", NULL);
        else
            reply_err(c, R, rc, 0);
        return;
    }
    reply_order(c, R, &o, "}");
}

static void h_put_item(http_conn *c, const char *sku)
{
    const int R = HTTP__R_PUT_ITEM;
    const http_service *s = c->srv->svc;
    http_put_item_req req = {.sku = sku};
    http__jobj j;
    if (parse_body(c, R, &j) < 0)
        return;
    int a = json_int(&j, "stock", 0, INT64_MAX, &req.stock);
    int b = json_int(&j, "per_user_limit", 0, INT64_MAX, &req.per_user_limit);
    int d = json_int(&j, "sale_starts_at_ms", 0, INT64_MAX, &req.sale_starts_at_ms);
    if (a < 0 || b < 0 || d < 0) {
        bad_request(c, R, "stock, per_user_limit and sale_starts_at_ms must be "
                          "non-negative integers");
        return;
    }
    req.has_stock = a;
    req.has_per_user_limit = b;
    req.has_sale_starts_at_ms = d;
    http_item it;
    int created = 0;
    int rc = s->put_item(s->ctx, &req, &it, &created);
    if (rc < 0) {
        reply_err(c, R, rc, 0);
        return;
    }
    kit_buf_reset(&c->body);
    if (json_item(&c->body, &it) < 0) {
        c->closing = 1;
        return;
    }
    reply_json(c, R, created ? 201 : 200, NULL, 0);
}

static int query_flag(const char *q, size_t qlen, const char *name)
{
    size_t n;
    const char *v = query_param(q, qlen, name, &n);
    return v != NULL && ((n == 4 && memcmp(v, "true", 4) == 0) || (n == 1 && v[0] == '1'));
}

static void h_audit(http_conn *c, const char *sku, const char *q, size_t qlen)
{
    const int R = HTTP__R_AUDIT;
    const http_service *s = c->srv->svc;
    int with_orders = query_flag(q, qlen, "orders");
    http_audit a;
    memset(&a, 0, sizeof a);
    int rc = s->audit(s->ctx, sku, with_orders, &a);
    if (rc < 0) {
        free(a.order_ids);
        reply_err(c, R, rc, 0);
        return;
    }
    kit_buf *b = &c->body;
    kit_buf_reset(b);
    int e = kit_buf_puts(b, "{\"sku\":");
    e |= http_buf_json_str(b, sku, strlen(sku));
    e |= kit_buf_printf(b,
        ",\"stock\":%lld,\"version\":%lld,\"units_supplied\":%lld,"
        "\"units_sold\":%lld,\"orders\":%lld,\"max_user_qty\":%lld,"
        "\"duplicate_idempotency_keys\":%lld",
        (long long)a.stock, (long long)a.version, (long long)a.units_supplied,
        (long long)a.units_sold, (long long)a.orders,
        (long long)a.max_user_qty, (long long)a.duplicate_idempotency_keys);
    if (with_orders) {
        e |= kit_buf_puts(b, ",\"order_ids\":[");
        for (size_t i = 0; i < a.n_order_ids; i++) {
            if (i)
                e |= kit_buf_puts(b, ",");
            e |= http_buf_i64(b, a.order_ids[i]);
        }
        e |= kit_buf_puts(b, "]");
    }
    e |= kit_buf_puts(b, "}");
    free(a.order_ids);
    if (e < 0) {
        c->closing = 1;
        return;
    }
    reply_json(c, R, 200, NULL, 0);
}

/* True when b[from, len) is one JSON object as far as its ends show
 * (surrounding whitespace allowed): a guard against a service callback
 * that appended nothing or something else, not a full JSON check. */
static int looks_like_object(const kit_buf *b, size_t from)
{
    size_t i = from, j = b->len;
    while (i < j && memchr(" \t\r\n", b->data[i], 4))
        i++;
    while (j > i && memchr(" \t\r\n", b->data[j - 1], 4))
        j--;
    return j - i >= 2 && b->data[i] == '{' && b->data[j - 1] == '}';
}

/* Answers the tunables; with_settings adds "settings", the object the
 * service's config_settings appends (GET only, when it is set). */
static void reply_config(http_conn *c, int route, const http_config_values *v,
                         int with_settings)
{
    const http_service *s = c->srv->svc;
    kit_buf *b = &c->body;
    kit_buf_reset(b);
    int e = kit_buf_printf(b,
        "{\"invalidation_delay_ms\":%lld,\"local_ttl_ms\":%lld,\"log_level\":",
        (long long)v->invalidation_delay_ms, (long long)v->local_ttl_ms);
    e |= http_buf_json_str(b, v->log_level, strlen(v->log_level));
    if (e == 0 && with_settings && s->config_settings) {
        e = kit_buf_puts(b, ",\"settings\":");
        size_t at = b->len;
        int rc = e < 0 ? e : s->config_settings(s->ctx, b);
        if (rc < 0) {
            reply_err(c, route, rc, 0);
            return;
        }
        if (!looks_like_object(b, at)) {
            http__reply_error(c, route, 500, "internal",
                              "the service's settings are not a JSON object", NULL);
            return;
        }
    }
    e |= kit_buf_puts(b, "}");
    if (e < 0) {
        c->closing = 1;
        return;
    }
    reply_json(c, route, 200, NULL, 0);
}

static void h_get_config(http_conn *c)
{
    const http_service *s = c->srv->svc;
    http_config_values v;
    memset(&v, 0, sizeof v);
    int rc = s->get_config(s->ctx, &v);
    if (rc < 0)
        reply_err(c, HTTP__R_GET_CONFIG, rc, 0);
    else
        reply_config(c, HTTP__R_GET_CONFIG, &v, 1);
}

static void h_put_config(http_conn *c)
{
    const int R = HTTP__R_PUT_CONFIG;
    const http_service *s = c->srv->svc;
    http_config_update upd;
    memset(&upd, 0, sizeof upd);
    char level[HTTP_LOG_LEVEL_MAX + 1];
    http__jobj j;
    if (parse_body(c, R, &j) < 0)
        return;
    int a = json_int(&j, "invalidation_delay_ms", 0, INT64_MAX / 2,
                     &upd.invalidation_delay_ms);
    int b = json_int(&j, "local_ttl_ms", 0, INT64_MAX / 2, &upd.local_ttl_ms);
    int l = json_ident(&j, "log_level", level, HTTP_LOG_LEVEL_MAX);
    int lok = l == 0 ||
              (l == 1 && (!strcmp(level, "debug") || !strcmp(level, "info") ||
                          !strcmp(level, "warn") || !strcmp(level, "error")));
    if (l == 1 && lok)
        upd.log_level = level;
    if (a < 0 || b < 0 || !lok) {
        bad_request(c, R, "invalidation_delay_ms and local_ttl_ms must be "
                          "non-negative integers, log_level one of "
                          "debug|info|warn|error");
        return;
    }
    upd.has_invalidation_delay_ms = a;
    upd.has_local_ttl_ms = b;
    http_config_values v;
    memset(&v, 0, sizeof v);
    int rc = s->put_config(s->ctx, &upd, &v);
    if (rc < 0)
        reply_err(c, R, rc, 0);
    else
        reply_config(c, R, &v, 0);
}

static void h_purge_cache(http_conn *c)
{
    const int R = HTTP__R_PURGE_CACHE;
    const http_service *s = c->srv->svc;
    http_purge_res res;
    memset(&res, 0, sizeof res);
    int rc = s->purge_cache(s->ctx, &res);
    if (rc < 0) {
        http__reply_error(c, R, http_error_status(rc), http_error_code(rc),
                          res.detail[0] ? res.detail : http_strerror(rc), NULL);
        return;
    }
    kit_buf_reset(&c->body);
    if (kit_buf_printf(&c->body,
            "{\"purged\":true,\"redis\":\"%s\",\"redis_keys_deleted\":%llu,"
            "\"broadcast\":\"%s\"}",
            res.redis ? "purged" : "none", (unsigned long long)res.redis_keys,
            res.broadcast ? "published" : "none") < 0) {
        c->closing = 1;
        return;
    }
    reply_json(c, R, 200, NULL, 0);
}

static void h_metrics(http_conn *c)
{
    const http_service *s = c->srv->svc;
    kit_buf *b = &c->body;
    /* A reset, not len = 0: the body is the connection's, and an earlier
     * answer's failed append would leave oom set, which the metrics
     * writers report as -ENOMEM. */
    kit_buf_reset(b);
    int rc = 0;
    if (s->metrics)
        rc = s->metrics(s->ctx, b);
    if (rc == 0)
        rc = http_metrics_append(c->srv, b);
    if (rc < 0) {
        reply_err(c, HTTP__R_METRICS, rc, 0);
        return;
    }
    http__reply(c, HTTP__R_METRICS, 200, "text/plain; version=0.0.4", NULL,
                0, b->data, b->len);
}

static const char *dep_name(http_dep_state s)
{
    return s == HTTP_DEP_UP ? "up" : s == HTTP_DEP_NONE ? "none" : "down";
}

/* GET /readyz (http_readiness says why): 503 "draining" from SIGTERM
 * on, 503 "not_ready" while the store is down, else 200: "degraded" when
 * Redis or Kafka is down (listed in "degraded"), "ready" otherwise. Every
 * answer lists each dependency's state and "degraded" ([] when none). */
static void h_readyz(http_conn *c)
{
    const http_service *s = c->srv->svc;
    http_readiness r = {.store = HTTP_DEP_UP, .redis = HTTP_DEP_NONE,
                        .kafka = HTTP_DEP_NONE, .draining = 0};
    int rc = s->ready ? s->ready(s->ctx, &r) : 0;
    if (rc < 0) {
        reply_err(c, HTTP__R_READYZ, rc, 0);
        return;
    }
    int redis_down = r.redis == HTTP_DEP_DOWN, kafka_down = r.kafka == HTTP_DEP_DOWN;
    const char *status = r.draining                ? "draining"
                         : r.store == HTTP_DEP_DOWN ? "not_ready"
                         : redis_down || kafka_down ? "degraded"
                                                    : "ready";
    int code = r.draining || r.store == HTTP_DEP_DOWN ? 503 : 200;
    kit_buf_reset(&c->body);
    if (kit_buf_printf(&c->body,
            "{\"status\":\"%s\",\"store\":\"%s\",\"redis\":\"%s\",\"kafka\":\"%s\","
            "\"degraded\":[%s%s%s]}",
            status, dep_name(r.store), dep_name(r.redis), dep_name(r.kafka),
            redis_down ? "\"redis\"" : "", redis_down && kafka_down ? "," : "",
            kafka_down ? "\"kafka\"" : "") < 0) {
        c->closing = 1;
        return;
    }
    /* A 503 gets Retry-After: 1 (response.c): a prober may look again. */
    reply_json(c, HTTP__R_READYZ, code, NULL, 0);
}

/* ------------------------------------------------------------------------ */

/* The token is read and compared under token_lock, a plain mutex held
 * only for the comparison (no switching call inside): the swap is rare
 * (SIGHUP) and admin requests are few, so a lock costs nothing that
 * matters, and unlike a bare pointer swap it lets the old copy be wiped
 * and freed at once, with no reader left holding it. */
int http__admin_token_check(http_server *srv, const char *p, size_t n)
{
    pthread_mutex_lock(&srv->token_lock);
    int rc = srv->token == NULL ? -1
             : http_consttime_eq(p, n, srv->token, srv->token_len);
    pthread_mutex_unlock(&srv->token_lock);
    return rc;
}

int http_server_set_admin_token(http_server *srv, const char *token)
{
    char *copy = NULL;
    size_t n = token ? strlen(token) : 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)token[i] < 0x21 || (unsigned char)token[i] > 0x7e)
            return -EINVAL;
    if (n > 0 && (copy = strdup(token)) == NULL)
        return -ENOMEM;
    pthread_mutex_lock(&srv->token_lock);
    char *old = srv->token;
    size_t old_len = srv->token_len;
    srv->token = copy;
    srv->token_len = n;
    pthread_mutex_unlock(&srv->token_lock);
    if (old) {
        /* A wipe the compiler may not drop: old escapes to free(). */
        memset(old, 0, old_len);
        __asm__ __volatile__("" : : "r"(old) : "memory");
        free(old);
    }
    return 0;
}

/* Checks the admin token. Returns 1 when the request may go on; otherwise
 * the 401/403 answer has been written. */
static int admin_ok(http_conn *c, int route)
{
    size_t len = 0;
    const char *v = header(c, "authorization", &len);
    int bearer = v && len > 7 && strncasecmp(v, "Bearer ", 7) == 0;
    int rc = http__admin_token_check(c->srv, bearer ? v + 7 : "", bearer ? len - 7 : 0);
    if (rc < 0) {
        http__reply_error(c, route, 403, "forbidden",
            "admin routes are disabled because no admin token is configured; "
            "set [server] admin_token (CACHESVC_SERVER_ADMIN_TOKEN, "
            "--server.admin_token) and send Authorization: Bearer <token>",
            NULL);
        return 0;
    }
    if (bearer && rc == 1)
        return 1;
    http__reply_error(c, route, 401, "unauthorized",
                      v ? "invalid admin token" : "missing admin token",
                      "WWW-Authenticate: Bearer realm=\"cachesvc\"\r\n");
    return 0;
}

int http__implemented(const http_service *s, int route)
{
    switch (route) {
    case HTTP__R_GET_ITEM:   return s->get_item != NULL;
    case HTTP__R_PUT_ITEM:   return s->put_item != NULL;
    case HTTP__R_DECREMENT:  return s->decrement != NULL;
    case HTTP__R_AUDIT:      return s->audit != NULL;
    case HTTP__R_ORDER_BY_KEY: return s->order_by_key != NULL;
    case HTTP__R_GET_CONFIG: return s->get_config != NULL;
    case HTTP__R_PUT_CONFIG: return s->put_config != NULL;
    case HTTP__R_PURGE_CACHE: return s->purge_cache != NULL;
    default:                 return 1;
    }
}

void http__dispatch(http_conn *c)
{
    const char *url = c->in + c->req_start + c->req->url_off;
    size_t ulen = c->req->url_len;
    const char *qm = memchr(url, '?', ulen);
    size_t plen = qm ? (size_t)(qm - url) : ulen;
    const char *q = qm ? qm + 1 : url + ulen;
    size_t qlen = qm ? ulen - plen - 1 : 0;

    if (plen == 0 || url[0] != '/') {
        bad_request(c, HTTP__R_NONE, "the request target must be an absolute path");
        return;
    }
    http__match m;
    http__route_match(c->parser.method, url, plen, &m);
    if (m.status == 404) {
        http__reply_error(c, HTTP__R_NONE, 404, "not_found", "no such route", NULL);
        return;
    }
    if (m.status == 405) {
        char allow[80];
        snprintf(allow, sizeof allow, "Allow: %s\r\n", m.allow);
        http__reply_error(c, HTTP__R_NONE, 405, "method_not_allowed",
                          "the route does not answer this method", allow);
        return;
    }
    int r = m.route;
    if (http__routes[r].admin && !admin_ok(c, r))
        return;
    if (!http__implemented(c->srv->svc, r)) {
        http__reply_error(c, r, 501, "not_implemented",
                          "the service does not implement this route", NULL);
        return;
    }
    char sku[HTTP_SKU_MAX + 1];
    if (m.nparams > 0) {
        if (!kit_ident_valid(m.param[0], m.param_len[0], HTTP_SKU_MAX)) {
            bad_request(c, r, "sku must be 1-64 bytes of [A-Za-z0-9._:-]");
            return;
        }
        memcpy(sku, m.param[0], m.param_len[0]);
        sku[m.param_len[0]] = 0;
    }
    switch (r) {
    case HTTP__R_GET_ITEM:   h_get_item(c, sku); break;
    case HTTP__R_DECREMENT:  h_decrement(c, sku); break;
    case HTTP__R_PUT_ITEM:   h_put_item(c, sku); break;
    case HTTP__R_AUDIT:      h_audit(c, sku, q, qlen); break;
    case HTTP__R_ORDER_BY_KEY: h_order_by_key(c, q, qlen); break;
    case HTTP__R_GET_CONFIG: h_get_config(c); break;
    case HTTP__R_PUT_CONFIG: h_put_config(c); break;
    case HTTP__R_PURGE_CACHE: h_purge_cache(c); break;
    case HTTP__R_METRICS:    h_metrics(c); break;
    case HTTP__R_HEALTHZ:
        kit_buf_reset(&c->body);
        kit_buf_puts(&c->body, "{\"status\":\"ok\"}");
        reply_json(c, r, 200, NULL, 0);
        break;
    case HTTP__R_READYZ:     h_readyz(c); break;
    }
}
