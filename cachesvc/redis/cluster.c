/*
 * cluster.c: the cluster as a whole: configuration, nodes, the slot map and
 * its refresher, routing of commands with redirects, retries and
 * deadlines, multi-key splitting, counters.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cachesvc/redis/rc_int.h"

#define RC_UNHEALTHY_REFRESH_MS 200
#define RC_DOWN_MIN_MS 100
#define RC_DOWN_MAX_MS 2000
#define RC_BACKOFF_MIN_MS 5
#define RC_BACKOFF_MAX_MS 200
#define RC_STACK_ARGS 32

const char *rc_strerror(int err)
{
    switch (err) {
    case 0: return "success";
    case RC_EINVAL: return "invalid argument";
    case RC_ENOMEM: return "out of memory";
    case RC_ETIMEDOUT: return "deadline passed";
    case RC_ECONN: return "connection lost, outcome unknown";
    case RC_EDOWN: return "node down or unreachable";
    case RC_EUNAVAIL: return "no node serves the slot";
    case RC_ESERVER: return "error reply from Redis";
    case RC_EPROTO: return "malformed reply";
    case RC_EREDIRECT: return "too many redirects";
    case RC_ECANCELED: return "client shutting down";
    case RC_ENOSPC: return "buffer too small";
    case RC_EBADVALUE: return "cached value is not <version>|<payload>";
    case RC_EAUTH: return "credentials refused (wrong redis user or password, or a missing ACL permission)";
    default: return err < 0 ? strerror(-err) : "unknown error";
    }
}

void rc_reply_free(rc_reply *r)
{
    if (r != NULL)
        freeReplyObject(r);
}

unsigned rc__rand(rc_cluster *c)
{
    /* xorshift on a shared seed: jitter only, races are harmless. */
    unsigned x = atomic_load_explicit(&c->seed, memory_order_relaxed);
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    atomic_store_explicit(&c->seed, x, memory_order_relaxed);
    return x;
}

int64_t rc__deadline(rc_cluster *c, int64_t deadline)
{
    return deadline > 0 ? deadline : rt_deadline_ms(c->cfg.command_timeout_ms);
}

/* ------------------------------------------------------------------------ */
/* Nodes                                                                     */

rc__node *rc__node_get(rc_cluster *c, const char *host, int port)
{
    rc__node *n;

    pthread_mutex_lock(&c->mu);
    for (n = c->nodes; n != NULL; n = n->next)
        if (n->port == port && strcmp(n->host, host) == 0)
            goto out;
    if (strlen(host) >= RC_HOST_MAX || (n = calloc(1, sizeof *n)) == NULL) {
        n = NULL;
        goto out;
    }
    n->c = c;
    strcpy(n->host, host);
    n->port = port;
    snprintf(n->addr, sizeof n->addr, strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, port);
    n->nconns = c->cfg.conns_per_node;
    if ((n->conns = calloc((size_t)n->nconns, sizeof *n->conns)) == NULL) {
        free(n);
        n = NULL;
        goto out;
    }
    for (int i = 0; i < n->nconns; i++) {
        if (rc__conn_init(&n->conns[i], n) < 0) {
            while (i-- > 0)
                rc__conn_destroy(&n->conns[i]);
            free(n->conns);
            free(n);
            n = NULL;
            goto out;
        }
    }
    n->next = c->nodes;
    c->nodes = n;
    c->nnodes++;
out:
    pthread_mutex_unlock(&c->mu);
    return n;
}

bool rc__node_is_down(rc__node *n)
{
    int64_t until = atomic_load_explicit(&n->down_until, memory_order_relaxed);
    return until != 0 && rt_now_ns() < until;
}

void rc__node_mark_down(rc__node *n)
{
    int b = atomic_load(&n->down_backoff_ms);
    /* Logged when it goes down, not at every retry; a refusal of the
     * credentials was logged as such (rc__auth_refused). */
    if (b == 0 && !atomic_load_explicit(&n->auth_refused, memory_order_relaxed))
        rt_log(RT_LOG_WARN, "redis", "node unreachable", "node=%s retry_ms=%d", n->addr,
               RC_DOWN_MIN_MS);
    b = b == 0 ? RC_DOWN_MIN_MS : (b * 2 > RC_DOWN_MAX_MS ? RC_DOWN_MAX_MS : b * 2);
    atomic_store(&n->down_backoff_ms, b);
    atomic_store(&n->down_until, rt_now_ns() + (int64_t)b * 1000000);
}

void rc__node_mark_up(rc__node *n)
{
    if (atomic_exchange(&n->down_backoff_ms, 0) != 0)
        rt_log(RT_LOG_INFO, "redis", "node reachable again", "node=%s", n->addr);
    atomic_store(&n->down_until, 0);
}

/* ------------------------------------------------------------------------ */
/* Configuration and lifetime                                                */

/* Parses the seed list into nodes-to-be; returns the count or -EINVAL. */
static int parse_seeds(const char *s, void (*each)(void *, const char *, int), void *arg)
{
    int n = 0;

    while (*s) {
        const char *e = strchr(s, ',');
        size_t len = e ? (size_t)(e - s) : strlen(s);
        char host[RC_HOST_MAX];
        int port;

        while (len > 0 && (*s == ' ' || *s == '\t')) {
            s++;
            len--;
        }
        while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t'))
            len--;
        if (len > 0) {
            if (rc__parse_addr(s, len, host, sizeof host, &port) < 0)
                return -EINVAL;
            if (each)
                each(arg, host, port);
            n++;
        }
        if (!e)
            break;
        s = e + 1;
    }
    return n;
}

