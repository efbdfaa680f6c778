/*
 * Unit tests of the Redis Cluster client's I/O-free parts: key slots, command
 * properties, RESP formatting, redirects, CLUSTER SLOTS parsing, versioned
 * values, the script digests. rc_command is replaced by a stub that answers
 * canned replies, so the versioned-item functions are tested here too.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "cachesvc/redis/proto.c"
#include "cachesvc/redis/versioned.c"

/* ------------------------------------------------------------------------ */
/* Stubs for what versioned.c calls.                                         */

static rc_reply *stub_replies[4];
static int stub_rcs[4];
static int stub_calls;
static char stub_last_cmd[8][16];

static rc_reply *parse_resp(const char *s)
{
    redisReader *rd = redisReaderCreate();
    void *r = NULL;
    assert_int_equal(redisReaderFeed(rd, s, strlen(s)), REDIS_OK);
    assert_int_equal(redisReaderGetReply(rd, &r), REDIS_OK);
    assert_non_null(r);
    redisReaderFree(rd);
    return r;
}

int rc_command(rc_cluster *c, int argc, const char **argv, const size_t *argvlen,
               int64_t deadline, rc_reply **out)
{
    int i = stub_calls++;
    (void)c; (void)argc; (void)deadline;
    assert_true(i < 4);
    snprintf(stub_last_cmd[i], sizeof stub_last_cmd[i], "%.*s", (int)argvlen[0], argv[0]);
    *out = stub_replies[i];
    stub_replies[i] = NULL;
    return stub_rcs[i];
}

void rc_reply_free(rc_reply *r)
{
    if (r)
        freeReplyObject(r);
}

int64_t rc__deadline(rc_cluster *c, int64_t deadline)
{
    (void)c;
    return deadline;
}

static void stub_reset(void)
{
    for (int i = 0; i < 4; i++) {
        rc_reply_free(stub_replies[i]);
        stub_replies[i] = NULL;
        stub_rcs[i] = 0;
    }
    stub_calls = 0;
}

/* ------------------------------------------------------------------------ */

static void test_keyslot(void **state)
{
    (void)state;
    /* Reference values from CLUSTER KEYSLOT and the Redis cluster spec. */
    assert_int_equal(rc__crc16("123456789", 9), 0x31c3);
    assert_int_equal(rc_keyslot("foo", 3), 12182);
    assert_int_equal(rc_keyslot("bar", 3), 5061);
    assert_int_equal(rc_keyslot("", 0), 0);
    assert_int_equal(rc_keyslot("{user1000}.following", 20), rc_keyslot("user1000", 8));
    assert_int_equal(rc_keyslot("{user1000}.followers", 20), rc_keyslot("user1000", 8));
    /* Empty tag and unterminated tag: the whole key is hashed. */
    assert_int_equal(rc_keyslot("foo{}{bar}", 10), rc__crc16("foo{}{bar}", 10) & 16383);
    assert_int_equal(rc_keyslot("foo{bar", 7), rc__crc16("foo{bar", 7) & 16383);
    /* Only the first tag counts. */
    assert_int_equal(rc_keyslot("foo{{bar}}zap", 13), rc_keyslot("{bar", 4));
    assert_int_equal(rc_keyslot("foo{bar}{zap}", 13), rc_keyslot("bar", 3));
    assert_int_equal(rc_keyslot("stock:{hot}", 11), rc_keyslot("hot", 3));
}

static void test_cmd_flags_and_key(void **state)
{
    const char *get[] = {"get", "k"};
    size_t getl[] = {3, 1};
    const char *ev[] = {"EVALSHA", "sha", "1", "key", "a"};
    size_t evl[] = {7, 3, 1, 3, 1};
    const char *ev0[] = {"EVAL", "return 1", "0"};
    size_t ev0l[] = {4, 8, 1};
    (void)state;

    int f = rc__cmd_flags("get", 3);
    assert_true(f & RC_CMD_READ);
    assert_true(f & RC_CMD_IDEMPOTENT);
    assert_int_equal(rc__cmd_key(f, 2, get, getl), 1);
    f = rc__cmd_flags("EVALSHA", 7);
    assert_true(f & RC_CMD_EVAL);
    assert_false(f & RC_CMD_IDEMPOTENT);
    assert_int_equal(rc__cmd_key(f, 5, ev, evl), 3);
    assert_int_equal(rc__cmd_key(rc__cmd_flags("EVAL", 4), 3, ev0, ev0l), -1);
    f = rc__cmd_flags("ping", 4);
    assert_true(f & RC_CMD_KEYLESS);
    assert_int_equal(rc__cmd_key(f, 1, get, getl), -1);
    assert_true(rc__cmd_flags("MGET", 4) & RC_CMD_SPLIT_ARR);
    assert_true(rc__cmd_flags("del", 3) & RC_CMD_SPLIT_SUM);
    assert_int_equal(rc__cmd_flags("INCR", 4), 0);
    assert_int_equal(rc__cmd_flags("GETX", 4), 0);
}

