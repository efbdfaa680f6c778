/*
 * fs_opts.c: command-line options of flashsale.
 */
#include "fs.h"
#include "kit/kit.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] =
    "usage: flashsale [options]\n"
    "Simulates a flash sale against cachesvc, verifies it through the audit API\n"
    "and reports latency, outcomes and stale reads. Exit status 0 when every\n"
    "check passed, 1 when a check failed, 2 on bad usage or setup failure,\n"
    "130 after Ctrl-C (sending stops; what was sold is still verified).\n"
    "\n"
    "Targets\n"
    "  --targets URL[,URL...]    service instances (default http://127.0.0.1:8080)\n"
    "  --admin-token TOKEN       admin bearer token (default $FLASHSALE_ADMIN_TOKEN)\n"
    "Items\n"
    "  --skus N|NAME[,NAME...]   N fresh items, or these names (default 1)\n"
    "  --sku-prefix P            prefix of generated item names (default fs)\n"
    "  --stock N                 units per item (default 10000)\n"
    "  --per-user-limit N        units one buyer may buy, 0 = none (default 1)\n"
    "  --limit-every K           the limit on every K-th item only (0, K, 2K, ...;\n"
    "                            default 1: all)\n"
    "  --restock-at S            S seconds into the run, add --restock units to\n"
    "                            every second item (1, 3, 5, ...)\n"
    "  --restock N               units a restock adds (default 1000)\n"
    "  --sale-start MS           the sale opens MS ms after seeding (default 0)\n"
    "  --no-seed                 the items exist already: do not PUT them\n"
    "Buyers and traffic\n"
    "  --users N                 distinct buyers (default 50000)\n"
    "  --skew S                  Zipf exponent of traffic over items (default 0.99)\n"
    "  --read-ratio R            share of stock reads vs buys, 0..1 (default 0.5)\n"
    "  --qty N                   units per buy (default 1)\n"
    "  --connections N           keep-alive connections in total (default 64)\n"
    "  --requests N              stop after N requests (default 200000)\n"
    "  --duration S              or stop after S seconds\n"
    "  --rate R                  open loop at R requests/s in total, latency from\n"
    "                            the intended send time (default: closed loop)\n"
    "  --timeout MS              per request (default 5000)\n"
    "  --retries N               retries of a buy with the same idempotency key\n"
    "                            after an unknown outcome (default 3)\n"
    "  --no-idempotency-keys     buys carry no Idempotency-Key (and are never\n"
    "                            retried: an unknown outcome stays in doubt)\n"
    "  --seed N                  random seed (default 1)\n"
    "  --workers N               runtime worker threads (default: CPUs)\n"
    "Staleness and tuning\n"
    "  --stale-windows MS,...    windows W of the stale-read counts (default 0,100,1000)\n"
    "  --sweep-delay MS,...      run once per invalidation delay (set through\n"
    "                            /admin/config) and print the tuning table\n"
    "  --settle MS               pause before the audit (default 200)\n"
    "Faults\n"
    "  --nemesis FILE            a schedule of faults, one per line:\n"
    "                            AT_MS NAME COMMAND... (run with sh -c at AT_MS\n"
    "                            after the traffic starts; the fault's window\n"
    "                            lasts until it returns); the report splits\n"
    "                            stale reads inside and outside the windows and\n"
    "                            gives each fault its errors and recovery time\n"
    "  --fault-grace MS          a window stays open this long after its command\n"
    "                            returned (recovery; default 5000)\n"
    "Output\n"
    "  --json FILE               JSON summary\n"
    "  --plot FILE.png           gnuplot rendering of the run (or of the sweep)\n"
    "  --kv                      name=value summary lines on stdout\n"
    "  --quiet                   no progress line\n"
    "  --no-verify               skip the audit\n"
    "  --help\n";

enum {
    O_TARGETS = 256, O_ADMIN, O_SKUS, O_PREFIX, O_STOCK, O_LIMIT, O_START, O_NOSEED,
    O_USERS, O_SKEW, O_READ, O_QTY, O_CONNS, O_REQS, O_DUR, O_RATE, O_TIMEOUT,
    O_RETRIES, O_SEED, O_WORKERS, O_WINDOWS, O_SWEEP, O_SETTLE, O_JSON, O_PLOT,
    O_KV, O_QUIET, O_NOVERIFY, O_NOKEYS, O_NEMESIS, O_GRACE, O_LIMIT_EVERY, O_RESTOCK_AT,
    O_RESTOCK, O_HELP,
};

