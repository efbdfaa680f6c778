/*
 * config.c: defaults, INI file, environment and flags, in that order.
 *
 * Every key is one line of SVC_CONFIG_KEYS: section, key, kind, field,
 * bounds, default text and meaning. Defaults are applied by parsing their
 * text through the same setter as every other source, so a default can never
 * be a value the validator would refuse.
 */
#include "cachesvc/config.h"
#include "cachesvc/log.h"
#include "cachesvc/metrics.h"
#include "kit/kit.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

extern char **environ;

enum cfg_kind {
    K_INT,      /* int field, bounds min..max */
    K_I64,      /* int64_t field, bounds min..max */
    K_BOOL,     /* int field, 0 or 1 */
    K_STR,      /* char[] field, validated by the key's checker */
    K_LEVEL,    /* int field, a log level name */
};

typedef int (*cfg_check)(const char *v, char *why, size_t n);

static int check_any(const char *v, char *why, size_t n);
static int check_listen(const char *v, char *why, size_t n);
static int check_store_url(const char *v, char *why, size_t n);
static int check_redis_url(const char *v, char *why, size_t n);
static int check_kafka(const char *v, char *why, size_t n);
static int check_name(const char *v, char *why, size_t n);
static int check_user(const char *v, char *why, size_t n);
static int check_bcast_mode(const char *v, char *why, size_t n);


/* section, key, kind, field, min, max, checker, default, meaning */
#define SVC_CONFIG_KEYS(X)                                                                                      \
    X(server, listen, K_STR, listen, 0, 0, check_listen, "127.0.0.1:8080",                                   \
      "address:port the HTTP API listens on")                                                                   \
    X(server, workers, K_INT, workers, 0, 1024, check_any, "0",                                              \
      "runtime worker threads; 0 = one per online CPU")                                                         \
    X(server, admin_token, K_STR, admin_token, 0, 0, check_any, "",                                          \
      "bearer token for admin routes; empty = admin routes answer 403")                                         \
    X(server, max_connections, K_INT, max_connections, 1, 1000000, check_any, "10000",                       \
      "open connections before new ones get 503 and close")                                                     \
    X(server, idle_timeout_ms, K_INT, idle_timeout_ms, 1, 86400000, check_any, "60000",                      \
      "keep-alive connections idle this long are closed")                                                       \
    X(server, header_timeout_ms, K_INT, header_timeout_ms, 1, 600000, check_any, "10000",                    \
      "a request's headers must arrive within this time")                                                       \
    X(server, drain_timeout_ms, K_INT, drain_timeout_ms, 1, 600000, check_any, "10000",                      \
      "on SIGTERM/SIGINT, in-flight requests get this long before exit")                                        \
    X(server, shutdown_delay_ms, K_INT, shutdown_delay_ms, 0, 600000, check_any, "0",                         \
      "on SIGTERM/SIGINT, /readyz answers 503 draining and the listener keeps serving this long "             \
      "before the drain starts, so load balancers take the instance out first (the lame-duck period)")       \
    X(server, admin_token_file, K_STR, admin_token_file, 0, 0, check_any, "",                                 \
      "file whose first line is the admin token, read at start and on SIGHUP (keeps the token off "           \
      "the command line); not together with server.admin_token")                                              \
    X(store, url, K_STR, store_url, 0, 0, check_store_url, "sqlite:./cachesvc.db",                           \
      "database: sqlite:<path> or postgresql://user@host:port/db")                                              \
    X(store, batch_max, K_INT, store_batch_max, 1, 100000, check_any, "1024",                                \
      "most decrements of one item decided in one transaction")                                                 \
    X(store, queue_max, K_INT, store_queue_max, 1, 10000000, check_any, "4096",                              \
      "decrements waiting per item before new ones get 429 Retry-After")                                        \
    X(store, timeout_ms, K_INT, store_timeout_ms, 1, 600000, check_any, "5000",                              \
      "deadline of one database operation; past it the answer is 503")                                          \
    X(store, pool_size, K_INT, store_pool_size, 1, 1024, check_any, "4",                                     \
      "database connections (PostgreSQL)")                                                                      \
    X(store, pipeline_depth, K_INT, store_pipeline_depth, 1, 16, check_any, "1",                             \
      "batches of one item in flight at once (PostgreSQL): the next is decided on the state the one "         \
      "before will leave and sent once that one holds the item's row lock; pays only when round trips "       \
      "to the database, not its CPU, bound an item's batches")                                                 \
    X(store, sold_out_max_orders, K_I64, store_sold_out_max_orders, 0, 10000000, check_any, "100000",        \
      "a sold-out item with at most this many orders has its orders loaded once and later "                   \
      "decrements answered from memory (replay, limit_exceeded, sold_out); all items together "               \
      "hold 4x this, about 100 bytes per order; 0 = off")                                                       \
    X(redis, url, K_STR, redis_url, 0, 0, check_redis_url, "none",                                           \
      "Redis Cluster seeds host:port[,host:port...]; none = no Redis tier")                                     \
    X(redis, timeout_ms, K_INT, redis_timeout_ms, 1, 60000, check_any, "200",                                \
      "deadline of one Redis request")                                                                          \
    X(redis, connections, K_INT, redis_connections, 1, 64, check_any, "1",                                   \
      "connections per Redis node")                                                                             \
    X(redis, ttl_ms, K_INT, redis_ttl_ms, 0, INT_MAX, check_any, "3600000",                                  \
      "expiry of the Redis copy of an item; 0 = none")                                                          \
    X(redis, tombstone_ttl_ms, K_INT, redis_tombstone_ttl_ms, 1000, 86400000, check_any, "60000",            \
      "how long a delayed delete's tombstone refuses fills older than it (must outlast a reader's "          \
      "database read plus its Redis fill)")                                                                     \
    X(redis, breaker_failures, K_INT, redis_breaker_failures, 1, 1000000, check_any, "5",                    \
      "consecutive Redis failures that open the breaker (reads then skip Redis)")                               \
    X(redis, breaker_probe_ms, K_INT, redis_breaker_probe_ms, 1, 3600000, check_any, "1000",                 \
      "while the breaker is open, one read probes Redis this often")                                            \
    X(redis, user, K_STR, redis_user, 0, 0, check_user, "",                                                    \
      "ACL user sent with AUTH on every node connection; empty = the default user")                            \
    X(redis, password, K_STR, redis_password, 0, 0, check_any, "",                                            \
      "password sent with AUTH on every node connection; empty = no AUTH (prefer the environment "           \
      "variable to a flag)")                                                                                    \
    X(kafka, brokers, K_STR, kafka_brokers, 0, 0, check_kafka, "embedded",                                   \
      "Kafka bootstrap host:port list; embedded = in-process mock cluster; "                  \
      "none = no invalidation events (one instance, no Redis; tests)")                                     \
    X(kafka, topic, K_STR, kafka_topic, 0, 0, check_name, "stock-invalidations",                             \
      "topic of invalidation events")                                                                           \
    X(kafka, group, K_STR, kafka_group, 0, 0, check_name, "cachesvc-invalidator",                            \
      "consumer group of the fleet's delay consumer")                                                           \
    X(kafka, instance_id, K_STR, instance_id, 0, 0, check_any, "",                                           \
      "names this instance's broadcast group; empty = host-pid")                                                \
    X(kafka, invalidation_delay_ms, K_INT, invalidation_delay_ms, 0, 3600000, check_any, "500",              \
      "Redis copies are deleted this long after a commit (run-time setting)")                                   \
    X(kafka, delay_consumer, K_BOOL, relay_delay_consumer, 0, 1, check_any, "true",                          \
      "run the delay consumer (Redis deletes) in this process")                                                 \
    X(kafka, broadcast_mode, K_STR, kafka_broadcast_mode, 0, 0, check_bcast_mode, "update",                 \
      "update: events carry the committed row, every instance installs it and the writer refreshes "        \
      "Redis (the delayed delete spares that copy); evict: events only evict (the protocol before "         \
      "0.10, for comparison and rollback)")                                                                   \
    X(cache, capacity_mb, K_I64, cache_capacity_mb, 1, 1048576, check_any, "256",                            \
      "memory bound of the local cache in MiB")                                                                 \
    X(cache, shards, K_INT, cache_shards, 1, 65536, check_any, "64",                                         \
      "local cache shards (rounded up to a power of two)")                                                      \
    X(cache, local_ttl_ms, K_INT, local_ttl_ms, 1, 86400000, check_any, "2000",                              \
      "local entries expire after this long (run-time setting)")                                                \
    X(cache, negative_ttl_ms, K_INT, negative_ttl_ms, 0, 86400000, check_any, "2000",                        \
      "an unknown sku is remembered as absent (local cache and Redis) this long; 0 = off")                    \
    X(cache, floor_ttl_ms, K_INT, floor_ttl_ms, 1, 86400000, check_any, "60000",                             \
      "how long an eviction's version floor is remembered")                                                     \
    X(cache, fill_wait_ms, K_INT, fill_wait_ms, 1, 600000, check_any, "1000",                                \
      "a read waits this long for another coroutine's fill of the same item")                                   \
    X(log, level, K_LEVEL, log_level, 0, 0, check_any, "info",                                               \
      "debug, info, warn or error (run-time setting)")                                                          \
    X(log, slow_ms, K_INT, log_slow_ms, 0, 3600000, check_any, "1000",                                       \
      "item reads, decrements, item writes and audits whose service time (database, Redis, "                  \
      "waits) passes this are logged at warn with their request id; 0 = never (re-read on SIGHUP)") \
    X(monitor, sample_every, K_INT, monitor_sample_every, 0, 1000000000, check_any, "1000",                 \
      "the consistency monitor checks one served read in this many against the database; 0 = off")         \
    X(monitor, window_ms, K_INT, monitor_window_ms, 0, 3600000, check_any, "0",                             \
      "a checked read is a violation when a newer version was committed more than this before it; "        \
      "0 = kafka.invalidation_delay_ms + 250")                                                        \
    X(invalidator, listen, K_STR, invalidator_listen, 0, 0, check_listen, "127.0.0.1:8081",                 \
      "address:port of the standalone invalidator's /metrics, /healthz and /readyz (not used by "         \
      "cachesvc)")

