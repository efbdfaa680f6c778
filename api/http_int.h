/*
 * http_int.h: internals shared by api/'s own files. Not for other folders.
 */
#ifndef CACHESVC_HTTP_INT_H
#define CACHESVC_HTTP_INT_H

#include <http_parser.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "api/http.h"
#include "api/http_service.h"

/* ------------------------------------------------------------------------ */
/* Routes. The router's table is the single list of routes; the openapi    */
/* test compares it with api/openapi.yaml.                                  */

#define HTTP__ROUTES(X)                                                      \
    X(GET_ITEM, GET, "/v1/items/{sku}", 0)                                   \
    X(PUT_ITEM, PUT, "/v1/items/{sku}", 1)                                   \
    X(DECREMENT, POST, "/v1/items/{sku}/decrement", 0)                       \
    X(ORDER_BY_KEY, GET, "/v1/orders/by-key", 0)                             \
    X(AUDIT, GET, "/admin/items/{sku}/audit", 1)                             \
    X(GET_CONFIG, GET, "/admin/config", 1)                                   \
    X(PUT_CONFIG, PUT, "/admin/config", 1)                                   \
    X(PURGE_CACHE, POST, "/admin/cache/purge", 1)                            \
    X(METRICS, GET, "/metrics", 0)                                           \
    X(HEALTHZ, GET, "/healthz", 0)                                           \
    X(READYZ, GET, "/readyz", 0)

enum {
#define X(id, m, p, admin) HTTP__R_##id,
    HTTP__ROUTES(X)
#undef X
    HTTP__R_NONE,        /* no route: 404, 405, parse and limit errors */
    HTTP__R_COUNT
};

typedef struct http__route {
    const char *method;   /* GET routes also answer HEAD */
    int method_id;        /* the same as http-parser's enum http_method */
    const char *pattern;  /* segments; {name} captures one segment */
    int admin;
} http__route;

extern const http__route http__routes[HTTP__R_NONE];

#define HTTP__MAX_PARAMS 2
typedef struct http__match {
    int route;            /* HTTP__R_*; HTTP__R_NONE with status 404/405 */
    int status;           /* 0 when matched */
    char allow[48];       /* with 405: the Allow header value */
    const char *param[HTTP__MAX_PARAMS];   /* into the path; not NUL-ended */
    size_t param_len[HTTP__MAX_PARAMS];
    int nparams;
} http__match;

/* Matches method (http_parser enum) and path (no query) to a route. */
void http__route_match(int method, const char *path, size_t len,
                       http__match *m);

/* ------------------------------------------------------------------------ */
/* Requests and connections                                                  */

#define HTTP__MAX_HDRS 64

typedef struct http__hdr {
    uint32_t name_off, name_len, val_off, val_len;   /* from req_start */
} http__hdr;

typedef struct http__req {
    uint32_t url_off, url_len;
    uint32_t body_off, body_len; /* a chunked body is joined in place */
    uint32_t hdr_begin;          /* offset of the first header byte */
    uint32_t hdr_end;            /* offset just past the header section */
    uint32_t trailer_begin;      /* offset of the first trailer byte; 0 =
                                  * none seen */
    int nhdr;
    int last_was_value;
    int headers_done;
    int chunked;                 /* Transfer-Encoding: chunked */
    int done;                    /* message complete */
    int expect_continue;         /* Expect: 100-continue seen */
    int continue_sent;
    int err_status;              /* limit hit in a callback */
    const char *err_detail;      /* its detail (static), or NULL for the
                                  * status's usual one */
    http__hdr hdr[HTTP__MAX_HDRS];
} http__req;

enum { HTTP__MORE = 0, HTTP__FLUSH = 1, HTTP__CLOSE = 2 };

typedef struct http_conn http_conn;
struct http_conn {
    http_server *srv;
    int fd;
    uint64_t id;                 /* for X-Request-Id */
    uint64_t seq;
    char id_hex[16];             /* id in hex, formatted once (response.c) */
    uint8_t id_hex_len;          /* 0 until then */
    http_parser parser;
    /* The request being read and the read buffer are one block, owned,
     * allocated by the first read and given back between requests
     * (http__conn_release): req at its start, in just past it. */
    http__req *req;
    char *in;
    size_t in_len, in_cap;
    size_t req_start;            /* offset of the current request */
    size_t parsed;               /* bytes handed to the parser */
    kit_buf out;                /* owned response bytes not yet written */
    kit_buf body;               /* owned scratch for one response body */
    int closing;                 /* answer with Connection: close, then close */
    int64_t t_read;              /* rt_now_ns() of the last read */
    int64_t t_reply;             /* rt_now_ns() when the last answer was
                                  * formatted (starts the idle deadline) */
    /* Server bookkeeping (server.c). */
    http_conn *prev, *next;
    _Atomic int idle;            /* parked waiting for a new request */
    _Atomic int64_t expires;     /* rt_now_ns() deadline of the current
                                  * read; 0 = none (see the sweeper) */
    _Atomic int timed_out;       /* the sweeper shut the socket down */
};

struct http_server {
    http_server_config cfg;      /* copy; admin_token is NULL (the token
                                  * lives in token, under token_lock) */
    const http_service *svc;
    pthread_mutex_t token_lock;  /* guards token and token_len: the admin
                                  * check reads them under it, and
                                  * http_server_set_admin_token swaps them;
                                  * never held across a switching call */
    char *token;                 /* owned copy of the admin token or NULL */
    size_t token_len;
    /* Runtime side (server.c). */
    int port;
    int nlisten;
    int *lfd;
    struct rt_co **acceptors;
    struct rt_wg *conns_wg;
    struct rt_co *sweeper;       /* enforces read deadlines */
    struct rt_event *sweep_ev;
    int64_t sweep_ns;
    _Atomic int sweep_stop;
    pthread_mutex_t lock;        /* guards the list; never held across a
                                  * switching call */
    http_conn *conns;
    _Atomic int nconns;
    _Atomic int draining;
    _Atomic uint64_t next_conn_id;
    char overload[320];          /* the 503 answer at the connection cap */
    size_t overload_len;
};

