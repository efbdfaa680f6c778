/*
 * test_service_metrics.c: the metric conventions of docs/metrics.md that a
 * unit can hold: plain-decimal bounds, histogram series, the process,
 * build-info and health families, and the http_requests_total series that
 * exist at zero, compared with the codes api/openapi.yaml documents per
 * route.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include <cmocka.h>

#include "api/http_int.h"
#include "cachesvc/metrics.h"
#include "cachesvc_version.h"

static void test_decimal(void **st)
{
    (void)st;
    static const struct { double v; const char *want; } cases[] = {
        {0.00005, "0.00005"}, {0.0001, "0.0001"}, {0.00025, "0.00025"}, {0.001, "0.001"},
        {0.25, "0.25"},       {1, "1"},           {2.5, "2.5"},         {10, "10"},
        {4096, "4096"},       {0, "0"},           {60, "60"},           {0.1, "0.1"},
        {1.5, "1.5"},         {-0.5, "-0.5"},     {123456789, "123456789"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char buf[40];
        size_t n = kit_prom_decimal(buf, sizeof buf, cases[i].v);
        if (strcmp(buf, cases[i].want) != 0 || n != strlen(buf))
            fail_msg("%.17g: got \"%s\", want \"%s\"", cases[i].v, buf, cases[i].want);
    }
}

static void test_hist_series(void **st)
{
    (void)st;
    const double le[] = {0.00005, 0.5, 2};
    const uint64_t counts[] = {1, 0, 2, 3};
    kit_buf b = {0};
    kit_prom_hist(&b, "x_seconds", "tier=\"db\"", le, counts, 3, 0.75);
    assert_false(b.oom);
    assert_string_equal(b.data,
                        "x_seconds_bucket{tier=\"db\",le=\"0.00005\"} 1\n"
                        "x_seconds_bucket{tier=\"db\",le=\"0.5\"} 1\n"
                        "x_seconds_bucket{tier=\"db\",le=\"2\"} 3\n"
                        "x_seconds_bucket{tier=\"db\",le=\"+Inf\"} 6\n"
                        "x_seconds_sum{tier=\"db\"} 0.75\n"
                        "x_seconds_count{tier=\"db\"} 6\n");
    kit_buf_free(&b);
    kit_prom_hist(&b, "y", NULL, le, counts, 1, 3);
    assert_non_null(strstr(b.data, "y_bucket{le=\"0.00005\"} 1\ny_bucket{le=\"+Inf\"} 1\n"));
    kit_buf_free(&b);
    /* Values: the shortest form that reads back. */
    kit_prom_sample(&b, "z", NULL, 0.1);
    kit_prom_sample(&b, "w", NULL, 1796490835.95);
    assert_string_equal(b.data, "z 0.1\nw 1796490835.95\n");
    kit_buf_free(&b);
}

/* The value of the sample "name " in text, or -1. */
static double sample(const char *text, const char *name)
{
    char key[128];
    snprintf(key, sizeof key, "\n%s ", name);
    const char *p = strstr(text, key);
    return p ? strtod(p + strlen(key), NULL) : -1;
}

static void test_process(void **st)
{
    (void)st;
    kit_buf b = {0};
    kit_buf_append(&b, "\n", 1);
    kit_prom_process(&b);
    assert_false(b.oom);
    assert_non_null(strstr(b.data, "# TYPE process_cpu_seconds_total counter\n"));
    const char *gauges[] = {"process_resident_memory_bytes", "process_virtual_memory_bytes",
                            "process_open_fds", "process_max_fds", "process_start_time_seconds"};
    for (size_t i = 0; i < sizeof gauges / sizeof gauges[0]; i++) {
        char t[96];
        snprintf(t, sizeof t, "# TYPE %s gauge\n", gauges[i]);
        if (strstr(b.data, t) == NULL)
            fail_msg("no %s in:\n%s", gauges[i], b.data);
    }
    assert_true(sample(b.data, "process_cpu_seconds_total") >= 0);
    assert_true(sample(b.data, "process_resident_memory_bytes") > 1024 * 1024 / 2);
    assert_true(sample(b.data, "process_virtual_memory_bytes") >=
                sample(b.data, "process_resident_memory_bytes"));
    assert_true(sample(b.data, "process_open_fds") >= 3);
    struct rlimit rl;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
    if (rl.rlim_cur != RLIM_INFINITY)
        assert_true(sample(b.data, "process_max_fds") == (double)rl.rlim_cur);
    double start = sample(b.data, "process_start_time_seconds"), now = (double)time(NULL);
    if (start > now + 1 || start < now - 600)
        fail_msg("process_start_time_seconds %.2f, now %.0f", start, now);
    kit_buf_free(&b);
}

