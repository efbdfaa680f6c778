/*
 * invalidator_main.c: the standalone `invalidator` binary. It runs the
 * delay consumer (invalidator/inv.h, INV_ROLE_DELAY) apart from the service:
 * it joins the fleet's consumer group, holds each event until due and
 * deletes the Redis Cluster copy with the version-guarded script of the
 * cluster client (cachesvc/redis/rc.h).
 *
 * It reads the service's configuration (the same INI file, CACHESVC_*
 * variables and --section.key=value flags; see `invalidator --help`) and
 * uses [kafka] brokers, topic, group, instance_id, invalidation_delay_ms
 * and the librdkafka properties, [redis] url, timeout_ms, tombstone_ttl_ms,
 * user, password, [server] workers, [log] level and [invalidator] listen.
 * The brokers must be shared ones: a cachesvc-devbroker address or a real
 * cluster ("embedded" would be a cluster nobody else sees).
 *
 * On [invalidator] listen it answers GET /metrics (its own families, the
 * same names as cachesvc's: docs/metrics.md), /healthz and /readyz (200
 * while it runs, 503 "draining" once it stops; Redis and Kafka are named
 * but never make it 503). Every other route answers 501.
 *
 * Extra flags of its own, before the service's:
 *   --stats-ms N     log a stats line every N ms (0 = never; default 10000)
 *   --appliers N     Redis batches in flight (default 4)
 *   --pending-cap N  events held before fetching pauses (default 100000)
 * and --version, --check-config, --print-config as cachesvc has them.
 *
 * Signals:
 *   SIGHUP          re-reads the configuration as at start, applies
 *                   log.level and kafka.invalidation_delay_ms, and logs by
 *                   name each other key it uses that changed (it needs a
 *                   restart); a bad file keeps the running settings;
 *   SIGTERM/SIGINT  /readyz answers 503 draining, the delay consumer
 *                   applies what it holds, commits and leaves the group,
 *                   then the listener closes and the process exits 0.
 * Exit codes: 0 clean stop, 1 a dependency failed at start, 2 bad
 * configuration. Logs are logfmt on stderr (cachesvc/log.h).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "api/http.h"
#include "api/http_service.h"
#include "cachesvc/component_metrics.h"
#include "cachesvc/config.h"
#include "cachesvc/log.h"
#include "cachesvc/metrics.h"
#include "cachesvc/redis/rc.h"
#include "cachesvc/redis_sink.h"
#include "cachesvc_version.h"
#include "invalidator/inv.h"
#include "runtime/rt.h"

/* The keys this binary reads (the rest of the service's configuration is
 * accepted and ignored). Run-time ones are applied on SIGHUP; a change of
 * any other needs a restart. */
static const char *const used_keys[] = {
    "server.workers",      "redis.url",           "redis.timeout_ms",
    "redis.tombstone_ttl_ms", "redis.user",       "redis.password",
    "kafka.brokers",       "kafka.topic",         "kafka.group",
    "kafka.instance_id",   "kafka.<properties>",  "invalidator.listen",
};

typedef struct app {
    int argc;
    char **argv;
    svc_config cfg;              /* as loaded at start */
    svc_config ref;              /* what SIGHUP compares with */
    int stats_ms, appliers, pending_cap;
    int sigfd;
    rc_cluster *rc;
    svc_redis_sink sink;
    inv *iv;
    /* Read by the HTTP handlers on any worker: set once the component is
     * started, and only freed after the server stopped. */
    _Atomic(rc_cluster *) rc_live;
    _Atomic(inv *) iv_live;
    _Atomic int draining;
    http_service api;
    int exit_code;
} app;

