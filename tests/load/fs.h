/*
 * fs.h: the flash-sale load tester's internal interfaces.
 *
 * The tester is split in two layers. The pure layer (fs_hist.c,
 * fs_stale.c, fs_verify.c, fs_opts.c, fs_json.c, fs_report.c) knows nothing
 * about the network or the runtime and is what the unit tests exercise. The
 * driver layer (fs_client.c, fs_run.c, main.c) speaks HTTP/1.1 on the
 * runtime and feeds the pure layer.
 *
 * Errors follow the project's convention: 0 or a count on success, a
 * negative errno on failure.
 */
#ifndef CACHESVC_FS_H
#define CACHESVC_FS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define FS_MAX_TARGETS 16
#define FS_MAX_WINDOWS 8
#define FS_MAX_FAULTS 64
#define FS_MAX_SWEEP 16
#define FS_SKU_MAX 64

/* ------------------------------------------------------------------------ */
/* Log-linear histogram (HdrHistogram-like)                                  */

/*
 * Values (nanoseconds here, but any uint64) fall into buckets whose width
 * doubles every octave; each octave holds 2^(sub_bits-1) linear sub-buckets,
 * so a reported value is within 1 / 2^(sub_bits-1) of the true one
 * (sub_bits = 10: 0.2 %). Values at or above 2^max_bits are clamped into the
 * top bucket; the exact maximum and minimum are kept apart. Recording is
 * lock-free (relaxed atomics) and callable from any thread; reading while
 * others record gives a consistent-enough snapshot for progress lines.
 */
typedef struct fs_hist {
    int sub_bits;
    int max_bits;
    size_t nbuckets;
    _Atomic uint64_t *counts;
    _Atomic uint64_t total;
    _Atomic uint64_t sum;
    _Atomic uint64_t max;
    _Atomic uint64_t min;
} fs_hist;

/* Allocates the buckets; 2 <= sub_bits <= 16, sub_bits < max_bits <= 63.
 * Returns 0, -EINVAL or -ENOMEM. The caller owns h and frees it with
 * fs_hist_free(). */
int fs_hist_init(fs_hist *h, int sub_bits, int max_bits);
void fs_hist_free(fs_hist *h);
void fs_hist_reset(fs_hist *h);
void fs_hist_record(fs_hist *h, uint64_t v);
void fs_hist_record_n(fs_hist *h, uint64_t v, uint64_t n);
/* Adds every count of src into dst; both must have the same shape
 * (-EINVAL otherwise). */
int fs_hist_merge(fs_hist *dst, const fs_hist *src);
uint64_t fs_hist_count(const fs_hist *h);
uint64_t fs_hist_max(const fs_hist *h);
uint64_t fs_hist_min(const fs_hist *h);   /* 0 when empty */
double fs_hist_mean(const fs_hist *h);
/* The value at percentile p (0..100): the highest value equivalent to the
 * bucket holding the ceil(p% * count)-th smallest recording, capped at the
 * exact maximum. 0 when empty. */
uint64_t fs_hist_percentile(const fs_hist *h, double p);
/* Bucket helpers, exposed for tests and for the percentile curve. */
size_t fs_hist_index(const fs_hist *h, uint64_t v);
uint64_t fs_hist_lowest(const fs_hist *h, size_t idx);
uint64_t fs_hist_highest(const fs_hist *h, size_t idx);

/* ------------------------------------------------------------------------ */
/* Staleness tracker                                                         */

/*
 * Per item, the tracker keeps the committed versions the tester has seen
 * and the monotonic time at which it first knew each one (a version is
 * known once a decrement acknowledging it, an admin write returning it, or
 * a read returning it has been received). Only the frontier is stored: a
 * sequence with strictly increasing time and strictly increasing version.
 *
 * A read sent at t_sent that returned version r has staleness age
 *   t_sent - (first time a version > r was known)
 * when that time precedes t_sent, otherwise 0. The read is stale for
 * window W when its age exceeds W: a version newer than the returned one
 * had been committed more than W before the read was sent. Counts are kept
 * per target (service instance) and per window.
 *
 * All calls are thread-safe (one mutex per item).
 */
typedef struct fs_stale_pt {
    int64_t t;
    int64_t v;
} fs_stale_pt;