typedef struct cfg_key {
    const char *section, *key;
    enum cfg_kind kind;
    size_t off, size;
    int64_t min, max;
    cfg_check check;
    const char *def, *help;
} cfg_key;

static const cfg_key cfg_keys[] = {
#define X(sec, k, kind, fld, mn, mx, chk, def, help) \
    {#sec, #k, kind, offsetof(svc_config, fld), sizeof(((svc_config *)0)->fld), (int64_t)(mn), (int64_t)(mx), chk, def, help},
    SVC_CONFIG_KEYS(X)
#undef X
};
#define N_KEYS (sizeof cfg_keys / sizeof cfg_keys[0])
_Static_assert(N_KEYS <= SVC_CFG_MAX_KEYS, "svc_config.source is too small");

static const char *const source_names[] = {"default", "file", "env", "flag", "set"};

static void errf(char *err, size_t n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void errf(char *err, size_t n, const char *fmt, ...)
{
    if (err == NULL || n == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, n, fmt, ap);
    va_end(ap);
}

const char *svc_log_level_name(int level)
{
    switch (level) {
    case SVC_LOG_DEBUG: return "debug";
    case SVC_LOG_INFO: return "info";
    case SVC_LOG_WARN: return "warn";
    case SVC_LOG_ERROR: return "error";
    }
    return "?";
}

int svc_log_level_parse(const char *s)
{
    static const char *names[] = {"debug", "info", "warn", "error"};
    for (int i = 0; i < 4; i++)
        if (strcasecmp(s, names[i]) == 0)
            return i;
    if (strcasecmp(s, "warning") == 0)
        return SVC_LOG_WARN;
    return -EINVAL;
}

/* ------------------------------------------------------------------------ */
/* Value checkers: return 0 or -EINVAL with a reason in why.                 */

static int check_any(const char *v, char *why, size_t n)
{
    (void)v; (void)why; (void)n;
    return 0;
}

/* Parses "host:port" with a numeric port 1..65535 (0 allowed: any free
 * port, useful in tests). host may be empty (all addresses) or [v6]. */
int svc_parse_hostport(const char *v, char *host, size_t hostlen, int *port)
{
    const char *colon = strrchr(v, ':');
    if (colon == NULL || colon[1] == '\0')
        return -EINVAL;
    const char *h = v;
    size_t hl = (size_t)(colon - v);
    if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
        h++;
        hl -= 2;
    }
    if (hl >= hostlen)
        return -EINVAL;
    char *end;
    errno = 0;
    long p = strtol(colon + 1, &end, 10);
    if (errno != 0 || *end != '\0' || p < 0 || p > 65535)
        return -EINVAL;
    if (host != NULL) {
        memcpy(host, h, hl);
        host[hl] = '\0';
    }
    if (port != NULL)
        *port = (int)p;
    return 0;
}

static int check_listen(const char *v, char *why, size_t n)
{
    char host[64];
    if (svc_parse_hostport(v, host, sizeof host, NULL) < 0) {
        errf(why, n, "want host:port with a port 0..65535");
        return -EINVAL;
    }
    return 0;
}

static int check_store_url(const char *v, char *why, size_t n)
{
    if (strncmp(v, "sqlite:", 7) == 0 && v[7] != '\0')
        return 0;
    if (strncmp(v, "postgresql://", 13) == 0 || strncmp(v, "postgres://", 11) == 0)
        return 0;
    errf(why, n, "want sqlite:<path> or postgresql://...");
    return -EINVAL;
}

/* Checks a comma-separated list of host:port. */
static int check_hostport_list(const char *v, char *why, size_t n)
{
    char item[SVC_CFG_STR];
    const char *p = v;
    if (*p == '\0')
        goto bad;
    while (*p != '\0') {
        const char *c = strchr(p, ',');
        size_t len = c ? (size_t)(c - p) : strlen(p);
        if (len == 0 || len >= sizeof item)
            goto bad;
        memcpy(item, p, len);
        item[len] = '\0';
        int port = 0;
        if (svc_parse_hostport(item, NULL, 256, &port) < 0 || port == 0 || item[0] == ':')
            goto bad;
        p += len;
        if (*p == ',')
            p++;
    }
    return 0;
bad:
    errf(why, n, "want host:port[,host:port...]");
    return -EINVAL;
}

static int check_redis_url(const char *v, char *why, size_t n)
{
    if (strcmp(v, "none") == 0)
        return 0;
    const char *p = v;
    if (strncmp(p, "redis://", 8) == 0)
        p += 8;
    if (check_hostport_list(p, why, n) == 0)
        return 0;
    errf(why, n, "want none or host:port[,host:port...]");
    return -EINVAL;
}

static int check_kafka(const char *v, char *why, size_t n)
{
    if (strcmp(v, "embedded") == 0 || strcmp(v, "none") == 0)
        return 0;
    if (check_hostport_list(v, why, n) == 0)
        return 0;
    errf(why, n, "want embedded, none or host:port[,host:port...]");
    return -EINVAL;
}

static int check_user(const char *v, char *why, size_t n)
{
    for (const char *p = v; *p; p++)
        if ((unsigned char)*p <= ' ' || (unsigned char)*p == 0x7f) {
            errf(why, n, "want a user name without spaces or control bytes");
            return -EINVAL;
        }
    return 0;
}

static int check_name(const char *v, char *why, size_t n)
{
    if (*v == '\0')
        goto bad;
    for (const char *p = v; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '.' && *p != '_' && *p != '-')
            goto bad;
    return 0;
bad:
    errf(why, n, "want a non-empty name of [A-Za-z0-9._-]");
    return -EINVAL;
}

static int check_bcast_mode(const char *v, char *why, size_t n)
{
    if (strcmp(v, "update") == 0 || strcmp(v, "evict") == 0)
        return 0;
    errf(why, n, "want update or evict");
    return -EINVAL;
}

/* ------------------------------------------------------------------------ */

static const cfg_key *find_key(const char *section, const char *key)
{
    for (size_t i = 0; i < N_KEYS; i++)
        if (strcasecmp(cfg_keys[i].section, section) == 0 &&
            strcasecmp(cfg_keys[i].key, key) == 0)
            return &cfg_keys[i];
    return NULL;
}

static int parse_bool(const char *v)
{
    if (!strcasecmp(v, "1") || !strcasecmp(v, "true") || !strcasecmp(v, "yes") || !strcasecmp(v, "on"))
        return 1;
    if (!strcasecmp(v, "0") || !strcasecmp(v, "false") || !strcasecmp(v, "no") || !strcasecmp(v, "off"))
        return 0;
    return -EINVAL;
}

/* Stores value into the field of k. src names the source for errors. */
static int set_key_value(svc_config *cfg, const cfg_key *k, const char *value,
                         const char *src, char *err, size_t errlen);

/* Stores value into the field of k and records where it came from (srcid,
 * enum svc_config_source). src names the source for errors. */
static int set_key(svc_config *cfg, const cfg_key *k, const char *value, int srcid,
                   const char *src, char *err, size_t errlen)
{
    int rc = set_key_value(cfg, k, value, src, err, errlen);
    if (rc == 0)
        cfg->source[k - cfg_keys] = (unsigned char)srcid;
    return rc;
}

static int set_key_value(svc_config *cfg, const cfg_key *k, const char *value,
                         const char *src, char *err, size_t errlen)
{
    char *field = (char *)cfg + k->off;
    char why[160] = "";
    switch (k->kind) {
    case K_INT:
    case K_I64: {
        char *end;
        errno = 0;
        long long x = strtoll(value, &end, 10);
        if (errno != 0 || end == value || *end != '\0') {
            snprintf(why, sizeof why, "not an integer");
            goto bad;
        }
        if (x < k->min || x > k->max) {
            snprintf(why, sizeof why, "not in %" PRId64 "..%" PRId64, k->min, k->max);
            goto bad;
        }
        if (k->kind == K_INT)
            *(int *)field = (int)x;
        else
            *(int64_t *)field = (int64_t)x;
        return 0;
    }
    case K_BOOL: {
        int b = parse_bool(value);
        if (b < 0) {
            snprintf(why, sizeof why, "want true or false");
            goto bad;
        }
        *(int *)field = b;
        return 0;
    }
    case K_LEVEL: {
        int l = svc_log_level_parse(value);
        if (l < 0) {
            snprintf(why, sizeof why, "want debug, info, warn or error");
            goto bad;
        }
        *(int *)field = l;
        return 0;
    }
    case K_STR:
        if (strlen(value) >= k->size) {
            snprintf(why, sizeof why, "longer than %zu bytes", k->size - 1);
            goto bad;
        }
        if (k->check(value, why, sizeof why) < 0)
            goto bad;
        memcpy(field, value, strlen(value) + 1);
        return 0;
    }
bad:
    errf(err, errlen, "config: %s.%s = \"%s\" (%s): %s", k->section, k->key,
         value, src, why);
    return -EINVAL;
}

void svc_config_defaults(svc_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    for (size_t i = 0; i < N_KEYS; i++) {
        int rc = set_key(cfg, &cfg_keys[i], cfg_keys[i].def, SVC_SRC_DEFAULT, "default", NULL, 0);
        if (rc < 0) {   /* a default the validator refuses: a bug in SVC_CONFIG_KEYS */
            fprintf(stderr, "config: bad default for %s.%s\n", cfg_keys[i].section,
                    cfg_keys[i].key);
            KIT_PANIC("a default of SVC_CONFIG_KEYS fails its own validation");
        }
    }
}

/* Splits "section.key" (or "section_key" is not accepted: keys contain '_'). */
static const cfg_key *find_dotted(const char *dotted)
{
    const char *dot = strchr(dotted, '.');
    char sec[64];
    if (dot == NULL || (size_t)(dot - dotted) >= sizeof sec)
        return NULL;
    memcpy(sec, dotted, (size_t)(dot - dotted));
    sec[dot - dotted] = '\0';
    return find_key(sec, dot + 1);
}

/* "kafka.<name with a dot>": a librdkafka property passed through. */
static int is_kafka_prop(const char *dotted)
{
    return strncasecmp(dotted, "kafka.", 6) == 0 && strchr(dotted + 6, '.') != NULL;
}

/* Sets the librdkafka property name (as librdkafka spells it) to value;
 * a later source replaces an earlier one. The value is checked by
 * librdkafka when the service starts. */
static int set_kafka_prop(svc_config *cfg, const char *name, const char *value, int srcid,
                          const char *src, char *err, size_t errlen)
{
    size_t nl = strlen(name);
    if (nl == 0 || nl >= sizeof cfg->kafka_props[0].key || name[nl - 1] == '.') {
        errf(err, errlen, "config: kafka.%s (%s): not a librdkafka property name", name, src);
        return -EINVAL;
    }
    for (const char *p = name; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '.' && *p != '_' && *p != '-') {
            errf(err, errlen, "config: kafka.%s (%s): not a librdkafka property name", name, src);
            return -EINVAL;
        }
    if (strlen(value) >= sizeof cfg->kafka_props[0].value) {
        errf(err, errlen, "config: kafka.%s (%s): value longer than %zu bytes", name, src,
             sizeof cfg->kafka_props[0].value - 1);
        return -EINVAL;
    }
    int i;
    for (i = 0; i < cfg->n_kafka_props; i++)
        if (strcmp(cfg->kafka_props[i].key, name) == 0)
            break;
    if (i == cfg->n_kafka_props) {
        if (i == SVC_KAFKA_PROPS_MAX) {
            errf(err, errlen, "config: kafka.%s (%s): more than %d librdkafka properties", name,
                 src, SVC_KAFKA_PROPS_MAX);
            return -EINVAL;
        }
        cfg->n_kafka_props++;
        snprintf(cfg->kafka_props[i].key, sizeof cfg->kafka_props[i].key, "%s", name);
    }
    snprintf(cfg->kafka_props[i].value, sizeof cfg->kafka_props[i].value, "%s", value);
    cfg->kafka_props[i].source = (unsigned char)srcid;
    return 0;
}

int svc_config_set(svc_config *cfg, const char *dotted_key, const char *value,
                   char *err, size_t errlen)
{
    const cfg_key *k = find_dotted(dotted_key);
    if (k == NULL) {
        if (is_kafka_prop(dotted_key))
            return set_kafka_prop(cfg, dotted_key + 6, value, SVC_SRC_SET, "set", err, errlen);
        errf(err, errlen, "config: unknown key %s", dotted_key);
        return -EINVAL;
    }
    return set_key(cfg, k, value, SVC_SRC_SET, "set", err, errlen);
}

struct ini_ctx {
    svc_config *cfg;
    char *err;
    size_t errlen;
    int rc;
    char src[SVC_CFG_STR + 16];
};

static int cfg_ini_handler(void *user, const char *section, const char *name, const char *value)
{
    struct ini_ctx *c = user;
    if (c->rc < 0)
        return 0;
    const cfg_key *k = find_key(section, name);
    if (k == NULL && strcasecmp(section, "kafka") == 0 && strchr(name, '.') != NULL) {
        c->rc = set_kafka_prop(c->cfg, name, value, SVC_SRC_FILE, c->src, c->err, c->errlen);
        return c->rc == 0;
    }
    if (k == NULL) {
        errf(c->err, c->errlen, "config: unknown key %s.%s (%s)", section, name, c->src);
        c->rc = -EINVAL;
        return 0;
    }
    c->rc = set_key(c->cfg, k, value, SVC_SRC_FILE, c->src, c->err, c->errlen);
    return c->rc == 0;
}

static int load_file(svc_config *cfg, const char *path, char *err, size_t errlen)
{
    struct ini_ctx c = {cfg, err, errlen, 0, ""};
    snprintf(c.src, sizeof c.src, "file %s", path);
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        int e = errno;
        errf(err, errlen, "config: cannot open %s: %s", path, strerror(e));
        return e == ENOENT ? -ENOENT : -e;
    }
    int line = ini_parse_file(f, cfg_ini_handler, &c);
    fclose(f);
    if (c.rc < 0)
        return c.rc;
    if (line != 0) {
        errf(err, errlen, "config: %s:%d: syntax error", path, line);
        return -EINVAL;
    }
    if (strlen(path) >= sizeof cfg->path) {
        errf(err, errlen, "config: path too long");
        return -EINVAL;
    }
    snprintf(cfg->path, sizeof cfg->path, "%s", path);
    return 0;
}