static const struct option longopts[] = {
    {"targets", required_argument, NULL, O_TARGETS},
    {"admin-token", required_argument, NULL, O_ADMIN},
    {"skus", required_argument, NULL, O_SKUS},
    {"sku-prefix", required_argument, NULL, O_PREFIX},
    {"stock", required_argument, NULL, O_STOCK},
    {"per-user-limit", required_argument, NULL, O_LIMIT},
    {"sale-start", required_argument, NULL, O_START},
    {"no-seed", no_argument, NULL, O_NOSEED},
    {"users", required_argument, NULL, O_USERS},
    {"skew", required_argument, NULL, O_SKEW},
    {"read-ratio", required_argument, NULL, O_READ},
    {"qty", required_argument, NULL, O_QTY},
    {"connections", required_argument, NULL, O_CONNS},
    {"requests", required_argument, NULL, O_REQS},
    {"duration", required_argument, NULL, O_DUR},
    {"rate", required_argument, NULL, O_RATE},
    {"timeout", required_argument, NULL, O_TIMEOUT},
    {"retries", required_argument, NULL, O_RETRIES},
    {"seed", required_argument, NULL, O_SEED},
    {"workers", required_argument, NULL, O_WORKERS},
    {"stale-windows", required_argument, NULL, O_WINDOWS},
    {"sweep-delay", required_argument, NULL, O_SWEEP},
    {"settle", required_argument, NULL, O_SETTLE},
    {"json", required_argument, NULL, O_JSON},
    {"plot", required_argument, NULL, O_PLOT},
    {"kv", no_argument, NULL, O_KV},
    {"quiet", no_argument, NULL, O_QUIET},
    {"no-verify", no_argument, NULL, O_NOVERIFY},
    {"no-idempotency-keys", no_argument, NULL, O_NOKEYS},
    {"nemesis", required_argument, NULL, O_NEMESIS},
    {"fault-grace", required_argument, NULL, O_GRACE},
    {"limit-every", required_argument, NULL, O_LIMIT_EVERY},
    {"restock-at", required_argument, NULL, O_RESTOCK_AT},
    {"restock", required_argument, NULL, O_RESTOCK},
    {"help", no_argument, NULL, O_HELP},
    {NULL, 0, NULL, 0},
};

/* Reads a --nemesis schedule: "AT_MS NAME COMMAND..." per line, '#'
 * comments and blank lines skipped, at most FS_MAX_FAULTS, in time order. */
static int parse_nemesis(fs_opts *o, const char *path, FILE *err)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        fprintf(err, "flashsale: --nemesis %s: %s\n", path, strerror(errno));
        return -EINVAL;
    }
    char line[1024];
    int lineno = 0, rc = 0;
    while (fgets(line, sizeof(line), f) != NULL) {
        lineno++;
        size_t n = strlen(line);
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            line[--n] = '\0';
        char *p = line;
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p == '\0' || *p == '#')
            continue;
        long long at;
        int used = 0;
        char name[32];
        if (sscanf(p, "%lld %31s %n", &at, name, &used) < 2 || used == 0 || p[used] == '\0' ||
            at < 0 || strlen(p + used) >= sizeof(o->faults[0].cmd)) {
            fprintf(err, "flashsale: --nemesis %s:%d: want AT_MS NAME COMMAND\n", path, lineno);
            rc = -EINVAL;
            break;
        }
        if (o->nfaults == FS_MAX_FAULTS) {
            fprintf(err, "flashsale: --nemesis %s: more than %d faults\n", path, FS_MAX_FAULTS);
            rc = -EINVAL;
            break;
        }
        if (o->nfaults > 0 && at < o->faults[o->nfaults - 1].at_ms) {
            fprintf(err, "flashsale: --nemesis %s:%d: faults must be in time order\n", path, lineno);
            rc = -EINVAL;
            break;
        }
        fs_fault *ft = &o->faults[o->nfaults++];
        ft->at_ms = at;
        snprintf(ft->name, sizeof(ft->name), "%s", name);
        snprintf(ft->cmd, sizeof(ft->cmd), "%s", p + used);
    }
    fclose(f);
    return rc;
}

int64_t fs_opts_item_limit(const fs_opts *o, int item)
{
    return o->limit_every > 0 && item % o->limit_every == 0 ? o->per_user_limit : 0;
}

