/*
 * http.h: the cachesvc HTTP/1.1 server (api/).
 *
 * One coroutine per connection on the runtime (runtime/rt.h): it reads into a
 * buffer, parses every complete request in it with http-parser, appends all
 * responses to one output buffer and writes them with one call. Keep-alive,
 * pipelining, Content-Length and chunked bodies, Expect: 100-continue, HEAD
 * and Connection: close are supported; other transfer codings answer 501,
 * and header sections a proxy could read another way answer 400
 * (docs/api.md, "Input rules").
 *
 * The routes and JSON shapes are those of docs/api.md and api/openapi.yaml;
 * the server calls the typed service interface of api/http_service.h, so the
 * service never sees JSON, status codes or headers.
 *
 * Errors follow the project convention: 0 (or a count) on success, a
 * negative errno or a negative HTTP_E_* code on failure; http_strerror()
 * names either.
 */
#ifndef CACHESVC_HTTP_H
#define CACHESVC_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include "kit/buf.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* Responses and metrics are written into the tree's one growable buffer,   */
/* kit_buf (kit/buf.h). The API adds two JSON formatters; both return 0 or  */
/* -ENOMEM.                                                                 */

int http_buf_i64(kit_buf *b, int64_t v);
/* Appends s as a JSON string literal, quotes included. */
int http_buf_json_str(kit_buf *b, const char *s, size_t n);

/* ------------------------------------------------------------------------ */
/* Error codes a service returns; each maps to one status and one `error`  */
/* code of docs/api.md. Any other negative value (an errno) answers 503    */
/* `unavailable` for -ETIMEDOUT/-ECONNREFUSED/-ECONNRESET/-EPIPE/-ENOMEM   */
/* and 500 `internal` otherwise.                                             */

enum {
    HTTP_E_BAD_REQUEST = -10001,        /* 400 bad_request */
    HTTP_E_NOT_FOUND = -10002,          /* 404 not_found */
    HTTP_E_SOLD_OUT = -10003,           /* 409 sold_out */
    HTTP_E_INSUFFICIENT_STOCK = -10004, /* 409 insufficient_stock */
    HTTP_E_LIMIT_EXCEEDED = -10005,     /* 409 limit_exceeded */
    HTTP_E_SALE_NOT_STARTED = -10006,   /* 425 sale_not_started */
    HTTP_E_OVERLOADED = -10007,         /* 429 overloaded + Retry-After */
    HTTP_E_UNAVAILABLE = -10008,        /* 503 unavailable */
    HTTP_E_OUTCOME_UNKNOWN = -10009,    /* 503 outcome_unknown */
    HTTP_E_CONFLICT = -10010,           /* 409 conflict (generic) */
    HTTP_E_KEY_MISMATCH = -10011,       /* 422 idempotency_key_mismatch */
};

/* A static description of err (negative HTTP_E_* or negative errno). */
const char *http_strerror(int err);
/* The status and envelope code that err is answered with. */
int http_error_status(int err);
const char *http_error_code(int err);

/* ------------------------------------------------------------------------ */
/* Server                                                                    */

typedef struct http_server http_server;
struct http_service;

typedef struct http_server_config {
    const char *host;            /* numeric address; NULL = "127.0.0.1" */
    int port;                    /* 0 = pick one (see http_server_port) */
    int acceptors;               /* SO_REUSEPORT listeners; 0 = rt_workers() */
    int backlog;                 /* 0 = 1024 */
    const char *admin_token;     /* Bearer token for admin routes; NULL or
                                  * "" = admin routes answer 403. Copied. */
    size_t max_uri;              /* request line/URI bytes; 0 = 2048 -> 414 */
    size_t max_headers;          /* header section bytes; 0 = 8192 -> 431 */
    size_t max_body;             /* body bytes; 0 = 65536 -> 413 */
    int max_conns;               /* open connections; 0 = 10000; beyond it
                                  * new ones get 503 and close */
    int64_t idle_timeout_ms;     /* keep-alive idle; 0 = 60000 */
    int64_t header_timeout_ms;   /* first byte to end of headers; 0 = 10000 */
    int64_t body_timeout_ms;     /* end of headers to end of body; 0 = 10000 */
    int64_t write_timeout_ms;    /* one flush of responses; 0 = 10000 */
    size_t read_buf;             /* initial read buffer; 0 = 4096 */
    size_t max_pipeline_out;     /* output bytes buffered before a flush in
                                  * the middle of a pipelined batch;
                                  * 0 = 262144 */
    size_t conn_stack;           /* stack of a connection's coroutine, where
                                  * the service's handlers run; 0 = the
                                  * runtime's default */
} http_server_config;