static void log_stats(inv *iv, const char *msg)
{
    inv_stats *st = malloc(sizeof(*st));
    if (st == NULL)
        return;
    inv_stats_get(iv, st);
    SVC_INFO(NULL, msg,
             "received=%llu applied=%llu coalesced=%llu errors=%llu retries=%llu "
             "pending=%lld lag_p50_ms=%lld lag_p99_ms=%lld lateness_p99_ms=%lld",
             (unsigned long long)st->received, (unsigned long long)st->applied,
             (unsigned long long)st->coalesced, (unsigned long long)st->errors,
             (unsigned long long)st->retries, (long long)st->pending,
             (long long)inv_hist_quantile(&st->lag, 0.5),
             (long long)inv_hist_quantile(&st->lag, 0.99),
             (long long)inv_hist_quantile(&st->lateness, 0.99));
    free(st);
}

/* ------------------------------------------------------------------------ */
/* HTTP: /metrics, /healthz, /readyz                                          */

/* Fills out: Redis by a PING round trip, Kafka up once the delay consumer
 * holds its partition assignment, no store. Coroutines only (it parks on
 * the PING). */
static int app_ready(void *ctx, http_readiness *out)
{
    app *a = ctx;
    rc_cluster *rc = atomic_load(&a->rc_live);
    inv *iv = atomic_load(&a->iv_live);
    out->store = HTTP_DEP_NONE;
    out->redis = HTTP_DEP_DOWN;
    if (rc != NULL && rc_ping(rc, rt_deadline_ms(a->cfg.redis_timeout_ms)) == 0)
        out->redis = HTTP_DEP_UP;
    out->kafka = iv != NULL && inv_ready(iv) ? HTTP_DEP_UP : HTTP_DEP_DOWN;
    out->draining = atomic_load(&a->draining) != 0;
    return 0;
}

static int app_metrics(void *ctx, kit_buf *out)
{
    app *a = ctx;
    http_readiness rd = {0};
    app_ready(a, &rd);
    svc_build_info_metrics(out);
    svc_readiness_metrics(out, &rd, !rd.draining);
    kit_prom_header(out, "cachesvc_reloads_total", "counter", "Configuration reloads (SIGHUP).");
    kit_prom_sample_u64(out, "cachesvc_reloads_total", "result=\"ok\"",
                        svc_metric_get(SVC_C_RELOAD_OK));
    kit_prom_sample_u64(out, "cachesvc_reloads_total", "result=\"error\"",
                        svc_metric_get(SVC_C_RELOAD_ERROR));
    inv *iv = atomic_load(&a->iv_live);
    if (iv != NULL) {
        inv_stats *st = malloc(sizeof *st);   /* about 12 KiB: not on the stack */
        if (st == NULL) {
            out->oom = 1;
        } else {
            inv_stats_get(iv, st);
            inv_metrics_append(st, out);
            free(st);
        }
    }
    rc_cluster *rc = atomic_load(&a->rc_live);
    if (rc != NULL)
        rc_metrics_append(rc, out);
    kit_prom_process(out);
    return out->oom ? -ENOMEM : 0;
}

static int start_http(app *a, http_server **srv)
{
    char host[64];
    int port;
    if (svc_parse_hostport(a->cfg.invalidator_listen, host, sizeof host, &port) < 0) {
        SVC_ERROR(NULL, "bad invalidator.listen", "listen=%s", a->cfg.invalidator_listen);
        return -EINVAL;
    }
    int r = http_port_free(host, port);
    http_server_config hc;
    http_server_config_defaults(&hc);
    hc.host = host;
    hc.port = port;
    hc.acceptors = 1;
    hc.max_conns = 256;
    if (r == 0)
        r = http_server_start(&hc, &a->api, srv);
    if (r < 0) {
        SVC_ERROR(NULL, "cannot listen", "listen=%s err=\"%s\"", a->cfg.invalidator_listen,
                  http_strerror(r));
        return r;
    }
    SVC_INFO(NULL, "listening", "addr=%s port=%d routes=\"/metrics /healthz /readyz\"", host,
             http_server_port(*srv));
    return 0;
}

/* ------------------------------------------------------------------------ */
/* SIGHUP                                                                     */

struct reload_ctx {
    app *a;
    const svc_config *next;
    int restart;
};

