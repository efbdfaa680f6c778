/*
 * config.h: cachesvc's configuration.
 *
 * One INI file (inih), every key also settable as the environment variable
 * CACHESVC_<SECTION>_<KEY> and as the flag --section.key=value; later
 * sources win: defaults < file < environment < flags. Every key is declared
 * once in SVC_CONFIG_KEYS (config.c) with its default and its meaning, which
 * is what --help prints.
 *
 * Errors follow the project's convention: 0 on success, a negative errno on
 * failure (-EINVAL for a bad key or value, -ENOENT for a missing file), and
 * an error text that names the key and the source it came from.
 */
#ifndef CACHESVC_CONFIG_H
#define CACHESVC_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

enum svc_log_level {
    SVC_LOG_DEBUG = 0,
    SVC_LOG_INFO = 1,
    SVC_LOG_WARN = 2,
    SVC_LOG_ERROR = 3,
};

#define SVC_CFG_STR 512
#define SVC_KAFKA_PROPS_MAX 32
#define SVC_CFG_MAX_KEYS 96

/* Where a key's value came from (svc_config.source). */
enum svc_config_source { SVC_SRC_DEFAULT, SVC_SRC_FILE, SVC_SRC_ENV, SVC_SRC_FLAG, SVC_SRC_SET };

typedef struct svc_config {
    /* [server] */
    char listen[SVC_CFG_STR];      /* host:port as given */
    char listen_host[64];          /* parsed from listen */
    int listen_port;
    int workers;                   /* resolved: never 0 after load */
    char admin_token[SVC_CFG_STR];  /* from admin_token_file when that is set */
    char admin_token_file[SVC_CFG_STR];
    int max_connections;
    int idle_timeout_ms;
    int header_timeout_ms;
    int drain_timeout_ms;
    int shutdown_delay_ms;         /* lame duck: /readyz 503 before the drain */
    /* [store] */
    char store_url[SVC_CFG_STR];
    int store_batch_max;
    int store_queue_max;           /* admission bound per item */
    int store_timeout_ms;
    int store_pool_size;
    int store_pipeline_depth;
    int64_t store_sold_out_max_orders; /* store_sold_out bound; 0 = off */
    /* [redis] */
    char redis_url[SVC_CFG_STR];   /* "none" or host:port[,host:port...] */
    int redis_timeout_ms;
    int redis_connections;         /* per node */
    int redis_ttl_ms;              /* PX on fills; 0 = no expiry */
    int redis_tombstone_ttl_ms;    /* PX of a delete's tombstone */
    int redis_breaker_failures;
    int redis_breaker_probe_ms;
    char redis_user[128];          /* ACL user for AUTH; empty = default user */
    char redis_password[SVC_CFG_STR]; /* empty = no AUTH */
    /* [kafka] */
    char kafka_brokers[SVC_CFG_STR]; /* "embedded" or host:port list */
    char kafka_topic[128];
    char kafka_group[128];
    char kafka_broadcast_mode[8];  /* "update" or "evict" */
    char instance_id[128];         /* names this instance's broadcast group */
    int invalidation_delay_ms;
    int relay_delay_consumer;      /* bool: run the delay consumer in process */
    /* librdkafka properties passed through: every key of [kafka] (or flag
     * --kafka.<key>) that contains a dot, e.g. security.protocol. */
    int n_kafka_props;
    struct svc_kafka_prop {
        char key[128];
        char value[SVC_CFG_STR];
        unsigned char source;      /* enum svc_config_source */
    } kafka_props[SVC_KAFKA_PROPS_MAX];
    /* [cache] */
    int64_t cache_capacity_mb;
    int cache_shards;
    int local_ttl_ms;
    int negative_ttl_ms;           /* absent entries; 0 = not cached */
    int floor_ttl_ms;
    int fill_wait_ms;
    /* [log] */
    int log_level;                 /* enum svc_log_level */
    int log_slow_ms;               /* slow-request warning; 0 = off */
    /* [monitor] */
    int monitor_sample_every;      /* check one read in N; 0 = off */
    int monitor_window_ms;         /* 0 = invalidation delay + 250 ms */
    /* [invalidator] (the standalone invalidator binary only) */
    char invalidator_listen[64];   /* its /metrics, /healthz, /readyz */

    /* Where the file came from (empty = none); kept for SIGHUP. */
    char path[SVC_CFG_STR];
    /* Where each key's value came from, by its index in the key table
     * (enum svc_config_source). */
    unsigned char source[SVC_CFG_MAX_KEYS];
} svc_config;

/* Fills *cfg from the defaults, then the file named by --config=FILE
 * (or -c FILE, or CACHESVC_CONFIG), then CACHESVC_* variables of envp
 * (NULL = environ), then the flags of argv[1..argc-1]. On failure returns
 * -EINVAL or -ENOENT and writes one line naming the key to err (errlen
 * bytes). Sets *want_help when --help or -h is among the flags (the rest is
 * still validated). The caller owns cfg; nothing is allocated. Callable from
 * any thread; it reads files and the environment, nothing global. */
