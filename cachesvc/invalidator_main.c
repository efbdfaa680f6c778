/*
 * invalidator_main.c: the standalone `invalidator` binary. It runs the
 * delay consumer (invalidator/inv.h, INV_ROLE_DELAY) apart from the service:
 * it joins the fleet's consumer group, holds each event until due and
 * deletes the Redis Cluster copy with the version-guarded script of the
 * cluster client (cachesvc/redis/rc.h).
 *
 * It reads the service's configuration (the same INI file, CACHESVC_*
 * variables and --section.key=value flags; see `invalidator --help`) and
 * uses [kafka] brokers, topic, group, instance_id and [redis] url,
 * timeout_ms. The brokers must be shared ones: a cachesvc-devbroker address
 * or a real cluster ("embedded" would be a cluster nobody else sees).
 *
 * Extra flags of its own, before the service's:
 *   --stats-ms N     print a stats line to stderr every N ms (0 = never)
 *   --appliers N     Redis batches in flight (default 4)
 *   --pending-cap N  events held before fetching pauses (default 100000)
 *
 * Runs until SIGTERM or SIGINT, then commits what it applied and leaves the
 * group (pending events go to the other members).
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "cachesvc/config.h"
#include "cachesvc/redis/rc.h"
#include "cachesvc/redis_sink.h"
#include "invalidator/inv.h"
#include "runtime/rt.h"

typedef struct app {
    svc_config cfg;
    int stats_ms, appliers, pending_cap;
    int sigfd;
    rc_cluster *rc;
    svc_redis_sink sink;
    int rc_status;
} app;

static void print_stats(inv *iv)
{
    inv_stats *st = malloc(sizeof(*st));
    if (st == NULL)
        return;
    inv_stats_get(iv, st);
    fprintf(stderr,
            "invalidator: received=%llu applied=%llu coalesced=%llu "
            "errors=%llu retries=%llu pending=%lld lag_p50_ms=%lld "
            "lag_p99_ms=%lld lateness_p99_ms=%lld\n",
            (unsigned long long)st->received, (unsigned long long)st->applied,
            (unsigned long long)st->coalesced, (unsigned long long)st->errors,
            (unsigned long long)st->retries, (long long)st->pending,
            (long long)inv_hist_quantile(&st->lag, 0.5),
            (long long)inv_hist_quantile(&st->lag, 0.99),
            (long long)inv_hist_quantile(&st->lateness, 0.99));
    free(st);
}

static void run(void *arg)
{
    app *a = arg;
    inv *iv = NULL;
    a->rc_status = 1;
    if (rt_fd_register(a->sigfd) < 0) {
        fprintf(stderr, "invalidator: cannot watch signals\n");
        return;
    }

    rc_config rcc = {.seeds = a->cfg.redis_url,
                     .command_timeout_ms = a->cfg.redis_timeout_ms};
    a->rc = rc_new(&rcc);
    if (a->rc == NULL) {
        fprintf(stderr, "invalidator: bad redis.url %s\n", a->cfg.redis_url);
        return;
    }
    int rc = rc_connect(a->rc, rt_deadline_ms(10000));
    if (rc < 0) {
        fprintf(stderr, "invalidator: redis %s: %s\n", a->cfg.redis_url,
                rc_strerror(rc));
        goto out;
    }

    /* 256 deletes in flight at once, pipelined by the cluster client. */
    if (svc_redis_sink_start(&a->sink, a->rc, a->cfg.redis_timeout_ms,
                              a->cfg.redis_tombstone_ttl_ms,
                             SVC_REDIS_SINK_WIDTH) < 0) {
        fprintf(stderr, "invalidator: out of memory\n");
        goto out;
    }
    inv_config ic = {
        .brokers = a->cfg.kafka_brokers,
        .topic = a->cfg.kafka_topic,
        .delay_group = a->cfg.kafka_group,
        .instance_id = a->cfg.instance_id,
        .delay_ms = a->cfg.invalidation_delay_ms > 0 ? a->cfg.invalidation_delay_ms : -1,
        .roles = INV_ROLE_DELAY,
        .appliers = a->appliers,
        .pending_cap = a->pending_cap,
    };
    inv_redis_sink rsink = {svc_redis_sink_del, &a->sink};
    if ((rc = inv_new(&ic, NULL, &rsink, NULL, &iv)) < 0 ||
        (rc = inv_start(iv)) < 0) {
        fprintf(stderr, "invalidator: %s\n", inv_strerror(rc));
        goto out;
    }
    fprintf(stderr, "invalidator: consuming %s from %s as group %s\n",
            a->cfg.kafka_topic, inv_bootstraps(iv), a->cfg.kafka_group);

    for (;;) {
        int64_t deadline =
            a->stats_ms > 0 ? rt_deadline_ms(a->stats_ms) : RT_NO_DEADLINE;
        int ready = rt_wait_fd(a->sigfd, RT_READ, deadline);
        if (ready > 0) {
            struct signalfd_siginfo si;
            if (read(a->sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
                fprintf(stderr, "invalidator: signal %u, stopping\n",
                        si.ssi_signo);
                break;
            }
        } else if (ready == -ETIMEDOUT) {
            print_stats(iv);
        } else {
            break;
        }
    }
    inv_stop(iv, 5000);
    print_stats(iv);
    a->rc_status = 0;
out:
    inv_free(iv);
    svc_redis_sink_stop(&a->sink);
    rc_free(a->rc);
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
    char err[512];
    int help = 0;
    if (svc_config_load(&a.cfg, argc, argv, NULL, &help, err, sizeof(err)) < 0) {
        fprintf(stderr, "invalidator: %s\n", err);
        return 2;
    }
    if (help) {
        printf("usage: %s [--stats-ms N] [--appliers N] [--pending-cap N] "
               "[service flags]\n"
               "Runs the delay consumer: Kafka invalidation events -> "
               "version-guarded Redis deletes.\nIt uses [kafka] brokers, "
               "topic, group, instance_id and [redis] url, timeout_ms of:\n\n",
               argv[0]);
        svc_config_help(stdout, argv[0]);
        return 0;
    }
    if (strcmp(a.cfg.redis_url, "none") == 0 || a.cfg.redis_url[0] == '\0') {
        fprintf(stderr, "invalidator: redis.url is required\n");
        return 2;
    }
    if (strcmp(a.cfg.kafka_brokers, "embedded") == 0)
        fprintf(stderr, "invalidator: warning: kafka.brokers=embedded is a "
                        "cluster of this process only; give a "
                        "cachesvc-devbroker address or real brokers\n");

    /* SIGTERM and SIGINT arrive through a signalfd the runtime waits on;
     * blocked before any thread starts so every thread inherits the mask. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    a.sigfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (a.sigfd < 0) {
        perror("invalidator: signalfd");
        return 1;
    }
    rt_config rcfg = {.workers = a.cfg.workers};
    int rc = rt_main(&rcfg, run, &a);
    if (rc < 0) {
        fprintf(stderr, "invalidator: runtime: %s\n", rt_strerror(rc));
        return 1;
    }
    return a.rc_status;
}
