/*
 * Unit tests of the librdkafka properties the invalidator passes through
 * (inv_config.kafka_props): what is refused and how it is said, and that
 * the accepted ones end up in the producer's and the consumers'
 * configurations, after the invalidator's own settings. Uses the embedded
 * mock cluster; one case starts the relay and broadcast roles on it.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "invalidator/inv_kafka.h"

#define NPROPS(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* The value of name in conf ("" when unset). */
static const char *conf_get(rd_kafka_conf_t *conf, const char *name)
{
    static char buf[512];
    size_t n = sizeof buf;
    if (rd_kafka_conf_get(conf, name, buf, &n) != RD_KAFKA_CONF_OK)
        return "";
    return buf;
}

/* Runs inv_check_kafka_props on one property; returns its result and
 * leaves the message in err. */
static int check_one(const char *key, const char *value, char *err, size_t errlen)
{
    inv_kafka_prop p = {key, value};
    inv_config cfg = {.kafka_props = &p, .n_kafka_props = 1};
    return inv_check_kafka_props(&cfg, err, errlen);
}

static void test_refused(void **state)
{
    (void)state;
    char err[512];

    /* Unknown property: named. */
    assert_int_equal(check_one("no.such.property", "1", err, sizeof err), -EINVAL);
    assert_non_null(strstr(err, "no.such.property"));
    assert_non_null(strstr(err, "unknown"));

    /* A value librdkafka rejects: the property is named. */
    assert_int_equal(check_one("socket.timeout.ms", "soon", err, sizeof err), -EINVAL);
    assert_non_null(strstr(err, "socket.timeout.ms"));
    assert_int_equal(check_one("security.protocol", "carrier-pigeon", err, sizeof err), -EINVAL);
    assert_non_null(strstr(err, "security.protocol"));

    /* The ones the guarantees rest on: refused, with the reason. */
    const char *reserved[] = {"enable.auto.commit", "enable.auto.offset.store", "acks",
                              "enable.idempotence", "group.id", "bootstrap.servers",
                              "auto.offset.reset", "partitioner"};
    for (size_t i = 0; i < sizeof reserved / sizeof reserved[0]; i++) {
        assert_int_equal(check_one(reserved[i], "true", err, sizeof err), -EINVAL);
        assert_non_null(strstr(err, reserved[i]));
        assert_non_null(strstr(err, "may not be overridden"));
        assert_non_null(inv_kafka_prop_reserved(reserved[i]));
    }
    assert_null(inv_kafka_prop_reserved("socket.timeout.ms"));

    /* A secret's value is never echoed, whatever goes wrong. */
    assert_int_equal(check_one("sasl.passwordd", "hunter2-secret", err, sizeof err), -EINVAL);
    assert_non_null(strstr(err, "sasl.passwordd"));
    assert_null(strstr(err, "hunter2"));

    /* linger.ms replaces a field counted in whole milliseconds. */
    assert_int_equal(check_one("linger.ms", "0.5", err, sizeof err), -EINVAL);
    assert_non_null(strstr(err, "linger.ms"));

    /* The first bad one of a list is the one named; nothing is created. */
    inv_kafka_prop list[] = {{"client.id", "x"}, {"socket.timeout.ms", "-3"}};
    inv_config cfg = {.kafka_props = list, .n_kafka_props = 2};
    assert_int_equal(inv_check_kafka_props(&cfg, err, sizeof err), -EINVAL);
    assert_non_null(strstr(err, "socket.timeout.ms"));

    /* inv_new refuses the same configuration. */
    inv *iv = NULL;
    inv_local_sink ls = {.evict = (void (*)(void *, const char *, int64_t))abort};
    cfg.brokers = "127.0.0.1:1";
    cfg.roles = INV_ROLE_BCAST;
    assert_int_equal(inv_new(&cfg, NULL, NULL, &ls, &iv), -EINVAL);
    assert_null(iv);
}

