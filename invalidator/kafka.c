/*
 * kafka.c: what the roles share: the self-pipe that wakes a role's
 * coroutine, librdkafka configuration, and the process-wide embedded mock
 * cluster ("embedded" brokers).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "invalidator/inv_kafka.h"

/* ---------------------------------------------------------------------- */
/* Self-pipe                                                                */

static __attribute__((noinline)) int errno_now(void)
{
    return errno;
}

int inv__wake_open(inv_wake *w)
{
    int fds[2];
    if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0)
        return -errno_now();
    int rc = rt_fd_register(fds[0]);
    if (rc < 0) {
        close(fds[0]);
        close(fds[1]);
        return rc;
    }
    w->rfd = fds[0];
    __atomic_store_n(&w->wfd, fds[1], __ATOMIC_RELEASE);   /* inv_notify */
    return 0;
}

void inv__wake_close(inv_wake *w)
{
    if (w->rfd >= 0)
        rt_close(w->rfd);
    if (w->wfd >= 0)
        close(w->wfd);
    w->rfd = w->wfd = -1;
}

void inv__wake_signal(inv_wake *w)
{
    char c = 1;
    /* A full pipe already holds a wakeup: EAGAIN is fine. */
    ssize_t n = write(w->wfd, &c, 1);
    (void)n;
}

void inv__wake_drain(inv_wake *w)
{
    /* A read shorter than the buffer emptied the pipe: one system call in
     * the common case. */
    char buf[512];
    while (read(w->rfd, buf, sizeof(buf)) == (ssize_t)sizeof(buf))
        ;
}

void inv__wake_wait(inv_wake *w, int64_t deadline)
{
    rt_wait_fd(w->rfd, RT_READ, deadline);
}

/* ---------------------------------------------------------------------- */
/* Configuration                                                            */

int inv__conf_set(rd_kafka_conf_t *conf, const char *name, const char *value)
{
    char err[256];
    if (rd_kafka_conf_set(conf, name, value, err, sizeof(err)) !=
        RD_KAFKA_CONF_OK) {
        fprintf(stderr, "invalidator: kafka config %s=%s: %s\n", name, value,
                err);
        return -EINVAL;
    }
    return 0;
}

rd_kafka_conf_t *inv__conf_new(inv *iv, const char *client_suffix)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char id[256];
    snprintf(id, sizeof(id), "cachesvc-%s-%s", iv->instance_id,
             client_suffix);
    if (inv__conf_set(conf, "bootstrap.servers", iv->brokers) < 0 ||
        inv__conf_set(conf, "client.id", id) < 0 ||
        inv__conf_set(conf, "log.connection.close", "false") < 0 ||
        /* After a broker outage every role reconnects within a second of
         * the broker's return (librdkafka's default backs off to 10 s, and
         * the invalidations wait that long). */
        inv__conf_set(conf, "reconnect.backoff.max.ms", "1000") < 0 ||
        (iv->kafka_debug != NULL &&
         inv__conf_set(conf, "debug", iv->kafka_debug) < 0)) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    return conf;
}

int inv__conf_consumer(inv *iv, rd_kafka_conf_t *conf, const char *group)
{
    char session[32], heartbeat[32];
    int hb = iv->session_timeout_ms / 3 < 1000 ? iv->session_timeout_ms / 3 : 1000;
    snprintf(session, sizeof(session), "%d", iv->session_timeout_ms);
    snprintf(heartbeat, sizeof(heartbeat), "%d", hb > 0 ? hb : 1);
    if (inv__conf_set(conf, "group.id", group) < 0 ||
        inv__conf_set(conf, "session.timeout.ms", session) < 0 ||
        inv__conf_set(conf, "heartbeat.interval.ms", heartbeat) < 0 ||
        inv__conf_set(conf, "fetch.wait.max.ms", "5") < 0)
        return -EIO;
    return 0;
}