typedef struct fs_stale_item {
    pthread_mutex_t mu;
    fs_stale_pt *pts;
    size_t n, cap;
} fs_stale_item;

typedef struct fs_stale {
    int nitems;
    int ntargets;
    int nwin;
    int64_t win_ns[FS_MAX_WINDOWS];
    fs_stale_item *items;
    _Atomic uint64_t reads[FS_MAX_TARGETS];
    _Atomic uint64_t stale[FS_MAX_TARGETS][FS_MAX_WINDOWS];
    fs_hist age;   /* ages of stale (age > 0) reads, ns */
} fs_stale;

/* win_ms: nwin (<= FS_MAX_WINDOWS) windows in milliseconds, ascending.
 * Returns 0, -EINVAL or -ENOMEM. */
int fs_stale_init(fs_stale *s, int nitems, int ntargets, const int64_t *win_ms, int nwin);
void fs_stale_free(fs_stale *s);
/* Records that version v of item was known to be committed at time t. */
void fs_stale_commit(fs_stale *s, int item, int64_t v, int64_t t);
/* Evaluates a read of item answered by target, then records its version as
 * committed at t_recv. Returns its staleness age in ns (0 = fresh). */
int64_t fs_stale_read(fs_stale *s, int item, int target, int64_t v, int64_t t_sent, int64_t t_recv);
uint64_t fs_stale_count(const fs_stale *s, int target, int win);   /* target -1: all */
uint64_t fs_stale_reads(const fs_stale *s, int target);             /* target -1: all */

/* ------------------------------------------------------------------------ */
/* Verification                                                              */

/* One audit as GET /admin/items/{sku}/audit?orders=true returns it. */
typedef struct fs_audit {
    int64_t stock, version, units_supplied, units_sold, orders;
    int64_t max_user_qty, duplicate_idempotency_keys;
    int has_order_ids;
    int64_t *order_ids;   /* owned; sorted by fs_audit_parse */
    size_t norder_ids;
} fs_audit;

/* An order the service acknowledged with 200. */
typedef struct fs_ack {
    int64_t order_id;
    int32_t user;
    int32_t qty;
    int32_t at_ms;             /* when the answer came, from the sale's start */
    int16_t target;            /* the instance that answered */
    uint8_t attempt;           /* 0 = first try */
    uint8_t replayed;          /* answered from the idempotency record */
} fs_ack;

typedef struct fs_verify_in {
    const char *sku;
    int64_t per_user_limit;    /* 0 = none */
    const fs_audit *before;    /* after seeding, before the sale; NULL = empty */
    const fs_audit *after;
    fs_ack *acks;              /* sorted in place by fs_verify */
    size_t nacks;
    int64_t unknown_units;     /* units of buys whose outcome never became known */
} fs_verify_in;

/* Every field but passed counts violations; each must be 0. */
typedef struct fs_verify_out {
    int64_t oversold;          /* units sold beyond units supplied, or negative stock */
    int64_t ledger_mismatch;   /* |units_supplied - units_sold - stock| */
    int64_t lost;              /* acknowledged orders the database does not have */
    int64_t duplicates;        /* duplicate idempotency keys + order ids acknowledged twice */
    int64_t limit_violations;  /* users above the per-user limit */
    int64_t phantom_units;     /* units sold that no acknowledged or in-doubt buy explains */
    int64_t acked_units;
    int64_t sold_units;        /* during the sale, from the audits */
    fs_ack lost_first[4];      /* the first min(lost, 4) lost orders */
    int audit_failed;          /* the audit could not be read: nothing verified */
    int passed;
} fs_verify_out;

void fs_verify(const fs_verify_in *in, fs_verify_out *out);
void fs_audit_free(fs_audit *a);
/* Parses an audit JSON body. Returns 0 or -EINVAL (a field missing or not
 * a number) / -ENOMEM. On success the caller owns a (fs_audit_free). */
int fs_audit_parse(const char *body, size_t len, fs_audit *a);

/* ------------------------------------------------------------------------ */
/* Flat JSON field scanning for hot-path responses                            */

