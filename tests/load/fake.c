/*
 * fake.c: flashsale-fake, an in-memory stand-in for cachesvc's HTTP API
 * (docs/api.md), for testing the load tester without the service.
 *
 * One thread per connection and one global lock: correct by construction,
 * not fast. Faults on purpose:
 *   --wrong-audit MODE   the audit lies: oversell | lost | dup | limit | ledger
 *   --unknown-every N    every Nth applied decrement answers 503
 *                        outcome_unknown (a retry with the key replays it)
 *   --stale-ms N         initial invalidation_delay_ms: reads return the
 *                        item as it was N ms ago (PUT /admin/config changes it)
 *
 * Usage: flashsale-fake [--port P] [--admin-token T] [faults...]
 * Prints "listening 127.0.0.1:PORT" once ready. SIGTERM/SIGINT stop it.
 */
#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <http_parser.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* State, all under one lock                                                 */

typedef struct kv {
    struct kv *next;
    char *key;
    int64_t num;
    int status;
    char *body;
} kv;

typedef struct map {
    kv **b;
    size_t nb, n;
} map;

typedef struct snap {
    int64_t t_ms, stock, version;
} snap;

typedef struct item {
    char sku[65];
    int64_t stock, version, limit, starts_at_ms;
    int64_t supplied, sold, max_user_qty;
    int64_t *orders;
    size_t norders, cap;
    map users;
    snap *hist;   /* every committed state, for stale reads */
    size_t nhist, hcap;
} item;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static map items, idem;
static int64_t next_order = 1, applied_buys, reads;
static int64_t delay_ms, local_ttl_ms = 2000;
static char log_level[16] = "info";
static const char *admin_token = "";
static const char *wrong_audit = "";
static int64_t unknown_every;

static uint64_t hash(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    while (*s)
        h = (h ^ (unsigned char)*s++) * 1099511628211ull;
    return h;
}

static kv *map_get(map *m, const char *key, int create)
{
    if (m->nb == 0) {
        if (!create)
            return NULL;
        m->nb = 1024;
        m->b = calloc(m->nb, sizeof(*m->b));
    }
    size_t i = hash(key) % m->nb;
    for (kv *e = m->b[i]; e; e = e->next)
        if (strcmp(e->key, key) == 0)
            return e;
    if (!create)
        return NULL;
    if (m->n >= m->nb * 2) {   /* grow */
        size_t nb = m->nb * 4;
        kv **b = calloc(nb, sizeof(*b));
        for (size_t j = 0; j < m->nb; j++)
            for (kv *e = m->b[j], *nx; e; e = nx) {
                nx = e->next;
                size_t k = hash(e->key) % nb;
                e->next = b[k];
                b[k] = e;
            }
        free(m->b);
        m->b = b;
        m->nb = nb;
        i = hash(key) % m->nb;
    }
    kv *e = calloc(1, sizeof(*e));
    e->key = strdup(key);
    e->next = m->b[i];
    m->b[i] = e;
    m->n++;
    return e;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void record(item *it)
{
    if (it->nhist == it->hcap) {
        it->hcap = it->hcap ? it->hcap * 2 : 64;
        it->hist = realloc(it->hist, it->hcap * sizeof(*it->hist));
    }
    it->hist[it->nhist++] = (snap){now_ms(), it->stock, it->version};
}

/* ------------------------------------------------------------------------ */
/* Requests                                                                  */

typedef struct conn {
    int fd;
    http_parser p;
    char url[512];
    size_t url_len;
    char field[64];
    size_t field_len;
    int hdr;   /* 1 Idempotency-Key, 2 Authorization */
    char idem_key[130];
    char auth[300];
    char *body;
    size_t body_len, body_cap;
    int failed;
} conn;

typedef struct resp {
    int status;
    char *body;   /* owned */
    const char *x_cache;
} resp;

static void set_err(resp *r, int status, const char *code, const char *detail)
{
    r->status = status;
    if (asprintf(&r->body, "{\"error\":\"%s\",\"detail\":\"%s\"}", code, detail) < 0)
        r->body = NULL;
}

static int valid_id(const char *s, size_t l)
{
    if (l < 1 || l > 64)
        return 0;
    for (size_t i = 0; i < l; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
              (s[i] >= '0' && s[i] <= '9') || strchr("._:-", s[i])))
            return 0;
    return 1;
}

static item *find_item(const char *sku)
{
    kv *e = map_get(&items, sku, 0);
    return e ? (item *)e->body : NULL;
}