static void test_format(void **state)
{
    const char *argv[] = {"SET", "key", "", "a\r\nb"};
    size_t lens[] = {3, 3, 0, 4};
    char *ref = NULL;
    char buf[128];
    (void)state;

    int reflen = redisFormatCommandArgv(&ref, 4, argv, lens);
    size_t n = rc__format_len(4, argv, lens);
    assert_int_equal(n, (size_t)reflen);
    assert_int_equal(rc__format(buf, 4, argv, lens), n);
    assert_memory_equal(buf, ref, n);
    free(ref);

    /* Long argument: multi-digit lengths. */
    char big[12345];
    memset(big, 'x', sizeof big);
    const char *a2[] = {"SET", big};
    size_t l2[] = {3, sizeof big};
    char *out = malloc(rc__format_len(2, a2, l2));
    reflen = redisFormatCommandArgv(&ref, 2, a2, l2);
    assert_int_equal(rc__format(out, 2, a2, l2), (size_t)reflen);
    assert_memory_equal(out, ref, (size_t)reflen);
    free(ref);
    free(out);
}

static void test_addr(void **state)
{
    char host[RC_HOST_MAX];
    int port;
    (void)state;

    assert_int_equal(rc__parse_addr("127.0.0.1:7000", 14, host, sizeof host, &port), 0);
    assert_string_equal(host, "127.0.0.1");
    assert_int_equal(port, 7000);
    assert_int_equal(rc__parse_addr("[::1]:6379", 10, host, sizeof host, &port), 0);
    assert_string_equal(host, "::1");
    assert_int_equal(port, 6379);
    assert_int_equal(rc__parse_addr("localhost:1", 11, host, sizeof host, &port), 0);
    assert_int_equal(rc__parse_addr("host", 4, host, sizeof host, &port), -EINVAL);
    assert_int_equal(rc__parse_addr("host:", 5, host, sizeof host, &port), -EINVAL);
    assert_int_equal(rc__parse_addr("host:0", 6, host, sizeof host, &port), -EINVAL);
    assert_int_equal(rc__parse_addr("host:65536", 10, host, sizeof host, &port), -EINVAL);
    assert_int_equal(rc__parse_addr("host:12a", 8, host, sizeof host, &port), -EINVAL);
    assert_int_equal(rc__parse_addr("host:99999999999", 16, host, sizeof host, &port), -EINVAL);
}

static void test_redirect(void **state)
{
    char host[RC_HOST_MAX];
    unsigned slot;
    int port;
    const char *m = "MOVED 3999 127.0.0.1:6381";
    const char *a = "ASK 16383 10.0.0.7:7002";
    const char *e = "MOVED 3999 :6380";
    (void)state;

    assert_int_equal(rc__parse_redirect(m, strlen(m), &slot, host, sizeof host, &port), 1);
    assert_int_equal(slot, 3999);
    assert_string_equal(host, "127.0.0.1");
    assert_int_equal(port, 6381);
    assert_int_equal(rc__parse_redirect(a, strlen(a), &slot, host, sizeof host, &port), 2);
    assert_int_equal(slot, 16383);
    assert_string_equal(host, "10.0.0.7");
    assert_int_equal(port, 7002);
    assert_int_equal(rc__parse_redirect(e, strlen(e), &slot, host, sizeof host, &port), 1);
    assert_string_equal(host, "");
    assert_int_equal(port, 6380);
    assert_int_equal(rc__parse_redirect("MOVED 16384 h:1", 15, &slot, host, sizeof host, &port), 0);
    assert_int_equal(rc__parse_redirect("MOVED x h:1", 11, &slot, host, sizeof host, &port), 0);
    assert_int_equal(rc__parse_redirect("MOVED 1", 7, &slot, host, sizeof host, &port), 0);
    assert_int_equal(rc__parse_redirect("ERR wrong", 9, &slot, host, sizeof host, &port), 0);
    assert_true(rc__retryable_error("TRYAGAIN Multiple keys", 22));
    assert_true(rc__retryable_error("CLUSTERDOWN The cluster is down", 31));
    assert_true(rc__retryable_error("LOADING Redis is loading", 24));
    assert_false(rc__retryable_error("ERR x", 5));
}