/*
 * The service's response bodies are flat objects whose strings never
 * contain quotes or backslashes (docs/api.md restricts skus and user ids).
 * These find a top-level "key": and read its value without building a tree.
 * Return 0, or -ENOENT when the key is absent, -EINVAL when the value has
 * the wrong type.
 */
int fs_json_int(const char *s, size_t n, const char *key, int64_t *out);
int fs_json_bool(const char *s, size_t n, const char *key, int *out);
int fs_json_str(const char *s, size_t n, const char *key, char *out, size_t outsz);

/* ------------------------------------------------------------------------ */
/* Whole HTTP/1.1 responses in one buffer (the tester's fast path)            */

/* What fs_http_simple read: body points into the buffer. */
typedef struct fs_http_simple_resp {
    int status;
    int keep_alive;
    const char *body;
    size_t body_len;
    const char *xcache;    /* X-Cache value, not terminated; NULL if absent */
    size_t xcache_len;
} fs_http_simple_resp;

/* Reads b[0..n) as one complete HTTP/1.1 response with a Content-Length
 * body and nothing after it: the common case of a small answer read in
 * one go. Returns 1 and fills out, or 0 when b is anything else (partial,
 * chunked, HTTP/1.0, malformed, more than one response...), in which case
 * the caller parses it with the full parser. */
int fs_http_simple(const char *b, size_t n, fs_http_simple_resp *out);

/* ------------------------------------------------------------------------ */
/* Options                                                                   */

typedef struct fs_target {
    char host[64];
    int port;
    char url[128];
} fs_target;

/* One fault of a --nemesis schedule: at at_ms after the traffic starts the
 * command runs (sh -c); the fault's window lasts until it returns (so a
 * command that pauses something and resumes it spans the pause). */
typedef struct fs_fault {
    int64_t at_ms;
    char name[32];
    char cmd[512];
} fs_fault;

typedef struct fs_opts {
    fs_target targets[FS_MAX_TARGETS];
    int ntargets;
    char **skus;               /* owned; nskus names */
    int nskus;
    int skus_generated;        /* names made from sku_prefix, fresh per round */
    char sku_prefix[32];
    int64_t stock;
    int64_t per_user_limit;
    int64_t sale_start_ms;     /* the sale opens this long after seeding */
    int64_t users;
    double skew;               /* Zipf exponent of buys and reads over items */
    double read_ratio;
    int64_t qty;
    int connections;
    double duration_s;         /* 0 = use requests */
    int64_t requests;          /* 0 = use duration */
    double rate;               /* total requests/s; 0 = closed loop */
    char admin_token[256];
    int64_t timeout_ms;
    int retries;
    int64_t windows_ms[FS_MAX_WINDOWS];
    int nwindows;
    int64_t sweep_ms[FS_MAX_SWEEP];
    int nsweep;
    int64_t settle_ms;         /* pause before the audit, for in-flight work */
    char json_path[512];
    char plot_path[512];
    int workers;
    uint64_t seed;
    int no_seed;               /* items exist already: skip the PUTs */
    int no_verify;
    int no_keys;               /* buys without Idempotency-Key (never retried) */
    int quiet;                 /* no progress line */
    int kv;                    /* name=value summary on stdout */
    fs_fault faults[FS_MAX_FAULTS];   /* --nemesis FILE, by at_ms */
    int nfaults;
    int64_t fault_grace_ms;    /* a window lasts this long after its command */
    int limit_every;           /* per_user_limit on every K-th item (0, K, 2K...) */
    double restock_at_s;       /* 0 = no restock in the run */
    int64_t restock_units;     /* added to every second item (1, 3, 5...) */
} fs_opts;

/* The per-user limit item i is seeded with. */
int64_t fs_opts_item_limit(const fs_opts *o, int item);

/* Fills defaults, then parses argv. Returns 0, 1 when --help was printed
 * (to out), or -EINVAL after printing the reason to err. Whatever it
 * returns, the caller owns o and releases it with fs_opts_free(). */
int fs_opts_parse(fs_opts *o, int argc, char **argv, FILE *out, FILE *err);
void fs_opts_free(fs_opts *o);
/* Splits "http://host:port[/]" into t. Returns 0 or -EINVAL. */
int fs_target_parse(fs_target *t, const char *url);
/* Names the skus of a sweep round (round < 0: a single run). Returns 0 or
 * -ENOMEM. */