static char *item_json(const item *it, int64_t stock, int64_t version)
{
    char *s;
    if (asprintf(&s, "{\"sku\":\"%s\",\"stock\":%lld,\"version\":%lld,\"per_user_limit\":%lld,"
                     "\"sale_starts_at_ms\":%lld}",
                 it->sku, (long long)stock, (long long)version, (long long)it->limit,
                 (long long)it->starts_at_ms) < 0)
        return NULL;
    return s;
}

static int admin_ok(conn *c, resp *r)
{
    if (admin_token[0] == '\0') {
        set_err(r, 403, "forbidden", "no admin token configured");
        return 0;
    }
    char want[300];
    snprintf(want, sizeof(want), "Bearer %s", admin_token);
    if (strcmp(c->auth, want) != 0) {
        set_err(r, 401, "unauthorized", "missing or wrong admin token");
        return 0;
    }
    return 1;
}

static void do_get(const char *sku, resp *r)
{
    item *it = find_item(sku);
    if (it == NULL) {
        set_err(r, 404, "not_found", "unknown sku");
        return;
    }
    /* Serve the newest state at least delay_ms old (or the oldest one). */
    int64_t stock = it->stock, version = it->version;
    if (delay_ms > 0) {
        int64_t cut = now_ms() - delay_ms;
        size_t i = it->nhist;
        while (i > 1 && it->hist[i - 1].t_ms > cut)
            i--;
        stock = it->hist[i - 1].stock;
        version = it->hist[i - 1].version;
    }
    reads++;
    r->x_cache = reads % 100 == 0 ? "db" : reads % 10 == 0 ? "redis" : "local";
    r->status = 200;
    r->body = item_json(it, stock, version);
}

static void do_put(const char *sku, conn *c, resp *r)
{
    cJSON *j = cJSON_ParseWithLength(c->body ? c->body : "", c->body_len);
    cJSON *st = cJSON_GetObjectItem(j, "stock"), *lim = cJSON_GetObjectItem(j, "per_user_limit");
    cJSON *sa = cJSON_GetObjectItem(j, "sale_starts_at_ms");
    item *it = find_item(sku);
    if (j == NULL || (st && !cJSON_IsNumber(st)) || (!it && !st) || (st && st->valuedouble < 0)) {
        set_err(r, 400, "bad_request", "want {\"stock\":N,...}");
        goto out;
    }
    r->status = 200;
    if (it == NULL) {
        it = calloc(1, sizeof(*it));
        snprintf(it->sku, sizeof(it->sku), "%s", sku);
        map_get(&items, sku, 1)->body = (char *)it;
        r->status = 201;
    }
    if (st) {
        int64_t s = (int64_t)st->valuedouble;
        it->supplied += s - it->stock;
        it->stock = s;
    }
    if (cJSON_IsNumber(lim))
        it->limit = (int64_t)lim->valuedouble;
    if (cJSON_IsNumber(sa))
        it->starts_at_ms = (int64_t)sa->valuedouble;
    it->version++;
    record(it);
    r->body = item_json(it, it->stock, it->version);
out:
    cJSON_Delete(j);
}