static int used_key(const char *key)
{
    for (size_t i = 0; i < sizeof used_keys / sizeof used_keys[0]; i++)
        if (strcmp(used_keys[i], key) == 0)
            return 1;
    return 0;
}

static void reload_key(void *arg, const char *key, int runtime)
{
    struct reload_ctx *c = arg;
    char value[SVC_CFG_STR + 16] = "";
    svc_config_get(c->next, key, 1, value, sizeof value);
    (void)runtime;   /* cachesvc's run-time keys; this binary has its own two */
    if (strcmp(key, "log.level") == 0) {
        svc_log_set_level(c->next->log_level);
    } else if (strcmp(key, "kafka.invalidation_delay_ms") == 0) {
        /* The delay of an event is stamped by the relay that publishes it
         * (cachesvc); this one only shows in cachesvc_inv_delay_seconds. */
        inv *iv = atomic_load(&c->a->iv_live);
        if (iv != NULL)
            inv_set_delay_ms(iv, c->next->invalidation_delay_ms);
    } else if (used_key(key)) {
        c->restart++;
        SVC_WARN(NULL, "reload: this setting applies after a restart", "key=%s value=\"%s\"",
                 key, value);
        return;
    } else {
        SVC_DEBUG(NULL, "reload: setting not used by the invalidator", "key=%s", key);
        return;
    }
    SVC_INFO(NULL, "reload: setting applied", "key=%s value=\"%s\"", key, value);
}

static void reload(app *a)
{
    svc_config *next = svc_config_reload(a->argc, a->argv);
    if (next == NULL)
        return;
    struct reload_ctx c = {a, next, 0};
    int n = svc_config_diff(&a->ref, next, reload_key, &c);
    SVC_INFO(NULL, "config reloaded", "changed=%d need_restart=%d", n, c.restart);
    svc_config_reload_done(&a->ref, next);
}

/* ------------------------------------------------------------------------ */