/* Builds CACHESVC_<SECTION>_<KEY> for k into buf. */
static void env_name(const cfg_key *k, char *buf, size_t n)
{
    size_t o = (size_t)snprintf(buf, n, "CACHESVC_%s_%s", k->section, k->key);
    for (size_t i = 0; i < o && i < n; i++)
        buf[i] = (char)toupper((unsigned char)buf[i]);
}

static const char *env_get(char **envp, const char *name)
{
    size_t nl = strlen(name);
    for (char **e = envp; e && *e; e++)
        if (strncmp(*e, name, nl) == 0 && (*e)[nl] == '=')
            return *e + nl + 1;
    return NULL;
}

/* Finds the config file path among the flags; NULL if none. Returns -EINVAL
 * for a -c without an argument. */
static int flag_config_path(int argc, char **argv, const char **path, char *err, size_t errlen)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--config=", 9) == 0) {
            *path = a + 9;
        } else if (strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) {
            if (i + 1 >= argc) {
                errf(err, errlen, "config: %s needs a file name", a);
                return -EINVAL;
            }
            *path = argv[++i];
        }
    }
    return 0;
}

/* CACHESVC_KAFKA_PROP_<NAME>=value sets the librdkafka property <name>,
 * lower-cased with '_' read as '.' (CACHESVC_KAFKA_PROP_SASL_PASSWORD is
 * sasl.password): the way to keep a SASL password off the command line. */