static void do_buy(const char *sku, conn *c, resp *r)
{
    kv *ik = NULL;
    if (c->idem_key[0]) {
        ik = map_get(&idem, c->idem_key, 0);
        if (ik && ik->status) {   /* replay */
            r->status = ik->status;
            const char *p = strstr(ik->body, "\"replayed\":false");
            if (p) {
                size_t pre = (size_t)(p - ik->body);
                if (asprintf(&r->body, "%.*s\"replayed\":true%s", (int)pre, ik->body,
                             p + strlen("\"replayed\":false")) < 0)
                    r->body = NULL;
            } else {
                r->body = strdup(ik->body);
            }
            return;
        }
    }
    cJSON *j = cJSON_ParseWithLength(c->body ? c->body : "", c->body_len);
    cJSON *u = cJSON_GetObjectItem(j, "user_id"), *q = cJSON_GetObjectItem(j, "qty");
    item *it = find_item(sku);
    int64_t qty = cJSON_IsNumber(q) ? (int64_t)q->valuedouble : 0;
    if (j == NULL || !cJSON_IsString(u) || !valid_id(u->valuestring, strlen(u->valuestring)) ||
        qty < 1 || qty > 1000000) {
        set_err(r, 400, "bad_request", "want {\"user_id\":\"...\",\"qty\":N}");
        goto out;
    }
    if (it == NULL) {
        set_err(r, 404, "not_found", "unknown sku");
        goto out;
    }
    if (now_ms() < it->starts_at_ms) {
        set_err(r, 425, "sale_not_started", "the sale has not started");
        goto out;
    }
    kv *bought = map_get(&it->users, u->valuestring, 1);
    if (it->limit > 0 && bought->num + qty > it->limit) {
        set_err(r, 409, "limit_exceeded", "per-user limit reached");
        goto out;
    }
    if (it->stock == 0) {
        set_err(r, 409, "sold_out", "sold out");
        goto out;
    }
    if (it->stock < qty) {
        set_err(r, 409, "insufficient_stock", "not enough stock");
        goto out;
    }
    bought->num += qty;
    if (bought->num > it->max_user_qty)
        it->max_user_qty = bought->num;
    it->stock -= qty;
    it->sold += qty;
    it->version++;
    record(it);
    int64_t id = next_order++;
    if (it->norders == it->cap) {
        it->cap = it->cap ? it->cap * 2 : 256;
        it->orders = realloc(it->orders, it->cap * sizeof(*it->orders));
    }
    it->orders[it->norders++] = id;
    r->status = 200;
    if (asprintf(&r->body, "{\"order_id\":%lld,\"sku\":\"%s\",\"user_id\":\"%s\",\"qty\":%lld,"
                           "\"stock\":%lld,\"version\":%lld,\"replayed\":false}",
                 (long long)id, it->sku, u->valuestring, (long long)qty, (long long)it->stock,
                 (long long)it->version) < 0)
        r->body = NULL;
    applied_buys++;
    if (c->idem_key[0]) {
        ik = map_get(&idem, c->idem_key, 1);
        ik->status = 200;
        ik->body = strdup(r->body);
    }
    if (unknown_every > 0 && applied_buys % unknown_every == 0) {
        free(r->body);
        r->body = NULL;
        set_err(r, 503, "outcome_unknown", "connection broke during COMMIT");
    }
out:
    cJSON_Delete(j);
}

static void do_audit(const char *sku, int with_orders, resp *r)
{
    item *it = find_item(sku);
    if (it == NULL) {
        set_err(r, 404, "not_found", "unknown sku");
        return;
    }
    int64_t stock = it->stock, sold = it->sold, dup = 0, maxq = it->max_user_qty;
    size_t skip = 0;
    if (strcmp(wrong_audit, "oversell") == 0) {
        sold += 1;
        stock -= 1;
    } else if (strcmp(wrong_audit, "lost") == 0) {
        skip = 1;
    } else if (strcmp(wrong_audit, "dup") == 0) {
        dup = 1;
    } else if (strcmp(wrong_audit, "limit") == 0) {
        maxq = it->limit + 1;
    } else if (strcmp(wrong_audit, "ledger") == 0) {
        stock += 1;
    }
    size_t cap = 256 + (with_orders ? it->norders * 21 : 0);
    char *b = malloc(cap);
    size_t n = (size_t)snprintf(b, cap,
        "{\"sku\":\"%s\",\"stock\":%lld,\"version\":%lld,\"units_supplied\":%lld,"
        "\"units_sold\":%lld,\"orders\":%lld,\"max_user_qty\":%lld,"
        "\"duplicate_idempotency_keys\":%lld",
        it->sku, (long long)stock, (long long)it->version, (long long)it->supplied,
        (long long)sold, (long long)(it->norders - skip), (long long)maxq, (long long)dup);
    if (with_orders) {
        n += (size_t)snprintf(b + n, cap - n, ",\"order_ids\":[");
        for (size_t i = skip; i < it->norders; i++)
            n += (size_t)snprintf(b + n, cap - n, "%s%lld", i > skip ? "," : "",
                                  (long long)it->orders[i]);
        n += (size_t)snprintf(b + n, cap - n, "]");
    }
    snprintf(b + n, cap - n, "}");
    r->status = 200;
    r->body = b;
}

static void do_config(conn *c, int put, resp *r)
{
    if (put) {
        cJSON *j = cJSON_ParseWithLength(c->body ? c->body : "", c->body_len);
        cJSON *d = cJSON_GetObjectItem(j, "invalidation_delay_ms");
        cJSON *t = cJSON_GetObjectItem(j, "local_ttl_ms");
        cJSON *l = cJSON_GetObjectItem(j, "log_level");
        if (j == NULL || (d && (!cJSON_IsNumber(d) || d->valuedouble < 0))) {
            cJSON_Delete(j);
            set_err(r, 400, "bad_request", "bad config");
            return;
        }
        if (d)
            delay_ms = (int64_t)d->valuedouble;
        if (cJSON_IsNumber(t))
            local_ttl_ms = (int64_t)t->valuedouble;
        if (cJSON_IsString(l))
            snprintf(log_level, sizeof(log_level), "%s", l->valuestring);
        cJSON_Delete(j);
    }
    r->status = 200;
    if (asprintf(&r->body, "{\"invalidation_delay_ms\":%lld,\"local_ttl_ms\":%lld,"
                           "\"log_level\":\"%s\"}",
                 (long long)delay_ms, (long long)local_ttl_ms, log_level) < 0)
        r->body = NULL;
}