/* Logs why rc_new refuses cfg (which is about to fail with RC_EINVAL). */
static int refuse_config(const char *why, const char *seeds)
{
    char q[300];
    rt_log(RT_LOG_ERROR, "redis", "configuration refused", "why=\"%s\" seeds=%s", why,
           rt_log_q(q, sizeof q, seeds != NULL ? seeds : ""));
    return RC_EINVAL;
}

int rc_new(const rc_config *cfg, rc_cluster **out)
{
    rc_cluster *c;
    int n;

    *out = NULL;
    if (cfg == NULL)
        return RC_EINVAL;
    if (cfg->seeds == NULL || (n = parse_seeds(cfg->seeds, NULL, NULL)) == 0)
        return refuse_config("no seeds", cfg->seeds);
    if (n < 0)
        return refuse_config("a seed is not host:port", cfg->seeds);
    if (cfg->user != NULL && cfg->user[0] != '\0' &&
        (cfg->password == NULL || cfg->password[0] == '\0'))
        return refuse_config("a user without a password", cfg->seeds);
    if ((c = calloc(1, sizeof *c)) == NULL)
        return RC_ENOMEM;
    c->cfg = *cfg;
    if (c->cfg.conns_per_node <= 0)
        c->cfg.conns_per_node = 1;
    if (c->cfg.connect_timeout_ms <= 0)
        c->cfg.connect_timeout_ms = 1000;
    if (c->cfg.command_timeout_ms <= 0)
        c->cfg.command_timeout_ms = 1000;
    if (c->cfg.dead_timeout_ms <= 0)
        c->cfg.dead_timeout_ms = c->cfg.command_timeout_ms * 2 > 1000
                                     ? c->cfg.command_timeout_ms * 2 : 1000;
    if (c->cfg.max_redirects <= 0)
        c->cfg.max_redirects = 5;
    if (c->cfg.max_batch <= 0)
        c->cfg.max_batch = 512;
    if (c->cfg.pipeline_window <= 0)
        c->cfg.pipeline_window = 2;
    if (c->cfg.refresh_cooldown_ms <= 0)
        c->cfg.refresh_cooldown_ms = 100;
    if (c->cfg.refresh_interval_ms == 0)
        c->cfg.refresh_interval_ms = 30000;
    pthread_mutex_init(&c->mu, NULL);
    atomic_init(&c->seed, (unsigned)rt_now_ns() | 1u);
    c->seeds = strdup(cfg->seeds);
    c->refresh_ev = rt_event_new();
    c->refresh_mu = rt_mutex_new();
    if (c->seeds == NULL || c->refresh_ev == NULL || c->refresh_mu == NULL) {
        free(c->seeds);
        if (c->refresh_ev)
            rt_event_free(c->refresh_ev);
        if (c->refresh_mu)
            rt_mutex_free(c->refresh_mu);
        pthread_mutex_destroy(&c->mu);
        free(c);
        return RC_ENOMEM;
    }
    c->cfg.seeds = c->seeds;
    /* The credentials live only in the AUTH command, formatted once. */
    c->cfg.user = c->cfg.password = NULL;
    if (cfg->password != NULL && cfg->password[0] != '\0') {
        bool user = cfg->user != NULL && cfg->user[0] != '\0';
        const char *argv[3] = {"AUTH", user ? cfg->user : cfg->password, cfg->password};
        size_t argvlen[3] = {4, strlen(argv[1]), strlen(argv[2])};
        int argc = user ? 3 : 2;
        c->auth_len = rc__format_len(argc, argv, argvlen);
        if ((c->auth_cmd = malloc(c->auth_len)) == NULL) {
            rc_free(c);
            return RC_ENOMEM;
        }
        rc__format(c->auth_cmd, argc, argv, argvlen);
    }
    rc__sha1_hex(rc__fill_script, strlen(rc__fill_script), c->fill_sha);
    rc__sha1_hex(rc__delete_script, strlen(rc__delete_script), c->delete_sha);
    *out = c;
    return 0;
}

void rc_free(rc_cluster *c)
{
    rc__node *n, *next;

    if (c == NULL)
        return;
    atomic_store(&c->closing, 1);
    if (c->refresher != NULL) {
        rt_event_signal(c->refresh_ev);
        rt_join(c->refresher);
    }
    for (n = c->nodes; n != NULL; n = n->next)
        for (int i = 0; i < n->nconns; i++)
            rc__conn_close(&n->conns[i]);
    for (n = c->nodes; n != NULL; n = next) {
        next = n->next;
        for (int i = 0; i < n->nconns; i++)
            rc__conn_destroy(&n->conns[i]);
        free(n->conns);
        free(n);
    }
    rt_event_free(c->refresh_ev);
    rt_mutex_free(c->refresh_mu);
    pthread_mutex_destroy(&c->mu);
    free(c->seeds);
    if (c->auth_cmd != NULL) {
        explicit_bzero(c->auth_cmd, c->auth_len);
        free(c->auth_cmd);
    }
    free(c);
}