/* Copies cfg (with defaults filled) and svc into srv, without any runtime
 * calls. Returns 0 or -ENOMEM. http__server_fini releases what it took. */
int http__server_init(http_server *srv, const http_server_config *cfg,
                      const http_service *svc);
void http__server_fini(http_server *srv);

/* Prepares c for srv (buffers allocated lazily). */
int http__conn_init(http_conn *c, http_server *srv);
void http__conn_fini(http_conn *c);
/* Gives back the read buffer and the response buffers of a connection
 * that holds no bytes (between requests, everything flushed): an idle
 * connection keeps only its struct. They are allocated again on use. */
void http__conn_release(http_conn *c);
/* Returns where the next read goes, growing the buffer as needed;
 * *room gets the free bytes. NULL on -ENOMEM. */
char *http__conn_read_ptr(http_conn *c, size_t *room);
/* Parses the bytes in c->in, answers every complete request into c->out.
 * Returns HTTP__MORE (needs more input), HTTP__FLUSH (flush c->out and call
 * again without reading) or HTTP__CLOSE (flush c->out, then close). */
int http__conn_process(http_conn *c);
/* True when bytes of an unfinished request are buffered. */
int http__conn_in_request(const http_conn *c);
/* True when the current request's headers are complete. */
int http__conn_headers_done(const http_conn *c);

/* Appends a full error response (envelope, headers) for status/code. */
void http__reply_error(http_conn *c, int route, int status, const char *code,
                       const char *detail, const char *extra_hdrs);

/* Handles one complete request (handlers.c). */
void http__dispatch(http_conn *c);
/* Whether svc implements route (a handler the dispatcher would call; it
 * answers 501 otherwise). Routes without a callback are always served. */
int http__implemented(const http_service *svc, int route);
/* Compares the n bytes at p with the admin token under token_lock, in
 * time that depends on the lengths only. Returns 1 on a match, 0 when
 * they differ, -1 when no token is configured (handlers.c). */
int http__admin_token_check(http_server *srv, const char *p, size_t n);

/* Response writing (response.c). */
/* Writes the current request's X-Request-Id (the client's when it sent a
 * usable one, else "<connection hex>-<sequence hex>") to out, which has
 * room for HTTP__REQUEST_ID_MAX bytes; returns its length (no NUL). */
#define HTTP__REQUEST_ID_MAX 64
size_t http__request_id(http_conn *c, char *out);
void http__reply(http_conn *c, int route, int status, const char *ctype,
                 const char *extra_hdrs, size_t extra_len, const char *body,
                 size_t body_len);
const char *http__reason(int status);

/* ------------------------------------------------------------------------ */
/* Metrics (metrics.c)                                                       */

void http__metrics_request(int route, int status, int64_t latency_ns);
#define HTTP__CONN_COUNTERS(X)                                               \
    X(connections_accepted, "Connections accepted")                         \
    X(connections_rejected,                                                 \
      "Connections answered 503 and closed at the connection cap")          \
    X(connections_timed_out,                                                \
      "Connections closed by the idle, header, body or write deadline")     \
    X(parse_errors, "Requests rejected as malformed or over a limit")
enum {
#define X(name, help) HTTP__C_##name,
    HTTP__CONN_COUNTERS(X)
#undef X
    HTTP__C_COUNT
};
void http__metrics_count(int counter);
void http__metrics_conns(int delta);

/* Request-id and Date helpers (response.c). */
size_t http__fmt_u64_hex(char *dst, uint64_t v);
size_t http__fmt_i64(char *dst, int64_t v);

/* ------------------------------------------------------------------------ */
/* Request bodies (json.c): one flat JSON object, read strictly.           */

#define HTTP__JSON_MAX_MEMBERS 32

enum { HTTP__J_STRING, HTTP__J_NUMBER, HTTP__J_TRUE, HTTP__J_FALSE, HTTP__J_NULL };

typedef struct http__jmember {
    const char *name;            /* unescaped, into the body; not NUL-ended */
    size_t name_len;
    int type;                    /* HTTP__J_* */
    const char *str;             /* a string's unescaped bytes, or a
                                  * number's text */
    size_t str_len;
    int int_ok;                  /* a number written as an integer that
                                  * fits int64_t: then i holds it */
    int64_t i;
} http__jmember;

typedef struct http__jobj {
    http__jmember m[HTTP__JSON_MAX_MEMBERS];
    int n;
    const char *err;             /* why the body was refused (static) */
    size_t err_at;               /* at which byte of the body */
} http__jobj;

/* Reads buf[0, len) as one JSON object whose members are all scalars
 * (RFC 8259 syntax; no duplicate names, no \u0000, valid UTF-8, nothing
 * but whitespace after it). Strings are unescaped in place, so buf is
 * changed and the members point into it. Returns 0, or -1 with o->err and
 * o->err_at set. Constant stack use, no allocation. */
int http__json_object(char *buf, size_t len, http__jobj *o);
/* The member called name, or NULL. */
const http__jmember *http__json_get(const http__jobj *o, const char *name);

#endif /* CACHESVC_HTTP_INT_H */