static void test_build_info_and_health(void **st)
{
    (void)st;
    kit_buf b = {0};
    svc_build_info_metrics(&b);
    char want[256];
    snprintf(want, sizeof want, "cachesvc_build_info{version=\"%s\",commit=\"%s\"} 1\n",
             CACHESVC_VERSION, CACHESVC_COMMIT);
    assert_non_null(strstr(b.data, want));
    kit_buf_free(&b);

    svc_health_metrics(&b, SVC_DEP_UP, SVC_DEP_ABSENT, SVC_DEP_DOWN, 1, 0);
    assert_non_null(strstr(b.data, "cachesvc_dependency_up{dependency=\"store\"} 1\n"));
    assert_null(strstr(b.data, "dependency=\"redis\""));   /* not configured: no series */
    assert_non_null(strstr(b.data, "cachesvc_dependency_up{dependency=\"kafka\"} 0\n"));
    assert_non_null(strstr(b.data, "\ncachesvc_ready 1\n"));
    assert_non_null(strstr(b.data, "\ncachesvc_draining 0\n"));
    kit_buf_free(&b);
}

/* ------------------------------------------------------------------------ */
/* http_requests_total at zero == api/openapi.yaml                            */

#define MAXS 256
typedef struct series {
    char route[64], method[8];
    int code;
} series;

static int has(const series *s, int n, const char *route, const char *method, int code)
{
    for (int i = 0; i < n; i++)
        if (strcmp(s[i].route, route) == 0 && strcmp(s[i].method, method) == 0 &&
            s[i].code == code)
            return 1;
    return 0;
}

/* Reads the (path, method, code) triples of the operations of openapi.yaml;
 * HEAD counts as GET (the server counts it under the GET route). */
static int openapi_codes(series *out)
{
    const char *src = getenv("CACHESVC_SOURCE_DIR");
    char path[1024];
    snprintf(path, sizeof path, "%s/api/openapi.yaml", src ? src : ".");
    FILE *fp = fopen(path, "r");
    assert_non_null(fp);
    char line[512], cur[64] = "", method[8] = "";
    int in_paths = 0, in_resp = 0, n = 0;
    while (fgets(line, sizeof line, fp)) {
        line[strcspn(line, "\r\n")] = '\0';
        if (line[0] != ' ' && line[0] != '\0') {
            in_paths = strcmp(line, "paths:") == 0;
            continue;
        }
        if (!in_paths)
            continue;
        int indent = (int)strspn(line, " ");
        const char *t = line + indent;
        if (indent == 2 && t[0] == '/') {
            snprintf(cur, sizeof cur, "%.*s", (int)strcspn(t, ":"), t);
            method[0] = '\0';
            in_resp = 0;
        } else if (indent == 4) {
            in_resp = 0;
            method[0] = '\0';
            static const char *ms[] = {"get", "head", "put", "post", "delete", "patch"};
            for (size_t i = 0; i < sizeof ms / sizeof ms[0]; i++)
                if (strncmp(t, ms[i], strlen(ms[i])) == 0 && t[strlen(ms[i])] == ':') {
                    const char *m = strcmp(ms[i], "head") == 0 ? "get" : ms[i];
                    for (size_t k = 0; m[k] && k < sizeof method - 1; k++) {
                        method[k] = (char)(m[k] - 'a' + 'A');
                        method[k + 1] = '\0';
                    }
                }
        } else if (indent == 6) {
            in_resp = method[0] != '\0' && strcmp(t, "responses:") == 0;
        } else if (indent == 8 && in_resp && t[0] == '\'') {
            int code = atoi(t + 1);
            if (code >= 100 && !has(out, n, cur, method, code)) {
                assert_true(n < MAXS);
                snprintf(out[n].route, sizeof out[n].route, "%s", cur);
                snprintf(out[n].method, sizeof out[n].method, "%s", method);
                out[n].code = code;
                n++;
            }
        }
    }
    fclose(fp);
    return n;
}