static void test_parse_slots(void **state)
{
    rc__range *g = NULL;
    rc_reply *r;
    (void)state;

    /* Two ranges; the second has a replica, an extra metadata element and
     * an empty host meaning "the node that answered". */
    r = parse_resp("*2\r\n"
                   "*3\r\n:0\r\n:5460\r\n*3\r\n$9\r\n127.0.0.1\r\n:7000\r\n$3\r\nid1\r\n"
                   "*4\r\n:5461\r\n:16383\r\n"
                   "*4\r\n$0\r\n\r\n:7001\r\n$3\r\nid2\r\n*0\r\n"
                   "*3\r\n$9\r\n127.0.0.2\r\n:7004\r\n$3\r\nid3\r\n");
    assert_int_equal(rc__parse_slots(r, "10.1.1.1", &g), 2);
    assert_int_equal(g[0].start, 0);
    assert_int_equal(g[0].end, 5460);
    assert_int_equal(g[0].naddrs, 1);
    assert_string_equal(g[0].addrs[0].host, "127.0.0.1");
    assert_int_equal(g[0].addrs[0].port, 7000);
    assert_int_equal(g[1].naddrs, 2);
    assert_string_equal(g[1].addrs[0].host, "10.1.1.1");
    assert_int_equal(g[1].addrs[1].port, 7004);
    free(g);
    freeReplyObject(r);

    /* Wrong shapes are refused. */
    const char *bad[] = {
        "+OK\r\n",
        "*1\r\n:5\r\n",
        "*1\r\n*2\r\n:0\r\n:1\r\n",
        "*1\r\n*3\r\n:10\r\n:5\r\n*2\r\n$1\r\nh\r\n:1\r\n",          /* start > end */
        "*1\r\n*3\r\n:0\r\n:16384\r\n*2\r\n$1\r\nh\r\n:1\r\n",        /* slot out of range */
        "*1\r\n*3\r\n:0\r\n:1\r\n*2\r\n$1\r\nh\r\n:0\r\n",            /* port 0 */
        "*1\r\n*3\r\n:0\r\n:1\r\n*2\r\n:1\r\n:1\r\n",                 /* host not a string */
        "*1\r\n*3\r\n:0\r\n:1\r\n*1\r\n$1\r\nh\r\n",                  /* no port */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        r = parse_resp(bad[i]);
        assert_int_equal(rc__parse_slots(r, "h", &g), RC_EPROTO);
        assert_null(g);
        freeReplyObject(r);
    }
    r = parse_resp("*0\r\n");
    assert_int_equal(rc__parse_slots(r, "h", &g), 0);
    freeReplyObject(r);
}

static void test_versioned_parse(void **state)
{
    uint64_t v;
    const char *p;
    size_t pl;
    char key[32];
    (void)state;

    assert_int_equal(rc__parse_versioned("42|hello", 8, &v, &p, &pl), 0);
    assert_int_equal(v, 42);
    assert_int_equal(pl, 5);
    assert_memory_equal(p, "hello", 5);
    assert_int_equal(rc__parse_versioned("0|", 2, &v, &p, &pl), 0);
    assert_int_equal(pl, 0);
    assert_int_equal(rc__parse_versioned("18446744073709551615|x|y", 24, &v, &p, &pl), 0);
    assert_true(v == UINT64_MAX);
    assert_int_equal(pl, 3);
    assert_int_equal(rc__parse_versioned("18446744073709551616|x", 22, &v, &p, &pl), RC_EBADVALUE);
    assert_int_equal(rc__parse_versioned("|x", 2, &v, &p, &pl), RC_EBADVALUE);
    assert_int_equal(rc__parse_versioned("12", 2, &v, &p, &pl), RC_EBADVALUE);
    assert_int_equal(rc__parse_versioned("1a|x", 4, &v, &p, &pl), RC_EBADVALUE);
    assert_int_equal(rc__parse_versioned("", 0, &v, &p, &pl), RC_EBADVALUE);

    assert_int_equal(rc_item_key(key, sizeof key, "hot", 3), 11);
    assert_string_equal(key, "stock:{hot}");
    assert_int_equal(rc_item_key(key, 11, "hot", 3), RC_ENOSPC);
    assert_int_equal(rc_item_key(key, 12, "hot", 3), 11);
}