int inv__consumer_open(inv *iv, rd_kafka_conf_t *conf, inv_rebalance_fn cb,
                       void *opaque, inv_wake *w, rd_kafka_t **rkp,
                       rd_kafka_queue_t **qp)
{
    char err[512];
    if (cb != NULL)
        rd_kafka_conf_set_rebalance_cb(conf, cb);
    rd_kafka_conf_set_opaque(conf, opaque);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
    if (rk == NULL) {
        rd_kafka_conf_destroy(conf);
        fprintf(stderr, "invalidator: consumer: %s\n", err);
        return -EIO;
    }
    rd_kafka_poll_set_consumer(rk);   /* one queue for everything */
    rd_kafka_queue_t *q = rd_kafka_queue_get_consumer(rk);
    rd_kafka_queue_io_event_enable(q, w->wfd, "1", 1);
    *rkp = rk;
    *qp = q;
    if (cb == NULL)
        return 0;                 /* the caller assigns partitions itself */
    rd_kafka_topic_partition_list_t *topics =
        rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(topics, iv->topic, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t kerr = rd_kafka_subscribe(rk, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    if (kerr != RD_KAFKA_RESP_ERR_NO_ERROR) {
        fprintf(stderr, "invalidator: subscribe: %s\n", rd_kafka_err2str(kerr));
        return -EIO;
    }
    return 0;
}

void inv__consumer_drain(rd_kafka_t *rk, inv_wake *w,
                         void (*fn)(void *arg, rd_kafka_message_t *m),
                         void *arg)
{
    for (int i = 0; i < 4096; i++) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 0);
        if (m == NULL)
            return;
        fn(arg, m);
        rd_kafka_message_destroy(m);
    }
    inv__wake_signal(w);          /* more to do: come back at once */
    rt_yield();
}

void inv__consumer_free(rd_kafka_t *rk, rd_kafka_queue_t *q)
{
    if (q != NULL) {
        rd_kafka_queue_io_event_enable(q, -1, NULL, 0);
        rd_kafka_queue_destroy(q);
    }
    if (rk != NULL)
        inv__kafka_destroy(rk);
}

static intptr_t destroy_blocking(void *arg)
{
    rd_kafka_destroy(arg);
    return 0;
}

void inv__kafka_destroy(rd_kafka_t *rk)
{
    if (rk == NULL)
        return;
    if (rt_self() != NULL)
        rt_blocking(destroy_blocking, rk);
    else
        rd_kafka_destroy(rk);
}

/* ---------------------------------------------------------------------- */
/* Embedded mock cluster                                                    */

static struct {
    pthread_mutex_t mu;
    int refs;
    rd_kafka_t *rk;                /* the handle the cluster lives on */
    rd_kafka_mock_cluster_t *mc;
} mock = {PTHREAD_MUTEX_INITIALIZER, 0, NULL, NULL};

int inv__mock_acquire(const char *topic, int partitions, char **boot)
{
    int rc = 0;
    pthread_mutex_lock(&mock.mu);
    if (mock.refs == 0) {
        char err[256];
        rd_kafka_conf_t *conf = rd_kafka_conf_new();
        /* No broker of its own: the handle only hosts the mock cluster (and
         * would log a notice that it has no bootstrap servers). */
        rd_kafka_conf_set(conf, "log_level", "3", err, sizeof(err));
        mock.rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
        if (mock.rk == NULL) {
            fprintf(stderr, "invalidator: mock cluster handle: %s\n", err);
            rc = -EIO;
            goto out;
        }
        mock.mc = rd_kafka_mock_cluster_new(mock.rk, 1);
        if (mock.mc == NULL) {
            rd_kafka_destroy(mock.rk);
            mock.rk = NULL;
            rc = -EIO;
            goto out;
        }
    }
    /* Every inv may name its own topic: create it if new (an existing
     * topic is kept as it is). */
    rd_kafka_mock_topic_create(mock.mc, topic, partitions, 1);
    *boot = strdup(rd_kafka_mock_cluster_bootstraps(mock.mc));
    if (*boot == NULL) {
        rc = -ENOMEM;
        if (mock.refs == 0) {
            rd_kafka_mock_cluster_destroy(mock.mc);
            rd_kafka_destroy(mock.rk);
            mock.mc = NULL;
            mock.rk = NULL;
        }
        goto out;
    }
    mock.refs++;
out:
    pthread_mutex_unlock(&mock.mu);
    return rc;
}

void inv__mock_release(void)
{
    rd_kafka_mock_cluster_t *mc = NULL;
    rd_kafka_t *rk = NULL;
    pthread_mutex_lock(&mock.mu);
    if (--mock.refs == 0) {
        mc = mock.mc;
        rk = mock.rk;
        mock.mc = NULL;
        mock.rk = NULL;
    }
    pthread_mutex_unlock(&mock.mu);
    if (mc != NULL) {
        rd_kafka_mock_cluster_destroy(mc);
        rd_kafka_destroy(rk);
    }
}

rd_kafka_mock_cluster_t *inv__mock_cluster(void)
{
    pthread_mutex_lock(&mock.mu);
    rd_kafka_mock_cluster_t *mc = mock.mc;
    pthread_mutex_unlock(&mock.mu);
    return mc;
}