static int env_kafka_props(svc_config *cfg, char **envp, char *err, size_t errlen)
{
    static const char prefix[] = "CACHESVC_KAFKA_PROP_";
    for (char **e = envp; e && *e; e++) {
        if (strncmp(*e, prefix, sizeof prefix - 1) != 0)
            continue;
        const char *name = *e + sizeof prefix - 1, *eq = strchr(name, '=');
        char prop[128], src[192];
        size_t nl = eq ? (size_t)(eq - name) : 0;
        if (eq == NULL || nl == 0 || nl >= sizeof prop) {
            errf(err, errlen, "config: %.*s: not a librdkafka property", 100, *e);
            return -EINVAL;
        }
        for (size_t i = 0; i < nl; i++)
            prop[i] = name[i] == '_' ? '.' : (char)tolower((unsigned char)name[i]);
        prop[nl] = '\0';
        snprintf(src, sizeof src, "env %s%s", prefix, prop);
        int rc = set_kafka_prop(cfg, prop, eq + 1, SVC_SRC_ENV, src, err, errlen);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static int key_index(const char *section, const char *key)
{
    const cfg_key *k = find_key(section, key);
    return k ? (int)(k - cfg_keys) : -1;
}

/* server.admin_token_file: the token is the file's first line (trailing
 * spaces and the line end cut). A file others may read is refused, as
 * libpq refuses such a password file. */
static int load_token_file(svc_config *cfg, char *err, size_t errlen)
{
    const char *path = cfg->admin_token_file;
    if (path[0] == '\0')
        return 0;
    int ti = key_index("server", "admin_token");
    if (cfg->source[ti] != SVC_SRC_DEFAULT) {
        errf(err, errlen, "config: server.admin_token and server.admin_token_file are both set; "
             "keep one");
        return -EINVAL;
    }
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        errf(err, errlen, "config: server.admin_token_file %s: %s", path, strerror(errno));
        return -EINVAL;
    }
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && (st.st_mode & S_IRWXO) != 0) {
        fclose(f);
        errf(err, errlen, "config: server.admin_token_file %s: others may read it "
             "(chmod o-rwx)", path);
        return -EINVAL;
    }
    char line[SVC_CFG_STR + 2];
    if (fgets(line, sizeof line, f) == NULL)
        line[0] = '\0';
    fclose(f);
    size_t n = strlen(line);
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r' || line[n - 1] == ' ' ||
                     line[n - 1] == '\t'))
        line[--n] = '\0';
    if (n == 0) {
        errf(err, errlen, "config: server.admin_token_file %s: the first line is empty", path);
        return -EINVAL;
    }
    if (n >= sizeof cfg->admin_token) {
        errf(err, errlen, "config: server.admin_token_file %s: token longer than %zu bytes",
             path, sizeof cfg->admin_token - 1);
        return -EINVAL;
    }
    memcpy(cfg->admin_token, line, n + 1);
    cfg->source[ti] = SVC_SRC_FILE;
    return 0;
}