static void run(void *arg)
{
    app *a = arg;
    http_server *srv = NULL;
    int rc;
    a->exit_code = 1;
    svc_log_set_reqid_source(http_request_id);
    if (rt_fd_register(a->sigfd) < 0) {
        SVC_ERROR(NULL, "cannot watch signals", NULL);
        return;
    }
    if (start_http(a, &srv) < 0)
        return;

    rc_config rcc = {.seeds = a->cfg.redis_url,
                     .command_timeout_ms = a->cfg.redis_timeout_ms,
                     .user = a->cfg.redis_user,
                     .password = a->cfg.redis_password};
    if ((rc = rc_new(&rcc, &a->rc)) < 0) {
        /* On RC_EINVAL the client logged what it refused. */
        SVC_ERROR(NULL, rc == RC_EINVAL ? "bad redis.url" : "redis client not created",
                  "url=%s err=\"%s\"", a->cfg.redis_url, rc_strerror(rc));
        goto out;
    }
    rc = rc_connect(a->rc, rt_deadline_ms(10000));
    if (rc == RC_EAUTH) {
        /* The node's answer names it; the password is never logged. */
        char why[256], q[300];
        rc_auth_error(a->rc, why, sizeof why);
        SVC_ERROR(NULL, "redis refused the credentials", "url=%s user=%s err=%s", a->cfg.redis_url,
                  a->cfg.redis_user[0] ? a->cfg.redis_user : "default", rt_log_q(q, sizeof q, why));
        goto out;
    }
    if (rc < 0) {
        SVC_ERROR(NULL, "redis unreachable", "url=%s err=\"%s\"", a->cfg.redis_url,
                  rc_strerror(rc));
        goto out;
    }
    atomic_store(&a->rc_live, a->rc);

    /* 256 deletes in flight at once, pipelined by the cluster client. */
    if ((rc = svc_redis_sink_start(&a->sink, a->rc, a->cfg.redis_timeout_ms,
                                   a->cfg.redis_tombstone_ttl_ms, SVC_REDIS_SINK_WIDTH)) < 0) {
        SVC_ERROR(NULL, "redis delete pool did not start", "err=\"%s\"", strerror(-rc));
        goto out;
    }
    /* The fleet's broadcast_mode decides whether a copy at the event's own
     * version is the writer's refresh, to be spared (docs/invalidator.md). */
    a->sink.spare_equal = strcmp(a->cfg.kafka_broadcast_mode, "evict") != 0;
    inv_kafka_prop props[SVC_KAFKA_PROPS_MAX];
    for (int i = 0; i < a->cfg.n_kafka_props && i < SVC_KAFKA_PROPS_MAX; i++)
        props[i] = (inv_kafka_prop){a->cfg.kafka_props[i].key, a->cfg.kafka_props[i].value};
    inv_config ic = {
        .brokers = a->cfg.kafka_brokers,
        .topic = a->cfg.kafka_topic,
        .delay_group = a->cfg.kafka_group,
        .instance_id = a->cfg.instance_id,
        .delay_ms = a->cfg.invalidation_delay_ms > 0 ? a->cfg.invalidation_delay_ms : -1,
        .roles = INV_ROLE_DELAY,
        .appliers = a->appliers,
        .pending_cap = a->pending_cap,
        .kafka_props = props,
        .n_kafka_props = a->cfg.n_kafka_props,
    };
    inv_redis_sink rsink = {svc_redis_sink_del, &a->sink};
    if ((rc = inv_new(&ic, NULL, &rsink, NULL, &a->iv)) < 0 || (rc = inv_start(a->iv)) < 0) {
        SVC_ERROR(NULL, "invalidator did not start", "err=\"%s\"", inv_strerror(rc));
        goto out;
    }
    atomic_store(&a->iv_live, a->iv);
    SVC_INFO(NULL, "consuming", "topic=%s brokers=%s group=%s", a->cfg.kafka_topic,
             inv_bootstraps(a->iv), a->cfg.kafka_group);

    for (;;) {
        int64_t deadline = a->stats_ms > 0 ? rt_deadline_ms(a->stats_ms) : RT_NO_DEADLINE;
        struct signalfd_siginfo si;
        ssize_t n = rt_read(a->sigfd, &si, sizeof si, deadline);
        if (n == -ETIMEDOUT) {
            log_stats(a->iv, "stats");
            continue;
        }
        if (n == -ECANCELED)
            break;
        if (n != (ssize_t)sizeof si)
            continue;
        if (si.ssi_signo == SIGHUP) {
            SVC_INFO(NULL, "SIGHUP: reloading configuration", NULL);
            reload(a);
            continue;
        }
        SVC_INFO(NULL, "stopping", "signal=%s", si.ssi_signo == SIGTERM ? "SIGTERM" : "SIGINT");
        break;
    }
    atomic_store(&a->draining, 1);
    int64_t t0 = rt_now_ns();
    if (inv_stop(a->iv, 5000) < 0)
        SVC_WARN(NULL, "invalidator stop timed out", NULL);
    log_stats(a->iv, "stopped consuming");
    SVC_INFO(NULL, "drained", "ms=%lld", (long long)((rt_now_ns() - t0) / 1000000));
    a->exit_code = 0;
out:
    atomic_store(&a->draining, 1);
    if (srv != NULL)
        http_server_stop(srv, rt_now_ns() + 2000000000LL);
    atomic_store(&a->iv_live, NULL);
    atomic_store(&a->rc_live, NULL);
    inv_free(a->iv);
    svc_redis_sink_stop(&a->sink);
    rc_free(a->rc);
    SVC_INFO(NULL, "stopped", "code=%d", a->exit_code);
}

