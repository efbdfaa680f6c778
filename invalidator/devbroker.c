/*
 * devbroker.c: cachesvc-devbroker, a Kafka mock cluster for development
 * machines. It starts librdkafka's in-process mock cluster, creates the
 * invalidation topic, prints the bootstrap address list on stdout (one
 * line) and runs until SIGTERM or SIGINT, so several cachesvc instances and
 * invalidators can share one "Kafka" without installing one.
 *
 * A Kafka outage on demand (fault tests): SIGUSR1 takes every broker down
 * (connections closed, new ones refused; the log is kept), SIGUSR2 brings
 * them back.
 *
 * Usage: cachesvc-devbroker [--brokers N] [--partitions N] [--topic NAME]
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "cachesvc_version.h"
#include "invalidator/inv_kafka.h"   /* inv__conf_log */

int main(int argc, char **argv)
{
    int brokers = 1, partitions = 16;   /* see inv.c: the mock serves one
                                         * batch per partition and fetch */
    const char *topic = INV_DEFAULT_TOPIC;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--version") == 0) {
            printf("cachesvc-devbroker %s (%s)\n", CACHESVC_VERSION, CACHESVC_COMMIT);
            return 0;
        }
        if (strcmp(argv[i], "--brokers") == 0 && i + 1 < argc) {
            brokers = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--partitions") == 0 && i + 1 < argc) {
            partitions = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--topic") == 0 && i + 1 < argc) {
            topic = argv[++i];
        } else {
            fprintf(stderr, "usage: %s [--brokers N] [--partitions N] "
                            "[--topic NAME]\n", argv[0]);
            return strcmp(argv[i], "--help") == 0 ? 0 : 2;
        }
    }
    if (brokers < 1 || partitions < 1) {
        fprintf(stderr, "cachesvc-devbroker: --brokers and --partitions must be >= 1\n");
        return 2;
    }

    /* Block the signals before librdkafka starts threads, then wait for
     * them synchronously. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGUSR1);
    sigaddset(&set, SIGUSR2);
    pthread_sigmask(SIG_BLOCK, &set, NULL);

    char err[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    inv__conf_log(conf);   /* librdkafka's lines as logfmt, module=kafka */
    /* The handle only hosts the cluster: no notice about its own missing
     * bootstrap servers. */
    rd_kafka_conf_set(conf, "log_level", "3", err, sizeof(err));
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    if (rk == NULL) {
        char qe[300];
        rt_log(RT_LOG_ERROR, "kafka", "devbroker: handle not created", "err=%s",
               rt_log_q(qe, sizeof qe, err));
        return 1;
    }
    rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(rk, brokers);
    if (mc == NULL) {
        rt_log(RT_LOG_ERROR, "kafka", "devbroker: mock cluster not created", NULL);
        rd_kafka_destroy(rk);
        return 1;
    }
    int rf = brokers < 3 ? brokers : 3;
    rd_kafka_resp_err_t kerr = rd_kafka_mock_topic_create(mc, topic, partitions, rf);
    if (kerr != RD_KAFKA_RESP_ERR_NO_ERROR)
        rt_log(RT_LOG_ERROR, "kafka", "devbroker: topic not created", "topic=%s error=%s",
               topic, rd_kafka_err2name(kerr));
    printf("%s\n", rd_kafka_mock_cluster_bootstraps(mc));
    fflush(stdout);

    int sig = 0;
    while (sigwait(&set, &sig) == 0 && (sig == SIGUSR1 || sig == SIGUSR2)) {
        for (int b = 1; b <= brokers; b++) {
            if (sig == SIGUSR1)
                rd_kafka_mock_broker_set_down(mc, b);
            else
                rd_kafka_mock_broker_set_up(mc, b);
        }
        rt_log(RT_LOG_INFO, "kafka", sig == SIGUSR1 ? "devbroker: brokers down" : "devbroker: brokers up",
               "brokers=%d", brokers);
    }
    rt_log(RT_LOG_INFO, "kafka", "devbroker: stopping", "signal=%d", sig);
    rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(rk);
    return 0;
}