int svc_config_action(int argc, char **argv)
{
    int act = SVC_ACT_RUN;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0)
            return SVC_ACT_HELP;
        if (strcmp(a, "--version") == 0 || strcmp(a, "-V") == 0)
            act = SVC_ACT_VERSION;
        else if ((strcmp(a, "--check-config") == 0 || strcmp(a, "-t") == 0) && act == SVC_ACT_RUN)
            act = SVC_ACT_CHECK;
        else if (strcmp(a, "--print-config") == 0 && act != SVC_ACT_VERSION)
            act = SVC_ACT_PRINT;
    }
    return act;
}

int svc_config_load(svc_config *cfg, int argc, char **argv, char **envp,
                    int *want_help, char *err, size_t errlen)
{
    int rc;
    if (envp == NULL)
        envp = environ;
    if (want_help)
        *want_help = 0;
    if (err && errlen)
        err[0] = '\0';
    svc_config_defaults(cfg);

    const char *path = env_get(envp, "CACHESVC_CONFIG");
    if ((rc = flag_config_path(argc, argv, &path, err, errlen)) < 0)
        return rc;
    if (path != NULL && *path != '\0' && (rc = load_file(cfg, path, err, errlen)) < 0)
        return rc;

    for (size_t i = 0; i < N_KEYS; i++) {
        char name[128];
        env_name(&cfg_keys[i], name, sizeof name);
        const char *v = env_get(envp, name);
        if (v == NULL)
            continue;
        char src[160];
        snprintf(src, sizeof src, "env %s", name);
        if ((rc = set_key(cfg, &cfg_keys[i], v, SVC_SRC_ENV, src, err, errlen)) < 0)
            return rc;
    }
    if ((rc = env_kafka_props(cfg, envp, err, errlen)) < 0)
        return rc;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            if (want_help)
                *want_help = 1;
            continue;
        }
        if (strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) {
            i++;
            continue;
        }
        if (strncmp(a, "--config=", 9) == 0)
            continue;
        if (strcmp(a, "--version") == 0 || strcmp(a, "-V") == 0 || strcmp(a, "-t") == 0 ||
            strcmp(a, "--check-config") == 0 || strcmp(a, "--print-config") == 0)
            continue;
        if (strncmp(a, "--", 2) != 0) {
            errf(err, errlen, "config: unexpected argument \"%s\" (want --section.key=value)", a);
            return -EINVAL;
        }
        char dotted[128];
        const char *eq = strchr(a + 2, '=');
        const char *value;
        size_t kl = eq ? (size_t)(eq - (a + 2)) : strlen(a + 2);
        if (kl >= sizeof dotted) {
            errf(err, errlen, "config: unknown flag %s", a);
            return -EINVAL;
        }
        memcpy(dotted, a + 2, kl);
        dotted[kl] = '\0';
        const cfg_key *k = find_dotted(dotted);
        if (k == NULL && is_kafka_prop(dotted)) {
            char src[160];
            snprintf(src, sizeof src, "flag --%s", dotted);
            if (eq == NULL && i + 1 >= argc) {
                errf(err, errlen, "config: flag --%s needs a value", dotted);
                return -EINVAL;
            }
            if ((rc = set_kafka_prop(cfg, dotted + 6, eq ? eq + 1 : argv[++i], SVC_SRC_FLAG, src,
                                     err, errlen)) < 0)
                return rc;
            continue;
        }
        if (k == NULL) {
            errf(err, errlen, "config: unknown flag --%s (see --help)", dotted);
            return -EINVAL;
        }
        if (eq != NULL) {
            value = eq + 1;
        } else if (k->kind == K_BOOL && (i + 1 >= argc || strncmp(argv[i + 1], "-", 1) == 0)) {
            value = "true";
        } else if (i + 1 < argc) {
            value = argv[++i];
        } else {
            errf(err, errlen, "config: flag --%s needs a value", dotted);
            return -EINVAL;
        }
        char src[160];
        snprintf(src, sizeof src, "flag --%s", dotted);
        if ((rc = set_key(cfg, k, value, SVC_SRC_FLAG, src, err, errlen)) < 0)
            return rc;
    }

    /* Keys that depend on each other. */
    if ((rc = load_token_file(cfg, err, errlen)) < 0)
        return rc;
    if (strcmp(cfg->kafka_brokers, "none") == 0 && strcmp(cfg->redis_url, "none") != 0) {
        errf(err, errlen, "config: kafka.brokers = \"none\" needs redis.url = \"none\": "
             "without invalidation events nothing would delete stale Redis copies");
        return -EINVAL;
    }

    /* Derived values. */
    svc_parse_hostport(cfg->listen, cfg->listen_host, sizeof cfg->listen_host, &cfg->listen_port);
    if (cfg->workers == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        cfg->workers = n > 0 ? (int)n : 1;
    }
    if (cfg->instance_id[0] == '\0') {
        char host[64] = "host";
        gethostname(host, sizeof host - 1);
        host[sizeof host - 1] = '\0';
        snprintf(cfg->instance_id, sizeof cfg->instance_id, "%s-%ld", host, (long)getpid());
    }
    return 0;
}