static void test_sha1(void **state)
{
    char hex[41];
    (void)state;

    rc__sha1_hex("abc", 3, hex);
    assert_string_equal(hex, "a9993e364706816aba3e25717850c26c9cd0d89d");
    rc__sha1_hex("", 0, hex);
    assert_string_equal(hex, "da39a3ee5e6b4b0d3255bfef95601890afd80709");
    const char *s = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    rc__sha1_hex(s, strlen(s), hex);
    assert_string_equal(hex, "84983e441c3bd26ebaae4aa1f95129e5e54670f1");
}

static void test_get_versioned(void **state)
{
    char buf[8];
    uint64_t v = 0;
    size_t len = 0;
    (void)state;

    stub_reset();
    stub_replies[0] = parse_resp("$7\r\n9|hello\r\n");
    assert_int_equal(rc_get_versioned(NULL, "k", 1, &v, buf, sizeof buf, &len, 0), 1);
    assert_int_equal(v, 9);
    assert_int_equal(len, 5);
    assert_memory_equal(buf, "hello", 5);

    stub_reset();
    stub_replies[0] = parse_resp("$-1\r\n");
    assert_int_equal(rc_get_versioned(NULL, "k", 1, &v, buf, sizeof buf, &len, 0), 0);

    stub_reset();
    stub_replies[0] = parse_resp("$12\r\n1|0123456789\r\n");
    assert_int_equal(rc_get_versioned(NULL, "k", 1, &v, buf, sizeof buf, &len, 0), RC_ENOSPC);
    assert_int_equal(len, 10);

    stub_reset();
    stub_replies[0] = parse_resp("$5\r\nhello\r\n");
    assert_int_equal(rc_get_versioned(NULL, "k", 1, &v, buf, sizeof buf, &len, 0), RC_EBADVALUE);

    stub_reset();
    stub_replies[0] = parse_resp(":1\r\n");
    assert_int_equal(rc_get_versioned(NULL, "k", 1, &v, buf, sizeof buf, &len, 0), RC_EPROTO);

    stub_reset();
    stub_rcs[0] = RC_ETIMEDOUT;
    assert_int_equal(rc_get_versioned(NULL, "k", 1, &v, buf, sizeof buf, &len, 0), RC_ETIMEDOUT);
    stub_reset();
}

static void test_scripts_fallback(void **state)
{
    rc_cluster c;
    (void)state;

    memset(&c, 0, sizeof c);
    rc__sha1_hex(rc__fill_script, strlen(rc__fill_script), c.fill_sha);
    rc__sha1_hex(rc__delete_script, strlen(rc__delete_script), c.delete_sha);

    /* EVALSHA answers: no fallback. */
    stub_reset();
    stub_replies[0] = parse_resp(":1\r\n");
    assert_int_equal(rc_fill_if_newer(&c, "k", 1, 5, "p", 1, 1000, 0), 1);
    assert_int_equal(stub_calls, 1);
    assert_string_equal(stub_last_cmd[0], "EVALSHA");

    /* NOSCRIPT: EVAL follows. */
    stub_reset();
    stub_rcs[0] = RC_ESERVER;
    stub_replies[0] = parse_resp("-NOSCRIPT No matching script.\r\n");
    stub_replies[1] = parse_resp(":0\r\n");
    assert_int_equal(rc_delete_if_not_newer(&c, "k", 1, 5, 60000, 0), 0);
    assert_int_equal(stub_calls, 2);
    assert_string_equal(stub_last_cmd[1], "EVAL");

    /* Another error reply is passed on. */
    stub_reset();
    stub_rcs[0] = RC_ESERVER;
    stub_replies[0] = parse_resp("-WRONGTYPE Operation\r\n");
    assert_int_equal(rc_fill_if_newer(&c, "k", 1, 5, "p", 1, 0, 0), RC_ESERVER);
    assert_int_equal(stub_calls, 1);
    stub_reset();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keyslot),
        cmocka_unit_test(test_cmd_flags_and_key),
        cmocka_unit_test(test_format),
        cmocka_unit_test(test_addr),
        cmocka_unit_test(test_redirect),
        cmocka_unit_test(test_parse_slots),
        cmocka_unit_test(test_versioned_parse),
        cmocka_unit_test(test_sha1),
        cmocka_unit_test(test_get_versioned),
        cmocka_unit_test(test_scripts_fallback),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