/* Fills cfg with the defaults above (every field explicit). */
void http_server_config_defaults(http_server_config *cfg);

/* Starts listening and serving svc with cfg. Both are used until
 * http_server_stop() returns: svc (and its ctx) must outlive the server; cfg
 * is copied. *out is owned by the caller and released by http_server_stop.
 * Call from a coroutine. Returns 0 or a negative errno (-EADDRINUSE, ...). */
int http_server_start(const http_server_config *cfg,
                      const struct http_service *svc, http_server **out);

/* The port the server listens on (useful with port 0). Any thread. */
int http_server_port(const http_server *srv);

/* The server binds with SO_REUSEPORT, which would let a second process
 * share a port silently; a program asks this before http_server_start. A
 * plain bind to host:port (IPv4) fails on any socket bound there. Returns
 * 0 when the address is free (also for port 0 and for a host that is not
 * an IPv4 literal: the server then reports) or -EADDRINUSE. Any thread. */
int http_port_free(const char *host, int port);

/* Replaces the admin token (SIGHUP reload): requests checked from the
 * return on compare against token; NULL or "" disables the admin routes
 * (403). A request sees either the old or the new token whole, never a
 * mix; requests already past the check finish as they were. token is
 * copied; the old copy is wiped and freed. Returns 0, -EINVAL when token
 * has a byte outside visible ASCII (0x21-0x7e: no client could send it),
 * or -ENOMEM; on failure the old token stays. Any thread, the server
 * running or not; never parks. */
int http_server_set_admin_token(http_server *srv, const char *token);

/* Graceful stop: stops accepting, closes idle keep-alive connections, lets
 * requests in flight finish and their responses be written (with
 * Connection: close) until deadline (absolute rt_now_ns() time); then shuts
 * the remaining sockets down and waits for their coroutines to leave
 * (handlers inside the service are not interrupted). Frees srv. Returns 0,
 * or -ETIMEDOUT if connections had to be cut at the deadline. Call from a
 * coroutine, once. */
int http_server_stop(http_server *srv, int64_t deadline);

/* The id of the request the calling coroutine serves: the X-Request-Id
 * its answer carries (the client's when it sent a usable one, else
 * "<connection hex>-<sequence hex>"). Copies it NUL-terminated into buf
 * (cut to cap - 1 bytes) and returns its length; outside a connection's
 * coroutine returns 0 with buf "". For the service's logs: call it from an
 * http_service function (the connection coroutine's local pointer,
 * rt_co_local(), belongs to the server). Any thread; never parks. */
size_t http_request_id(char *buf, size_t cap);

/* Appends the server's own metrics as Prometheus text: per-route request
 * counters by status code, per-route latency histograms, connection
 * gauges and counters. Series exist at zero before their first event:
 * each route with the codes api/openapi.yaml documents for it (501 only
 * for a route srv's service leaves unimplemented), see docs/metrics.md.
 * srv may be NULL (every route counts as implemented; counters are
 * process-wide: every server in the process adds to the same ones). Any
 * thread. Returns 0 or -ENOMEM. */
int http_metrics_append(const http_server *srv, kit_buf *out);

/* Constant-time comparison of two byte strings (time depends on the
 * lengths only). Returns 1 when equal. */
int http_consttime_eq(const void *a, size_t alen, const void *b, size_t blen);

#ifdef __cplusplus
}
#endif
#endif /* CACHESVC_HTTP_H */