int fs_opts_name_skus(fs_opts *o, int round, const char *run_id);

/* ------------------------------------------------------------------------ */
/* Outcomes, results, report                                                 */

/* Outcome of one request as the tester classifies it. X-macro: a new
 * outcome is one line. ok marks the outcomes that are not errors. */
#define FS_OUTCOMES(X)                                            \
    X(OK, "200", 1)                                               \
    X(REPLAYED, "200 replayed", 1)                                \
    X(SOLD_OUT, "409 sold_out", 1)                                \
    X(INSUFFICIENT, "409 insufficient_stock", 1)                  \
    X(LIMIT, "409 limit_exceeded", 1)                             \
    X(NOT_STARTED, "425 sale_not_started", 1)                     \
    X(OVERLOADED, "429 overloaded", 1)                            \
    X(NOT_FOUND, "404 not_found", 0)                              \
    X(BAD_REQUEST, "400 bad_request", 0)                          \
    X(UNAVAILABLE, "503 unavailable", 0)                          \
    X(UNKNOWN, "503 outcome_unknown", 0)                          \
    X(OTHER_4XX, "4xx other", 0)                                  \
    X(OTHER_5XX, "5xx other", 0)                                  \
    X(TIMEOUT, "timeout", 0)                                      \
    X(CONN_ERROR, "connection error", 0)                          \
    X(BAD_RESPONSE, "bad response", 0)

typedef enum fs_outcome {
#define FS_X(name, label, ok) FS_O_##name,
    FS_OUTCOMES(FS_X)
#undef FS_X
    FS_O_COUNT
} fs_outcome;

const char *fs_outcome_label(fs_outcome o);
int fs_outcome_ok(fs_outcome o);
/* Classifies a status and the body's "error" code. */
fs_outcome fs_outcome_classify(int status, const char *error_code, int replayed);

enum { FS_ROUTE_GET = 0, FS_ROUTE_BUY = 1, FS_ROUTES = 2 };
enum { FS_TIER_LOCAL = 0, FS_TIER_REDIS, FS_TIER_DB, FS_TIER_NONE, FS_TIERS };

/* One second of the run, for the progress line and the plot. The first
 * FS_FINE_SLOTS * 100 ms of a run are also kept per 100 ms: a short run
 * (the demo's takes a few seconds) is plotted at that resolution. */
#define FS_FINE_NS 100000000
#define FS_FINE_SLOTS 600
typedef struct fs_slot {
    _Atomic uint64_t requests;
    _Atomic uint64_t errors;
    _Atomic uint64_t sold;
    _Atomic uint64_t sold_out;
    _Atomic uint64_t stale;           /* reads staler than the plot's window */
    fs_hist lat;                      /* coarse: sub_bits 6 */
    fs_hist due_lat;                  /* the latencies of the requests due in
                                       * the interval (intended send time),
                                       * whenever answered; sub_bits 6 */
} fs_slot;