int svc_config_load(svc_config *cfg, int argc, char **argv, char **envp,
                    int *want_help, char *err, size_t errlen);

/* SIGHUP in either binary: the settings loaded again from the start's
 * sources (svc_config_load with the same argv). Returns them (the caller
 * frees them with free()), or NULL after counting
 * cachesvc_reloads_total{result="error"} and logging why (the running
 * settings stay). The caller applies the run-time keys, then calls
 * svc_config_reload_done. */
svc_config *svc_config_reload(int argc, char **argv);
/* Counts the reload as applied, copies next's run-time keys into ref (the
 * others keep their start values, so a later SIGHUP names them again until
 * the restart) and frees next. */
void svc_config_reload_done(svc_config *ref, svc_config *next);

/* What the command line asks for besides running: --help/-h, --version/-V,
 * --check-config/-t (validate and exit 0 or 2, like nginx -t) or
 * --print-config (the effective settings, where each came from, secrets
 * as <redacted>). svc_config_load accepts these flags and ignores them. */
enum svc_config_action {
    SVC_ACT_RUN = 0,
    SVC_ACT_HELP,
    SVC_ACT_VERSION,
    SVC_ACT_CHECK,
    SVC_ACT_PRINT,
};
int svc_config_action(int argc, char **argv);

/* Parses "host:port" with a numeric port 0..65535 (0: any free port, for
 * tests). host may be empty (all addresses) or "[v6]" (the brackets are
 * dropped); host may be NULL when only the port is wanted. Returns 0 or
 * -EINVAL (no colon, no port, a host of hostlen bytes or more). */
int svc_parse_hostport(const char *v, char *host, size_t hostlen, int *port);

/* Fills *cfg with the defaults only. Never fails. */
void svc_config_defaults(svc_config *cfg);

/* Sets one key from text, as a flag would ("kafka.invalidation_delay_ms",
 * "600"). Returns 0 or -EINVAL (unknown key or bad value, explained in err). */
int svc_config_set(svc_config *cfg, const char *dotted_key, const char *value,
                   char *err, size_t errlen);

/* Prints every key with its flag, environment variable, default and meaning. */
void svc_config_help(FILE *out, const char *prog);

/* Writes the effective configuration as an INI file that loads back: each
 * key with its meaning, default and source ("; from file PATH", "env
 * NAME", "flag --k", "set") and secrets as <redacted>: the admin token,
 * redis.password, a password in the store URL and every Kafka property
 * whose name says password or secret. */
void svc_config_dump(FILE *out, const svc_config *cfg);

/* Finishes SVC_ACT_CHECK ("<prog>: configuration ok (file ...)") and
 * SVC_ACT_PRINT (svc_config_dump) on stdout for a loaded cfg. Returns the
 * exit code (0) when act was one of them, -1 when the program should go on
 * and start. */
int svc_config_finish_action(const char *prog, int act, const svc_config *cfg);

/* The settings as one JSON object {"section.key": {"value": <string, number
 * or bool>, "source": "default|file|env|flag|set"}, ...}, secrets as
 * "<redacted>", Kafka properties as "kafka.<property>". Returns a malloc()ed
 * NUL-terminated string, or NULL without memory. */
char *svc_config_json(const svc_config *cfg);

/* Reports every key whose effective value differs between old and new:
 * fn(arg, "section.key", runtime) once per key, runtime nonzero when the
 * running service applies the key without a restart (svc_config_runtime).
 * Kafka properties are compared as one key, "kafka.<properties>". Returns
 * the number of keys reported. */
int svc_config_diff(const svc_config *old, const svc_config *next,
                    void (*fn)(void *arg, const char *key, int runtime), void *arg);

/* The value of dotted_key as text (secrets as <redacted> when redact is
 * set). Returns 0 or -EINVAL for an unknown key. */
int svc_config_get(const svc_config *cfg, const char *dotted_key, int redact, char *buf,
                   size_t n);

/* Copies dotted_key's value and source from src to dst. Returns 0 or
 * -EINVAL for an unknown key. */
int svc_config_copy_key(svc_config *dst, const svc_config *src, const char *dotted_key);

/* Copies every run-time key (svc_config_runtime) from src to dst. */
void svc_config_copy_runtime(svc_config *dst, const svc_config *src);

/* Nonzero when the running service applies dotted_key on SIGHUP:
 * kafka.invalidation_delay_ms, cache.local_ttl_ms, log.level, log.slow_ms,
 * server.admin_token and server.admin_token_file. */
int svc_config_runtime(const char *dotted_key);

/* Copies url to buf (cap bytes) with the password of a URL's user info
 * (scheme://user:PASSWORD@host) and of a password=... parameter replaced by
 * <redacted>; other text is copied unchanged. Returns buf. */
char *svc_redact_url(const char *url, char *buf, size_t cap);

const char *svc_log_level_name(int level);
/* Returns the level for "debug|info|warn|error" or -EINVAL. */
int svc_log_level_parse(const char *s);

#ifdef __cplusplus
}
#endif
#endif /* CACHESVC_CONFIG_H */
