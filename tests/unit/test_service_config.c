/*
 * Unit tests of cachesvc's configuration, metrics registry and logging.
 */
#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "cachesvc/config.h"
#include "cachesvc/log.h"
#include "cachesvc/metrics.h"

static char *empty_env[] = {NULL};

static int load(svc_config *c, int argc, char **argv, char **envp, char *err)
{
    return svc_config_load(c, argc, argv, envp ? envp : empty_env, NULL, err, 256);
}

static void test_defaults(void **state)
{
    (void)state;
    svc_config c;
    char err[256];
    char *argv[] = {"cachesvc", NULL};
    assert_int_equal(load(&c, 1, argv, NULL, err), 0);
    assert_string_equal(c.listen, "127.0.0.1:8080");
    assert_string_equal(c.listen_host, "127.0.0.1");
    assert_int_equal(c.listen_port, 8080);
    assert_int_equal(c.workers, (int)sysconf(_SC_NPROCESSORS_ONLN));
    assert_string_equal(c.store_url, "sqlite:./cachesvc.db");
    assert_string_equal(c.redis_url, "none");
    assert_string_equal(c.kafka_brokers, "embedded");
    assert_int_equal(c.invalidation_delay_ms, 500);
    assert_int_equal(c.log_level, SVC_LOG_INFO);
    assert_true(c.relay_delay_consumer);
    assert_true(c.instance_id[0] != '\0');
}

static char *write_tmp(const char *text)
{
    static char path[64];
    strcpy(path, "/tmp/svc_cfg_XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return path;
}

static void test_precedence(void **state)
{
    (void)state;
    svc_config c;
    char err[256];
    char *path = write_tmp("[kafka]\ninvalidation_delay_ms = 700\n[store]\nbatch_max=10\n"
                           "[server]\nlisten = 127.0.0.1:25001 ; inline comment\n");
    char flag[128];
    snprintf(flag, sizeof flag, "--config=%s", path);
    char *env[] = {"CACHESVC_KAFKA_INVALIDATION_DELAY_MS=800", "CACHESVC_BUILD=/x",
                   "CACHESVC_LOG_LEVEL=debug", NULL};
    char *argv[] = {"cachesvc", flag, "--kafka.invalidation_delay_ms=900", "--redis.url",
                    "127.0.0.1:25100,127.0.0.1:25101", "--kafka.delay_consumer", NULL};
    assert_int_equal(load(&c, 6, argv, env, err), 0);
    assert_int_equal(c.invalidation_delay_ms, 900);     /* flag beats env beats file */
    assert_int_equal(c.store_batch_max, 10);            /* file */
    assert_int_equal(c.listen_port, 25001);
    assert_int_equal(c.log_level, SVC_LOG_DEBUG);       /* env */
    assert_string_equal(c.redis_url, "127.0.0.1:25100,127.0.0.1:25101");
    assert_string_equal(c.path, path);

    char *argv2[] = {"cachesvc", flag, NULL};
    assert_int_equal(load(&c, 2, argv2, env, err), 0);
    assert_int_equal(c.invalidation_delay_ms, 800);
    unlink(path);
}

/* The dump of c as one string (malloc'ed) without its "; from <source>"
 * lines, so that the same values from different sources compare equal. */
static char *dump_of(const svc_config *c)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    svc_config_dump(f, c);
    fclose(f);
    char *w = buf;
    for (char *r = buf; *r;) {
        char *nl = strchr(r, '\n');
        size_t n = nl ? (size_t)(nl - r + 1) : strlen(r);
        if (strncmp(r, "; from ", 7) != 0) {
            memmove(w, r, n);
            w += n;
        }
        r += n;
    }
    *w = '\0';
    return buf;
}

/* A token file only its owner may read (mkstemp makes it 0600). */
static const char *token_file(void)
{
    static char path[64];
    if (path[0] == '\0') {
        strcpy(path, "/tmp/svc_tok_XXXXXX");
        int fd = mkstemp(path);
        assert_true(fd >= 0);
        assert_int_equal(write(fd, "tok-from-file\n", 14), 14);
        close(fd);
    }
    return path;
}