void rc__auth_refused(rc__node *n, const char *cmd, const char *text, size_t len)
{
    rc_cluster *c = n->c;

    while (len > 0 && (text[len - 1] == '\r' || text[len - 1] == '\n'))
        len--;
    atomic_fetch_add_explicit(&n->auth_failures, 1, memory_order_relaxed);
    pthread_mutex_lock(&c->mu);
    snprintf(c->auth_err, sizeof c->auth_err, "%s answered %s with %.*s", n->addr, cmd,
             (int)(len > 200 ? 200 : len), text);
    pthread_mutex_unlock(&c->mu);
    if (rt_log_enabled(RT_LOG_ERROR)) {
        /* The server's answer, never the command (it holds the password). */
        char q[256], reply[208];
        snprintf(reply, sizeof reply, "%.*s", (int)(len > 200 ? 200 : len), text);
        rt_log(RT_LOG_ERROR, "redis", "node refused the credentials", "node=%s cmd=\"%s\" reply=%s",
               n->addr, cmd, rt_log_q(q, sizeof q, reply));
    }
}

int rc_auth_error(rc_cluster *c, char *buf, size_t cap)
{
    int n;

    pthread_mutex_lock(&c->mu);
    n = snprintf(buf, cap, "%s", c->auth_err);
    pthread_mutex_unlock(&c->mu);
    return n;
}

/* ------------------------------------------------------------------------ */
/* Slot map                                                                  */

/* Installs a parsed CLUSTER SLOTS answer. */
static int apply_ranges(rc_cluster *c, const rc__range *g, int ng)
{
    rc__node **map = calloc(RC_SLOTS, sizeof *map);
    rc__node *n;

    if (map == NULL)
        return RC_ENOMEM;
    pthread_mutex_lock(&c->mu);
    for (n = c->nodes; n != NULL; n = n->next)
        atomic_store(&n->master, 0);
    pthread_mutex_unlock(&c->mu);
    for (int i = 0; i < ng; i++) {
        rc__node *m;
        int nr = 0;

        if (g[i].naddrs < 1)
            continue;
        if ((m = rc__node_get(c, g[i].addrs[0].host, g[i].addrs[0].port)) == NULL) {
            free(map);
            return RC_ENOMEM;
        }
        atomic_store(&m->master, 1);
        for (int j = 1; j < g[i].naddrs; j++) {
            rc__node *r = rc__node_get(c, g[i].addrs[j].host, g[i].addrs[j].port);
            if (r != NULL)
                atomic_store(&m->replicas[nr++], r);
        }
        atomic_store(&m->nreplicas, nr);
        for (unsigned s = g[i].start; s <= g[i].end; s++)
            map[s] = m;
    }
    for (int s = 0; s < RC_SLOTS; s++)
        if (atomic_load_explicit(&c->slots[s], memory_order_relaxed) != map[s])
            atomic_store_explicit(&c->slots[s], map[s], memory_order_release);
    free(map);
    return 0;
}

/* True for the error replies that say the connection's credentials do not
 * allow a command: NOAUTH (none given), WRONGPASS, NOPERM. */
static bool auth_error_reply(const char *s, size_t len)
{
    return (len >= 6 && memcmp(s, "NOAUTH", 6) == 0) ||
           (len >= 9 && memcmp(s, "WRONGPASS", 9) == 0) ||
           (len >= 6 && memcmp(s, "NOPERM", 6) == 0);
}

/* Asks node n for the slot map and installs it. Returns 0 or an error. */
static int refresh_from(rc_cluster *c, rc__node *n, int64_t deadline)
{
    const char *argv[2] = {"CLUSTER", "SLOTS"};
    size_t argvlen[2] = {7, 5};
    rc_reply *r = NULL;
    rc__range *g = NULL;
    int rc, ng;

    if ((rc = rc__node_exec(n, 2, argv, argvlen, deadline, &r)) < 0)
        goto out;
    if (r->type == RC_REPLY_ERROR) {
        if (auth_error_reply(r->str, r->len)) {
            /* NOAUTH (a password is required and none is configured) or
             * NOPERM (the user may not run CLUSTER SLOTS). */
            rc__auth_refused(n, "CLUSTER SLOTS", r->str, r->len);
            rc = RC_EAUTH;
            goto out;
        }
        if (strstr(r->str, "cluster support disabled") == NULL) {
            rc = RC_ESERVER;
            goto out;
        }
        /* A plain Redis: every slot is this node's. */
        rc__range one = {.start = 0, .end = RC_SLOTS - 1, .naddrs = 1};
        strcpy(one.addrs[0].host, n->host);
        one.addrs[0].port = n->port;
        atomic_store(&c->standalone, 1);
        rc = apply_ranges(c, &one, 1);
        goto done;
    }
    if ((ng = rc__parse_slots(r, n->host, &g)) < 0) {
        rc = ng;
        goto out;
    }
    if (ng == 0) {
        /* Not part of a cluster yet. */
        rc = RC_EUNAVAIL;
        goto out;
    }
    atomic_store(&c->standalone, 0);
    rc = apply_ranges(c, g, ng);
done:
    if (rc == 0) {
        atomic_fetch_add(&n->refreshes, 1);
        atomic_fetch_add(&c->refreshes, 1);
    }
out:
    free(g);
    rc_reply_free(r);
    return rc;
}