static void route(conn *c, resp *r)
{
    int method = c->p.method;
    char path[512];
    snprintf(path, sizeof(path), "%.*s", (int)c->url_len, c->url);
    char *query = strchr(path, '?');
    if (query)
        *query++ = '\0';
    char sku[65];
    size_t l;
    if (strcmp(path, "/healthz") == 0) {
        r->status = 200;
        r->body = strdup("{\"status\":\"ok\"}");
    } else if (strcmp(path, "/readyz") == 0) {
        r->status = 200;
        r->body = strdup("{\"status\":\"ready\",\"store\":\"up\",\"redis\":\"none\",\"kafka\":\"up\"}");
    } else if (strcmp(path, "/admin/config") == 0) {
        if (admin_ok(c, r))
            do_config(c, method == HTTP_PUT, r);
    } else if (strncmp(path, "/v1/items/", 10) == 0) {
        const char *s = path + 10, *slash = strchr(s, '/');
        l = slash ? (size_t)(slash - s) : strlen(s);
        if (!valid_id(s, l)) {
            set_err(r, 400, "bad_request", "bad sku");
            return;
        }
        snprintf(sku, sizeof(sku), "%.*s", (int)l, s);
        if (slash && strcmp(slash, "/decrement") == 0 && method == HTTP_POST)
            do_buy(sku, c, r);
        else if (!slash && method == HTTP_GET)
            do_get(sku, r);
        else if (!slash && method == HTTP_PUT) {
            if (admin_ok(c, r))
                do_put(sku, c, r);
        } else
            set_err(r, slash ? 404 : 405, slash ? "not_found" : "method_not_allowed", "no route");
    } else if (strncmp(path, "/admin/items/", 13) == 0) {
        const char *s = path + 13, *slash = strchr(s, '/');
        if (!slash || strcmp(slash, "/audit") != 0) {
            set_err(r, 404, "not_found", "no route");
            return;
        }
        if (!valid_id(s, (size_t)(slash - s))) {
            set_err(r, 400, "bad_request", "bad sku");
            return;
        }
        snprintf(sku, sizeof(sku), "%.*s", (int)(slash - s), s);
        if (admin_ok(c, r))
            do_audit(sku, query && strstr(query, "orders=true") != NULL, r);
    } else {
        set_err(r, 404, "not_found", "no route");
    }
}

/* ------------------------------------------------------------------------ */
/* HTTP plumbing                                                             */

static int on_url(http_parser *p, const char *at, size_t n)
{
    conn *c = p->data;
    if (c->url_len + n >= sizeof(c->url))
        return 1;
    memcpy(c->url + c->url_len, at, n);
    c->url_len += n;
    return 0;
}

static int on_field(http_parser *p, const char *at, size_t n)
{
    conn *c = p->data;
    size_t k = n < sizeof(c->field) - 1 - c->field_len ? n : sizeof(c->field) - 1 - c->field_len;
    memcpy(c->field + c->field_len, at, k);
    c->field_len += k;
    c->field[c->field_len] = '\0';
    c->hdr = 0;
    return 0;
}

static int on_value(http_parser *p, const char *at, size_t n)
{
    conn *c = p->data;
    if (c->field_len) {
        c->hdr = strcasecmp(c->field, "idempotency-key") == 0 ? 1
               : strcasecmp(c->field, "authorization") == 0   ? 2
                                                               : 0;
        c->field_len = 0;
    }
    char *dst = c->hdr == 1 ? c->idem_key : c->hdr == 2 ? c->auth : NULL;
    size_t cap = c->hdr == 1 ? sizeof(c->idem_key) : sizeof(c->auth);
    if (dst) {
        size_t l = strlen(dst);
        size_t k = n < cap - 1 - l ? n : cap - 1 - l;
        memcpy(dst + l, at, k);
        dst[l + k] = '\0';
    }
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t n)
{
    conn *c = p->data;
    if (c->body_len + n > 1 << 20)
        return 1;
    if (c->body_len + n > c->body_cap) {
        c->body_cap = (c->body_len + n) * 2;
        c->body = realloc(c->body, c->body_cap);
    }
    memcpy(c->body + c->body_len, at, n);
    c->body_len += n;
    return 0;
}