static int parse_i64(const char *s, int64_t lo, int64_t hi, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi)
        return -EINVAL;
    *out = v;
    return 0;
}

static int parse_dbl(const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno != 0 || end == s || *end != '\0' || !(v >= lo && v <= hi))
        return -EINVAL;
    *out = v;
    return 0;
}

/* Parses "a,b,c" of non-negative integers into out (ascending when sorted
 * is set). Returns the count or -EINVAL. */
static int parse_list(const char *s, int64_t *out, int max, int sorted)
{
    int n = 0;
    const char *p = s;
    while (*p) {
        char buf[32];
        size_t l = strcspn(p, ",");
        if (l == 0 || l >= sizeof(buf) || n == max)
            return -EINVAL;
        memcpy(buf, p, l);
        buf[l] = '\0';
        if (parse_i64(buf, 0, INT64_MAX / 1000000, &out[n]) < 0)
            return -EINVAL;
        if (sorted && n > 0 && out[n] <= out[n - 1])
            return -EINVAL;
        n++;
        p += l;
        if (*p == ',')
            p++;
    }
    return n > 0 ? n : -EINVAL;
}

static int valid_id(const char *s)
{
    return kit_ident_valid(s, strlen(s), FS_SKU_MAX);
}

int fs_target_parse(fs_target *t, const char *url)
{
    const char *p = url;
    if (strncmp(p, "http://", 7) == 0)
        p += 7;
    const char *colon = strrchr(p, ':');
    if (colon == NULL || colon == p)
        return -EINVAL;
    size_t hl = (size_t)(colon - p);
    if (hl >= sizeof(t->host))
        return -EINVAL;
    char host[64];
    memcpy(host, p, hl);
    host[hl] = '\0';
    if (host[0] == '[' && hl > 2 && host[hl - 1] == ']') {   /* [::1] */
        memmove(host, host + 1, hl - 2);
        host[hl - 2] = '\0';
    }
    char *end;
    errno = 0;
    long port = strtol(colon + 1, &end, 10);
    if (errno != 0 || end == colon + 1 || port < 1 || port > 65535 ||
        (*end != '\0' && strcmp(end, "/") != 0))
        return -EINVAL;
    if (strcmp(host, "localhost") == 0)
        strcpy(host, "127.0.0.1");
    snprintf(t->host, sizeof(t->host), "%s", host);
    t->port = (int)port;
    if (strchr(host, ':'))
        snprintf(t->url, sizeof(t->url), "http://[%s]:%d", host, t->port);
    else
        snprintf(t->url, sizeof(t->url), "http://%s:%d", host, t->port);
    return 0;
}

static int parse_targets(fs_opts *o, const char *s)
{
    o->ntargets = 0;
    const char *p = s;
    while (*p) {
        char buf[160];
        size_t l = strcspn(p, ",");
        if (l == 0 || l >= sizeof(buf) || o->ntargets == FS_MAX_TARGETS)
            return -EINVAL;
        memcpy(buf, p, l);
        buf[l] = '\0';
        if (fs_target_parse(&o->targets[o->ntargets], buf) < 0)
            return -EINVAL;
        o->ntargets++;
        p += l;
        if (*p == ',')
            p++;
    }
    return o->ntargets > 0 ? 0 : -EINVAL;
}

static void free_skus(fs_opts *o)
{
    for (int i = 0; i < o->nskus; i++)
        free(o->skus[i]);
    free(o->skus);
    o->skus = NULL;
    o->nskus = 0;
}

static int parse_skus(fs_opts *o, const char *s)
{
    int64_t n;
    free_skus(o);
    if (parse_i64(s, 1, 100000, &n) == 0) {
        o->skus_generated = 1;
        o->skus = calloc((size_t)n, sizeof(*o->skus));
        if (o->skus == NULL)
            return -ENOMEM;
        o->nskus = (int)n;
        return 0;
    }
    o->skus_generated = 0;
    int cap = 1;
    for (const char *p = s; *p; p++)
        cap += *p == ',';
    o->skus = calloc((size_t)cap, sizeof(*o->skus));
    if (o->skus == NULL)
        return -ENOMEM;
    const char *p = s;
    while (*p) {
        size_t l = strcspn(p, ",");
        char *name = strndup(p, l);
        if (name == NULL)
            return -ENOMEM;
        if (!valid_id(name)) {
            free(name);
            return -EINVAL;
        }
        o->skus[o->nskus++] = name;
        p += l;
        if (*p == ',')
            p++;
    }
    return o->nskus > 0 ? 0 : -EINVAL;
}