/* Prints text word-wrapped to lines of at most `width` bytes, each starting
 * with prefix (comment lines of the dump stay under inih's line limit). */
static void put_wrapped(FILE *out, const char *prefix, const char *text, size_t width)
{
    size_t plen = strlen(prefix), col = 0;
    while (*text != '\0') {
        size_t wl = strcspn(text, " ");
        if (col == 0) {
            fputs(prefix, out);
            col = plen;
        } else if (col + 1 + wl > width) {
            fputc('\n', out);
            fputs(prefix, out);
            col = plen;
        } else {
            fputc(' ', out);
            col++;
        }
        fwrite(text, 1, wl, out);
        col += wl;
        text += wl;
        while (*text == ' ')
            text++;
    }
    fputc('\n', out);
}

void svc_config_help(FILE *out, const char *prog)
{
    fprintf(out,
            "usage: %s [-c FILE | --config=FILE] [--section.key=value ...]\n"
            "\n"
            "cachesvc: flash-sale stock service. Settings come from defaults, then the\n"
            "INI file (also CACHESVC_CONFIG), then CACHESVC_<SECTION>_<KEY> environment\n"
            "variables, then flags; later sources win. SIGHUP re-reads them all and applies\n"
            "the run-time settings; SIGTERM/SIGINT drain and exit.\n",
            prog);
    const char *sec = "";
    for (size_t i = 0; i < N_KEYS; i++) {
        const cfg_key *k = &cfg_keys[i];
        if (strcmp(sec, k->section) != 0) {
            sec = k->section;
            fprintf(out, "\n[%s]\n", sec);
        }
        char env[128];
        env_name(k, env, sizeof env);
        fprintf(out, "  --%s.%s=%s\n", k->section, k->key,
                k->kind == K_STR ? "TEXT" : k->kind == K_BOOL ? "BOOL"
                : k->kind == K_LEVEL ? "LEVEL" : "N");
        put_wrapped(out, "      ", k->help, 80);
        fprintf(out, "      env %s, default \"%s\"", env, k->def);
        if (k->kind == K_INT || k->kind == K_I64)
            fprintf(out, ", range %" PRId64 "..%" PRId64, k->min, k->max);
        fputc('\n', out);
    }
}