/* Everything measured in one run (one round of a sweep). */
typedef struct fs_result {
    char label[64];                   /* "" or "delay=200ms" */
    int64_t delay_ms;                 /* -1 when not a sweep round */
    double elapsed_s;
    double cpu_s;                     /* the tester's own CPU (user + system)
                                       * while the traffic ran */
    fs_hist lat[FS_ROUTES];           /* ns, from intended send time */
    fs_hist all;
    fs_hist send_lag;                 /* ns from intended to actual send, of
                                       * requests whose connection was free
                                       * when they were due */
    _Atomic uint64_t busy_sends;      /* requests due while their connection
                                       * awaited an earlier answer */
    _Atomic int64_t last_sent_ns;     /* since t0_ns: the latest send; -1
                                       * before any */
    _Atomic uint64_t outcomes[FS_ROUTES][FS_O_COUNT];
    _Atomic uint64_t tiers[FS_MAX_TARGETS][FS_TIERS];
    _Atomic uint64_t retries;
    _Atomic uint64_t sold_units;
    _Atomic int64_t last_sale_ns;     /* since t0_ns: the last acknowledged
                                       * buy's answer; -1 before any */
    _Atomic uint64_t requests_at_last_sale;
    fs_stale stale;
    _Atomic(fs_slot *) *slots;        /* per second; allocated lazily */
    size_t nslots;
    _Atomic(fs_slot *) *fine;         /* per 100 ms, FS_FINE_SLOTS; lazily */
    int64_t t0_ns;
    /* verification, one per sku */
    fs_verify_out *verify;            /* nverify, one per sku */
    char (*verify_sku)[FS_SKU_MAX + 1];
    int nverify;
    int verified;                     /* 0 when --no-verify */
    int verify_failed;
    /* The nemesis: each fault's window (ns since t0; end 0 while it runs),
     * the command's exit status, the errors answered while it was the
     * latest fault and its window (plus grace) was open, and the last of
     * them. Reads sent inside any window (plus grace) are counted apart. */
    int64_t fault_start_ns[FS_MAX_FAULTS], fault_end_ns[FS_MAX_FAULTS];
    int fault_rc[FS_MAX_FAULTS];
    _Atomic uint64_t fault_errors[FS_MAX_FAULTS];
    _Atomic int64_t fault_last_error_ns[FS_MAX_FAULTS];
    _Atomic uint64_t reads_in_faults;
    _Atomic uint64_t stale_in_faults[FS_MAX_WINDOWS];
    _Atomic int64_t max_age_in_faults_ns, max_age_outside_ns;
    int restocked;                    /* items restocked during the run */
    int64_t t0_wall_ms;               /* the sale's start, Unix ms (for the logs) */
    /* The instances' own consistency monitor over the round (sweeps only):
     * checks and violations summed over the targets. */
    int monitor_seen;                 /* 0: no target exports it */
    int64_t monitor_checks, monitor_violations;
} fs_result;

int fs_result_init(fs_result *r, const fs_opts *o, size_t max_seconds);
void fs_result_free(fs_result *r);
/* The slot of second sec, allocated on first use (thread-safe); NULL past
 * the end or when out of memory. */
fs_slot *fs_result_slot(fs_result *r, size_t sec);
/* The same per 100 ms: interval idx of the run's first FS_FINE_SLOTS. */
fs_slot *fs_result_fine_slot(fs_result *r, size_t idx);
/* Records one answer received at t (ns since the run's start) into the
 * second and the 100 ms that hold it. */
void fs_result_tick(fs_result *r, int64_t t, uint64_t lat_ns, int error, uint64_t sold,
                    int sold_out);
/* Records one request due at intended and written at sent (ns since the
 * run's start; sent < 0 when it never left) whose answer took lat_ns from
 * intended: the latency into the interval it was due in, and how late it
 * left into send_lag, unless busy: its connection was still awaiting an
 * earlier answer when it was due, so the wait was the service's (counted
 * in busy_sends instead). */
void fs_result_due(fs_result *r, int64_t intended, int64_t sent, uint64_t lat_ns, int busy);
/* Counts a read sent at t (ns since t0) that was staler than the plotted
 * window (the second --stale-windows value, or the only one). */
void fs_result_stale_tick(fs_result *r, int64_t t);
uint64_t fs_result_requests(const fs_result *r);
uint64_t fs_result_errors(const fs_result *r);
double fs_result_rps(const fs_result *r);
/* The tester's CPU per request in microseconds: on a machine it shares
 * with the service it caps the throughput it can measure. */
double fs_result_cpu_us_per_request(const fs_result *r);
/* Notes a buy acknowledged at t (ns since the run's start), once its
 * answer is counted: where the selling phase ends. */
void fs_result_sale(fs_result *r, int64_t t);
/* The selling phase (until the last acknowledged buy) and what followed:
 * its length in s and both throughputs. Returns 0, or -ENOENT when nothing
 * was sold. */
int fs_result_phases(const fs_result *r, double *sell_s, double *sell_rps, double *after_rps);
/* Percentile p of the latencies of the requests due in the selling phase
 * (*sell) and after it (*after), split at the interval holding the last
 * acknowledged buy (that interval counts as selling): per 100 ms when the
 * run fits in FS_FINE_SLOTS of them, else per second. Returns 0, -ENOENT
 * when nothing was sold, or -ENOMEM. */