static void test_good(void **state)
{
    (void)state;
    char err[512];
    inv_kafka_prop props[] = {
        {"client.id", "ops-client"},
        {"socket.timeout.ms", "12345"},
        {"fetch.wait.max.ms", "77"},        /* consumers only */
        {"batch.num.messages", "1000"},     /* the producer only */
        {"linger.ms", "9"},
        {"session.timeout.ms", "6000"},
        {"sasl.password", "s3cret"},
    };
    inv_config cfg = {.brokers = "127.0.0.1:1", .kafka_props = props,
                      .n_kafka_props = NPROPS(props), .roles = INV_ROLE_BCAST};
    inv_local_sink ls = {.evict = (void (*)(void *, const char *, int64_t))abort};
    inv *iv = NULL;

    assert_int_equal(inv_check_kafka_props(&cfg, err, sizeof err), 0);
    assert_int_equal(inv_new(&cfg, NULL, NULL, &ls, &iv), 0);
    assert_int_equal(iv->linger_ms, 9);
    assert_int_equal(iv->session_timeout_ms, 6000);

    /* The producer: global and producer properties, not the consumers'. */
    rd_kafka_conf_t *conf = inv__conf_new(iv, "relay");
    assert_non_null(conf);
    assert_string_equal(conf_get(conf, "client.id"), "ops-client");
    assert_string_equal(conf_get(conf, "socket.timeout.ms"), "12345");
    assert_string_equal(conf_get(conf, "batch.num.messages"), "1000");
    assert_string_equal(conf_get(conf, "sasl.password"), "s3cret");
    assert_string_not_equal(conf_get(conf, "fetch.wait.max.ms"), "77");
    rd_kafka_conf_destroy(conf);

    /* A consumer: the role's own settings first (fetch.wait.max.ms 5),
     * then the operator's, as inv__consumer_open applies them. */
    conf = inv__conf_new(iv, "delay");
    assert_non_null(conf);
    assert_int_equal(inv__conf_consumer(iv, conf, "group"), 0);
    assert_string_equal(conf_get(conf, "fetch.wait.max.ms"), "5");
    assert_int_equal(inv__conf_props(iv, conf, INV_PROPS_GLOBAL | INV_PROPS_CONSUMER), 0);
    assert_string_equal(conf_get(conf, "fetch.wait.max.ms"), "77");
    assert_string_equal(conf_get(conf, "session.timeout.ms"), "6000");
    assert_string_equal(conf_get(conf, "heartbeat.interval.ms"), "1000");
    assert_string_equal(conf_get(conf, "client.id"), "ops-client");
    assert_string_equal(conf_get(conf, "group.id"), "group");
    rd_kafka_conf_destroy(conf);
    inv_free(iv);

    /* Real brokers: security properties apply. */
    inv_kafka_prop sec[] = {{"security.protocol", "SASL_SSL"}, {"sasl.mechanisms", "PLAIN"}};
    cfg.kafka_props = sec;
    cfg.n_kafka_props = NPROPS(sec);
    assert_int_equal(inv_new(&cfg, NULL, NULL, &ls, &iv), 0);
    conf = inv__conf_new(iv, "bcast");
    assert_string_equal(conf_get(conf, "security.protocol"), "sasl_ssl");
    assert_string_equal(conf_get(conf, "sasl.mechanisms"), "PLAIN");
    rd_kafka_conf_destroy(conf);
    inv_free(iv);

    /* Embedded: the in-process cluster speaks plaintext; the rest applies. */
    inv_kafka_prop emb[] = {{"security.protocol", "SASL_SSL"}, {"client.id", "emb"}};
    cfg.brokers = "embedded";
    cfg.kafka_props = emb;
    cfg.n_kafka_props = NPROPS(emb);
    assert_int_equal(inv_new(&cfg, NULL, NULL, &ls, &iv), 0);
    conf = inv__conf_new(iv, "bcast");
    assert_string_equal(conf_get(conf, "security.protocol"), "plaintext");
    assert_string_equal(conf_get(conf, "client.id"), "emb");
    rd_kafka_conf_destroy(conf);
    inv_free(iv);
}

static void test_scopes(void **state)
{
    (void)state;
    assert_int_equal(inv__prop_kinds("fetch.wait.max.ms"), INV_PROPS_CONSUMER);
    assert_int_equal(inv__prop_kinds("batch.num.messages"), INV_PROPS_PRODUCER);
    assert_true(inv__prop_kinds("socket.timeout.ms") & INV_PROPS_GLOBAL);
    assert_true(inv__prop_kinds("no.such.thing") & INV_PROPS_GLOBAL);
}

/* ---- the roles start with the properties, on the embedded cluster ---- */

static int fetch_none(void *ctx, int64_t after, int mine, inv_row *rows, int max)
{
    (void)ctx, (void)after, (void)mine, (void)rows, (void)max;
    return 0;
}

static int ack_none(void *ctx, const int64_t *ids, int n)
{
    (void)ctx, (void)ids, (void)n;
    return 0;
}

static void evict_none(void *ctx, const char *sku, int64_t version)
{
    (void)ctx, (void)sku, (void)version;
}

static int g_started, g_ready;

static void start_roles(void *arg)
{
    (void)arg;
    inv_kafka_prop props[] = {
        {"client.id", "ops-client"},
        {"socket.timeout.ms", "15000"},
        {"fetch.wait.max.ms", "20"},
        {"security.protocol", "SASL_SSL"},   /* not applied: embedded */
    };
    inv_config cfg = {.brokers = "embedded", .topic = "props-test",
                      .roles = INV_ROLE_RELAY | INV_ROLE_BCAST,
                      .kafka_props = props, .n_kafka_props = NPROPS(props)};
    inv_source src = {.fetch = fetch_none, .ack = ack_none};
    inv_local_sink ls = {.evict = evict_none};
    inv *iv = NULL;

    if (inv_new(&cfg, &src, NULL, &ls, &iv) < 0)
        return;
    if (inv_start(iv) == 0) {
        g_started = 1;
        for (int i = 0; i < 200 && !inv_ready(iv); i++)
            rt_sleep(50);
        g_ready = inv_ready(iv);
        inv_stop(iv, 1000);
    }
    inv_free(iv);
}

static void test_roles_start(void **state)
{
    (void)state;
    rt_config rc = {.workers = 1};
    assert_int_equal(rt_main(&rc, start_roles, NULL), 0);
    assert_true(g_started);
    assert_true(g_ready);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_good),
        cmocka_unit_test(test_scopes),
        cmocka_unit_test(test_roles_start),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
