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
/* librdkafka's logs and errors, into the runtime's log stream (module=kafka) */

/* syslog(3) levels (librdkafka's) to ours. */
static int kafka_level(int syslog_level)
{
    return syslog_level <= 3 ? RT_LOG_ERROR   /* emerg, alert, crit, err */
           : syslog_level == 4 ? RT_LOG_WARN
           : syslog_level <= 6 ? RT_LOG_INFO  /* notice, info */
                               : RT_LOG_DEBUG;
}

/* Called from librdkafka's own threads (and from rd_kafka_new on the
 * caller's): rt_log is thread-safe and never switches coroutines. */
static void kafka_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    int l = kafka_level(level);
    if (!rt_log_enabled(l))
        return;
    /* "[thrd:<thread>]: <text>": the thread goes into a pair of its own. */
    char qc[160], qt[96];
    const char *thrd = "", *text = buf ? buf : "";
    size_t tl = 0;
    if (strncmp(text, "[thrd:", 6) == 0 && (tl = strcspn(text + 6, "]")) > 0 &&
        text[6 + tl] == ']' && text[7 + tl] == ':') {
        char t[96];
        snprintf(t, sizeof t, "%.*s", (int)tl, text + 6);
        thrd = rt_log_q(qt, sizeof qt, t);
        text += 8 + tl;
        text += text[0] == ' ';
    }
    rt_log(l, "kafka", text, "fac=%s client=%s%s%s", fac ? fac : "?",
           rt_log_q(qc, sizeof qc, rk ? rd_kafka_name(rk) : "?"), thrd[0] ? " thread=" : "",
           thrd);
}

/* Served by rd_kafka_poll / rd_kafka_consumer_poll on the role's
 * coroutine. librdkafka recovers from these by itself (all brokers down,
 * timeouts); a fatal one stops the handle. */
static void kafka_error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    (void)opaque;
    /* A broker connection that failed or broke was logged already (the log
     * callback's FAIL line, with the same text): one line, not two. */
    if (err == RD_KAFKA_RESP_ERR__TRANSPORT || err == RD_KAFKA_RESP_ERR__RESOLVE)
        return;
    int l = err == RD_KAFKA_RESP_ERR__FATAL ? RT_LOG_ERROR : RT_LOG_WARN;
    if (!rt_log_enabled(l))
        return;
    char qc[160];
    rt_log(l, "kafka", reason ? reason : "error", "error=%s client=%s",
           rd_kafka_err2name((rd_kafka_resp_err_t)err),
           rt_log_q(qc, sizeof qc, rk ? rd_kafka_name(rk) : "?"));
}

void inv__conf_log(rd_kafka_conf_t *conf)
{
    rd_kafka_conf_set_log_cb(conf, kafka_log_cb);
    rd_kafka_conf_set_error_cb(conf, kafka_error_cb);
}

/* ---------------------------------------------------------------------- */
/* Configuration                                                            */

int inv__conf_set(rd_kafka_conf_t *conf, const char *name, const char *value)
{
    char err[256];
    if (rd_kafka_conf_set(conf, name, value, err, sizeof(err)) !=
        RD_KAFKA_CONF_OK) {
        /* The property as its own key, so a password=... is redacted. */
        char qv[256], qe[300];
        rt_log(RT_LOG_ERROR, "kafka", "librdkafka refused a property", "%s=%s err=%s", name,
               rt_log_q(qv, sizeof qv, value), rt_log_q(qe, sizeof qe, err));
        return -EINVAL;
    }
    return 0;
}

rd_kafka_conf_t *inv__conf_new(inv *iv, const char *client_suffix)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    inv__conf_log(conf);
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
         inv__conf_set(conf, "debug", iv->kafka_debug) < 0) ||
        inv__conf_props(iv, conf,
                        INV_PROPS_GLOBAL |
                            (strcmp(client_suffix, "relay") == 0 ? INV_PROPS_PRODUCER : 0)) < 0) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    return conf;
}

/* ---------------------------------------------------------------------- */
/* Properties passed through                                                */

/* The properties the invalidator's guarantees rest on, and why. */
static const struct {
    const char *key, *why;
} reserved[] = {
    {"bootstrap.servers", "set by kafka.brokers"},
    {"metadata.broker.list", "set by kafka.brokers"},
    {"group.id", "set by kafka.group (delay consumer) and the instance id (broadcast consumer)"},
    {"enable.idempotence", "the relay needs the idempotent producer (no duplicate, no reordering)"},
    {"acks", "the relay deletes outbox rows only after acks=all"},
    {"request.required.acks", "the relay deletes outbox rows only after acks=all"},
    {"partitioner", "every instance must map an item to the same partition (per-item order)"},
    {"partitioner.consistent", "every instance must map an item to the same partition (per-item order)"},
    {"enable.auto.commit", "the consumers commit only what they applied (at least once)"},
    {"enable.auto.offset.store", "the delay consumer stores only applied offsets (at least once)"},
    {"auto.offset.reset", "the delay consumer starts at the earliest event, the broadcast one "
                          "detects a gap; both are part of the consistency guarantee"},
    {"isolation.level", "the consumers read what the relay committed"},
};