/* The series written at zero by http_metrics_append (nothing was counted
 * in this process). */
static int zero_series(const http_server *srv, series *out, char **text)
{
    kit_buf b = {0};
    assert_int_equal(http_metrics_append(srv, &b), 0);
    int n = 0;
    const char *p = b.data;
    while ((p = strstr(p, "\nhttp_requests_total{route=\"")) != NULL) {
        p += strlen("\nhttp_requests_total{route=\"");
        series s;
        char code[8];
        if (sscanf(p, "%63[^\"]\",method=\"%7[^\"]\",code=\"%7[^\"]\"} 0\n", s.route, s.method,
                   code) != 3)
            fail_msg("unexpected line at %.80s", p);
        s.code = atoi(code);
        assert_true(n < MAXS);
        out[n++] = s;
    }
    *text = b.data;
    return n;
}

static void test_http_zero_series_are_the_contract(void **st)
{
    (void)st;
    static series spec[MAXS], got[MAXS];
    int ns = openapi_codes(spec);
    assert_true(ns >= HTTP__R_NONE);
    char *text;
    int ng = zero_series(NULL, got, &text);
    for (int i = 0; i < ns; i++)
        if (!has(got, ng, spec[i].route, spec[i].method, spec[i].code))
            fail_msg("openapi.yaml documents %s %s %d; no http_requests_total series at 0",
                     spec[i].method, spec[i].route, spec[i].code);
    for (int i = 0; i < ng; i++)
        if (strcmp(got[i].route, "none") != 0 &&
            !has(spec, ns, got[i].route, got[i].method, got[i].code))
            fail_msg("http_requests_total{route=\"%s\",method=\"%s\",code=\"%d\"} is declared; "
                     "openapi.yaml does not document it",
                     got[i].route, got[i].method, got[i].code);
    /* Unrouted answers, and every route's latency histogram. */
    const int none[] = {400, 404, 405, 408, 413, 414, 431, 501};
    for (size_t i = 0; i < sizeof none / sizeof none[0]; i++)
        assert_true(has(got, ng, "none", "any", none[i]));
    for (int r = 0; r < HTTP__R_NONE; r++) {
        char want[160];
        snprintf(want, sizeof want,
                 "\nhttp_request_duration_seconds_count{route=\"%s\",method=\"%s\"} 0\n",
                 http__routes[r].pattern, http__routes[r].method);
        if (strstr(text, want) == NULL)
            fail_msg("no zero latency histogram for %s %s", http__routes[r].method,
                     http__routes[r].pattern);
    }
    assert_null(strstr(text, "e-0"));   /* le labels: plain decimals */
    free(text);
}

static int fake_metrics(void *ctx, kit_buf *out) { (void)ctx; (void)out; return 0; }
static int fake_ready(void *ctx, http_readiness *out) { (void)ctx; (void)out; return 0; }

/* A service implementing only /metrics and /readyz (the invalidator):
 * the other routes are declared with 501 (401/403 too for admin routes). */
static void test_http_zero_series_unimplemented(void **st)
{
    (void)st;
    static http_server srv;
    static http_service svc = {.metrics = fake_metrics, .ready = fake_ready};
    srv.svc = &svc;
    static series got[MAXS];
    char *text;
    int ng = zero_series(&srv, got, &text);
    free(text);
    for (int r = 0; r < HTTP__R_NONE; r++) {
        const char *p = http__routes[r].pattern, *m = http__routes[r].method;
        int served = r == HTTP__R_METRICS || r == HTTP__R_HEALTHZ || r == HTTP__R_READYZ;
        if (served) {
            assert_true(has(got, ng, p, m, 200));
            continue;
        }
        assert_true(has(got, ng, p, m, 501));
        assert_false(has(got, ng, p, m, 200));
        assert_int_equal(has(got, ng, p, m, 403), http__routes[r].admin);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decimal),
        cmocka_unit_test(test_hist_series),
        cmocka_unit_test(test_process),
        cmocka_unit_test(test_build_info_and_health),
        cmocka_unit_test(test_http_zero_series_are_the_contract),
        cmocka_unit_test(test_http_zero_series_unimplemented),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