/* A valid value other than the default for a key whose default text is
 * def: an integer one more, a boolean flipped, another level, a string
 * from the table. NULL when the test does not know the key. */
static const char *other_value(const char *dotted, const char *def, char *buf, size_t n)
{
    static const struct { const char *key, *value; } strs[] = {
        {"server.listen", "127.0.0.1:25999"},
        {"server.admin_token", "tok"},
        {"store.url", "sqlite:/tmp/svc-every-key.db"},
        {"redis.url", "127.0.0.1:25998"},
        {"kafka.brokers", "127.0.0.1:25997"},
        {"kafka.topic", "topic-2"},
        {"kafka.broadcast_mode", "evict"},
        {"kafka.group", "group-2"},
        {"kafka.instance_id", "instance-2"},
        {"log.level", "warn"},
        {"server.admin_token_file", NULL},
        {"redis.user", "user-2"},
        {"redis.password", "pw-2"},
        {"invalidator.listen", "127.0.0.1:25996"},
    };
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++)
        if (strcmp(strs[i].key, dotted) == 0)
            return strs[i].value ? strs[i].value : token_file();
    if (strcmp(def, "true") == 0)
        return "false";
    if (strcmp(def, "false") == 0)
        return "true";
    char *end;
    long long v = strtoll(def, &end, 10);
    if (*def == '\0' || *end != '\0')
        return NULL;
    snprintf(buf, n, "%lld", v + 1);
    return buf;
}

/* Every key of the dump (the whole table) takes a non-default value from
 * --section.key=, from CACHESVC_<SECTION>_<KEY> and from the INI file, all
 * three giving the same configuration, which differs from the default one
 * in that key's line; a value of the wrong shape is refused with the key
 * named. New keys are covered without touching this test. */