const char *inv_kafka_prop_reserved(const char *key)
{
    for (size_t i = 0; i < sizeof reserved / sizeof reserved[0]; i++)
        if (strcmp(key, reserved[i].key) == 0)
            return reserved[i].why;
    return NULL;
}

/* A property whose value must never be shown (logs, errors). */
static bool prop_is_secret(const char *key)
{
    return strstr(key, "password") != NULL || strstr(key, "secret") != NULL ||
           strstr(key, "token") != NULL;
}

/* With the embedded cluster: a property that only concerns the connection
 * to real brokers, which the in-process cluster does not speak. */
static bool prop_is_security(const char *key)
{
    return strncmp(key, "security.", 9) == 0 || strncmp(key, "sasl.", 5) == 0 ||
           strncmp(key, "ssl.", 4) == 0 || strncmp(key, "ssl_", 4) == 0;
}

/* Sets one property on conf; on failure writes why into err. */
static int prop_set(rd_kafka_conf_t *conf, const char *key, const char *value, char *err,
                    size_t errlen)
{
    char why[512];
    rd_kafka_conf_res_t res = rd_kafka_conf_set(conf, key, value, why, sizeof why);

    if (res == RD_KAFKA_CONF_OK)
        return 0;
    if (res == RD_KAFKA_CONF_UNKNOWN)
        snprintf(err, errlen, "kafka property %s: unknown to librdkafka", key);
    else if (prop_is_secret(key))
        /* librdkafka's message may quote the value. */
        snprintf(err, errlen, "kafka property %s: invalid value (not shown: a secret)", key);
    else
        snprintf(err, errlen, "kafka property %s: %s", key, why);
    return -EINVAL;
}

/* A whole number of milliseconds in 0..INT32_MAX, for the fields the
 * properties replace. */
static int parse_ms(const char *s, int *out)
{
    char *end;
    long long v;

    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < 0 || v > INT32_MAX)
        return -EINVAL;
    *out = (int)v;
    return 0;
}

int inv__props_apply_fields(const inv_kafka_prop *p, int n, int *message_timeout_ms,
                            int *linger_ms, int *session_timeout_ms, char *err,
                            size_t errlen)
{
    for (int i = 0; i < n; i++) {
        int *field = NULL;
        if (strcmp(p[i].key, "message.timeout.ms") == 0 ||
            strcmp(p[i].key, "delivery.timeout.ms") == 0)
            field = message_timeout_ms;
        else if (strcmp(p[i].key, "linger.ms") == 0 ||
                 strcmp(p[i].key, "queue.buffering.max.ms") == 0)
            field = linger_ms;
        else if (strcmp(p[i].key, "session.timeout.ms") == 0)
            field = session_timeout_ms;
        if (field != NULL && parse_ms(p[i].value, field) < 0) {
            snprintf(err, errlen, "kafka property %s: \"%s\" is not a whole number of "
                     "milliseconds", p[i].key, p[i].value);
            return -EINVAL;
        }
    }
    return 0;
}

int inv_check_kafka_props(const inv_config *cfg, char *err, size_t errlen)
{
    rd_kafka_conf_t *conf;
    int rc = 0, scratch[3];

    if (errlen > 0)
        err[0] = '\0';
    if (cfg == NULL || cfg->n_kafka_props == 0)
        return 0;
    if (cfg->n_kafka_props < 0 || cfg->kafka_props == NULL) {
        snprintf(err, errlen, "kafka properties: bad list");
        return -EINVAL;
    }
    if ((conf = rd_kafka_conf_new()) == NULL) {
        snprintf(err, errlen, "kafka properties: out of memory");
        return -ENOMEM;
    }
    for (int i = 0; i < cfg->n_kafka_props && rc == 0; i++) {
        const inv_kafka_prop *p = &cfg->kafka_props[i];
        const char *why;
        if (p->key == NULL || p->key[0] == '\0' || p->value == NULL) {
            snprintf(err, errlen, "kafka property %d: empty name or no value", i + 1);
            rc = -EINVAL;
        } else if ((why = inv_kafka_prop_reserved(p->key)) != NULL) {
            snprintf(err, errlen, "kafka property %s may not be overridden: %s", p->key, why);
            rc = -EINVAL;
        } else {
            rc = prop_set(conf, p->key, p->value, err, errlen);
        }
    }
    if (rc == 0)
        rc = inv__props_apply_fields(cfg->kafka_props, cfg->n_kafka_props, &scratch[0],
                                     &scratch[1], &scratch[2], err, errlen);
    rd_kafka_conf_destroy(conf);
    return rc;
}