static void add_seed(void *arg, const char *host, int port)
{
    rc__node_get(arg, host, port);
}

/* One refresh: known nodes that are not down are asked first, in an order
 * that starts at a random node, then the ones marked down. */
static int do_refresh(rc_cluster *c, int64_t deadline)
{
    rc__node **cand = NULL, *n;
    int nc = 0, k = 0, rc = RC_EUNAVAIL;
    bool refused = false;

    parse_seeds(c->seeds, add_seed, c);
    pthread_mutex_lock(&c->mu);
    if ((cand = malloc((size_t)c->nnodes * sizeof *cand)) == NULL) {
        pthread_mutex_unlock(&c->mu);
        return RC_ENOMEM;
    }
    for (n = c->nodes; n != NULL; n = n->next)
        cand[nc++] = n;
    pthread_mutex_unlock(&c->mu);
    /* Up nodes first, then down ones; rotate each group randomly. */
    for (int pass = 0; pass < 2 && rc < 0; pass++) {
        int start = nc ? (int)(rc__rand(c) % (unsigned)nc) : 0;
        for (int i = 0; i < nc && rc < 0; i++) {
            n = cand[(start + i) % nc];
            if (rc__node_is_down(n) != (pass == 1))
                continue;
            if (rt_now_ns() >= deadline) {
                rc = RC_ETIMEDOUT;
                goto out;
            }
            int64_t dl = rt_deadline_ms(c->cfg.command_timeout_ms);
            rc = refresh_from(c, n, dl < deadline ? dl : deadline);
            refused |= rc == RC_EAUTH;
            k++;
        }
    }
out:
    free(cand);
    /* No node answered: a refusal of the credentials says more than the
     * other nodes' being down or slow (and does not heal by itself). */
    return rc < 0 && refused ? RC_EAUTH : rc;
}

int rc_refresh(rc_cluster *c, int64_t deadline)
{
    int rc;

    deadline = rc__deadline(c, deadline);
    rt_mutex_lock(c->refresh_mu);
    rc = do_refresh(c, deadline);
    c->last_refresh_ns = rt_now_ns();
    rt_mutex_unlock(c->refresh_mu);
    return rc;
}

/* Whole: every slot has a master, and no master is marked down. */
static bool map_healthy(rc_cluster *c)
{
    for (int s = 0; s < RC_SLOTS; s++) {
        rc__node *m = atomic_load_explicit(&c->slots[s], memory_order_acquire);
        if (m == NULL || rc__node_is_down(m))
            return false;
    }
    return true;
}

void rc__refresh_async(rc_cluster *c)
{
    if (atomic_exchange(&c->refresh_wanted, 1) == 0)
        rt_event_signal(c->refresh_ev);
}

/* The refresher coroutine: refreshes on demand (at most once per cooldown),
 * every refresh_interval_ms while the map is whole, and every 200 ms while
 * it is not. */
static void refresher(void *arg)
{
    rc_cluster *c = arg;
    bool healthy = true;

    while (!atomic_load(&c->closing)) {
        int64_t dl = healthy ? (c->cfg.refresh_interval_ms > 0
                                    ? rt_deadline_ms(c->cfg.refresh_interval_ms)
                                    : RT_NO_DEADLINE)
                             : rt_deadline_ms(RC_UNHEALTHY_REFRESH_MS);
        rt_event_wait(c->refresh_ev, dl);
        if (atomic_load(&c->closing))
            break;
        rt_mutex_lock(c->refresh_mu);
        int64_t wait = c->last_refresh_ns + (int64_t)c->cfg.refresh_cooldown_ms * 1000000 -
                       rt_now_ns();
        rt_mutex_unlock(c->refresh_mu);
        if (wait > 0)
            rt_sleep_ns(wait);
        if (atomic_load(&c->closing))
            break;
        atomic_store(&c->refresh_wanted, 0);
        rc_refresh(c, rt_deadline_ms(2LL * c->cfg.command_timeout_ms));
        healthy = map_healthy(c);
    }
}

/* Loads the scripts on every master, so EVALSHA finds them. Best effort:
 * a node that lacks them later answers NOSCRIPT and gets EVAL. */
static void load_scripts(rc_cluster *c, int64_t deadline)
{
    rc__node *n, **masters;
    int nm = 0;

    pthread_mutex_lock(&c->mu);
    masters = malloc((size_t)c->nnodes * sizeof *masters);
    for (n = c->nodes; masters && n != NULL; n = n->next)
        if (atomic_load(&n->master))
            masters[nm++] = n;
    pthread_mutex_unlock(&c->mu);
    for (int i = 0; i < nm; i++) {
        const char *scripts[2] = {rc__fill_script, rc__delete_script};
        for (int j = 0; j < 2; j++) {
            const char *argv[3] = {"SCRIPT", "LOAD", scripts[j]};
            size_t argvlen[3] = {6, 4, strlen(scripts[j])};
            rc_reply *r = NULL;
            if (rc__node_exec(masters[i], 3, argv, argvlen, deadline, &r) == 0 &&
                r->type == RC_REPLY_STRING && r->len == 40 &&
                memcmp(r->str, j ? c->delete_sha : c->fill_sha, 40) != 0)
                rt_log(RT_LOG_WARN, "redis", "script digest differs from ours",
                       "node=%s digest=%.40s", masters[i]->addr, r->str);
            rc_reply_free(r);
        }
    }
    free(masters);
}