static void test_every_key_every_source(void **state)
{
    (void)state;
    svc_config def, c;
    char err[256], vbuf[64];
    char *argv_none[] = {"cachesvc", NULL};
    assert_int_equal(load(&def, 1, argv_none, NULL, err), 0);
    char *defdump = dump_of(&def);
    char *lines = strdup(defdump);
    char *help = NULL;
    size_t helplen = 0;
    FILE *hf = open_memstream(&help, &helplen);
    svc_config_help(hf, "cachesvc");
    fclose(hf);
    char *save = NULL, section[32] = "";
    int keys = 0;
    for (char *line = strtok_r(lines, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (line[0] == '[') {
            snprintf(section, sizeof section, "%.*s", (int)strcspn(line + 1, "]"), line + 1);
            continue;
        }
        char *eq = strstr(line, " = ");
        if (line[0] == ';' || eq == NULL)
            continue;
        char key[64], dotted[128], env[192], flag[256], ini[256], cfgflag[96];
        snprintf(key, sizeof key, "%.*s", (int)(eq - line), line);
        snprintf(dotted, sizeof dotted, "%s.%s", section, key);
        const char *v = other_value(dotted, eq + 3, vbuf, sizeof vbuf);
        if (v == NULL)
            fail_msg("no test value for %s (default \"%s\")", dotted, eq + 3);
        keys++;

        /* --help names it with its flag, environment variable and meaning. */
        snprintf(flag, sizeof flag, "  --%s=", dotted);
        const char *h = strstr(help, flag);
        if (h == NULL)
            fail_msg("--help does not list %s", dotted);
        snprintf(env, sizeof env, "env CACHESVC_%s_%s, default \"", section, key);
        for (char *p = env + 13; *p != ','; p++)
            *p = (char)toupper((unsigned char)*p);
        const char *e = strstr(h, env);
        const char *next = strstr(h + 1, "  --");
        if (e == NULL || (next != NULL && e > next))
            fail_msg("--help has no env name and default for %s", dotted);
        if (strncmp(strchr(h, '\n') + 1, "      ", 6) != 0 || strchr(h, '\n')[7] == ' ')
            fail_msg("--help has no meaning for %s", dotted);

        snprintf(ini, sizeof ini, "[%s]\n%s = %s\n", section, key, v);
        char *path = write_tmp(ini);
        snprintf(cfgflag, sizeof cfgflag, "--config=%s", path);
        snprintf(env, sizeof env, "CACHESVC_%s_%s=%s", section, key, v);
        for (char *p = env + 9; *p != '='; p++)
            *p = (char)toupper((unsigned char)*p);
        snprintf(flag, sizeof flag, "--%s=%s", dotted, v);
        char *envp[] = {env, NULL};
        char *argv_ini[] = {"cachesvc", cfgflag, NULL};
        char *argv_flag[] = {"cachesvc", flag, NULL};
        struct { const char *what; int argc; char **argv; char **envp; } src[] = {
            {"flag", 2, argv_flag, NULL}, {"env", 1, argv_none, envp}, {"INI", 2, argv_ini, NULL},
        };
        char *want = NULL;
        for (size_t i = 0; i < 3; i++) {
            if (load(&c, src[i].argc, src[i].argv, src[i].envp, err) != 0)
                fail_msg("%s from %s refused: %s", dotted, src[i].what, err);
            c.path[0] = '\0';
            char *got = dump_of(&c);
            if (want == NULL) {
                want = got;
                if (strcmp(want, defdump) == 0)
                    fail_msg("%s = %s changes nothing", dotted, v);
                continue;
            }
            if (strcmp(got, want) != 0)
                fail_msg("%s = %s from %s differs from the flag's", dotted, v, src[i].what);
            free(got);
        }
        free(want);
        unlink(path);

        /* A value of the wrong shape is refused, naming the key (free-text
         * keys take anything). */
        static const char *const free_text[] = {"server.admin_token", "kafka.instance_id",
                                                "redis.password"};
        int skip = 0;
        for (size_t i = 0; i < sizeof free_text / sizeof free_text[0]; i++)
            skip |= strcmp(dotted, free_text[i]) == 0;
        snprintf(flag, sizeof flag, "--%s=%s", dotted, "bad value!");
        if (!skip && (load(&c, 2, argv_flag, NULL, err) != -EINVAL || strstr(err, dotted) == NULL))
            fail_msg("%s: a bad value was not refused by name (%s)", dotted, err);
    }
    free(help);
    free(lines);
    free(defdump);
    assert_true(keys >= 29);
}

static void test_bad_values_name_the_key(void **state)
{
    (void)state;
    svc_config c;
    char err[256];
    struct { const char *flag, *key; } cases[] = {
        {"--store.batch_max=0", "store.batch_max"},
        {"--store.batch_max=12x", "store.batch_max"},
        {"--server.listen=nohost", "server.listen"},
        {"--server.listen=1.2.3.4:70000", "server.listen"},
        {"--store.url=mysql://x", "store.url"},
        {"--redis.url=localhost", "redis.url"},
        {"--kafka.brokers=", "kafka.brokers"},
        {"--log.level=loud", "log.level"},
        {"--kafka.delay_consumer=maybe", "kafka.delay_consumer"},
        {"--nosuch.key=1", "nosuch.key"},
        {"--kafka.topic=bad topic", "kafka.topic"},
        {"--kafka.broadcast_mode=both", "kafka.broadcast_mode"},
        {"--store.sold_out_max_orders=-1", "store.sold_out_max_orders"},
        {"--store.sold_out_max_orders=10000001", "store.sold_out_max_orders"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *argv[] = {"cachesvc", (char *)cases[i].flag, NULL};
        assert_int_equal(load(&c, 2, argv, NULL, err), -EINVAL);
        if (strstr(err, cases[i].key) == NULL)
            fail_msg("error \"%s\" does not name %s", err, cases[i].key);
    }
    char *env[] = {"CACHESVC_STORE_QUEUE_MAX=-5", NULL};
    char *argv[] = {"cachesvc", NULL};
    assert_int_equal(load(&c, 1, argv, env, err), -EINVAL);
    assert_non_null(strstr(err, "store.queue_max"));
    assert_non_null(strstr(err, "CACHESVC_STORE_QUEUE_MAX"));

    char *path = write_tmp("[cache]\nlocal_ttl_ms = 10\nbogus = 1\n");
    char flag[128];
    snprintf(flag, sizeof flag, "--config=%s", path);
    char *argv2[] = {"cachesvc", flag, NULL};
    assert_int_equal(load(&c, 2, argv2, NULL, err), -EINVAL);
    assert_non_null(strstr(err, "cache.bogus"));
    unlink(path);

    char *argv3[] = {"cachesvc", "--config=/nonexistent/cachesvc.ini", NULL};
    assert_int_equal(load(&c, 2, argv3, NULL, err), -ENOENT);
    char *argv5[] = {"cachesvc", "--kafka.brokers=none", "--redis.url=127.0.0.1:25999", NULL};
    assert_int_equal(load(&c, 3, argv5, NULL, err), -EINVAL);
    assert_non_null(strstr(err, "kafka.brokers"));
    char *argv4[] = {"cachesvc", "positional", NULL};
    assert_int_equal(load(&c, 2, argv4, NULL, err), -EINVAL);
}

static void test_help_and_dump(void **state)
{
    (void)state;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    svc_config_help(f, "cachesvc");
    fclose(f);
    assert_non_null(strstr(buf, "--kafka.invalidation_delay_ms"));
    assert_non_null(strstr(buf, "CACHESVC_KAFKA_INVALIDATION_DELAY_MS"));
    assert_non_null(strstr(buf, "default \"500\""));
    free(buf);

    svc_config c;
    svc_config_defaults(&c);
    assert_int_equal(svc_config_set(&c, "server.admin_token", "s3cret", NULL, 0), 0);
    f = open_memstream(&buf, &len);
    svc_config_dump(f, &c);
    fclose(f);
    assert_null(strstr(buf, "s3cret"));
    assert_non_null(strstr(buf, "[redis]\n"));
    assert_non_null(strstr(buf, "\nurl = none\n"));
    /* The dump is a valid config file that loads to the same values. */
    char *path = write_tmp(buf);
    free(buf);
    char flag[128];
    snprintf(flag, sizeof flag, "--config=%s", path);
    char *argv[] = {"cachesvc", flag, "--help", NULL};
    char err[256];
    int help = 0;
    assert_int_equal(svc_config_load(&c, 3, argv, empty_env, &help, err, sizeof err), 0);
    assert_int_equal(help, 1);
    unlink(path);
}

static void test_metrics_render(void **state)
{
    (void)state;
    svc_metric_inc(SVC_C_READ_LOCAL);
    svc_metric_add(SVC_C_DECR_OK, 41);
    svc_metric_inc(SVC_C_DECR_OK);
    svc_hist_observe(SVC_H_READ_DB_S, 30000);     /* 30 us */
    svc_hist_observe(SVC_H_READ_DB_S, 2000000);   /* 2 ms */
    assert_int_equal(svc_metric_get(SVC_C_DECR_OK), 42);
    assert_int_equal(svc_hist_count(SVC_H_READ_DB_S), 2);
    kit_buf b = {0};
    svc_metrics_render(&b);
    assert_false(b.oom);
    assert_non_null(strstr(b.data, "cachesvc_decrements_total{outcome=\"ok\"} 42\n"));
    assert_non_null(strstr(b.data, "cachesvc_reads_total{tier=\"local\"} 1\n"));
    assert_non_null(strstr(b.data, "cachesvc_read_seconds_bucket{tier=\"db\",le=\"0.00005\"} 1\n"));
    assert_non_null(strstr(b.data, "cachesvc_read_seconds_bucket{tier=\"db\",le=\"+Inf\"} 2\n"));
    assert_non_null(strstr(b.data, "cachesvc_read_seconds_count{tier=\"db\"} 2\n"));
    /* One HELP per family. */
    const char *p = b.data;
    int helps = 0;
    while ((p = strstr(p, "# HELP cachesvc_decrements_total ")) != NULL) {
        helps++;
        p++;
    }
    assert_int_equal(helps, 1);
    kit_buf_free(&b);
}

/* Per-thread slots: the first threads that count write their own slot with
 * plain stores, the rest share one with atomic adds; a scrape sees every
 * update. TSAN checks the stores race with
 * nothing but the relaxed reads of the scrape. */
#define SLOT_ADDS 50000
static void *slot_writer(void *arg)
{
    (void)arg;
    for (int i = 0; i < SLOT_ADDS; i++) {
        svc_metric_inc(SVC_C_RELOAD_OK);
        svc_hist_observe(SVC_H_DECR_S, 1000);
    }
    return NULL;
}

/* More threads than the kit has slots: the first ones own a slot each,
 * the rest share the last one; no update is lost either way. */
static void test_metrics_worker_slots(void **state)
{
    (void)state;
    enum { N = KIT_SLOTS + 8 };
    pthread_t t[N];
    uint64_t c0 = svc_metric_get(SVC_C_RELOAD_OK), h0 = svc_hist_count(SVC_H_DECR_S);
    for (int i = 0; i < N; i++)
        assert_int_equal(pthread_create(&t[i], NULL, slot_writer, NULL), 0);
    uint64_t seen = 0;
    for (int k = 0; k < 100; k++) {   /* scrapes while the writers run */
        uint64_t v = svc_metric_get(SVC_C_RELOAD_OK);
        assert_true(v >= seen);
        seen = v;
    }
    for (int i = 0; i < N; i++)
        pthread_join(t[i], NULL);
    assert_int_equal(svc_metric_get(SVC_C_RELOAD_OK) - c0, (uint64_t)N * SLOT_ADDS);
    assert_int_equal(svc_hist_count(SVC_H_DECR_S) - h0, (uint64_t)N * SLOT_ADDS);
}

/* Log lines go to a pipe between capture_begin and capture_end, which
 * reads them into buf (NUL-terminated). */
static int capture_fds[2];
static void capture_begin(void)
{
    assert_int_equal(pipe(capture_fds), 0);
    svc_log_set_fd(capture_fds[1]);
}

static void capture_end(char *buf, size_t cap)
{
    svc_log_set_fd(2);
    close(capture_fds[1]);
    memset(buf, 0, cap);
    ssize_t n = read(capture_fds[0], buf, cap - 1);
    close(capture_fds[0]);
    assert_true(n > 0);
}

static void test_log_format(void **state)
{
    (void)state;
    capture_begin();
    svc_log_set_level(SVC_LOG_WARN);
    svc_log(SVC_LOG_INFO, NULL, "dropped", NULL);
    svc_log(SVC_LOG_WARN, "r-17", "redis \"down\"", "node=%s errors=%d", "127.0.0.1:25100", 3);
    svc_log_set_level(SVC_LOG_INFO);
    char buf[512];
    capture_end(buf, sizeof buf);
    assert_null(strstr(buf, "dropped"));
    assert_non_null(strstr(buf, " level=warn msg=\"redis \\\"down\\\"\" req=r-17 node=127.0.0.1:25100 errors=3\n"));
    assert_int_equal(strncmp(buf, "ts=", 3), 0);
}

static const char *fake_id;
static size_t fake_reqid(char *buf, size_t cap)
{
    if (fake_id == NULL)
        return 0;
    snprintf(buf, cap, "%s", fake_id);
    return strlen(buf);
}

/* A line logged with reqid NULL takes the id of the request being served
 * from the installed source; "" means none; odd client ids are quoted. */
static void test_log_request_id(void **state)
{
    (void)state;
    capture_begin();
    svc_log_set_reqid_source(fake_reqid);
    fake_id = "1f-2a";
    svc_log(SVC_LOG_WARN, NULL, "in request", "k=1");
    svc_log(SVC_LOG_WARN, "", "explicitly none", NULL);
    fake_id = "a=\"b";
    svc_log(SVC_LOG_ERROR, NULL, "odd id", NULL);
    fake_id = NULL;
    svc_log(SVC_LOG_WARN, NULL, "outside", NULL);
    svc_log_set_reqid_source(NULL);
    char buf[1024];
    capture_end(buf, sizeof buf);
    assert_non_null(strstr(buf, "msg=\"in request\" req=1f-2a k=1\n"));
    assert_non_null(strstr(buf, "msg=\"explicitly none\"\n"));
    assert_non_null(strstr(buf, "msg=\"odd id\" req=\"a=\\\"b\"\n"));
    assert_non_null(strstr(buf, "msg=\"outside\"\n"));
}

/* librdkafka properties: any [kafka] key with a dot, from the file, a
 * flag or CACHESVC_KAFKA_PROP_*; a later source replaces an earlier one;
 * the dump lists them with their sources and redacts secrets. */
static void test_kafka_props(void **state)
{
    (void)state;
    svc_config c;
    char err[256];
    char *path = write_tmp("[kafka]\nsecurity.protocol = SSL\nsasl.mechanisms = PLAIN\n");
    char flag[96];
    snprintf(flag, sizeof flag, "--config=%s", path);
    char *env[] = {"CACHESVC_KAFKA_PROP_SASL_PASSWORD=pw-env", NULL};
    char *argv[] = {"cachesvc", flag, "--kafka.security.protocol=SASL_SSL",
                    "--kafka.socket.timeout.ms", "3000", NULL};
    assert_int_equal(load(&c, 5, argv, env, err), 0);
    assert_int_equal(c.n_kafka_props, 4);
    int seen = 0;
    for (int i = 0; i < c.n_kafka_props; i++) {
        const struct svc_kafka_prop *p = &c.kafka_props[i];
        if (strcmp(p->key, "security.protocol") == 0) {
            assert_string_equal(p->value, "SASL_SSL");   /* the flag beats the file */
            assert_int_equal(p->source, SVC_SRC_FLAG);
            seen |= 1;
        } else if (strcmp(p->key, "sasl.mechanisms") == 0) {
            assert_int_equal(p->source, SVC_SRC_FILE);
            seen |= 2;
        } else if (strcmp(p->key, "sasl.password") == 0) {
            assert_string_equal(p->value, "pw-env");
            assert_int_equal(p->source, SVC_SRC_ENV);
            seen |= 4;
        } else if (strcmp(p->key, "socket.timeout.ms") == 0) {
            assert_string_equal(p->value, "3000");
            seen |= 8;
        }
    }
    assert_int_equal(seen, 15);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    svc_config_dump(f, &c);
    fclose(f);
    assert_non_null(strstr(buf, "; from flag --kafka.security.protocol\nsecurity.protocol = SASL_SSL\n"));
    assert_non_null(strstr(buf, "; from env CACHESVC_KAFKA_PROP_SASL_PASSWORD\nsasl.password = <redacted>\n"));
    assert_null(strstr(buf, "pw-env"));
    /* The dump loads back with the properties in [kafka]. */
    char *back = write_tmp(buf);
    free(buf);
    snprintf(flag, sizeof flag, "--config=%s", back);
    char *argv2[] = {"cachesvc", flag, NULL};
    svc_config d;
    assert_int_equal(load(&d, 2, argv2, NULL, err), 0);
    assert_int_equal(d.n_kafka_props, 4);
    unlink(back);
    char *json = svc_config_json(&c);
    assert_non_null(strstr(json, "\"kafka.sasl.password\":{\"value\":\"<redacted>\",\"source\":\"env\"}"));
    free(json);

    /* Not a property name; too many. */
    char *bad[] = {"cachesvc", "--kafka.bad name.x=1", NULL};
    assert_int_equal(load(&c, 2, bad, NULL, err), -EINVAL);
    assert_non_null(strstr(err, "kafka.bad name.x"));
    char *many[SVC_KAFKA_PROPS_MAX + 3];
    char texts[SVC_KAFKA_PROPS_MAX + 1][48];
    many[0] = "cachesvc";
    for (int i = 0; i <= SVC_KAFKA_PROPS_MAX; i++) {
        snprintf(texts[i], sizeof texts[i], "--kafka.x.p%d=1", i);
        many[i + 1] = texts[i];
    }
    many[SVC_KAFKA_PROPS_MAX + 2] = NULL;
    assert_int_equal(load(&c, SVC_KAFKA_PROPS_MAX + 2, many, NULL, err), -EINVAL);
    assert_non_null(strstr(err, "more than"));
    unlink(path);
}

static void test_admin_token_file(void **state)
{
    (void)state;
    svc_config c;
    char err[256], flag[96];
    snprintf(flag, sizeof flag, "--server.admin_token_file=%s", token_file());
    char *argv[] = {"cachesvc", flag, NULL};
    assert_int_equal(load(&c, 2, argv, NULL, err), 0);
    assert_string_equal(c.admin_token, "tok-from-file");   /* the line end cut */
    char *both[] = {"cachesvc", flag, "--server.admin_token=x", NULL};
    assert_int_equal(load(&c, 3, both, NULL, err), -EINVAL);
    assert_non_null(strstr(err, "both set"));
    char *missing[] = {"cachesvc", "--server.admin_token_file=/nonexistent/tok", NULL};
    assert_int_equal(load(&c, 2, missing, NULL, err), -EINVAL);
    assert_non_null(strstr(err, "server.admin_token_file"));
    char *empty = write_tmp("\n");
    chmod(empty, 0600);
    snprintf(flag, sizeof flag, "--server.admin_token_file=%s", empty);
    assert_int_equal(load(&c, 2, argv, NULL, err), -EINVAL);
    assert_non_null(strstr(err, "empty"));
    FILE *f = fopen(empty, "w");
    fputs("tok\n", f);
    fclose(f);
    chmod(empty, 0644);
    assert_int_equal(load(&c, 2, argv, NULL, err), -EINVAL);
    assert_non_null(strstr(err, "others may read"));
    unlink(empty);
}

static void test_redact_url(void **state)
{
    (void)state;
    char b[256];
    struct { const char *in, *out; } cases[] = {
        {"postgresql://app:s3cret@db1:5432,db2:5432/shop?target_session_attrs=read-write",
         "postgresql://app:<redacted>@db1:5432,db2:5432/shop?target_session_attrs=read-write"},
        {"postgresql://app@db/shop", "postgresql://app@db/shop"},
        {"postgresql://db/shop?user=app&password=s3cret&sslmode=require",
         "postgresql://db/shop?user=app&password=<redacted>&sslmode=require"},
        {"host=db user=app password=s3cret dbname=shop",
         "host=db user=app password=<redacted> dbname=shop"},
        {"postgresql://u:p@h/d?sslpassword=k", "postgresql://u:<redacted>@h/d?sslpassword=<redacted>"},
        {"sqlite:/var/lib/cachesvc/cachesvc.db", "sqlite:/var/lib/cachesvc/cachesvc.db"},
        {"postgresql://h/d?x=1#a:b@c", "postgresql://h/d?x=1#a:b@c"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        assert_string_equal(svc_redact_url(cases[i].in, b, sizeof b), cases[i].out);
    /* Cut to the buffer, never past it. */
    char small[12];
    svc_redact_url("postgresql://app:s3cret@db/shop", small, sizeof small);
    assert_int_equal(strlen(small), sizeof small - 1);
    assert_null(strstr(small, "s3"));
}

struct diff_seen {
    char keys[16][64];
    int runtime[16];
    int n;
};

static void diff_cb(void *arg, const char *key, int runtime)
{
    struct diff_seen *d = arg;
    if (d->n < 16) {
        snprintf(d->keys[d->n], sizeof d->keys[0], "%s", key);
        d->runtime[d->n++] = runtime;
    }
}

static void test_diff_and_runtime_keys(void **state)
{
    (void)state;
    svc_config a, b;
    char err[256];
    char *argv_a[] = {"cachesvc", "--kafka.invalidation_delay_ms=500", NULL};
    char *argv_b[] = {"cachesvc", "--kafka.invalidation_delay_ms=900", "--store.batch_max=7",
                      "--kafka.client.id=x", NULL};
    assert_int_equal(load(&a, 2, argv_a, NULL, err), 0);
    assert_int_equal(load(&b, 4, argv_b, NULL, err), 0);
    struct diff_seen d = {0};
    assert_int_equal(svc_config_diff(&a, &b, diff_cb, &d), 3);
    assert_string_equal(d.keys[0], "store.batch_max");
    assert_int_equal(d.runtime[0], 0);
    assert_string_equal(d.keys[1], "kafka.invalidation_delay_ms");
    assert_int_equal(d.runtime[1], 1);
    assert_string_equal(d.keys[2], "kafka.<properties>");
    assert_int_equal(d.runtime[2], 0);
    /* The same sources twice: nothing changed (instance_id is per process
     * and stable within it). */
    assert_int_equal(load(&b, 2, argv_a, NULL, err), 0);
    memset(&d, 0, sizeof d);
    assert_int_equal(svc_config_diff(&a, &b, diff_cb, &d), 0);
    /* copy_runtime takes the run-time keys only. */
    assert_int_equal(load(&b, 4, argv_b, NULL, err), 0);
    svc_config_copy_runtime(&a, &b);
    assert_int_equal(a.invalidation_delay_ms, 900);
    assert_int_equal(a.store_batch_max, 1024);
    assert_true(svc_config_runtime("log.level"));
    assert_false(svc_config_runtime("store.url"));
    char v[64];
    assert_int_equal(svc_config_get(&b, "store.batch_max", 1, v, sizeof v), 0);
    assert_string_equal(v, "7");
    assert_int_equal(svc_config_get(&b, "no.such", 1, v, sizeof v), -EINVAL);
}

static void test_action_flags(void **state)
{
    (void)state;
    char *v[] = {"cachesvc", "--version", NULL};
    char *t[] = {"cachesvc", "-c", "x.ini", "-t", NULL};
    char *p[] = {"cachesvc", "--print-config", "--log.level=warn", NULL};
    char *h[] = {"cachesvc", "--print-config", "--help", NULL};
    char *r[] = {"cachesvc", "--log.level=warn", NULL};
    assert_int_equal(svc_config_action(2, v), SVC_ACT_VERSION);
    assert_int_equal(svc_config_action(4, t), SVC_ACT_CHECK);
    assert_int_equal(svc_config_action(3, p), SVC_ACT_PRINT);
    assert_int_equal(svc_config_action(3, h), SVC_ACT_HELP);
    assert_int_equal(svc_config_action(2, r), SVC_ACT_RUN);
    /* The loader accepts the action flags beside the settings. */
    svc_config c;
    char err[256];
    assert_int_equal(load(&c, 3, p, NULL, err), 0);
    assert_int_equal(c.log_level, SVC_LOG_WARN);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_precedence),
        cmocka_unit_test(test_bad_values_name_the_key),
        cmocka_unit_test(test_every_key_every_source),
        cmocka_unit_test(test_help_and_dump),
        cmocka_unit_test(test_kafka_props),
        cmocka_unit_test(test_admin_token_file),
        cmocka_unit_test(test_redact_url),
        cmocka_unit_test(test_diff_and_runtime_keys),
        cmocka_unit_test(test_action_flags),
        cmocka_unit_test(test_metrics_render),
        cmocka_unit_test(test_metrics_worker_slots),
        cmocka_unit_test(test_log_format),
        cmocka_unit_test(test_log_request_id),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