/* Which clients each librdkafka property concerns, read once from
 * librdkafka's own table (rd_kafka_conf_properties_show: "name | C/P |
 * ..." rows, '*' for both), so that a consumer's property is not set on
 * the producer (librdkafka would warn that it ignores it) and the other
 * way round. */
static struct {
    pthread_once_t once;
    int n;
    struct prop_scope {
        char name[64];
        int kinds;                 /* INV_PROPS_* */
    } *v;
} scopes = {PTHREAD_ONCE_INIT, 0, NULL};

static void scopes_load(void)
{
    char *text = NULL, *line, *save = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    int cap = 0;

    if (f == NULL)
        return;
    rd_kafka_conf_properties_show(f);
    fclose(f);
    for (line = strtok_r(text, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
        char name[64], scope[8];
        int kinds = 0;
        if (sscanf(line, "%63s | %7s |", name, scope) != 2 || strchr(name, '.') == NULL)
            continue;
        kinds = strcmp(scope, "C") == 0 ? INV_PROPS_CONSUMER
              : strcmp(scope, "P") == 0 ? INV_PROPS_PRODUCER
                                        : INV_PROPS_GLOBAL;
        int i;
        for (i = 0; i < scopes.n && strcmp(scopes.v[i].name, name) != 0; i++)
            ;
        if (i < scopes.n) {
            scopes.v[i].kinds |= kinds;   /* in both the global and topic tables */
            continue;
        }
        if (scopes.n == cap) {
            struct prop_scope *nv = realloc(scopes.v, (size_t)(cap ? cap * 2 : 256) * sizeof *nv);
            if (nv == NULL)
                break;
            scopes.v = nv;
            cap = cap ? cap * 2 : 256;
        }
        snprintf(scopes.v[scopes.n].name, sizeof scopes.v[0].name, "%s", name);
        scopes.v[scopes.n++].kinds = kinds;
    }
    free(text);
}

int inv__prop_kinds(const char *key)
{
    pthread_once(&scopes.once, scopes_load);
    for (int i = 0; i < scopes.n; i++)
        if (strcmp(scopes.v[i].name, key) == 0)
            return scopes.v[i].kinds;
    return INV_PROPS_GLOBAL;       /* unknown here: set it everywhere */
}

int inv__conf_props(inv *iv, rd_kafka_conf_t *conf, int kinds)
{
    char err[512];

    for (int i = 0; i < iv->nprops; i++) {
        const inv_kafka_prop *p = &iv->props[i];
        if (iv->embedded && prop_is_security(p->key))
            continue;
        int pk = inv__prop_kinds(p->key);
        if (!(pk & kinds) && !(pk & INV_PROPS_GLOBAL))
            continue;
        if (prop_set(conf, p->key, p->value, err, sizeof err) < 0) {
            char q[600];
            rt_log(RT_LOG_ERROR, "inv", "kafka property refused", "err=%s",
                   rt_log_q(q, sizeof q, err));
            return -EINVAL;
        }
    }
    return 0;
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
    /* The operator's properties last: they override the role's settings
     * (those that may not be overridden were refused by inv_new). */
    if (inv__conf_props(iv, conf, INV_PROPS_GLOBAL | INV_PROPS_CONSUMER) < 0) {
        rd_kafka_conf_destroy(conf);
        return -EIO;
    }
    if (cb != NULL)
        rd_kafka_conf_set_rebalance_cb(conf, cb);
    rd_kafka_conf_set_opaque(conf, opaque);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
    if (rk == NULL) {
        rd_kafka_conf_destroy(conf);
        char qe[560];
        rt_log(RT_LOG_ERROR, "kafka", "consumer not created", "err=%s",
               rt_log_q(qe, sizeof qe, err));
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
        rt_log(RT_LOG_ERROR, "kafka", "subscribe failed", "topic=%s error=%s", iv->topic,
               rd_kafka_err2name(kerr));
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
        inv__conf_log(conf);
        /* No broker of its own: the handle only hosts the mock cluster (and
         * would log a notice that it has no bootstrap servers). */
        rd_kafka_conf_set(conf, "log_level", "3", err, sizeof(err));
        mock.rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
        if (mock.rk == NULL) {
            char qe[300];
            rt_log(RT_LOG_ERROR, "kafka", "mock cluster handle not created", "err=%s",
                   rt_log_q(qe, sizeof qe, err));
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