static int write_all(int fd, const char *b, size_t n)
{
    while (n) {
        ssize_t w = write(fd, b, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        b += w;
        n -= (size_t)w;
    }
    return 0;
}

static const char *reason(int s)
{
    switch (s) {
    case 200: return "OK";
    case 201: return "Created";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 409: return "Conflict";
    case 425: return "Too Early";
    case 503: return "Service Unavailable";
    default: return "Unknown";
    }
}

static int on_complete(http_parser *p)
{
    conn *c = p->data;
    resp r = {0};
    pthread_mutex_lock(&mu);
    route(c, &r);
    pthread_mutex_unlock(&mu);
    const char *body = r.body ? r.body : "{}";
    char head[512];
    int keep = http_should_keep_alive(p);
    int hl = snprintf(head, sizeof(head),
                      "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
                      "Content-Length: %zu\r\nX-Request-Id: fake\r\n%s%s%s%s%s\r\n",
                      r.status, reason(r.status), strlen(body),
                      r.x_cache ? "X-Cache: " : "", r.x_cache ? r.x_cache : "",
                      r.x_cache ? "\r\n" : "", r.status == 401 ? "WWW-Authenticate: Bearer\r\n" : "",
                      keep ? "" : "Connection: close\r\n");
    if (write_all(c->fd, head, (size_t)hl) < 0 || write_all(c->fd, body, strlen(body)) < 0)
        c->failed = 1;
    if (!keep)
        c->failed = 1;
    free(r.body);
    c->url_len = 0;
    c->body_len = 0;
    c->idem_key[0] = '\0';
    c->auth[0] = '\0';
    c->field_len = 0;
    return 0;
}

static const http_parser_settings settings = {
    .on_url = on_url,
    .on_header_field = on_field,
    .on_header_value = on_value,
    .on_body = on_body,
    .on_message_complete = on_complete,
};

static void *serve(void *arg)
{
    conn *c = arg;
    char buf[16384];
    http_parser_init(&c->p, HTTP_REQUEST);
    c->p.data = c;
    while (!c->failed) {
        ssize_t n = read(c->fd, buf, sizeof(buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        size_t done = http_parser_execute(&c->p, &settings, buf, (size_t)n);
        if (c->p.http_errno != HPE_OK || done != (size_t)n)
            break;
    }
    close(c->fd);
    free(c->body);
    free(c);
    return NULL;
}

int main(int argc, char **argv)
{
    int port = 0;
    static const struct option lo[] = {
        {"port", required_argument, NULL, 'p'},
        {"admin-token", required_argument, NULL, 't'},
        {"wrong-audit", required_argument, NULL, 'w'},
        {"unknown-every", required_argument, NULL, 'u'},
        {"stale-ms", required_argument, NULL, 's'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int ch;
    while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (ch) {
        case 'p': port = atoi(optarg); break;
        case 't': admin_token = optarg; break;
        case 'w': wrong_audit = optarg; break;
        case 'u': unknown_every = atoll(optarg); break;
        case 's': delay_ms = atoll(optarg); break;
        default:
            fprintf(stderr, "usage: flashsale-fake [--port P] [--admin-token T] "
                            "[--wrong-audit oversell|lost|dup|limit|ledger] "
                            "[--unknown-every N] [--stale-ms N]\n");
            return ch == 'h' ? 0 : 2;
        }
    }
    signal(SIGPIPE, SIG_IGN);
    int lfd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof(a);
    if (bind(lfd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(lfd, 1024) < 0 ||
        getsockname(lfd, (struct sockaddr *)&a, &al) < 0) {
        perror("flashsale-fake: listen");
        return 1;
    }
    printf("listening 127.0.0.1:%d\n", ntohs(a.sin_port));
    fflush(stdout);
    for (;;) {
        int fd = accept(lfd, NULL, NULL);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED || errno == EMFILE)
                continue;
            perror("flashsale-fake: accept");
            return 1;
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        conn *c = calloc(1, sizeof(*c));
        c->fd = fd;
        pthread_t t;
        pthread_attr_t at;
        pthread_attr_init(&at);
        pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
        pthread_attr_setstacksize(&at, 256 * 1024);
        if (pthread_create(&t, &at, serve, c) != 0) {
            close(fd);
            free(c);
        }
        pthread_attr_destroy(&at);
    }
}