int fs_result_phase_percentile(const fs_result *r, double p, uint64_t *sell, uint64_t *after);
/* Requests sent per second from the start to the latest send, counting
 * the latest as taking 1/rate: exactly rate when every request left on
 * time. 0 when nothing was sent or rate <= 0. */
double fs_result_sent_rate(const fs_result *r, double rate);
/* Hit ratio of Redis among reads that missed the local cache, and database
 * reads per second, from the X-Cache headers. */
double fs_result_redis_hit_ratio(const fs_result *r);
double fs_result_db_reads_per_s(const fs_result *r);

/* Human-readable report of one run. */
void fs_report_text(FILE *f, const fs_opts *o, const fs_result *r);
/* The operator's tuning table of a sweep. */
void fs_report_sweep(FILE *f, const fs_opts *o, fs_result *const *rs, int n);
/* name=value lines (the benchmark's interface). */
void fs_report_kv(FILE *f, const fs_opts *o, fs_result *const *rs, int n);
/* JSON summary of every run. Returns 0 or a negative errno. */
int fs_report_json(const char *path, const fs_opts *o, fs_result *const *rs, int n);
/* Renders the plot with gnuplot (one run: throughput and latency over
 * time and the percentile curve; a sweep: stale reads and latency per
 * delay). Returns 0, or a negative errno (-ENOENT when gnuplot is missing). */
int fs_report_plot(const char *path, const fs_opts *o, fs_result *const *rs, int n);
/* The gnuplot script of fs_report_plot, written to sc; its data files are
 * written into the directory dir. Returns 0 or a negative errno. */
int fs_report_plot_script(FILE *sc, const char *dir, const char *path, const fs_opts *o,
                          fs_result *const *rs, int n);

/* ------------------------------------------------------------------------ */
/* Driver: HTTP/1.1 keep-alive client on the runtime (fs_client.c)           */

/* A response as fs_conn_request returns it. body points into the
 * connection's buffer and stays valid until the next call on it. */
typedef struct fs_http_resp {
    int status;
    int tier;            /* FS_TIER_* from X-Cache */
    const char *body;
    size_t body_len;
} fs_http_resp;

typedef struct fs_conn fs_conn;

/* A connection to t, dialled lazily by the first request and re-dialled
 * after a failure. The caller owns it (fs_conn_free). NULL on ENOMEM.
 * One coroutine at a time may use a connection. */
fs_conn *fs_conn_new(const fs_target *t);
void fs_conn_free(fs_conn *c);
/* Sends one request and reads its response. extra_headers is "" or
 * complete "Name: value\r\n" lines. Returns 0, or a negative errno:
 * -ETIMEDOUT, -ECONNREFUSED, -ECONNRESET / -EPIPE (the connection broke),
 * -EPROTO (a response that is not HTTP/1.1); the connection is then closed
 * and the next request dials again. *t_sent is set to when the first
 * byte was written (monotonic ns). */
int fs_conn_request(fs_conn *c, const char *method, const char *path, const char *extra_headers,
                    const char *body, size_t body_len, int64_t deadline, int64_t *t_sent,
                    fs_http_resp *out);
/* Sends req[0..len), a complete request the caller formatted (the hot path
 * formats its requests without the printf family), and reads the answer,
 * as fs_conn_request. idempotent: the request may be sent once more when a
 * kept-alive connection turns out closed before any answer. */
int fs_conn_send(fs_conn *c, const char *req, size_t len, int idempotent, int64_t deadline,
                 int64_t *t_sent, fs_http_resp *out);
/* Dials c now unless it is connected. Returns 0 or a negative errno (the
 * next request then dials again). */
int fs_conn_dial(fs_conn *c, int64_t deadline);
/* Closes the socket (the next request dials again). */
void fs_conn_close(fs_conn *c);

/* Driver: one run of the scenario (fs_run.c). Set by SIGINT: stop early. */
extern atomic_int fs_interrupted;
/* Runs every round (one, or one per --sweep-delay value), prints the
 * reports and returns the exit status: 0 every check passed, 1 a check
 * failed, 2 setup failed, 130 interrupted (what ran verified). Call from a
 * coroutine. */
int fs_run_all(fs_opts *o);

#endif /* CACHESVC_FS_H */
