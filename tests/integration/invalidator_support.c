/*
 * invalidator_support.c: fixtures for the invalidator's integration tests
 * and benchmark. See invalidator_support.h.
 */
#include "tests/integration/invalidator_support.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "runtime/rt.h"

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---------------------------------------------------------------------- */
/* Outbox                                                                   */

struct its_outbox {
    pthread_mutex_t mu;
    inv_row *rows;                 /* in id order; deleted ones have id 0 */
    size_t len, cap, live, first;  /* first: index of the first live row */
    int64_t next_id;
    bool down;
};

its_outbox *its_outbox_new(void)
{
    its_outbox *o = calloc(1, sizeof(*o));
    if (o == NULL)
        return NULL;
    pthread_mutex_init(&o->mu, NULL);
    o->next_id = 1;
    return o;
}

void its_outbox_free(its_outbox *o)
{
    if (o == NULL)
        return;
    pthread_mutex_destroy(&o->mu);
    free(o->rows);
    free(o);
}

int64_t its_outbox_add(its_outbox *o, const char *sku, int64_t version,
                       int64_t committed_at_ms)
{
    pthread_mutex_lock(&o->mu);
    if (o->len == o->cap) {
        size_t ncap = o->cap ? o->cap * 2 : 1024;
        inv_row *r = realloc(o->rows, ncap * sizeof(*r));
        if (r == NULL) {
            pthread_mutex_unlock(&o->mu);
            return -1;
        }
        o->rows = r;
        o->cap = ncap;
    }
    inv_row *row = &o->rows[o->len++];
    memset(row, 0, sizeof(*row));
    row->id = o->next_id++;
    row->version = version;
    row->committed_at_ms = committed_at_ms < 0 ? wall_ms() : committed_at_ms;
    snprintf(row->sku, sizeof(row->sku), "%s", sku);
    o->live++;
    int64_t id = row->id;
    pthread_mutex_unlock(&o->mu);
    return id;
}

int64_t its_outbox_depth(its_outbox *o)
{
    pthread_mutex_lock(&o->mu);
    int64_t n = (int64_t)o->live;
    pthread_mutex_unlock(&o->mu);
    return n;
}

void its_outbox_set_down(its_outbox *o, bool down)
{
    pthread_mutex_lock(&o->mu);
    o->down = down;
    pthread_mutex_unlock(&o->mu);
}

/* Index of the first row with id > after: ids are dense, row i has id
 * i + 1 (a deleted row keeps its slot with id 0). */
static size_t lower_bound(its_outbox *o, int64_t after)
{
    size_t i = after < 0 ? 0 : (size_t)after;
    return i < o->len ? i : o->len;
}

static int ob_fetch(void *ctx, int64_t after_id, inv_row *rows, int max)
{
    its_outbox *o = ctx;
    int n = 0;
    pthread_mutex_lock(&o->mu);
    if (o->down) {
        pthread_mutex_unlock(&o->mu);
        return -EIO;
    }
    size_t i = lower_bound(o, after_id);
    if (i < o->first)
        i = o->first;
    for (; i < o->len && n < max; i++) {
        if (o->rows[i].id == 0)
            continue;
        rows[n++] = o->rows[i];
    }
    pthread_mutex_unlock(&o->mu);
    return n;
}

static int ob_ack(void *ctx, const int64_t *ids, int n)
{
    its_outbox *o = ctx;
    pthread_mutex_lock(&o->mu);
    if (o->down) {
        pthread_mutex_unlock(&o->mu);
        return -EIO;
    }
    for (int i = 0; i < n; i++) {
        size_t idx = (size_t)(ids[i] - 1);
        if (idx < o->len && o->rows[idx].id != 0) {
            o->rows[idx].id = 0;
            o->live--;
        }
    }
    while (o->first < o->len && o->rows[o->first].id == 0)
        o->first++;
    pthread_mutex_unlock(&o->mu);
    return 0;
}

static int64_t ob_depth(void *ctx)
{
    return its_outbox_depth(ctx);
}

inv_source its_outbox_source(its_outbox *o)
{
    inv_source s = {ob_fetch, ob_ack, ob_depth, o};
    return s;
}

/* ---------------------------------------------------------------------- */
/* redis-server                                                             */