int rc_connect(rc_cluster *c, int64_t deadline)
{
    int rc;

    deadline = rc__deadline(c, deadline);
    rc = rc_refresh(c, deadline);
    if (rc < 0)
        return rc;
    load_scripts(c, deadline);
    if (!c->started) {
        if ((rc = rt_spawn(&c->refresher, refresher, c)) < 0)
            return rc;
        c->started = true;
    }
    return 0;
}

uint64_t rc_refresh_count(rc_cluster *c)
{
    return atomic_load(&c->refreshes);
}

int rc_stats(rc_cluster *c, rc_node_stats *out, int max)
{
    int k = 0;

    pthread_mutex_lock(&c->mu);
    for (rc__node *n = c->nodes; n != NULL; n = n->next, k++) {
        if (k >= max)
            continue;
        rc_node_stats *s = &out[k];
        memset(s, 0, sizeof *s);
        snprintf(s->addr, sizeof s->addr, "%s", n->addr);
        s->master = atomic_load(&n->master);
        s->up = !rc__node_is_down(n);
#define RC__X(name, help) s->name = atomic_load_explicit(&n->name, memory_order_relaxed);
        RC_NODE_COUNTERS(RC__X)
#undef RC__X
    }
    pthread_mutex_unlock(&c->mu);
    return k;
}