int fs_opts_name_skus(fs_opts *o, int round, const char *run_id)
{
    if (!o->skus_generated)
        return 0;
    for (int i = 0; i < o->nskus; i++) {
        char buf[FS_SKU_MAX + 1];
        if (round < 0)
            snprintf(buf, sizeof(buf), "%s-%s-%d", o->sku_prefix, run_id, i);
        else
            snprintf(buf, sizeof(buf), "%s-%s-r%d-%d", o->sku_prefix, run_id, round, i);
        char *name = strdup(buf);
        if (name == NULL)
            return -ENOMEM;
        free(o->skus[i]);
        o->skus[i] = name;
    }
    return 0;
}

void fs_opts_free(fs_opts *o)
{
    free_skus(o);
}

static void defaults(fs_opts *o)
{
    memset(o, 0, sizeof(*o));
    fs_target_parse(&o->targets[0], "http://127.0.0.1:8080");
    o->ntargets = 1;
    snprintf(o->sku_prefix, sizeof(o->sku_prefix), "fs");
    o->stock = 10000;
    o->per_user_limit = 1;
    o->users = 50000;
    o->skew = 0.99;
    o->read_ratio = 0.5;
    o->qty = 1;
    o->connections = 64;
    o->requests = 0;
    o->timeout_ms = 5000;
    o->retries = 3;
    o->windows_ms[0] = 0;
    o->windows_ms[1] = 100;
    o->windows_ms[2] = 1000;
    o->nwindows = 3;
    o->settle_ms = 200;
    o->fault_grace_ms = 5000;
    o->limit_every = 1;
    o->restock_units = 1000;
    o->seed = 1;
    const char *tok = getenv("FLASHSALE_ADMIN_TOKEN");
    if (tok)
        snprintf(o->admin_token, sizeof(o->admin_token), "%s", tok);
}

#define BAD(...)                                  \
    do {                                          \
        fprintf(err, "flashsale: " __VA_ARGS__);  \
        fputc('\n', err);                         \
        rc = -EINVAL;                             \
        goto out;                                 \
    } while (0)