char *svc_redact_url(const char *url, char *buf, size_t cap)
{
    static const char red[] = "<redacted>";
    size_t o = 0;
    if (cap == 0)
        return buf;
#define PUT(p, len)                                        \
    do {                                                   \
        size_t l_ = (len);                                 \
        if (l_ > cap - 1 - o)                              \
            l_ = cap - 1 - o;                              \
        memcpy(buf + o, (p), l_);                          \
        o += l_;                                           \
    } while (0)
    const char *p = url;
    const char *scheme = strstr(url, "://");
    if (scheme != NULL) {
        /* user:password@ before the first '/', '?' or '#' after the scheme;
         * a multi-host URL has one user info, before the first host. */
        const char *auth = scheme + 3;
        size_t alen = strcspn(auth, "/?#");
        const char *at = memchr(auth, '@', alen);
        const char *colon = at ? memchr(auth, ':', (size_t)(at - auth)) : NULL;
        if (colon != NULL) {
            PUT(url, (size_t)(colon + 1 - url));
            PUT(red, sizeof red - 1);
            p = at;
        }
    }
    /* password=... as a URL parameter or a libpq keyword. */
    for (;;) {
        const char *q = strstr(p, "password=");
        if (q == NULL)
            break;
        /* sslpassword= (a client key's) too. */
        PUT(p, (size_t)(q + 9 - p));
        p = q + 9;
        PUT(red, sizeof red - 1);
        p += strcspn(p, "& ");
    }
    PUT(p, strlen(p));
#undef PUT
    buf[o] = '\0';
    return buf;
}

static int is_secret_name(const char *name)
{
    return strstr(name, "password") != NULL || strstr(name, "secret") != NULL ||
           strstr(name, "token") != NULL;
}

/* The text of k's value in cfg; secrets redacted when redact is set. */
static void format_value(const svc_config *cfg, const cfg_key *k, int redact, char *buf, size_t n)
{
    const char *field = (const char *)cfg + k->off;
    switch (k->kind) {
    case K_INT: snprintf(buf, n, "%d", *(const int *)field); return;
    case K_I64: snprintf(buf, n, "%" PRId64, *(const int64_t *)field); return;
    case K_BOOL: snprintf(buf, n, "%s", *(const int *)field ? "true" : "false"); return;
    case K_LEVEL: snprintf(buf, n, "%s", svc_log_level_name(*(const int *)field)); return;
    case K_STR:
        if (redact && field[0] != '\0' && is_secret_name(k->key) &&
            strcmp(k->key, "admin_token_file") != 0)
            snprintf(buf, n, "<redacted>");
        else if (redact && strcmp(k->section, "store") == 0 && strcmp(k->key, "url") == 0)
            svc_redact_url(field, buf, n);
        else
            snprintf(buf, n, "%s", field);
        return;
    }
}

static const char *prop_value(const struct svc_kafka_prop *p, int redact)
{
    return redact && is_secret_name(p->key) ? "<redacted>" : p->value;
}

/* Where a value came from, as --print-config says it. */
static void source_text(const svc_config *cfg, int srcid, const char *section, const char *key,
                        char *buf, size_t n)
{
    switch (srcid) {
    case SVC_SRC_FILE: snprintf(buf, n, "file %s", cfg->path); return;
    case SVC_SRC_ENV:
        if (strchr(key, '.') != NULL) {   /* a Kafka property */
            size_t o = (size_t)snprintf(buf, n, "env CACHESVC_KAFKA_PROP_");
            for (const char *p = key; *p && o + 1 < n; p++)
                buf[o++] = *p == '.' ? '_' : (char)toupper((unsigned char)*p);
            buf[o < n ? o : n - 1] = '\0';
        } else {
            cfg_key k = {.section = section, .key = key};
            char env[128];
            env_name(&k, env, sizeof env);
            snprintf(buf, n, "env %s", env);
        }
        return;
    case SVC_SRC_FLAG: snprintf(buf, n, "flag --%s.%s", section, key); return;
    case SVC_SRC_SET: snprintf(buf, n, "set"); return;
    default: snprintf(buf, n, "default"); return;
    }
}

static void dump_kafka_props(FILE *out, const svc_config *cfg)
{
    if (cfg->n_kafka_props == 0)
        return;
    fprintf(out, "; librdkafka properties passed through\n");
    for (int i = 0; i < cfg->n_kafka_props; i++) {
        char src[SVC_CFG_STR + 64];
        source_text(cfg, cfg->kafka_props[i].source, "kafka", cfg->kafka_props[i].key, src,
                    sizeof src);
        fprintf(out, "; from %s\n%s = %s\n", src, cfg->kafka_props[i].key,
                prop_value(&cfg->kafka_props[i], 1));
    }
}

void svc_config_dump(FILE *out, const svc_config *cfg)
{
    const char *sec = "";
    for (size_t i = 0; i < N_KEYS; i++) {
        const cfg_key *k = &cfg_keys[i];
        if (strcmp(sec, k->section) != 0) {
            if (strcmp(sec, "kafka") == 0)
                dump_kafka_props(out, cfg);
            sec = k->section;
            fprintf(out, "%s[%s]\n", i ? "\n" : "", sec);
        }
        char help[512], value[SVC_CFG_STR + 16], src[SVC_CFG_STR + 64];
        snprintf(help, sizeof help, "%s (default %s%s%s)", k->help, k->def[0] ? "" : "\"",
                 k->def, k->def[0] ? "" : "\"");
        put_wrapped(out, "; ", help, 80);
        source_text(cfg, cfg->source[i], k->section, k->key, src, sizeof src);
        format_value(cfg, k, 1, value, sizeof value);
        fprintf(out, "; from %s\n%s = %s\n", src, k->key, value);
    }
    if (strcmp(sec, "kafka") == 0)
        dump_kafka_props(out, cfg);
}