void rc_metrics_append(rc_cluster *c, kit_buf *b)
{
    enum { MAXN = 64 };
    rc_node_stats *ns = calloc(MAXN, sizeof *ns);
    if (ns == NULL) {
        b->oom = 1;
        return;
    }
    int n = rc_stats(c, ns, MAXN);
    if (n > MAXN)
        n = MAXN;
    char lb[128], name[96];
    /* Counters end in _total; inflight is the one gauge. */
#define X(f, help)                                                                        \
    {                                                                                     \
        int gauge = strcmp(#f, "inflight") == 0;                                          \
        snprintf(name, sizeof name, "cachesvc_redis_node_%s%s", #f, gauge ? "" : "_total"); \
        kit_buf_printf(b, "# HELP %s Redis node: %s.\n", name, help);                     \
        kit_buf_printf(b, "# TYPE %s %s\n", name, gauge ? "gauge" : "counter");            \
        for (int i = 0; i < n; i++) {                                                     \
            snprintf(lb, sizeof lb, "node=\"%s\",role=\"%s\"", ns[i].addr,                \
                     ns[i].master ? "master" : "replica");                                \
            kit_prom_sample_u64(b, name, lb, ns[i].f);                                    \
        }                                                                                 \
    }
    RC_NODE_COUNTERS(X)
#undef X
    kit_prom_header(b, "cachesvc_redis_node_up", "gauge", "1 while the node is not marked down.");
    for (int i = 0; i < n; i++) {
        snprintf(lb, sizeof lb, "node=\"%s\"", ns[i].addr);
        kit_prom_sample_u64(b, "cachesvc_redis_node_up", lb, (uint64_t)ns[i].up);
    }
    kit_prom_one_u64(b, "cachesvc_redis_slot_refreshes_total", "counter",
                     "Slot map refreshes done (successful ones)", rc_refresh_count(c));
    free(ns);
}

/* ------------------------------------------------------------------------ */
/* Routing                                                                   */

/* The node to send a command for slot to: its master, or with replica
 * reads one of its replicas that is not down. NULL if the slot has none. */
static rc__node *route(rc_cluster *c, unsigned slot, bool replica)
{
    rc__node *m = atomic_load_explicit(&c->slots[slot], memory_order_acquire);
    int nr;

    if (m == NULL || !replica || (nr = atomic_load(&m->nreplicas)) == 0)
        return m;
    unsigned start = atomic_fetch_add_explicit(&m->rr, 1, memory_order_relaxed);
    for (int i = 0; i < nr; i++) {
        rc__node *r = atomic_load(&m->replicas[(start + (unsigned)i) % (unsigned)nr]);
        if (r != NULL && !rc__node_is_down(r))
            return r;
    }
    return m;
}

/* Sleeps a jittered, growing pause before retry number attempt. Returns 0,
 * or -ETIMEDOUT if the pause would end past deadline (then no sleep). */
static int backoff(rc_cluster *c, int attempt, int64_t deadline)
{
    int64_t ms = RC_BACKOFF_MIN_MS << (attempt < 6 ? attempt : 6);
    if (ms > RC_BACKOFF_MAX_MS)
        ms = RC_BACKOFF_MAX_MS;
    int64_t ns = ms * 1000000 / 2 + (int64_t)(rc__rand(c) % (unsigned)(ms * 1000000 / 2 + 1));
    int64_t now = rt_now_ns();
    if (now + ns >= deadline) {
        /* Use what is left, then report. */
        if (deadline > now)
            rt_sleep_ns(deadline - now);
        return RC_ETIMEDOUT;
    }
    rt_sleep_ns(ns);
    return 0;
}

/* Runs one single-slot command (routing slot, or any master if slot < 0)
 * with redirects and retries until deadline. */
static int exec_routed(rc_cluster *c, int argc, const char **argv, const size_t *argvlen,
                       int slot, int flags, int64_t deadline, rc_reply **out)
{
    size_t len = rc__format_len(argc, argv, argvlen);
    bool replica = (flags & RC_CMD_READ) && c->cfg.replica_reads;
    int redirects = 0, attempt = 0, resent = 0, rc;
    rc__node *ask = NULL, *n;

    for (;;) {
        rc__req *r;
        rc_reply *reply;
        bool asking = ask != NULL;
        unsigned s = slot >= 0 ? (unsigned)slot : rc__rand(c) % RC_SLOTS;

        if (atomic_load_explicit(&c->closing, memory_order_relaxed))
            return RC_ECANCELED;
        n = asking ? ask : route(c, s, replica);
        ask = NULL;
        if (n == NULL) {
            rc__refresh_async(c);
            if (backoff(c, attempt++, deadline) < 0)
                return RC_EUNAVAIL;
            continue;
        }
        if ((r = rc__req_new(len, asking)) == NULL)
            return RC_ENOMEM;
        rc__format(r->body, argc, argv, argvlen);
        rc = rc__submit(n, r);
        if (rc == RC_EAUTH) {
            rc__req_unref(r);
            return rc;
        }
        if (rc == RC_EDOWN) {
            rc__req_unref(r);
            atomic_fetch_add_explicit(&n->retries, 1, memory_order_relaxed);
            rc__refresh_async(c);
            if (backoff(c, attempt++, deadline) < 0)
                return RC_EDOWN;
            continue;
        }
        if (rc == 0)
            rc = rc__wait(r, deadline);
        if (rc < 0) {
            rc__req_unref(r);
            return rc;
        }
        if (r->err < 0) {
            rc = r->err;
            bool written = r->written;
            rc__req_unref(r);
            if (rc == RC_ECANCELED || rc == RC_EAUTH)
                return rc;
            if (written && (!(flags & RC_CMD_IDEMPOTENT) || ++resent > c->cfg.max_redirects))
                return rc;
            atomic_fetch_add_explicit(&n->retries, 1, memory_order_relaxed);
            rc__refresh_async(c);
            if (backoff(c, attempt++, deadline) < 0)
                return rc;
            continue;
        }
        reply = r->reply;
        r->reply = NULL;
        rc__req_unref(r);
        if (reply->type == RC_REPLY_ERROR) {
            char host[RC_HOST_MAX];
            unsigned rs;
            int port;
            int kind = rc__parse_redirect(reply->str, reply->len, &rs, host, sizeof host, &port);

            if (kind != 0) {
                rc__node *to;
                if (++redirects > c->cfg.max_redirects) {
                    rc_reply_free(reply);
                    return RC_EREDIRECT;
                }
                if ((to = rc__node_get(c, host[0] ? host : n->host, port)) == NULL) {
                    rc_reply_free(reply);
                    return RC_ENOMEM;
                }
                rc_reply_free(reply);
                if (kind == 1) {
                    atomic_fetch_add_explicit(&n->moved, 1, memory_order_relaxed);
                    atomic_store_explicit(&c->slots[rs], to, memory_order_release);
                    replica = false;
                    rc__refresh_async(c);
                } else {
                    atomic_fetch_add_explicit(&n->ask, 1, memory_order_relaxed);
                    ask = to;
                }
                continue;
            }
            if (rc__retryable_error(reply->str, reply->len)) {
                atomic_fetch_add_explicit(&n->retries, 1, memory_order_relaxed);
                if (reply->len >= 11 && memcmp(reply->str, "CLUSTERDOWN", 11) == 0)
                    rc__refresh_async(c);
                if (backoff(c, attempt++, deadline) == 0) {
                    rc_reply_free(reply);
                    continue;
                }
            }
            if (out)
                *out = reply;
            else
                rc_reply_free(reply);
            return RC_ESERVER;
        }
        if (out)
            *out = reply;
        else
            rc_reply_free(reply);
        return 0;
    }
}

/* One slot's share of a split multi-key command. */
typedef struct split_part {
    rc_cluster *c;
    int argc;                  /* 1 + its keys */
    const char **argv;
    size_t *lens;
    int *pos;                  /* where each key stands in the original */
    unsigned slot;
    int flags, rc;
    int64_t deadline;
    rc_reply *reply;
    rt_wg *wg;
} split_part;

static void split_run(void *arg)
{
    split_part *p = arg;
    p->rc = exec_routed(p->c, p->argc, p->argv, p->lens, (int)p->slot, p->flags, p->deadline,
                        &p->reply);
    if (p->wg)
        rt_wg_done(p->wg);
}

/* A multi-key command whose keys are in several slots: one command per slot
 * (keys keep their order inside it), run concurrently, replies combined:
 * MGET's arrays merged in key order, the others' integers summed. The first
 * failing part's error is returned (an error reply in *out). */
static int exec_split(rc_cluster *c, int argc, const char **argv, const size_t *argvlen,
                      int flags, int64_t deadline, rc_reply **out)
{
    int nk = argc - 1, np = 0, rc = 0;
    unsigned *slots = malloc((size_t)nk * sizeof *slots);
    int *group = malloc((size_t)nk * sizeof *group);
    int *pos = malloc((size_t)nk * sizeof *pos);
    /* Each part's argv: its command name and keys, packed one after another. */
    const char **sargv = malloc((size_t)(nk * 2) * sizeof *sargv);
    size_t *slen = malloc((size_t)(nk * 2) * sizeof *slen);
    split_part *parts = calloc((size_t)nk, sizeof *parts);
    rt_wg *wg = NULL;
    rc_reply *res = NULL;
    long long sum = 0;

    if (!slots || !group || !pos || !sargv || !slen || !parts) {
        rc = RC_ENOMEM;
        goto out;
    }
    for (int i = 0; i < nk; i++) {
        slots[i] = rc_keyslot(argv[i + 1], argvlen[i + 1]);
        group[i] = -1;
    }
    for (int i = 0, used = 0; i < nk; i++) {
        split_part *p;
        if (group[i] >= 0)
            continue;
        p = &parts[np];
        *p = (split_part){.c = c, .argv = sargv + used, .lens = slen + used,
                          .pos = pos + (used - np), .slot = slots[i], .flags = flags,
                          .deadline = deadline};
        p->argv[0] = argv[0];
        p->lens[0] = argvlen[0];
        p->argc = 1;
        for (int j = i; j < nk; j++) {
            if (group[j] < 0 && slots[j] == slots[i]) {
                group[j] = np;
                p->pos[p->argc - 1] = j;
                p->argv[p->argc] = argv[j + 1];
                p->lens[p->argc] = argvlen[j + 1];
                p->argc++;
            }
        }
        used += p->argc;
        np++;
    }
    if (np > 1 && (wg = rt_wg_new()) != NULL) {
        for (int i = 1; i < np; i++) {
            parts[i].wg = wg;
            rt_wg_add(wg, 1);
            if (rt_spawn(NULL, split_run, &parts[i]) < 0) {
                parts[i].wg = NULL;
                rt_wg_done(wg);
                split_run(&parts[i]);
            }
        }
    }
    split_run(&parts[0]);
    for (int i = 1; wg == NULL && i < np; i++)
        split_run(&parts[i]);
    if (wg != NULL)
        rt_wg_wait(wg, RT_NO_DEADLINE);   /* every part ends by deadline */

    for (int i = 0; i < np && rc == 0; i++)
        if (parts[i].rc < 0) {
            rc = parts[i].rc;
            if (rc == RC_ESERVER && out) {
                *out = parts[i].reply;
                parts[i].reply = NULL;
            }
        }
    if (rc < 0)
        goto out;
    if ((res = calloc(1, sizeof *res)) == NULL) {
        rc = RC_ENOMEM;
        goto out;
    }
    if (flags & RC_CMD_SPLIT_ARR) {
        res->type = RC_REPLY_ARRAY;
        if ((res->element = calloc((size_t)nk, sizeof *res->element)) == NULL) {
            rc = RC_ENOMEM;
            goto out;
        }
        res->elements = (size_t)nk;
    } else {
        res->type = RC_REPLY_INTEGER;
    }
    for (int i = 0; i < np; i++) {
        rc_reply *sub = parts[i].reply;
        int m = parts[i].argc - 1;
        if (flags & RC_CMD_SPLIT_ARR) {
            if (sub->type != RC_REPLY_ARRAY || sub->elements != (size_t)m) {
                rc = RC_EPROTO;
                goto out;
            }
            for (int k = 0; k < m; k++) {
                res->element[parts[i].pos[k]] = sub->element[k];
                sub->element[k] = NULL;
            }
        } else {
            if (sub->type != RC_REPLY_INTEGER) {
                rc = RC_EPROTO;
                goto out;
            }
            sum += sub->integer;
        }
    }
    res->integer = sum;
    if (out) {
        *out = res;
        res = NULL;
    }
out:
    /* freeReplyObject skips the NULL elements of a partial array. */
    rc_reply_free(res);
    for (int i = 0; parts && i < np; i++)
        rc_reply_free(parts[i].reply);
    if (wg)
        rt_wg_free(wg);
    free(slots);
    free(group);
    free(pos);
    free(sargv);
    free(slen);
    free(parts);
    return rc;
}

/* SET with NX, XX or GET answers differently when sent twice. */
static bool set_is_idempotent(int argc, const char **argv, const size_t *argvlen)
{
    for (int i = 3; i < argc; i++)
        if (argvlen[i] == 2 && (strncasecmp(argv[i], "NX", 2) == 0 ||
                                strncasecmp(argv[i], "XX", 2) == 0))
            return false;
        else if (argvlen[i] == 3 && strncasecmp(argv[i], "GET", 3) == 0)
            return false;
    return true;
}

int rc_command(rc_cluster *c, int argc, const char **argv,
               const size_t *argvlen, int64_t deadline, rc_reply **out)
{
    size_t stack_lens[RC_STACK_ARGS], *lens = NULL;
    int flags, key, rc;

    if (out)
        *out = NULL;
    if (c == NULL || argc < 1 || argv == NULL)
        return RC_EINVAL;
    if (argvlen == NULL) {
        lens = argc <= RC_STACK_ARGS ? stack_lens : malloc((size_t)argc * sizeof *lens);
        if (lens == NULL)
            return RC_ENOMEM;
        for (int i = 0; i < argc; i++)
            lens[i] = strlen(argv[i]);
        argvlen = lens;
    }
    deadline = rc__deadline(c, deadline);
    flags = rc__cmd_flags(argv[0], argvlen[0]);
    if ((flags & RC_CMD_IDEMPOTENT) && argvlen[0] == 3 && strncasecmp(argv[0], "SET", 3) == 0 &&
        !set_is_idempotent(argc, argv, argvlen))
        flags &= ~RC_CMD_IDEMPOTENT;
    if ((flags & (RC_CMD_SPLIT_ARR | RC_CMD_SPLIT_SUM)) && argc > 2) {
        unsigned s0 = rc_keyslot(argv[1], argvlen[1]);
        for (int i = 2; i < argc; i++)
            if (rc_keyslot(argv[i], argvlen[i]) != s0) {
                rc = exec_split(c, argc, argv, argvlen, flags, deadline, out);
                goto out;
            }
    }
    key = rc__cmd_key(flags, argc, argv, argvlen);
    rc = exec_routed(c, argc, argv, argvlen,
                     key >= 0 ? (int)rc_keyslot(argv[key], argvlen[key]) : -1, flags,
                     deadline, out);
out:
    if (lens != NULL && lens != stack_lens)
        free(lens);
    return rc;
}

int rc_ping(rc_cluster *c, int64_t deadline)
{
    const char *argv[] = {"PING"};
    return rc_command(c, 1, argv, NULL, deadline, NULL);
}

/* ---- purge --------------------------------------------------------------- */

/* UNLINKs the keys of one SCAN page (routed and split by slot). */
static int unlink_keys(rc_cluster *c, const rc_reply *keys, int64_t deadline,
                       uint64_t *deleted)
{
    size_t n = keys->elements;
    if (n == 0)
        return 0;
    const char **argv = malloc((n + 1) * sizeof(*argv));
    size_t *argvlen = malloc((n + 1) * sizeof(*argvlen));
    int rc = RC_ENOMEM;
    if (argv == NULL || argvlen == NULL)
        goto out;
    argv[0] = "UNLINK";
    argvlen[0] = 6;
    for (size_t i = 0; i < n; i++) {
        if (keys->element[i]->type != RC_REPLY_STRING) {
            rc = RC_EPROTO;
            goto out;
        }
        argv[i + 1] = keys->element[i]->str;
        argvlen[i + 1] = keys->element[i]->len;
    }
    rc_reply *r = NULL;
    rc = rc_command(c, (int)n + 1, argv, argvlen, deadline, &r);
    if (rc == 0 && r->type == RC_REPLY_INTEGER && deleted != NULL)
        *deleted += (uint64_t)r->integer;
    rc_reply_free(r);
out:
    free(argv);
    free(argvlen);
    return rc;
}

/* SCANs one master for item keys and unlinks them. */
static int purge_node(rc_cluster *c, rc__node *n, int64_t deadline, uint64_t *deleted)
{
    char cursor[32] = "0";
    do {
        const char *argv[6] = {"SCAN", cursor, "MATCH", "stock:{*", "COUNT", "1000"};
        size_t argvlen[6] = {4, strlen(cursor), 5, 8, 5, 4};
        rc_reply *r = NULL;
        int rc = rc__node_exec(n, 6, argv, argvlen, deadline, &r);
        if (rc < 0)
            return rc;
        if (r->type != RC_REPLY_ARRAY || r->elements != 2 ||
            r->element[0]->type != RC_REPLY_STRING || r->element[0]->len >= sizeof(cursor) ||
            r->element[1]->type != RC_REPLY_ARRAY) {
            rc = r->type == RC_REPLY_ERROR ? RC_ESERVER : RC_EPROTO;
            rc_reply_free(r);
            return rc;
        }
        memcpy(cursor, r->element[0]->str, r->element[0]->len);
        cursor[r->element[0]->len] = '\0';
        rc = unlink_keys(c, r->element[1], deadline, deleted);
        rc_reply_free(r);
        if (rc < 0)
            return rc;
    } while (strcmp(cursor, "0") != 0);
    return 0;
}

int rc_purge_items(rc_cluster *c, int64_t deadline, uint64_t *deleted)
{
    uint64_t count = 0;
    deadline = rc__deadline(c, deadline);
    int rc = rc_refresh(c, deadline);
    if (rc < 0)
        return rc;
    /* The masters of the slot map, each once (16384 slots, few masters). */
    rc__node *masters[256];
    int nm = 0;
    for (unsigned s = 0; s < RC_SLOTS; s++) {
        rc__node *n = atomic_load(&c->slots[s]);
        if (n == NULL)
            return RC_EUNAVAIL;    /* a slot nobody serves: cannot purge it */
        int k = 0;
        while (k < nm && masters[k] != n)
            k++;
        if (k == nm) {
            if (nm == (int)(sizeof(masters) / sizeof(masters[0])))
                return RC_EINVAL;
            masters[nm++] = n;
        }
    }
    for (int i = 0; i < nm && rc == 0; i++)
        rc = purge_node(c, masters[i], deadline, &count);
    if (deleted != NULL)
        *deleted = count;
    return rc;
}