int fs_opts_parse(fs_opts *o, int argc, char **argv, FILE *out, FILE *err)
{
    int rc = 0, c;
    int64_t v;
    defaults(o);
    o->skus = calloc(1, sizeof(*o->skus));
    if (o->skus == NULL)
        return -ENOMEM;
    o->nskus = 1;
    o->skus_generated = 1;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        const char *a = optarg;
        switch (c) {
        case O_TARGETS:
            if (parse_targets(o, a) < 0)
                BAD("--targets: want http://HOST:PORT[,...] with numeric hosts, got '%s'", a);
            break;
        case O_ADMIN:
            snprintf(o->admin_token, sizeof(o->admin_token), "%s", a);
            break;
        case O_SKUS:
            if (parse_skus(o, a) < 0)
                BAD("--skus: want a count or names of [A-Za-z0-9._:-]{1,64}, got '%s'", a);
            break;
        case O_PREFIX:
            if (strlen(a) > 16 || !valid_id(a))
                BAD("--sku-prefix: 1-16 bytes of [A-Za-z0-9._:-]");
            snprintf(o->sku_prefix, sizeof(o->sku_prefix), "%s", a);
            break;
        case O_STOCK:
            if (parse_i64(a, 0, INT64_MAX / 4, &o->stock) < 0)
                BAD("--stock: want a count >= 0");
            break;
        case O_LIMIT:
            if (parse_i64(a, 0, INT32_MAX, &o->per_user_limit) < 0)
                BAD("--per-user-limit: want a count >= 0");
            break;
        case O_START:
            if (parse_i64(a, 0, 86400000, &o->sale_start_ms) < 0)
                BAD("--sale-start: want milliseconds >= 0");
            break;
        case O_NOSEED:
            o->no_seed = 1;
            break;
        case O_USERS:
            if (parse_i64(a, 1, INT32_MAX, &o->users) < 0)
                BAD("--users: want a count >= 1");
            break;
        case O_SKEW:
            if (parse_dbl(a, 0.0, 10.0, &o->skew) < 0)
                BAD("--skew: want 0..10");
            break;
        case O_READ:
            if (parse_dbl(a, 0.0, 1.0, &o->read_ratio) < 0)
                BAD("--read-ratio: want 0..1");
            break;
        case O_QTY:
            if (parse_i64(a, 1, 1000000, &o->qty) < 0)
                BAD("--qty: want 1..1000000");
            break;
        case O_CONNS:
            if (parse_i64(a, 1, 100000, &v) < 0)
                BAD("--connections: want 1..100000");
            o->connections = (int)v;
            break;
        case O_REQS:
            if (parse_i64(a, 1, INT64_MAX / 4, &o->requests) < 0)
                BAD("--requests: want a count >= 1");
            break;
        case O_DUR:
            if (parse_dbl(a, 0.001, 86400, &o->duration_s) < 0)
                BAD("--duration: want seconds > 0");
            break;
        case O_RATE:
            if (parse_dbl(a, 0.0, 1e9, &o->rate) < 0)
                BAD("--rate: want requests/s >= 0");
            break;
        case O_TIMEOUT:
            if (parse_i64(a, 1, 3600000, &o->timeout_ms) < 0)
                BAD("--timeout: want milliseconds >= 1");
            break;
        case O_RETRIES:
            if (parse_i64(a, 0, 100000, &v) < 0)
                BAD("--retries: want 0..100000");
            o->retries = (int)v;
            break;
        case O_SEED:
            if (parse_i64(a, 0, INT64_MAX, &v) < 0)
                BAD("--seed: want an integer >= 0");
            o->seed = (uint64_t)v;
            break;
        case O_WORKERS:
            if (parse_i64(a, 0, 1024, &v) < 0)
                BAD("--workers: want 0..1024");
            o->workers = (int)v;
            break;
        case O_WINDOWS:
            if ((rc = parse_list(a, o->windows_ms, FS_MAX_WINDOWS, 1)) < 0)
                BAD("--stale-windows: want up to %d ascending milliseconds", FS_MAX_WINDOWS);
            o->nwindows = rc;
            rc = 0;
            break;
        case O_SWEEP:
            if ((rc = parse_list(a, o->sweep_ms, FS_MAX_SWEEP, 0)) < 0)
                BAD("--sweep-delay: want up to %d milliseconds", FS_MAX_SWEEP);
            o->nsweep = rc;
            rc = 0;
            break;
        case O_SETTLE:
            if (parse_i64(a, 0, 600000, &o->settle_ms) < 0)
                BAD("--settle: want milliseconds >= 0");
            break;
        case O_JSON:
            snprintf(o->json_path, sizeof(o->json_path), "%s", a);
            break;
        case O_PLOT:
            snprintf(o->plot_path, sizeof(o->plot_path), "%s", a);
            break;
        case O_KV:
            o->kv = 1;
            break;
        case O_QUIET:
            o->quiet = 1;
            break;
        case O_NOVERIFY:
            o->no_verify = 1;
            break;
        case O_NOKEYS:
            o->no_keys = 1;
            break;
        case O_NEMESIS:
            if ((rc = parse_nemesis(o, a, err)) < 0)
                goto out;
            break;
        case O_LIMIT_EVERY:
            if (parse_i64(a, 1, 1000000, &v) < 0)
                BAD("--limit-every: want K >= 1");
            o->limit_every = (int)v;
            break;
        case O_RESTOCK_AT: {
            char *end;
            o->restock_at_s = strtod(a, &end);
            if (*a == '\0' || *end != '\0' || !(o->restock_at_s > 0))
                BAD("--restock-at: want seconds > 0");
            break;
        }
        case O_RESTOCK:
            if (parse_i64(a, 1, INT32_MAX, &o->restock_units) < 0)
                BAD("--restock: want units >= 1");
            break;
        case O_GRACE:
            if (parse_i64(a, 0, 600000, &o->fault_grace_ms) < 0)
                BAD("--fault-grace: want milliseconds >= 0");
            break;
        case O_HELP:
            fputs(usage, out);
            return 1;
        default:
            if (optopt >= O_TARGETS)
                BAD("option %s needs a value", argv[optind - 1]);
            BAD("unknown option %s (see --help)", argv[optind - 1]);
        }
    }
    if (optind < argc)
        BAD("unexpected argument '%s' (see --help)", argv[optind]);
    if (o->requests == 0 && o->duration_s == 0)
        o->requests = 200000;
    if (o->requests > 0 && o->duration_s > 0)
        BAD("--requests and --duration exclude each other");
    if (o->nsweep > 0 && o->admin_token[0] == '\0')
        BAD("--sweep-delay needs --admin-token");
out:
    return rc;
}