pid_t its_redis_start(int port)
{
    char dir[] = "/tmp/inv-redis-XXXXXX";
    if (mkdtemp(dir) == NULL)
        return -1;
    char portstr[16];
    snprintf(portstr, sizeof(portstr), "%d", port);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        execlp("redis-server", "redis-server", "--port", portstr, "--bind",
               "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir,
               "--logfile", "redis.log", "--protected-mode", "no",
               (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 200; i++) {
        redisContext *c = redisConnect("127.0.0.1", port);
        if (c != NULL && c->err == 0) {
            redisReply *r = redisCommand(c, "PING");
            bool ok = r != NULL && r->type == REDIS_REPLY_STATUS;
            freeReplyObject(r);
            redisFree(c);
            if (ok)
                return pid;
        } else if (c != NULL) {
            redisFree(c);
        }
        usleep(20000);
    }
    its_redis_stop(pid);
    return -1;
}

void its_redis_stop(pid_t pid)
{
    if (pid <= 0)
        return;
    kill(pid, SIGTERM);
    for (int i = 0; i < 100; i++) {
        if (waitpid(pid, NULL, WNOHANG) == pid)
            return;
        usleep(20000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

/* ---------------------------------------------------------------------- */
/* Redis sink                                                               */

/* Deletes KEYS[1] when its "<version>|..." value has a version <= ARGV[1]
 * (a value that does not parse counts as older). */
static const char DEL_SCRIPT[] =
    "local v = redis.call('GET', KEYS[1]) "
    "if not v then return 0 end "
    "local p = string.find(v, '|', 1, true) "
    "local cv = tonumber(p and string.sub(v, 1, p - 1) or v) "
    "if cv == nil or cv <= tonumber(ARGV[1]) then "
    "  redis.call('DEL', KEYS[1]) return 1 end "
    "return 0";

struct its_rsink {
    rt_mutex *mu;
    redisContext *c;
    char sha[64];
    bool down;                     /* atomic */
    uint64_t calls;
};

its_rsink *its_rsink_new(const char *host, int port)
{
    its_rsink *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    s->c = redisConnect(host, port);
    if (s->c == NULL || s->c->err) {
        fprintf(stderr, "its_rsink: connect %s:%d failed\n", host, port);
        goto fail;
    }
    redisReply *r = redisCommand(s->c, "SCRIPT LOAD %s", DEL_SCRIPT);
    if (r == NULL || r->type != REDIS_REPLY_STRING) {
        freeReplyObject(r);
        goto fail;
    }
    snprintf(s->sha, sizeof(s->sha), "%s", r->str);
    freeReplyObject(r);
    if (rt_fd_register(s->c->fd) < 0)
        goto fail;
    s->c->flags &= ~REDIS_BLOCK;
    s->mu = rt_mutex_new();
    if (s->mu == NULL)
        goto fail;
    return s;
fail:
    if (s->c != NULL)
        redisFree(s->c);
    free(s);
    return NULL;
}

void its_rsink_free(its_rsink *s)
{
    if (s == NULL)
        return;
    rt_fd_unregister(s->c->fd);
    redisFree(s->c);
    rt_mutex_free(s->mu);
    free(s);
}

void its_rsink_set_down(its_rsink *s, bool down)
{
    __atomic_store_n(&s->down, down, __ATOMIC_RELAXED);
}

uint64_t its_rsink_calls(its_rsink *s)
{
    return __atomic_load_n(&s->calls, __ATOMIC_RELAXED);
}

static int rs_del(void *ctx, inv_del *items, int n)
{
    its_rsink *s = ctx;
    int rc = 0;
    __atomic_fetch_add(&s->calls, 1, __ATOMIC_RELAXED);
    if (__atomic_load_n(&s->down, __ATOMIC_RELAXED))
        return -ECONNREFUSED;
    rt_mutex_lock(s->mu);
    redisContext *c = s->c;
    for (int i = 0; i < n; i++) {
        char key[INV_SKU_MAX + 16];
        snprintf(key, sizeof(key), "stock:{%s}", items[i].sku);
        redisAppendCommand(c, "EVALSHA %s 1 %s %" PRId64, s->sha, key,
                           items[i].version);
    }
    int64_t deadline = rt_deadline_ms(2000);
    int done = 0;
    while (!done) {
        if (redisBufferWrite(c, &done) == REDIS_ERR) {
            rc = -EIO;
            goto out;
        }
        if (!done && rt_wait_fd(c->fd, RT_WRITE, deadline) < 0) {
            rc = -ETIMEDOUT;
            goto out;
        }
    }
    for (int i = 0; i < n; i++) {
        void *reply = NULL;
        for (;;) {
            if (redisGetReplyFromReader(c, &reply) == REDIS_ERR) {
                rc = -EIO;
                goto out;
            }
            if (reply != NULL)
                break;
            if (rt_wait_fd(c->fd, RT_READ, deadline) < 0) {
                rc = -ETIMEDOUT;
                goto out;
            }
            if (redisBufferRead(c) == REDIS_ERR) {
                rc = -EIO;
                goto out;
            }
        }
        redisReply *r = reply;
        items[i].result = r->type == REDIS_REPLY_INTEGER ? 0 : -EIO;
        freeReplyObject(r);
    }
out:
    rt_mutex_unlock(s->mu);
    return rc;
}

inv_redis_sink its_rsink_sink(its_rsink *s)
{
    inv_redis_sink k = {rs_del, s};
    return k;
}

static redisContext *plain_connect(int port)
{
    redisContext *c = redisConnect("127.0.0.1", port);
    if (c == NULL || c->err) {
        if (c != NULL)
            redisFree(c);
        return NULL;
    }
    return c;
}

int its_redis_set(int port, const char *sku, int64_t version)
{
    redisContext *c = plain_connect(port);
    if (c == NULL)
        return -1;
    redisReply *r = redisCommand(c, "SET stock:{%s} %" PRId64 "|payload", sku,
                                 version);
    int rc = r != NULL && r->type == REDIS_REPLY_STATUS ? 0 : -1;
    freeReplyObject(r);
    redisFree(c);
    return rc;
}

int its_redis_get(int port, const char *sku, int64_t *version)
{
    redisContext *c = plain_connect(port);
    if (c == NULL)
        return -1;
    redisReply *r = redisCommand(c, "GET stock:{%s}", sku);
    int rc = -1;
    if (r != NULL && r->type == REDIS_REPLY_NIL) {
        rc = 0;
    } else if (r != NULL && r->type == REDIS_REPLY_STRING) {
        rc = 1;
        if (version != NULL)
            *version = strtoll(r->str, NULL, 10);
    }
    freeReplyObject(r);
    redisFree(c);
    return rc;
}

int its_redis_count(int port, const char *prefix, int n)
{
    redisContext *c = plain_connect(port);
    if (c == NULL)
        return -1;
    for (int i = 0; i < n; i++)
        redisAppendCommand(c, "EXISTS stock:{%s%d}", prefix, i);
    int count = 0;
    for (int i = 0; i < n; i++) {
        void *reply = NULL;
        if (redisGetReply(c, &reply) != REDIS_OK) {
            count = -1;
            break;
        }
        redisReply *r = reply;
        if (r->type == REDIS_REPLY_INTEGER)
            count += (int)r->integer;
        freeReplyObject(r);
    }
    redisFree(c);
    return count;
}

int its_redis_flush(int port)
{
    redisContext *c = plain_connect(port);
    if (c == NULL)
        return -1;
    redisReply *r = redisCommand(c, "FLUSHALL");
    freeReplyObject(r);
    redisFree(c);
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Local sink                                                               */

typedef struct lrec {
    char sku[INV_SKU_MAX + 1];
    int64_t version;
} lrec;

struct its_lsink {
    pthread_mutex_t mu;
    lrec *recs;
    size_t len, cap;
    uint64_t count;
};

its_lsink *its_lsink_new(void)
{
    its_lsink *l = calloc(1, sizeof(*l));
    if (l != NULL)
        pthread_mutex_init(&l->mu, NULL);
    return l;
}

void its_lsink_free(its_lsink *l)
{
    if (l == NULL)
        return;
    pthread_mutex_destroy(&l->mu);
    free(l->recs);
    free(l);
}

static void ls_evict(void *ctx, const char *sku, int64_t version)
{
    its_lsink *l = ctx;
    pthread_mutex_lock(&l->mu);
    l->count++;
    for (size_t i = 0; i < l->len; i++) {
        if (strcmp(l->recs[i].sku, sku) == 0) {
            if (version > l->recs[i].version)
                l->recs[i].version = version;
            pthread_mutex_unlock(&l->mu);
            return;
        }
    }
    if (l->len == l->cap) {
        size_t ncap = l->cap ? l->cap * 2 : 64;
        lrec *r = realloc(l->recs, ncap * sizeof(*r));
        if (r == NULL) {
            pthread_mutex_unlock(&l->mu);
            return;
        }
        l->recs = r;
        l->cap = ncap;
    }
    snprintf(l->recs[l->len].sku, sizeof(l->recs[l->len].sku), "%s", sku);
    l->recs[l->len].version = version;
    l->len++;
    pthread_mutex_unlock(&l->mu);
}

inv_local_sink its_lsink_sink(its_lsink *l)
{
    inv_local_sink k = {ls_evict, l};
    return k;
}

int64_t its_lsink_version(its_lsink *l, const char *sku)
{
    int64_t v = -1;
    pthread_mutex_lock(&l->mu);
    for (size_t i = 0; i < l->len; i++)
        if (strcmp(l->recs[i].sku, sku) == 0)
            v = l->recs[i].version;
    pthread_mutex_unlock(&l->mu);
    return v;
}

uint64_t its_lsink_count(its_lsink *l)
{
    pthread_mutex_lock(&l->mu);
    uint64_t n = l->count;
    pthread_mutex_unlock(&l->mu);
    return n;
}

bool its_wait_until(bool (*cond)(void *arg), void *arg, int timeout_ms)
{
    int64_t deadline = rt_now_ms() + timeout_ms;
    for (;;) {
        if (cond(arg))
            return true;
        if (rt_now_ms() >= deadline)
            return false;
        if (rt_self() != NULL)
            rt_sleep(5);
        else
            usleep(5000);
    }
}