/* Appends s to f as a JSON string. */
static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

char *svc_config_json(const svc_config *cfg)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (f == NULL)
        return NULL;
    fputc('{', f);
    for (size_t i = 0; i < N_KEYS; i++) {
        const cfg_key *k = &cfg_keys[i];
        char value[SVC_CFG_STR + 16];
        format_value(cfg, k, 1, value, sizeof value);
        fprintf(f, "%s\"%s.%s\":{\"value\":", i ? "," : "", k->section, k->key);
        if (k->kind == K_INT || k->kind == K_I64 || k->kind == K_BOOL)
            fputs(value, f);
        else
            json_str(f, value);
        fprintf(f, ",\"source\":\"%s\"}", source_names[cfg->source[i] < 5 ? cfg->source[i] : 0]);
    }
    for (int i = 0; i < cfg->n_kafka_props; i++) {
        fprintf(f, ",\"kafka.%s\":{\"value\":", cfg->kafka_props[i].key);
        json_str(f, prop_value(&cfg->kafka_props[i], 1));
        fprintf(f, ",\"source\":\"%s\"}",
                source_names[cfg->kafka_props[i].source < 5 ? cfg->kafka_props[i].source : 0]);
    }
    fputc('}', f);
    if (fclose(f) != 0) {
        free(buf);
        return NULL;
    }
    return buf;
}

int svc_config_get(const svc_config *cfg, const char *dotted_key, int redact, char *buf,
                   size_t n)
{
    const cfg_key *k = find_dotted(dotted_key);
    if (k == NULL)
        return -EINVAL;
    format_value(cfg, k, redact, buf, n);
    return 0;
}

int svc_config_copy_key(svc_config *dst, const svc_config *src, const char *dotted_key)
{
    const cfg_key *k = find_dotted(dotted_key);
    if (k == NULL)
        return -EINVAL;
    memcpy((char *)dst + k->off, (const char *)src + k->off, k->size);
    dst->source[k - cfg_keys] = src->source[k - cfg_keys];
    return 0;
}

static const char *const runtime_keys[] = {
    "kafka.invalidation_delay_ms", "cache.local_ttl_ms", "log.level", "log.slow_ms",
    "server.admin_token", "server.admin_token_file",
};

int svc_config_runtime(const char *dotted_key)
{
    for (size_t i = 0; i < sizeof runtime_keys / sizeof runtime_keys[0]; i++)
        if (strcasecmp(runtime_keys[i], dotted_key) == 0)
            return 1;
    return 0;
}

void svc_config_copy_runtime(svc_config *dst, const svc_config *src)
{
    for (size_t i = 0; i < sizeof runtime_keys / sizeof runtime_keys[0]; i++)
        svc_config_copy_key(dst, src, runtime_keys[i]);
}

static int props_equal(const svc_config *a, const svc_config *b)
{
    if (a->n_kafka_props != b->n_kafka_props)
        return 0;
    for (int i = 0; i < a->n_kafka_props; i++) {
        int j;
        for (j = 0; j < b->n_kafka_props; j++)
            if (strcmp(a->kafka_props[i].key, b->kafka_props[j].key) == 0)
                break;
        if (j == b->n_kafka_props || strcmp(a->kafka_props[i].value, b->kafka_props[j].value) != 0)
            return 0;
    }
    return 1;
}

int svc_config_diff(const svc_config *old, const svc_config *next,
                    void (*fn)(void *arg, const char *key, int runtime), void *arg)
{
    int n = 0;
    for (size_t i = 0; i < N_KEYS; i++) {
        const cfg_key *k = &cfg_keys[i];
        char a[SVC_CFG_STR + 16], b[SVC_CFG_STR + 16], dotted[160];
        format_value(old, k, 0, a, sizeof a);
        format_value(next, k, 0, b, sizeof b);
        /* instance_id defaults to host-pid, which a reload recomputes
         * the same; any other change is real. */
        if (strcmp(a, b) == 0)
            continue;
        snprintf(dotted, sizeof dotted, "%s.%s", k->section, k->key);
        fn(arg, dotted, svc_config_runtime(dotted));
        n++;
    }
    if (!props_equal(old, next)) {
        fn(arg, "kafka.<properties>", 0);
        n++;
    }
    return n;
}

int svc_config_finish_action(const char *prog, int act, const svc_config *cfg)
{
    if (act == SVC_ACT_CHECK) {
        printf("%s: configuration ok (%s%s)\n", prog, cfg->path[0] ? "file " : "no file",
               cfg->path);
        return 0;
    }
    if (act == SVC_ACT_PRINT) {
        svc_config_dump(stdout, cfg);
        return 0;
    }
    return -1;
}

svc_config *svc_config_reload(int argc, char **argv)
{
    svc_config *next = malloc(sizeof *next);
    char err[512];
    if (next == NULL) {
        svc_metric_inc(SVC_C_RELOAD_ERROR);
        SVC_ERROR(NULL, "reload refused: out of memory", NULL);
        return NULL;
    }
    if (svc_config_load(next, argc, argv, NULL, NULL, err, sizeof err) < 0) {
        svc_metric_inc(SVC_C_RELOAD_ERROR);
        SVC_ERROR(NULL, "reload refused; keeping the running settings", "err=\"%s\"", err);
        free(next);
        return NULL;
    }
    return next;
}

void svc_config_reload_done(svc_config *ref, svc_config *next)
{
    svc_metric_inc(SVC_C_RELOAD_OK);
    svc_config_copy_runtime(ref, next);
    free(next);
}