static int take_int_flag(int *argc, char **argv, const char *name, int *out)
{
    size_t len = strlen(name);
    for (int i = 1; i < *argc; i++) {
        const char *v = NULL;
        int used = 0;
        if (strcmp(argv[i], name) == 0 && i + 1 < *argc) {
            v = argv[i + 1];
            used = 2;
        } else if (strncmp(argv[i], name, len) == 0 && argv[i][len] == '=') {
            v = argv[i] + len + 1;
            used = 1;
        }
        if (v == NULL)
            continue;
        char *end;
        long n = strtol(v, &end, 10);
        if (*end != '\0' || n < 0 || n > 100000000) {
            fprintf(stderr, "invalidator: bad %s %s\n", name, v);
            return -EINVAL;
        }
        *out = (int)n;
        memmove(&argv[i], &argv[i + used], (size_t)(*argc - i - used + 1) * sizeof(*argv));
        *argc -= used;
        i--;
    }
    return 0;
}

int main(int argc, char **argv)
{
    static app a;
    a.stats_ms = 10000;
    if (take_int_flag(&argc, argv, "--stats-ms", &a.stats_ms) < 0 ||
        take_int_flag(&argc, argv, "--appliers", &a.appliers) < 0 ||
        take_int_flag(&argc, argv, "--pending-cap", &a.pending_cap) < 0)
        return 2;
    int act = svc_config_action(argc, argv);
    if (act == SVC_ACT_VERSION) {
        printf("invalidator %s (%s)\n", CACHESVC_VERSION, CACHESVC_COMMIT);
        return 0;
    }
    if (act == SVC_ACT_HELP) {
        printf("usage: %s [--stats-ms N] [--appliers N] [--pending-cap N] "
               "[service flags]\n"
               "Runs the delay consumer: Kafka invalidation events -> "
               "version-guarded Redis deletes.\nIt uses [kafka] brokers, "
               "topic, group, instance_id, [redis] url, timeout_ms, "
               "tombstone_ttl_ms, user, password,\n[server] workers, [log] level "
               "and [invalidator] listen (GET /metrics, /healthz, /readyz) of:\n\n",
               argv[0]);
        svc_config_help(stdout, argv[0]);
        return 0;
    }
    char err[512];
    if (svc_config_load(&a.cfg, argc, argv, NULL, NULL, err, sizeof(err)) < 0) {
        fprintf(stderr, "invalidator: %s\n", err);
        return 2;
    }
    if (strcmp(a.cfg.redis_url, "none") == 0 || a.cfg.redis_url[0] == '\0') {
        fprintf(stderr, "invalidator: redis.url is required\n");
        return 2;
    }
    if (strcmp(a.cfg.kafka_brokers, "none") == 0) {
        fprintf(stderr, "invalidator: kafka.brokers is required\n");
        return 2;
    }
    int r = svc_config_finish_action("invalidator", act, &a.cfg);
    if (r >= 0)
        return r;
    a.argc = argc;
    a.argv = argv;
    a.ref = a.cfg;
    a.api = (http_service){.ctx = &a, .metrics = app_metrics, .ready = app_ready};
    svc_log_set_level(a.cfg.log_level);
    SVC_INFO(NULL, "starting", "version=%s commit=%s pid=%ld config=\"%s\"", CACHESVC_VERSION,
             CACHESVC_COMMIT, (long)getpid(), a.cfg.path);
    if (strcmp(a.cfg.kafka_brokers, "embedded") == 0)
        SVC_WARN(NULL, "kafka.brokers=embedded is a cluster of this process only; give a "
                       "cachesvc-devbroker address or real brokers", NULL);

    /* SIGHUP, SIGTERM and SIGINT arrive through a signalfd the runtime
     * waits on; blocked before any thread starts so every thread inherits
     * the mask. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    a.sigfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (a.sigfd < 0) {
        SVC_ERROR(NULL, "signalfd failed", "err=\"%s\"", strerror(errno));
        return 1;
    }
    rt_config rcfg = {.workers = a.cfg.workers};
    int rc = rt_main(&rcfg, run, &a);
    if (rc < 0) {
        SVC_ERROR(NULL, "runtime did not start", "err=\"%s\"", rt_strerror(rc));
        return 1;
    }
    return a.exit_code;
}
