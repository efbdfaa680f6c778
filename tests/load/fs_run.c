/*
 * fs_run.c: the scenario. Seeds the items through the admin API, drives
 * the buyers over keep-alive connections (closed loop, or open loop at a
 * fixed arrival rate with latency counted from each request's intended
 * send time), feeds the histograms and the staleness tracker, audits and
 * verifies, and repeats per invalidation delay when sweeping.
 */
#include "fs.h"
#include "kit/kit.h"

#include <errno.h>
#include <math.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "runtime/rt.h"

atomic_int fs_interrupted;

/* Acknowledged orders of one item, appended by every connection. */
typedef struct sku_acks {
    pthread_mutex_t mu;
    fs_ack *v;
    size_t n, cap;
    _Atomic int64_t unknown_units;
} sku_acks;

typedef struct fs_bytes {
    char *p;
    size_t n;
} fs_bytes;

typedef struct run {
    fs_opts *o;
    fs_result *r;
    const char *run_id;
    int round;
    double *cdf;              /* Zipf over items, nskus entries */
    sku_acks *acks;
    /* Request bytes that never change, per (target, item), index
     * target * nskus + item: the whole stock read, and a buy's request
     * line and fixed headers. */
    fs_bytes *get_req, *buy_head;
    int64_t t0, end_ns;
    _Atomic int64_t next_req;
    rt_event *tick;           /* wakes the progress coroutine at the end */
    rt_wg *gate;              /* the connections start when it opens (t0) */
    atomic_int abort;         /* set before the gate opens: start nothing */
    atomic_int finished;
    /* The nemesis: faults whose command runs, the end of the last window's
     * grace (rt_now_ns), the latest fault started (-1 before any). */
    atomic_int faults_active;
    _Atomic int64_t fault_open_until;
    atomic_int cur_fault;
} run;

typedef struct conn_arg {
    run *run;
    int idx;
    fs_conn *c;               /* handed to the connection's coroutine,
                               * which frees it and clears this */
} conn_arg;

/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */

static uint64_t rng_next(uint64_t *s)
{
    /* splitmix64: small state, good enough for picking buyers. */
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double rng_unit(uint64_t *s)
{
    return (double)(rng_next(s) >> 11) * (1.0 / 9007199254740992.0);
}

static int pick_item(const run *rn, uint64_t *s)
{
    int n = rn->o->nskus;
    if (n == 1)
        return 0;
    double u = rng_unit(s);
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (rn->cdf[mid] < u)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Appends n bytes at *p. */
static void put(char **p, const char *s, size_t n)
{
    memcpy(*p, s, n);
    *p += n;
}

/* Appends the decimal form of v at *p (no printf on the hot path). */
static void put_i64(char **p, int64_t v)
{
    char tmp[24], *end = tmp + sizeof(tmp), *d = end;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do
        *--d = (char)('0' + u % 10);
    while ((u /= 10) != 0);
    if (v < 0)
        *--d = '-';
    put(p, d, (size_t)(end - d));
}

/* CPU time of the whole process (every worker), user + system, seconds. */
static double process_cpu_s(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) < 0)
        return 0.0;
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static void auth_header(const fs_opts *o, char *buf, size_t n)
{
    snprintf(buf, n, "Authorization: Bearer %s\r\n", o->admin_token);
}

/* One admin request on c. Admin requests are idempotent (PUT of an item or
 * of the config sets absolute values; GETs read), so a transport failure is
 * retried on a fresh connection, up to 3 attempts of at most 10 s each (or
 * --timeout when longer). Returns the status (> 0) or a negative errno. */
static int admin_call(fs_conn *c, const fs_opts *o, const char *method, const char *path,
                      const char *body, fs_http_resp *resp)
{
    char auth[320];
    int64_t sent;
    int rc = -EIO;
    auth_header(o, auth, sizeof(auth));
    for (int attempt = 0; attempt < 3; attempt++) {
        if (attempt > 0) {
            fprintf(stderr, "flashsale: %s %s: %s, retrying\n", method, path, rt_strerror(rc));
            rt_sleep(100 * attempt);
        }
        rc = fs_conn_request(c, method, path, auth, body, body ? strlen(body) : 0,
                             rt_deadline_ms(o->timeout_ms > 10000 ? o->timeout_ms : 10000),
                             &sent, resp);
        if (rc == 0)
            return resp->status;
        if (rc == -ENOMEM)
            break;
    }
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Recording                                                                 */

/* 1 when t (rt_now_ns) lies in a fault's window or its grace. */
static int in_fault(run *rn, int64_t t)
{
    return atomic_load_explicit(&rn->faults_active, memory_order_relaxed) > 0 ||
           t < atomic_load_explicit(&rn->fault_open_until, memory_order_relaxed);
}

static void atomic_max(_Atomic int64_t *a, int64_t v)
{
    int64_t cur = atomic_load_explicit(a, memory_order_relaxed);
    while (v > cur && !atomic_compare_exchange_weak(a, &cur, v))
        ;
}

/* When a request was due and whether its connection was still awaiting
 * an earlier answer then (its wait is the service's, not the tester's). */
typedef struct due {
    int64_t at;               /* rt_now_ns */
    int busy;
} due;

/* Records one answer: the request was due at d.at, left at sent (-1:
 * never) and was answered (or given up) at t_recv, all rt_now_ns. */
static void record(run *rn, int route, fs_outcome oc, due d, int64_t sent, int64_t t_recv,
                   int64_t sold)
{
    int64_t intended = d.at;
    fs_result *r = rn->r;
    if (rn->o->nfaults > 0 && !fs_outcome_ok(oc) && in_fault(rn, t_recv)) {
        int f = atomic_load(&rn->cur_fault);
        if (f >= 0) {
            atomic_fetch_add_explicit(&r->fault_errors[f], 1, memory_order_relaxed);
            atomic_max(&r->fault_last_error_ns[f], t_recv - rn->t0);
        }
    }
    uint64_t lat = t_recv > intended ? (uint64_t)(t_recv - intended) : 0;
    atomic_fetch_add_explicit(&r->outcomes[route][oc], 1, memory_order_relaxed);
    fs_hist_record(&r->lat[route], lat);
    fs_hist_record(&r->all, lat);
    fs_result_tick(r, t_recv - rn->t0, lat, !fs_outcome_ok(oc), (uint64_t)sold,
                   oc == FS_O_SOLD_OUT);
    fs_result_due(r, intended - rn->t0, sent < 0 ? -1 : sent - rn->t0, lat, d.busy);
    if (sold)
        fs_result_sale(r, t_recv - rn->t0);
}

static void add_ack(sku_acks *a, fs_ack ack)
{
    pthread_mutex_lock(&a->mu);
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 1024;
        fs_ack *v = realloc(a->v, cap * sizeof(*v));
        if (v == NULL) {
            pthread_mutex_unlock(&a->mu);
            fprintf(stderr, "flashsale: out of memory recording an order\n");
            abort();
        }
        a->v = v;
        a->cap = cap;
    }
    a->v[a->n++] = ack;
    pthread_mutex_unlock(&a->mu);
}

static fs_outcome transport_outcome(int err)
{
    return err == -ETIMEDOUT ? FS_O_TIMEOUT : FS_O_CONN_ERROR;
}

/* ------------------------------------------------------------------------ */
/* The buyers                                                                */

/* A read due at d; returns when its answer came (rt_now_ns). */
static int64_t do_read(run *rn, fs_conn *c, int target, int item, due d)
{
    fs_result *r = rn->r;
    fs_http_resp resp;
    const fs_bytes *req = &rn->get_req[target * rn->o->nskus + item];
    int64_t sent = -1;
    int rc = fs_conn_send(c, req->p, req->n, 1, rt_deadline_ms(rn->o->timeout_ms), &sent, &resp);
    int64_t recv = rt_now_ns();
    if (rc < 0) {
        record(rn, FS_ROUTE_GET, transport_outcome(rc), d, sent, recv, 0);
        return recv;
    }
    fs_outcome oc;
    if (resp.status == 200) {
        int64_t version;
        if (fs_json_int(resp.body, resp.body_len, "version", &version) == 0) {
            oc = FS_O_OK;
            int64_t age = fs_stale_read(&r->stale, item, target, version, sent, recv);
            if (r->stale.nwin > 0 && age > r->stale.win_ns[r->stale.nwin > 1 ? 1 : 0])
                fs_result_stale_tick(r, sent - rn->t0);
            if (rn->o->nfaults > 0) {
                int in = in_fault(rn, sent);
                if (in) {
                    atomic_fetch_add_explicit(&r->reads_in_faults, 1, memory_order_relaxed);
                    for (int w = 0; w < r->stale.nwin; w++)
                        if (age > r->stale.win_ns[w])
                            atomic_fetch_add_explicit(&r->stale_in_faults[w], 1,
                                                      memory_order_relaxed);
                }
                atomic_max(in ? &r->max_age_in_faults_ns : &r->max_age_outside_ns, age);
            }
        } else {
            oc = FS_O_BAD_RESPONSE;
        }
        atomic_fetch_add_explicit(&r->tiers[target][resp.tier], 1, memory_order_relaxed);
    } else {
        char err[40] = "";
        fs_json_str(resp.body, resp.body_len, "error", err, sizeof(err));
        oc = fs_outcome_classify(resp.status, err, 0);
    }
    record(rn, FS_ROUTE_GET, oc, d, sent, recv, 0);
    return recv;
}

/* Longest buy request: the fixed head (request line and Host with a
 * 64-byte sku and host) plus key, length and body. */
#define BUY_REQ_MAX 768

/* A buy due at d; returns when its last answer came (rt_now_ns). */
static int64_t do_buy(run *rn, fs_conn *c, int target, int conn_idx, int64_t k, int item,
                      int32_t user, due d)
{
    fs_result *r = rn->r;
    const fs_opts *o = rn->o;
    const fs_bytes *head = &rn->buy_head[target * o->nskus + item];
    char req[BUY_REQ_MAX], body[64], *p = body;
    put(&p, "{\"user_id\":\"u", 13);
    put_i64(&p, user);
    put(&p, "\",\"qty\":", 8);
    put_i64(&p, o->qty);
    *p++ = '}';
    size_t bl = (size_t)(p - body);
    p = req;
    put(&p, head->p, head->n);
    if (!o->no_keys) {
        put(&p, "Idempotency-Key: ", 17);
        put(&p, rn->run_id, strlen(rn->run_id));
        *p++ = '-';
        put_i64(&p, rn->round);
        *p++ = '-';
        put_i64(&p, conn_idx);
        *p++ = '-';
        put_i64(&p, k);
        put(&p, "\r\n", 2);
    }
    put(&p, "Content-Length: ", 16);
    put_i64(&p, (int64_t)bl);
    put(&p, "\r\n\r\n", 4);
    put(&p, body, bl);
    size_t len = (size_t)(p - req);
    fs_outcome oc = FS_O_CONN_ERROR;
    int64_t recv = 0, sold = 0, first_sent = -1;
    fs_conn *alt = NULL, *via = c;    /* retries after a transport error go to
                                       * the next instance: this one may be
                                       * gone */
    int alt_target = target;
    for (int attempt = 0;; attempt++) {
        fs_http_resp resp;
        int64_t sent = -1;
        int rc = fs_conn_send(via, req, len, 0, rt_deadline_ms(o->timeout_ms), &sent, &resp);
        recv = rt_now_ns();
        if (attempt == 0)
            first_sent = sent;
        int in_doubt;
        if (rc < 0) {
            oc = transport_outcome(rc);
            in_doubt = 1;
        } else {
            char err[40] = "";
            int replayed = 0;
            if (resp.status != 200)
                fs_json_str(resp.body, resp.body_len, "error", err, sizeof(err));
            else
                fs_json_bool(resp.body, resp.body_len, "replayed", &replayed);
            oc = fs_outcome_classify(resp.status, err, replayed);
            in_doubt = oc == FS_O_UNKNOWN;
            if (resp.status == 200) {
                int64_t order_id, version;
                if (fs_json_int(resp.body, resp.body_len, "order_id", &order_id) < 0 ||
                    fs_json_int(resp.body, resp.body_len, "version", &version) < 0) {
                    /* Acknowledged but unreadable: the outcome is in doubt. */
                    oc = FS_O_BAD_RESPONSE;
                    in_doubt = 1;
                } else {
                    add_ack(&rn->acks[item],
                            (fs_ack){.order_id = order_id, .user = user, .qty = (int32_t)o->qty,
                                     .at_ms = (int32_t)((recv - rn->t0) / 1000000),
                                     .target = (int16_t)alt_target,
                                     .attempt = (uint8_t)(attempt < 255 ? attempt : 255),
                                     .replayed = (uint8_t)replayed});
                    fs_stale_commit(&r->stale, item, version, recv);
                    sold = o->qty;
                    atomic_fetch_add_explicit(&r->sold_units, (uint64_t)o->qty,
                                              memory_order_relaxed);
                }
            }
        }
        /* After an attempt in doubt, an answer that decides nothing (the
         * database unavailable, overloaded) leaves the buy in doubt: the
         * earlier attempt may have been applied. */
        if (!in_doubt && attempt > 0 && (oc == FS_O_UNAVAILABLE || oc == FS_O_OVERLOADED))
            in_doubt = 1;
        if (!in_doubt)
            break;
        /* Without a key a retry could apply the buy twice: never retry. */
        if (attempt >= o->retries || o->no_keys || atomic_load(&fs_interrupted)) {
            atomic_fetch_add(&rn->acks[item].unknown_units, o->qty);
            break;
        }
        /* Same idempotency key: the service applies it at most once. */
        atomic_fetch_add_explicit(&r->retries, 1, memory_order_relaxed);
        if (rc < 0 && o->ntargets > 1) {
            fs_conn_free(alt);
            alt_target = (alt_target + 1) % o->ntargets;
            alt = alt_target == target ? NULL : fs_conn_new(&o->targets[alt_target]);
            via = alt != NULL ? alt : c;
        }
        rt_sleep(5 * (attempt + 1) < 200 ? 5 * (attempt + 1) : 200);
    }
    fs_conn_free(alt);
    record(rn, FS_ROUTE_BUY, oc, d, first_sent, recv, sold);
    return recv;
}

static void conn_main(void *arg)
{
    conn_arg *ca = arg;
    run *rn = ca->run;
    const fs_opts *o = rn->o;
    int j = ca->idx, target = j % o->ntargets;
    /* Each connection starts at an unrelated point of the generator: states
     * one golden-ratio step apart would replay each other's buyers. */
    uint64_t rng = o->seed ^ ((uint64_t)j * 0xd1b54a32d192ed03ull);
    rng = rng_next(&rng);
    fs_conn *c = ca->c;
    ca->c = NULL;
    rt_wg_wait(rn->gate, RT_NO_DEADLINE);
    if (atomic_load(&rn->abort)) {
        fs_conn_free(c);
        return;
    }
    int open_loop = o->rate > 0;
    int64_t free_at = 0;   /* when the connection's last answer came */
    for (int64_t k = 0;; k++) {
        if (atomic_load_explicit(&fs_interrupted, memory_order_relaxed))
            break;
        int64_t intended;
        if (open_loop) {
            /* Request number j + k*C of the whole schedule. */
            int64_t nth = (int64_t)j + k * (int64_t)o->connections;
            if (o->requests > 0 && nth >= o->requests)
                break;
            intended = rn->t0 + (int64_t)((double)nth * 1e9 / o->rate);
            if (o->duration_s > 0 && intended >= rn->end_ns)
                break;
            int64_t now = rt_now_ns();
            if (intended > now)
                rt_sleep_ns(intended - now);
        } else {
            if (o->requests > 0) {
                if (atomic_fetch_add_explicit(&rn->next_req, 1, memory_order_relaxed) >=
                    o->requests)
                    break;
            }
            intended = rt_now_ns();
            if (o->duration_s > 0 && intended >= rn->end_ns)
                break;
        }
        due d = {intended, free_at > intended};
        int item = pick_item(rn, &rng);
        if (rng_unit(&rng) < o->read_ratio) {
            free_at = do_read(rn, c, target, item, d);
        } else {
            int32_t user = (int32_t)(rng_next(&rng) % (uint64_t)o->users);
            free_at = do_buy(rn, c, target, j, k, item, user, d);
        }
    }
    fs_conn_free(c);
}

/* ------------------------------------------------------------------------ */
/* Progress                                                                  */

static void progress_main(void *arg)
{
    run *rn = arg;
    fs_result *r = rn->r;
    uint64_t sold = 0, sold_out = 0, errors = 0;
    for (int64_t sec = 1; !atomic_load(&rn->finished); sec++) {
        int64_t at = rn->t0 + sec * 1000000000;
        rt_event_wait(rn->tick, at);
        if (atomic_load(&rn->finished))
            break;
        fs_slot *sl = fs_result_slot(r, (size_t)(sec - 1));
        if (sl == NULL)
            continue;
        sold += atomic_load(&sl->sold);
        sold_out += atomic_load(&sl->sold_out);
        errors += atomic_load(&sl->errors);
        fprintf(stderr, "[%4llds] %8llu req/s  p99 %8.3f ms  sold %8llu  sold-out %8llu  errors %6llu\n",
                (long long)sec, (unsigned long long)atomic_load(&sl->requests),
                (double)fs_hist_percentile(&sl->lat, 99) / 1e6, (unsigned long long)sold,
                (unsigned long long)sold_out, (unsigned long long)errors);
    }
}

/* ------------------------------------------------------------------------ */
/* Setup and verification                                                    */

static int set_delay(fs_opts *o, int64_t delay_ms)
{
    char body[64];
    snprintf(body, sizeof(body), "{\"invalidation_delay_ms\":%lld}", (long long)delay_ms);
    for (int t = 0; t < o->ntargets; t++) {
        fs_conn *c = fs_conn_new(&o->targets[t]);
        fs_http_resp resp;
        int st = c ? admin_call(c, o, "PUT", "/admin/config", body, &resp) : -ENOMEM;
        if (st != 200) {
            fprintf(stderr, "flashsale: PUT %s/admin/config: %s%.*s\n", o->targets[t].url,
                    st < 0 ? rt_strerror(st) : "", st < 0 ? 0 : (int)resp.body_len,
                    st < 0 ? "" : resp.body);
            fs_conn_free(c);
            return -EIO;
        }
        fs_conn_free(c);
    }
    return 0;
}

static int seed(run *rn, fs_conn *c)
{
    fs_opts *o = rn->o;
    int64_t starts = o->sale_start_ms > 0 ? kit_wall_ms() + o->sale_start_ms : 0;
    for (int i = 0; i < o->nskus; i++) {
        char path[128], body[160];
        fs_http_resp resp;
        snprintf(path, sizeof(path), "/v1/items/%s", o->skus[i]);
        snprintf(body, sizeof(body),
                 "{\"stock\":%lld,\"per_user_limit\":%lld,\"sale_starts_at_ms\":%lld}",
                 (long long)o->stock, (long long)fs_opts_item_limit(o, i), (long long)starts);
        int st = admin_call(c, o, "PUT", path, body, &resp);
        if (st != 200 && st != 201) {
            fprintf(stderr, "flashsale: seeding %s%s: %s%.*s\n", o->targets[0].url, path,
                    st < 0 ? rt_strerror(st) : "", st < 0 ? 0 : (int)resp.body_len,
                    st < 0 ? "" : resp.body);
            return -EIO;
        }
        int64_t version;
        if (fs_json_int(resp.body, resp.body_len, "version", &version) == 0)
            fs_stale_commit(&rn->r->stale, i, version, rt_now_ns());
    }
    return 0;
}

/* Reads the audit of sku into a (the caller owns it). A read is safe to
 * repeat: 503s and transport errors are retried for about 10 s. */
static int audit(const fs_opts *o, fs_conn *c, const char *sku, fs_audit *a)
{
    char path[160];
    fs_http_resp resp;
    snprintf(path, sizeof(path), "/admin/items/%s/audit?orders=true", sku);
    int st = admin_call(c, o, "GET", path, NULL, &resp);
    for (int attempt = 1; attempt <= 6 && (st < 0 || st == 503); attempt++) {
        fprintf(stderr, "flashsale: audit of %s: %s, retrying\n", sku,
                st < 0 ? rt_strerror(st) : "503");
        rt_sleep(300 * attempt);
        st = admin_call(c, o, "GET", path, NULL, &resp);
    }
    if (st != 200) {
        fprintf(stderr, "flashsale: audit of %s: %s%.*s\n", sku, st < 0 ? rt_strerror(st) : "",
                st < 0 ? 0 : (int)resp.body_len, st < 0 ? "" : resp.body);
        return -EIO;
    }
    int rc = fs_audit_parse(resp.body, resp.body_len, a);
    if (rc < 0)
        fprintf(stderr, "flashsale: audit of %s: unreadable: %.*s\n", sku,
                (int)(resp.body_len > 200 ? 200 : resp.body_len), resp.body);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* One round                                                                 */

static void free_acks(run *rn)
{
    if (rn->acks == NULL)
        return;
    for (int i = 0; i < rn->o->nskus; i++) {
        pthread_mutex_destroy(&rn->acks[i].mu);
        free(rn->acks[i].v);
    }
    free(rn->acks);
    rn->acks = NULL;
}

/* Formats the request bytes that never change (see run.get_req). */
static int build_requests(run *rn)
{
    const fs_opts *o = rn->o;
    size_t n = (size_t)o->ntargets * (size_t)o->nskus;
    rn->get_req = calloc(n, sizeof(*rn->get_req));
    rn->buy_head = calloc(n, sizeof(*rn->buy_head));
    if (rn->get_req == NULL || rn->buy_head == NULL)
        return -ENOMEM;
    for (int t = 0; t < o->ntargets; t++) {
        for (int i = 0; i < o->nskus; i++) {
            fs_bytes *g = &rn->get_req[t * o->nskus + i], *b = &rn->buy_head[t * o->nskus + i];
            const fs_target *tg = &o->targets[t];
            int gn = asprintf(&g->p, "GET /v1/items/%s HTTP/1.1\r\nHost: %s:%d\r\n\r\n",
                              o->skus[i], tg->host, tg->port);
            int bn = asprintf(&b->p,
                              "POST /v1/items/%s/decrement HTTP/1.1\r\nHost: %s:%d\r\n"
                              "Content-Type: application/json\r\n",
                              o->skus[i], tg->host, tg->port);
            if (gn < 0 || bn < 0) {
                g->p = gn < 0 ? NULL : g->p;
                b->p = bn < 0 ? NULL : b->p;
                return -ENOMEM;
            }
            g->n = (size_t)gn;
            b->n = (size_t)bn;
        }
    }
    return 0;
}

static void free_requests(run *rn)
{
    size_t n = (size_t)rn->o->ntargets * (size_t)rn->o->nskus;
    for (size_t i = 0; rn->get_req && i < n; i++)
        free(rn->get_req[i].p);
    for (size_t i = 0; rn->buy_head && i < n; i++)
        free(rn->buy_head[i].p);
    free(rn->get_req);
    free(rn->buy_head);
}

/* Runs one round into r. Returns 0 (verification may still have failed:
 * r->verify_failed) or -EIO when the setup failed. */
static intptr_t system_blocking(void *arg)
{
    return system((const char *)arg);
}

/* Runs the --nemesis schedule against the traffic's clock. */
static void nemesis_main(void *arg)
{
    run *rn = arg;
    const fs_opts *o = rn->o;
    fs_result *r = rn->r;
    for (int i = 0; i < o->nfaults; i++) {
        int64_t at = rn->t0 + o->faults[i].at_ms * 1000000;
        for (;;) {
            int64_t now = rt_now_ns();
            if (now >= at || atomic_load(&rn->finished) || atomic_load(&fs_interrupted))
                break;
            int64_t ms = (at - now) / 1000000 + 1;
            rt_sleep(ms < 100 ? ms : 100);
        }
        if (atomic_load(&rn->finished) || atomic_load(&fs_interrupted) || rt_now_ns() >= rn->end_ns)
            break;
        r->fault_start_ns[i] = rt_now_ns() - rn->t0;
        atomic_store(&rn->cur_fault, i);
        atomic_fetch_add(&rn->faults_active, 1);
        if (!o->quiet)
            fprintf(stderr, "\nflashsale: fault %d (%s) at %.1f s: %s\n", i, o->faults[i].name,
                    (double)r->fault_start_ns[i] / 1e9, o->faults[i].cmd);
        int st = (int)rt_blocking(system_blocking, (void *)o->faults[i].cmd);
        int64_t end = rt_now_ns();
        r->fault_rc[i] = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
        r->fault_end_ns[i] = end - rn->t0;
        atomic_max(&rn->fault_open_until, end + o->fault_grace_ms * 1000000);
        atomic_fetch_sub(&rn->faults_active, 1);
        if (r->fault_rc[i] != 0)
            fprintf(stderr, "flashsale: fault %d (%s) command exited %d\n", i, o->faults[i].name,
                    r->fault_rc[i]);
    }
}

/* The restock in the middle of the run: at --restock-at, every second item
 * gets --restock more units: its stock read from the audit, then PUT. A
 * fault may take the database away for several seconds, so an item whose
 * audit or PUT fails is tried again, with a fresh audit, for up to 30 s (a
 * PUT whose answer was lost may have applied: the fresh audit then sees its
 * stock, and the item is restocked twice, which the ledger accounts for).
 * The new version is known from then on. */
static int restock_item(run *rn, fs_conn *c, int i)
{
    const fs_opts *o = rn->o;
    int64_t give_up = rt_now_ns() + 30 * INT64_C(1000000000);
    for (int attempt = 0; rt_now_ns() < give_up && !atomic_load(&fs_interrupted); attempt++) {
        if (attempt > 0)
            rt_sleep(500);
        fs_audit a;
        if (audit(o, c, o->skus[i], &a) < 0)
            continue;
        char path[128], body[64];
        fs_http_resp resp;
        snprintf(path, sizeof(path), "/v1/items/%s", o->skus[i]);
        snprintf(body, sizeof(body), "{\"stock\":%lld}", (long long)(a.stock + o->restock_units));
        fs_audit_free(&a);
        int64_t version;
        int st = admin_call(c, o, "PUT", path, body, &resp);
        if (st == 200 && fs_json_int(resp.body, resp.body_len, "version", &version) == 0) {
            fs_stale_commit(&rn->r->stale, i, version, rt_now_ns());
            return 0;
        }
        fprintf(stderr, "flashsale: restock of %s: %s, trying again\n", o->skus[i],
                st < 0 ? rt_strerror(st) : "answer not 200");
    }
    fprintf(stderr, "flashsale: restock of %s failed\n", o->skus[i]);
    return -EIO;
}

static void restock_main(void *arg)
{
    run *rn = arg;
    const fs_opts *o = rn->o;
    int64_t at = rn->t0 + (int64_t)(o->restock_at_s * 1e9);
    while (rt_now_ns() < at && !atomic_load(&rn->finished) && !atomic_load(&fs_interrupted))
        rt_sleep(50);
    if (atomic_load(&rn->finished) || atomic_load(&fs_interrupted))
        return;
    fs_conn *c = fs_conn_new(&o->targets[0]);
    for (int i = 1; c != NULL && i < o->nskus; i += 2)
        if (restock_item(rn, c, i) == 0)
            rn->r->restocked++;
    fs_conn_free(c);
    if (!o->quiet)
        fprintf(stderr, "\nflashsale: restocked %d items by %lld units\n", rn->r->restocked,
                (long long)o->restock_units);
}

static int run_round(fs_opts *o, fs_result *r, const char *run_id, int round)
{
    int rc = 0;
    fs_audit *before = NULL;
    rt_co **cos = NULL;
    conn_arg *args = NULL;
    rt_co *prog = NULL;
    run rn = {.o = o, .r = r, .run_id = run_id, .round = round, .cur_fault = -1};
    rt_co *nem = NULL, *rst = NULL;
    fs_conn *admin = fs_conn_new(&o->targets[0]);
    rn.cdf = calloc((size_t)o->nskus, sizeof(*rn.cdf));
    rn.acks = calloc((size_t)o->nskus, sizeof(*rn.acks));
    before = calloc((size_t)o->nskus, sizeof(*before));
    cos = calloc((size_t)o->connections, sizeof(*cos));
    args = calloc((size_t)o->connections, sizeof(*args));
    rn.tick = rt_event_new();
    rn.gate = rt_wg_new();
    if (!admin || !rn.cdf || !rn.acks || !before || !cos || !args || !rn.tick || !rn.gate) {
        rc = -ENOMEM;
        goto out;
    }
    for (int i = 0; i < o->nskus; i++)
        pthread_mutex_init(&rn.acks[i].mu, NULL);
    double sum = 0;
    for (int i = 0; i < o->nskus; i++)
        sum += 1.0 / pow(i + 1, o->skew);
    double acc = 0;
    for (int i = 0; i < o->nskus; i++) {
        acc += 1.0 / pow(i + 1, o->skew) / sum;
        rn.cdf[i] = acc;
    }
    rn.cdf[o->nskus - 1] = 1.0;
    if ((rc = build_requests(&rn)) < 0)
        goto out;

    int can_admin = o->admin_token[0] != '\0';
    if (!o->no_seed) {
        if (!can_admin) {
            fprintf(stderr, "flashsale: seeding needs --admin-token (or use --no-seed)\n");
            rc = -EIO;
            goto out;
        }
        if ((rc = seed(&rn, admin)) < 0)
            goto out;
    }
    int verify = !o->no_verify && can_admin;
    if (!o->no_verify && !can_admin)
        fprintf(stderr, "flashsale: no --admin-token: verification skipped\n");
    for (int i = 0; verify && i < o->nskus; i++)
        if ((rc = audit(o, admin, o->skus[i], &before[i])) < 0)
            goto out;
    fs_conn_close(admin);

    /* The open loop's schedule starts once every connection is up: a dial
     * is not the service's answer, and hundreds of dials at the start
     * would be a burst the schedule never asked for. A failed dial is
     * tried again by the first request. */
    for (int j = 0; j < o->connections; j++) {
        args[j] = (conn_arg){&rn, j, fs_conn_new(&o->targets[j % o->ntargets])};
        if (args[j].c == NULL) {
            rc = -ENOMEM;
            goto out;
        }
        if (o->rate > 0)
            fs_conn_dial(args[j].c, rt_deadline_ms(o->timeout_ms));
    }
    /* So are their coroutines: spawning hundreds of them (each stack
     * mapped and guarded) takes long enough to make the first requests
     * late. They wait at the gate, which opens at t0. */
    int started = 0;
    rt_wg_add(rn.gate, 1);
    for (int j = 0; j < o->connections; j++) {
        rt_spawn_opts so = {.name = "buyer", .joinable = 1};
        if (rt_spawn_ex(&cos[j], conn_main, &args[j], &so) < 0) {
            fprintf(stderr, "flashsale: could not start connection %d\n", j);
            break;
        }
        started++;
    }

    double cpu0 = process_cpu_s();
    rn.t0 = rt_now_ns();
    r->t0_wall_ms = kit_wall_ms();
    r->t0_ns = rn.t0;
    rn.end_ns = o->duration_s > 0 ? rn.t0 + (int64_t)(o->duration_s * 1e9) : INT64_MAX;
    if (!o->quiet) {
        rt_spawn_opts po = {.name = "progress", .joinable = 1};
        if (rt_spawn_ex(&prog, progress_main, &rn, &po) < 0)
            prog = NULL;
    }
    if (o->nfaults > 0) {
        rt_spawn_opts no = {.name = "nemesis", .joinable = 1};
        if (rt_spawn_ex(&nem, nemesis_main, &rn, &no) < 0) {
            rc = -ENOMEM;
            atomic_store(&rn.abort, 1);
            rt_wg_done(rn.gate);
            for (int j = 0; j < started; j++)
                rt_join(cos[j]);
            atomic_store(&rn.finished, 1);
            rt_event_signal(rn.tick);
            if (prog)
                rt_join(prog);
            goto out;
        }
    }
    if (o->restock_at_s > 0 && can_admin) {
        rt_spawn_opts ro = {.name = "restock", .joinable = 1};
        if (rt_spawn_ex(&rst, restock_main, &rn, &ro) < 0)
            rst = NULL;
    }
    rt_wg_done(rn.gate);
    for (int j = 0; j < started; j++)
        rt_join(cos[j]);
    r->elapsed_s = (double)(rt_now_ns() - rn.t0) / 1e9;
    r->cpu_s = process_cpu_s() - cpu0;
    atomic_store(&rn.finished, 1);
    rt_event_signal(rn.tick);
    if (prog)
        rt_join(prog);
    if (nem)
        rt_join(nem);
    if (rst)
        rt_join(rst);   /* a fault in progress ends (its command resumes
                         * what it paused) before the audit */

    if (verify) {
        if (o->settle_ms > 0)
            rt_sleep(o->settle_ms);
        r->verified = 1;
        r->nverify = o->nskus;
        for (int i = 0; i < o->nskus; i++) {
            fs_audit after;
            snprintf(r->verify_sku[i], sizeof(r->verify_sku[i]), "%s", o->skus[i]);
            if (audit(o, admin, o->skus[i], &after) < 0) {
                r->verify_failed = 1;
                r->verify[i] = (fs_verify_out){.audit_failed = 1};
                continue;
            }
            fs_verify_in in = {
                .sku = o->skus[i],
                .per_user_limit = fs_opts_item_limit(o, i),
                .before = &before[i],
                .after = &after,
                .acks = rn.acks[i].v,
                .nacks = rn.acks[i].n,
                .unknown_units = atomic_load(&rn.acks[i].unknown_units),
            };
            fs_verify(&in, &r->verify[i]);
            if (!r->verify[i].passed)
                r->verify_failed = 1;
            fs_audit_free(&after);
        }
    }
out:
    for (int j = 0; args && j < o->connections; j++)
        fs_conn_free(args[j].c);   /* those no coroutine took */
    if (before)
        for (int i = 0; i < o->nskus; i++)
            fs_audit_free(&before[i]);
    free(before);
    free(cos);
    free(args);
    free(rn.cdf);
    free_requests(&rn);
    free_acks(&rn);
    if (rn.tick)
        rt_event_free(rn.tick);
    if (rn.gate)
        rt_wg_free(rn.gate);
    fs_conn_free(admin);
    return rc;
}

typedef struct plot_job {
    const fs_opts *o;
    fs_result *const *rs;
    int n;
} plot_job;

static intptr_t plot_blocking(void *arg)
{
    plot_job *j = arg;
    return fs_report_plot(j->o->plot_path, j->o, j->rs, j->n);
}

/* The invalidation delay target 0 runs with now, or -1 if unknown. */
/* Sums cachesvc_consistency_checks_total and _violations_total (every
 * tier) over the targets' /metrics. Returns how many targets export them. */
static int monitor_counts(const fs_opts *o, int64_t *checks, int64_t *violations)
{
    static const char cf[] = "cachesvc_consistency_checks_total";
    static const char vf[] = "cachesvc_consistency_violations_total";
    int seen = 0;
    *checks = *violations = 0;
    for (int t = 0; t < o->ntargets; t++) {
        fs_http_resp resp;
        fs_conn *c = fs_conn_new(&o->targets[t]);
        if (c == NULL || admin_call(c, o, "GET", "/metrics", NULL, &resp) != 200) {
            fs_conn_free(c);
            continue;
        }
        int any = 0;
        const char *p = resp.body, *end = resp.body + resp.body_len;
        while (p < end) {
            const char *nl = memchr(p, '\n', (size_t)(end - p));
            const char *le = nl ? nl : end;
            int64_t *dst = NULL;
            if ((size_t)(le - p) > sizeof(cf) - 1 && memcmp(p, cf, sizeof(cf) - 1) == 0)
                dst = checks;
            else if ((size_t)(le - p) > sizeof(vf) - 1 && memcmp(p, vf, sizeof(vf) - 1) == 0)
                dst = violations;
            if (dst != NULL) {
                const char *sp = le;
                while (sp > p && sp[-1] != ' ')
                    sp--;
                *dst += strtoll(sp, NULL, 10);
                any = 1;
            }
            p = le + 1;
        }
        seen += any;
        fs_conn_free(c);
    }
    return seen;
}

static int64_t current_delay(const fs_opts *o)
{
    int64_t d = -1;
    fs_http_resp resp;
    fs_conn *c = fs_conn_new(&o->targets[0]);
    if (c && admin_call(c, o, "GET", "/admin/config", NULL, &resp) == 200 &&
        fs_json_int(resp.body, resp.body_len, "invalidation_delay_ms", &d) < 0)
        d = -1;
    fs_conn_free(c);
    return d;
}

int fs_run_all(fs_opts *o)
{
    int rounds = o->nsweep > 0 ? o->nsweep : 1, done = 0, status = 0;
    int64_t saved_delay = o->nsweep > 0 ? current_delay(o) : -1;
    fs_result **rs = calloc((size_t)rounds, sizeof(*rs));
    char run_id[32];
    snprintf(run_id, sizeof(run_id), "%llx%x", (unsigned long long)kit_wall_ms(),
             (unsigned)getpid() & 0xfff);
    if (rs == NULL)
        return 2;
    size_t max_seconds = o->duration_s > 0 ? (size_t)o->duration_s + 120 : 3600;
    for (int i = 0; i < rounds && !atomic_load(&fs_interrupted); i++) {
        fs_result *r = calloc(1, sizeof(*r));
        if (r == NULL || fs_result_init(r, o, max_seconds) < 0) {
            free(r);
            status = 2;
            break;
        }
        rs[done++] = r;
        if (o->nsweep > 0) {
            r->delay_ms = o->sweep_ms[i];
            snprintf(r->label, sizeof(r->label), "invalidation_delay_ms=%lld",
                     (long long)o->sweep_ms[i]);
            if (set_delay(o, o->sweep_ms[i]) < 0) {
                status = 2;
                break;
            }
            fprintf(stderr, "flashsale: round %d/%d, invalidation_delay_ms=%lld\n", i + 1,
                    rounds, (long long)o->sweep_ms[i]);
        }
        int64_t mc0 = 0, mv0 = 0;
        int mon = o->nsweep > 0 || o->nfaults > 0 ? monitor_counts(o, &mc0, &mv0) : 0;
        if (fs_opts_name_skus(o, o->nsweep > 0 ? i : -1, run_id) < 0 ||
            run_round(o, r, run_id, i) < 0) {
            status = 2;
            break;
        }
        if (mon > 0) {
            /* The monitor checks a read the delay plus a second after it. */
            int64_t mc1, mv1;
            rt_sleep(o->nsweep > 0 ? o->sweep_ms[i] + 1200 : 2500);
            if (monitor_counts(o, &mc1, &mv1) > 0) {
                r->monitor_seen = 1;
                r->monitor_checks = mc1 - mc0;
                r->monitor_violations = mv1 - mv0;
            }
        }
        fs_report_text(stdout, o, r);
        fflush(stdout);
        if (r->verified && r->verify_failed && status == 0)
            status = 1;
    }
    if (o->nsweep > 0 && done > 0)
        fs_report_sweep(stdout, o, rs, done);
    if (saved_delay >= 0 && set_delay(o, saved_delay) == 0)
        fprintf(stderr, "flashsale: invalidation_delay_ms restored to %lld\n",
                (long long)saved_delay);
    if (o->kv && done > 0)
        fs_report_kv(stdout, o, rs, done);
    if (o->json_path[0] && done > 0) {
        int rc = fs_report_json(o->json_path, o, rs, done);
        if (rc < 0)
            fprintf(stderr, "flashsale: writing %s: %s\n", o->json_path, strerror(-rc));
    }
    if (o->plot_path[0] && done > 0) {
        /* gnuplot runs for a while: off the workers. */
        plot_job job = {o, rs, done};
        int rc = (int)rt_blocking(plot_blocking, &job);
        if (rc < 0)
            fprintf(stderr, "flashsale: plotting %s: %s\n", o->plot_path,
                    rc == -ENOENT ? "gnuplot not found" : strerror(-rc));
        else
            fprintf(stderr, "flashsale: plot written to %s\n", o->plot_path);
    }
    fflush(stdout);
    for (int i = 0; i < done; i++) {
        fs_result_free(rs[i]);
        free(rs[i]);
    }
    free(rs);
    if (status == 0 && atomic_load(&fs_interrupted))
        status = 130;   /* as a shell reports SIGINT; the part run verified */
    return status;
}
