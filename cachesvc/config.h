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

typedef struct svc_config {
    /* [server] */
    char listen[SVC_CFG_STR];      /* host:port as given */
    char listen_host[64];          /* parsed from listen */
    int listen_port;
    int workers;                   /* resolved: never 0 after load */
    char admin_token[SVC_CFG_STR];
    int max_connections;
    int idle_timeout_ms;
    int header_timeout_ms;
    int drain_timeout_ms;
    /* [store] */
    char store_url[SVC_CFG_STR];
    int store_batch_max;
    int store_queue_max;           /* admission bound per item */
    int store_timeout_ms;
    int store_pool_size;
    int64_t store_sold_out_max_orders; /* store_sold_out bound; 0 = off */
    /* [redis] */
    char redis_url[SVC_CFG_STR];   /* "none" or host:port[,host:port...] */
    int redis_timeout_ms;
    int redis_connections;         /* per node */
    int redis_ttl_ms;              /* PX on fills; 0 = no expiry */
    int redis_tombstone_ttl_ms;    /* PX of a delete's tombstone */
    int redis_breaker_failures;
    int redis_breaker_probe_ms;
    /* [kafka] */
    char kafka_brokers[SVC_CFG_STR]; /* "embedded" or host:port list */
    char kafka_topic[128];
    char kafka_group[128];
    char instance_id[128];         /* names this instance's broadcast group */
    int invalidation_delay_ms;
    int relay_delay_consumer;      /* bool: run the delay consumer in process */
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

    /* Where the file came from (empty = none); kept for SIGHUP. */
    char path[SVC_CFG_STR];
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

/* Fills *cfg with the defaults only. Never fails. */
void svc_config_defaults(svc_config *cfg);

/* Sets one key from text, as a flag would ("kafka.invalidation_delay_ms",
 * "600"). Returns 0 or -EINVAL (unknown key or bad value, explained in err). */
int svc_config_set(svc_config *cfg, const char *dotted_key, const char *value,
                   char *err, size_t errlen);

/* Prints every key with its flag, environment variable, default and meaning. */
void svc_config_help(FILE *out, const char *prog);

/* Writes the effective configuration as an INI file (secrets masked). */
void svc_config_dump(FILE *out, const svc_config *cfg);

const char *svc_log_level_name(int level);
/* Returns the level for "debug|info|warn|error" or -EINVAL. */
int svc_log_level_parse(const char *s);

#ifdef __cplusplus
}
#endif
#endif /* CACHESVC_CONFIG_H */
