/*
 * test_service_log.c: the one log stream. The runtime's hook (runtime/log.c): the
 * default logfmt handler, quoting, redaction of secrets; the service's
 * logger (cachesvc/log.c) as the hook's handler: module and request id on
 * every module's lines, and the rate limit of repeated lines (bursts, the
 * summary counts, independent sites, threads), on a clock the test moves.
 */
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "cachesvc/log.h"
#include "runtime/rt.h"

/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */

static char tmpl[] = "/tmp/test_log_XXXXXX";
static int cap_fd = -1;

/* Lines written from now on go to a fresh file; capture_text() reads it. */
static void capture_start(void)
{
    if (cap_fd >= 0)
        close(cap_fd);
    strcpy(tmpl, "/tmp/test_log_XXXXXX");
    cap_fd = mkstemp(tmpl);
    assert_true(cap_fd >= 0);
    unlink(tmpl);
    svc_log_set_fd(cap_fd);
}

/* The captured text (malloc'ed, NUL-terminated). */
static char *capture_text(void)
{
    off_t n = lseek(cap_fd, 0, SEEK_END);
    char *buf = calloc(1, (size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(pread(cap_fd, buf, (size_t)n, 0), n);
    return buf;
}

static int count(const char *text, const char *needle)
{
    int n = 0;
    for (const char *p = text; (p = strstr(p, needle)) != NULL; p += strlen(needle))
        n++;
    return n;
}

/* Every line is logfmt: ts= first, then level= and msg=. */
static void assert_all_logfmt(const char *text)
{
    for (const char *l = text; *l; ) {
        const char *e = strchr(l, '\n');
        assert_non_null(e);
        assert_int_equal(strncmp(l, "ts=", 3), 0);
        const char *lv = strstr(l, " level=");
        const char *m = strstr(l, " msg=\"");
        assert_true(lv != NULL && lv < e && m != NULL && m < e);
        l = e + 1;
    }
}

static int64_t fake_ns = 1000000000LL * 1000;
static int64_t fake_clock(void)
{
    return __atomic_load_n(&fake_ns, __ATOMIC_RELAXED);
}
static void advance_ms(int64_t ms)
{
    __atomic_add_fetch(&fake_ns, ms * 1000000, __ATOMIC_RELAXED);
}

static char *redact(const char *in)
{
    static char out[512];
    rt_log_redact(in, out, sizeof out);
    return out;
}

/* ------------------------------------------------------------------------ */
/* Redaction                                                                 */

static void test_redact_urls(void **state)
{
    (void)state;
    assert_string_equal(redact("postgresql://u:secret@h/db"), "postgresql://u:<redacted>@h/db");
    assert_string_equal(redact("postgres://app:s3cr3t@db1:5432,db2:5433/shop?sslmode=require"),
                        "postgres://app:<redacted>@db1:5432,db2:5433/shop?sslmode=require");
    assert_string_equal(redact("redis://:pw@127.0.0.1:7000,127.0.0.1:7001"),
                        "redis://:<redacted>@127.0.0.1:7000,127.0.0.1:7001");
    assert_string_equal(redact("rediss://default:a:b@h:6380"), "rediss://default:<redacted>@h:6380");
    /* An unencoded '@' in the password stays hidden. */
    assert_string_equal(redact("postgresql://u:p@ss@h/db"), "postgresql://u:<redacted>@h/db");
    /* Nothing secret: unchanged. */
    assert_string_equal(redact("postgresql://u@h/db"), "postgresql://u@h/db");
    assert_string_equal(redact("postgresql://h:5432/db"), "postgresql://h:5432/db");
    assert_string_equal(redact("sqlite:./cachesvc.db"), "sqlite:./cachesvc.db");
    assert_string_equal(redact("at 10:30 see http://h/a@b"), "at 10:30 see http://h/a@b");
    /* Inside a logfmt line, quoted or not, and two in one line. */
    assert_string_equal(redact("url=\"postgresql://u:pw@h/db\" redis=redis://:x@r:1 n=1"),
                        "url=\"postgresql://u:<redacted>@h/db\" redis=redis://:<redacted>@r:1 n=1");
}

static void test_redact_keywords(void **state)
{
    (void)state;
    assert_string_equal(redact("host=h password=secret dbname=x"),
                        "host=h password=<redacted> dbname=x");
    assert_string_equal(redact("host=h password='se cr\\'et' user=u"),
                        "host=h password='<redacted>' user=u");
    assert_string_equal(redact("postgresql://u@h/db?password=secret&sslmode=disable"),
                        "postgresql://u@h/db?password=<redacted>&sslmode=disable");
    assert_string_equal(redact("sslpassword=k PASSWORD=X"),
                        "sslpassword=<redacted> PASSWORD=<redacted>");
    assert_string_equal(redact("sasl.password=\"abc def\" x=1"), "sasl.password=\"<redacted>\" x=1");
    assert_string_equal(redact("k password=\"a\\\"b\" x=1"), "k password=\"<redacted>\" x=1");
    assert_string_equal(redact("err=\"bad conninfo password=abc dbname=d\""),
                        "err=\"bad conninfo password=<redacted> dbname=d\"");
    assert_string_equal(redact("err=\"x password=abc\""), "err=\"x password=<redacted>\"");
    assert_string_equal(redact("password="), "password=");
}

static void test_redact_idempotent_and_cut(void **state)
{
    (void)state;
    const char *in = "a=postgresql://u:pw@h/db b=\"password=x y\" c=redis://:q@h";
    char once[256], twice[256];
    rt_log_redact(in, once, sizeof once);
    rt_log_redact(once, twice, sizeof twice);
    assert_string_equal(once, twice);
    assert_null(strstr(once, "pw@"));
    assert_null(strstr(once, "=x "));
    /* Cut to the buffer, never past it, and still no secret. */
    char small[24];
    size_t n = rt_log_redact("postgresql://u:secretsecret@h/db", small, sizeof small);
    assert_true(n < sizeof small);
    assert_int_equal(strlen(small), n);
    assert_null(strstr(small, "secret"));
}

static void test_quote(void **state)
{
    (void)state;
    char q[64];
    assert_string_equal(rt_log_q(q, sizeof q, "connection to server at \"h\" failed\n\tIs it up?\n"),
                        "\"connection to server at \\\"h\\\" failed  Is it up?\"");
    assert_string_equal(rt_log_q(q, sizeof q, NULL), "\"\"");
    char small[8];
    rt_log_q(small, sizeof small, "abcdefghijk");
    assert_int_equal(small[0], '"');
    assert_int_equal(small[strlen(small) - 1], '"');
    assert_true(strlen(small) < sizeof small);
}

/* ------------------------------------------------------------------------ */
/* The runtime's default handler                                             */

static void test_default_handler(void **state)
{
    (void)state;
    char path[] = "/tmp/test_log_err_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    int saved = dup(2);
    dup2(fd, 2);
    rt_log_set_handler(NULL, NULL);
    rt_log_set_level(RT_LOG_INFO);
    char q[64];
    rt_log(RT_LOG_WARN, "store", "postgresql connect failed", "url=%s err=%s",
           "postgresql://u:hunter2@h/db", rt_log_q(q, sizeof q, "refused\n"));
    rt_log(RT_LOG_DEBUG, "store", "dropped below the level", NULL);
    rt_log(RT_LOG_ERROR, "rt", "no pairs", NULL);
    dup2(saved, 2);
    close(saved);
    off_t n = lseek(fd, 0, SEEK_END);
    char buf[1024] = {0};
    assert_true(n > 0 && n < (off_t)sizeof buf);
    assert_int_equal(pread(fd, buf, (size_t)n, 0), n);
    close(fd);
    assert_all_logfmt(buf);
    assert_non_null(strstr(buf, " level=warn msg=\"postgresql connect failed\" module=store "
                                "url=postgresql://u:<redacted>@h/db err=\"refused\"\n"));
    assert_null(strstr(buf, "hunter2"));
    assert_null(strstr(buf, "dropped"));
    assert_non_null(strstr(buf, " level=error msg=\"no pairs\" module=rt\n"));
    assert_int_equal(count(buf, "\n"), 2);
}

/* ------------------------------------------------------------------------ */
/* The service's logger as the runtime's handler                             */

static size_t fake_reqid(char *buf, size_t cap)
{
    return (size_t)snprintf(buf, cap, "r-7");
}

static void test_module_lines(void **state)
{
    (void)state;
    svc_log_install();
    svc_log_set_level(SVC_LOG_INFO);
    assert_int_equal(rt_log_get_level(), RT_LOG_INFO);   /* one level */
    capture_start();
    svc_log_set_reqid_source(fake_reqid);
    rt_log(RT_LOG_WARN, "store", "sqlite statement failed", "op=%s", "write");
    rt_log(RT_LOG_DEBUG, "store", "below the level", NULL);
    svc_log(SVC_LOG_WARN, NULL, "decrement failed", "url=\"postgresql://a:b@c/d\"");
    svc_log(SVC_LOG_INFO, "", "no request", NULL);
    svc_log_set_level(SVC_LOG_DEBUG);
    assert_true(rt_log_enabled(RT_LOG_DEBUG));
    rt_log(RT_LOG_DEBUG, "kafka", "debug now", NULL);
    svc_log_set_level(SVC_LOG_INFO);
    svc_log_set_reqid_source(NULL);
    char *t = capture_text();
    assert_all_logfmt(t);
    assert_non_null(strstr(t, " level=warn msg=\"sqlite statement failed\" module=store req=r-7 "
                              "op=write\n"));
    assert_non_null(strstr(t, " level=warn msg=\"decrement failed\" req=r-7 "
                              "url=\"postgresql://a:<redacted>@c/d\"\n"));
    assert_non_null(strstr(t, " level=info msg=\"no request\"\n"));
    assert_non_null(strstr(t, " level=debug msg=\"debug now\" module=kafka req=r-7\n"));
    assert_null(strstr(t, "below the level"));
    free(t);
}

/* A burst of 1000 lines of one site in one second: the first 5 written,
 * the rest counted, the count written by the tick once the second is
 * over; a second burst's count is written when its site logs again. */
static void test_rate_limit_burst(void **state)
{
    (void)state;
    svc__log_set_clock(fake_clock);
    svc_log_set_burst(5);
    capture_start();
    for (int i = 0; i < 1000; i++)
        svc_log(SVC_LOG_WARN, NULL, "store unavailable", "i=%d", i);
    char *t = capture_text();
    assert_int_equal(count(t, "msg=\"store unavailable\""), 5);
    assert_non_null(strstr(t, "msg=\"store unavailable\" i=4\n"));
    assert_null(strstr(t, "i=5\n"));
    free(t);

    svc_log_tick();                      /* the second is not over yet */
    t = capture_text();
    assert_null(strstr(t, "suppressed="));
    free(t);

    advance_ms(1000);
    svc_log_tick();
    svc_log_tick();                      /* written once */
    t = capture_text();
    assert_int_equal(count(t, "suppressed="), 1);
    assert_non_null(strstr(t, " level=warn msg=\"store unavailable\" suppressed=995\n"));
    free(t);

    /* The next burst: its count is written before the line that opens the
     * following second. */
    advance_ms(10);
    capture_start();
    for (int i = 0; i < 300; i++)
        svc_log(SVC_LOG_WARN, NULL, "store unavailable", "j=%d", i);
    advance_ms(1000);
    svc_log(SVC_LOG_WARN, NULL, "store unavailable", "j=last");
    t = capture_text();
    assert_all_logfmt(t);
    const char *sum = strstr(t, "msg=\"store unavailable\" suppressed=295\n");
    const char *last = strstr(t, "msg=\"store unavailable\" j=last\n");
    assert_true(sum != NULL && last != NULL && sum < last);
    assert_int_equal(count(t, "msg=\"store unavailable\""), 5 + 1 + 1);
    free(t);
    advance_ms(2000);
    svc_log_flush();
}

/* Two sites do not share a budget; the module is part of a site; digits
 * in a message do not make a new site; debug lines are never suppressed;
 * burst 0 turns the limit off. */
static void test_rate_limit_sites(void **state)
{
    (void)state;
    svc__log_set_clock(fake_clock);
    svc_log_set_burst(5);
    svc_log_set_level(SVC_LOG_DEBUG);
    capture_start();
    for (int i = 0; i < 1000; i++) {
        svc_log(SVC_LOG_WARN, NULL, "site a", NULL);
        if (i % 300 == 0)
            svc_log(SVC_LOG_WARN, NULL, "site b", NULL);            /* 4 lines */
        if (i < 3)
            rt_log(RT_LOG_WARN, "store", "site a", NULL);         /* another module */
        char msg[96];
        snprintf(msg, sizeof msg, "Connect to ipv4#127.0.0.1:%d failed (after %dms)", 9000 + i, i);
        rt_log(RT_LOG_ERROR, "kafka", msg, "fac=FAIL");
        if (i < 20)
            svc_log(SVC_LOG_DEBUG, NULL, "debug site", NULL);
    }
    advance_ms(1000);
    svc_log_tick();
    svc_log_set_burst(0);
    for (int i = 0; i < 50; i++)
        svc_log(SVC_LOG_WARN, NULL, "site c", NULL);
    svc_log_set_burst(5);
    svc_log_set_level(SVC_LOG_INFO);
    char *t = capture_text();
    assert_all_logfmt(t);
    assert_int_equal(count(t, "msg=\"site a\"\n"), 5);
    assert_int_equal(count(t, "msg=\"site a\" suppressed=995\n"), 1);
    assert_int_equal(count(t, "msg=\"site b\"\n"), 4);
    assert_int_equal(count(t, "msg=\"site a\" module=store\n"), 3);
    assert_int_equal(count(t, "module=kafka fac=FAIL\n"), 5);
    assert_int_equal(count(t, "module=kafka suppressed=995\n"), 1);
    assert_int_equal(count(t, "msg=\"debug site\"\n"), 20);
    assert_int_equal(count(t, "msg=\"site c\"\n"), 50);
    free(t);
    advance_ms(2000);
    svc_log_flush();
}

/* Four threads logging one site at once: exactly the burst is written
 * and the count of the rest is exact. */
static void *hammer(void *arg)
{
    (void)arg;
    for (int i = 0; i < 1000; i++)
        rt_log(RT_LOG_WARN, "redis", "node unreachable", "node=127.0.0.1:%d", 7000 + i % 3);
    return NULL;
}

static void test_rate_limit_threads(void **state)
{
    (void)state;
    svc__log_set_clock(fake_clock);
    svc_log_set_burst(5);
    capture_start();
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, hammer, NULL), 0);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    svc_log_flush();                     /* at exit: before the second ends */
    char *text = capture_text();
    assert_all_logfmt(text);
    assert_int_equal(count(text, "msg=\"node unreachable\" module=redis node="), 5);
    assert_non_null(strstr(text, "msg=\"node unreachable\" module=redis suppressed=3995\n"));
    free(text);
    advance_ms(2000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_redact_urls),
        cmocka_unit_test(test_redact_keywords),
        cmocka_unit_test(test_redact_idempotent_and_cut),
        cmocka_unit_test(test_quote),
        cmocka_unit_test(test_default_handler),
        cmocka_unit_test(test_module_lines),
        cmocka_unit_test(test_rate_limit_burst),
        cmocka_unit_test(test_rate_limit_sites),
        cmocka_unit_test(test_rate_limit_threads),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    svc_log_set_fd(2);
    return rc;
}
