/*
 * invalidator_support.c: fixtures for the invalidator's integration tests
 * and benchmark. See invalidator_support.h.
 */
#include "tests/support/invalidator_support.h"

#include <errno.h>
#include <fcntl.h>
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

#include "cachesvc/redis/rc.h"
#include "runtime/rt.h"
#include "kit/kit.h"


/* ---------------------------------------------------------------------- */
/* Outbox                                                                   */

struct its_outbox {
    pthread_mutex_t mu;
    inv_row *rows;                 /* in id order; deleted ones have id 0 */
    int64_t *claimed_until;        /* per row, wall ms: as the stores do, a
                                    * fetch claims what it returns for a
                                    * lease, and a fetch that is not "mine"
                                    * skips rows under a live claim */
    size_t len, cap, live, first;  /* first: index of the first live row */
    int64_t next_id;
    bool down;
    int lose_replies;              /* fetches that claim, then fail */
};

#define ITS_CLAIM_LEASE_MS 10000

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
    free(o->claimed_until);
    free(o);
}

int64_t its_outbox_add(its_outbox *o, const char *sku, int64_t version,
                       int64_t committed_at_ms)
{
    pthread_mutex_lock(&o->mu);
    if (o->len == o->cap) {
        size_t ncap = o->cap ? o->cap * 2 : 1024;
        inv_row *r = realloc(o->rows, ncap * sizeof(*r));
        int64_t *c = r ? realloc(o->claimed_until, ncap * sizeof(*c)) : NULL;
        if (r == NULL || c == NULL) {
            if (r != NULL)
                o->rows = r;
            pthread_mutex_unlock(&o->mu);
            return -1;
        }
        o->rows = r;
        o->claimed_until = c;
        o->cap = ncap;
    }
    o->claimed_until[o->len] = 0;
    inv_row *row = &o->rows[o->len++];
    memset(row, 0, sizeof(*row));
    row->id = o->next_id++;
    row->version = version;
    row->committed_at_ms = committed_at_ms < 0 ? kit_wall_ms() : committed_at_ms;
    snprintf(row->sku, sizeof(row->sku), "%s", sku);
    o->live++;
    int64_t id = row->id;
    pthread_mutex_unlock(&o->mu);
    return id;
}

int64_t its_outbox_add_item(its_outbox *o, const char *sku, int64_t version, int64_t stock)
{
    int64_t id = its_outbox_add(o, sku, version, -1);
    if (id < 0)
        return id;
    pthread_mutex_lock(&o->mu);
    for (size_t i = o->len; i-- > 0;) {
        if (o->rows[i].id == id) {
            o->rows[i].has_item = 1;
            o->rows[i].item = (inv_item){.stock = stock};
            break;
        }
    }
    pthread_mutex_unlock(&o->mu);
    return id;
}

int64_t its_outbox_reserve(its_outbox *o)
{
    int64_t id = its_outbox_add(o, "", -1, -1);   /* version -1: not visible */
    if (id > 0) {
        pthread_mutex_lock(&o->mu);
        o->live--;
        pthread_mutex_unlock(&o->mu);
    }
    return id;
}

void its_outbox_commit(its_outbox *o, int64_t id, const char *sku, int64_t version)
{
    pthread_mutex_lock(&o->mu);
    inv_row *row = &o->rows[id - 1];
    snprintf(row->sku, sizeof(row->sku), "%s", sku);
    row->committed_at_ms = kit_wall_ms();
    row->version = version;
    o->live++;
    pthread_mutex_unlock(&o->mu);
}

int64_t its_outbox_depth(its_outbox *o)
{
    pthread_mutex_lock(&o->mu);
    int64_t n = (int64_t)o->live;
    pthread_mutex_unlock(&o->mu);
    return n;
}

void its_outbox_lose_replies(its_outbox *o, int n)
{
    pthread_mutex_lock(&o->mu);
    o->lose_replies = n;
    pthread_mutex_unlock(&o->mu);
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

static int ob_fetch(void *ctx, int64_t after_id, int mine, inv_row *rows, int max)
{
    its_outbox *o = ctx;   /* one relay per outbox: every claim is "mine" */
    int n = 0;
    int64_t now = kit_wall_ms();
    pthread_mutex_lock(&o->mu);
    if (o->down) {
        pthread_mutex_unlock(&o->mu);
        return -EIO;
    }
    size_t i = lower_bound(o, after_id);
    if (i < o->first)
        i = o->first;
    for (; i < o->len && n < max; i++) {
        if (o->rows[i].id == 0 || o->rows[i].version < 0)
            continue;              /* deleted, or its transaction is open */
        if (!mine && o->claimed_until[i] > now)
            continue;              /* under a live claim */
        o->claimed_until[i] = now + ITS_CLAIM_LEASE_MS;
        rows[n++] = o->rows[i];
    }
    if (o->lose_replies > 0) {     /* the claims were made; the answer is lost */
        o->lose_replies--;
        n = -EIO;
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

static int64_t ob_depth(void *ctx, int64_t *oldest_committed_at_ms)
{
    its_outbox *o = ctx;
    pthread_mutex_lock(&o->mu);
    *oldest_committed_at_ms = 0;
    for (size_t i = o->first; i < o->len; i++)
        if (o->rows[i].id != 0 && o->rows[i].version >= 0) {
            *oldest_committed_at_ms = o->rows[i].committed_at_ms;
            break;
        }
    pthread_mutex_unlock(&o->mu);
    return its_outbox_depth(ctx);
}

inv_source its_outbox_source(its_outbox *o)
{
    inv_source s = {ob_fetch, ob_ack, ob_depth, o};
    return s;
}

/* ---------------------------------------------------------------------- */
/* Redis Cluster                                                            */

static struct {
    char dir[64];
    char top[512];
    char seeds[128];
    int ports[3];
    int nports;
    int slot_port[16384];
    pid_t watchdog;
    int watch_fd;                  /* its closing tells the watchdog */
} cl = {.watchdog = -1, .watch_fd = -1};

static int run_script(const char *top, char *const argv[], char *out,
                      size_t cap)
{
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0)
        return -1;
    char path[600];
    snprintf(path, sizeof(path), "%s/scripts/redis-cluster", top);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
        execv(path, argv);
        _exit(127);
    }
    close(fds[1]);
    size_t len = 0;
    ssize_t n;
    while (out != NULL && len + 1 < cap &&
           (n = read(fds[0], out + len, cap - 1 - len)) > 0)
        len += (size_t)n;
    if (out != NULL)
        out[len] = '\0';
    close(fds[0]);
    int st = 0;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
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

static int load_slots(void)
{
    redisContext *c = plain_connect(cl.ports[0]);
    if (c == NULL)
        return -1;
    redisReply *r = redisCommand(c, "CLUSTER SLOTS");
    int rc = -1;
    if (r != NULL && r->type == REDIS_REPLY_ARRAY) {
        for (size_t i = 0; i < r->elements; i++) {
            redisReply *e = r->element[i];
            int lo = (int)e->element[0]->integer, hi = (int)e->element[1]->integer;
            int port = (int)e->element[2]->element[1]->integer;
            for (int sl = lo; sl <= hi; sl++)
                cl.slot_port[sl] = port;
        }
        rc = 0;
    }
    freeReplyObject(r);
    redisFree(c);
    return rc;
}

int its_cluster_up(const char *top, int port)
{
    snprintf(cl.top, sizeof(cl.top), "%s", top);
    snprintf(cl.dir, sizeof(cl.dir), "/tmp/inv-cluster-XXXXXX");
    if (mkdtemp(cl.dir) == NULL)
        return -1;
    char portstr[16], out[4096];
    snprintf(portstr, sizeof(portstr), "%d", port);
    char *up[] = {"redis-cluster", "up", "--dir", cl.dir, "--port", portstr,
                  "--replicas", "0", NULL};
    /* The watchdog: waits for this process to go away (EOF on the pipe),
     * then takes the cluster down. */
    int fds[2];
    /* Close-on-exec: the servers the script starts must not hold the
     * write end, or the watchdog would never see it close. */
    if (pipe2(fds, O_CLOEXEC) < 0)
        return -1;
    cl.watchdog = fork();
    if (cl.watchdog == 0) {
        close(fds[1]);
        char b;
        while (read(fds[0], &b, 1) > 0)
            ;
        char *down[] = {"redis-cluster", "down", "--dir", cl.dir, NULL};
        run_script(cl.top, down, NULL, 0);
        char cmd[128];
        snprintf(cmd, sizeof(cmd), "rm -rf %s", cl.dir);
        if (system(cmd) != 0)
            _exit(1);
        _exit(0);
    }
    close(fds[0]);
    cl.watch_fd = fds[1];
    if (run_script(top, up, out, sizeof(out)) < 0) {
        fprintf(stderr, "its_cluster_up: redis-cluster up failed:\n%s\n", out);
        its_cluster_down();
        return -1;
    }
    cl.nports = 3;
    for (int i = 0; i < 3; i++)
        cl.ports[i] = port + i;
    snprintf(cl.seeds, sizeof(cl.seeds), "127.0.0.1:%d,127.0.0.1:%d,127.0.0.1:%d",
             port, port + 1, port + 2);
    if (load_slots() < 0) {
        its_cluster_down();
        return -1;
    }
    return 0;
}

void its_cluster_down(void)
{
    if (cl.watch_fd >= 0) {
        close(cl.watch_fd);
        cl.watch_fd = -1;
    }
    if (cl.watchdog > 0) {
        waitpid(cl.watchdog, NULL, 0);
        cl.watchdog = -1;
    }
}

const char *its_cluster_seeds(void)
{
    return cl.seeds;
}

static int key_port(const char *key)
{
    return cl.slot_port[rc_keyslot(key, strlen(key))];
}

static redisContext *key_connect(const char *sku, char *key, size_t cap)
{
    snprintf(key, cap, "stock:{%s}", sku);
    return plain_connect(key_port(key));
}

int its_redis_set(const char *sku, int64_t version)
{
    char key[INV_SKU_MAX + 16];
    redisContext *c = key_connect(sku, key, sizeof(key));
    if (c == NULL)
        return -1;
    redisReply *r = redisCommand(c, "SET %s %" PRId64 "|payload", key, version);
    int rc = r != NULL && r->type == REDIS_REPLY_STATUS ? 0 : -1;
    freeReplyObject(r);
    redisFree(c);
    return rc;
}

/* A delete's tombstone, "<version>|~" (cachesvc/redis/versioned.c). */
static int is_tombstone(const redisReply *r)
{
    return r->len >= 2 && r->str[r->len - 2] == '|' && r->str[r->len - 1] == '~';
}

int its_redis_get(const char *sku, int64_t *version)
{
    char key[INV_SKU_MAX + 16];
    redisContext *c = key_connect(sku, key, sizeof(key));
    if (c == NULL)
        return -1;
    redisReply *r = redisCommand(c, "GET %s", key);
    int rc = -1;
    if (r != NULL && r->type == REDIS_REPLY_NIL) {
        rc = 0;
    } else if (r != NULL && r->type == REDIS_REPLY_STRING) {
        rc = is_tombstone(r) ? 0 : 1;   /* a delete's mark: no copy */
        if (version != NULL)
            *version = strtoll(r->str, NULL, 10);
    }
    freeReplyObject(r);
    redisFree(c);
    return rc;
}

/* Runs one command on every master; 0 when all answered without error. */
static int on_masters(const char *cmd)
{
    int rc = 0;
    for (int i = 0; i < cl.nports; i++) {
        redisContext *c = plain_connect(cl.ports[i]);
        if (c == NULL)
            return -1;
        redisReply *r = redisCommand(c, cmd);
        if (r == NULL || r->type == REDIS_REPLY_ERROR)
            rc = -1;
        freeReplyObject(r);
        redisFree(c);
    }
    return rc;
}

int its_redis_flush(void)
{
    return on_masters("FLUSHALL");
}

int its_redis_pause_writes(int ms)
{
    char cmd[64];
    snprintf(cmd, sizeof(cmd), "CLIENT PAUSE %d WRITE", ms);
    return on_masters(cmd);
}

int its_redis_count(const char *prefix, int n)
{
    redisContext *cs[3] = {NULL, NULL, NULL};
    int *which = calloc((size_t)n, sizeof(*which));
    int count = 0;
    if (which == NULL)
        return -1;
    for (int i = 0; i < cl.nports; i++)
        if ((cs[i] = plain_connect(cl.ports[i])) == NULL)
            count = -1;
    char key[INV_SKU_MAX + 32];
    for (int i = 0; i < n && count == 0; i++) {
        snprintf(key, sizeof(key), "stock:{%s%d}", prefix, i);
        int port = key_port(key);
        which[i] = port - cl.ports[0];
        redisAppendCommand(cs[which[i]], "GET %s", key);
    }
    for (int i = 0; i < n && count >= 0; i++) {
        void *reply = NULL;
        if (redisGetReply(cs[which[i]], &reply) != REDIS_OK) {
            count = -1;
            break;
        }
        redisReply *r = reply;
        if (r->type == REDIS_REPLY_STRING && !is_tombstone(r))
            count++;
        freeReplyObject(r);
    }
    for (int i = 0; i < 3; i++)
        if (cs[i] != NULL)
            redisFree(cs[i]);
    free(which);
    return count;
}

/* ---------------------------------------------------------------------- */
/* Redis sink                                                               */

struct its_rsink {
    rc_cluster *rc;
    inv_fanout *fanout;
    int timeout_ms;
};

static int rs_one(void *ctx, const char *sku, int64_t version)
{
    its_rsink *s = ctx;
    char key[INV_SKU_MAX + 16];
    int kl = rc_item_key(key, sizeof(key), sku, strlen(sku));
    int rc = rc_delete_if_not_newer(s->rc, key, (size_t)kl, (uint64_t)version, 60000,
                                    rt_deadline_ms(s->timeout_ms));
    return rc < 0 ? rc : 0;
}

static int rs_del(void *ctx, inv_del *items, int n)
{
    its_rsink *s = ctx;
    return inv_fanout_del(s->fanout, items, n);
}

its_rsink *its_rsink_new(const char *seeds, int command_timeout_ms)
{
    its_rsink *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    s->timeout_ms = command_timeout_ms;
    rc_config rcc = {.seeds = seeds, .command_timeout_ms = command_timeout_ms};
    int rc;
    if ((rc = rc_new(&rcc, &s->rc)) < 0 || (rc = rc_connect(s->rc, rt_deadline_ms(10000))) < 0) {
        fprintf(stderr, "its_rsink_new: redis %s: %s\n", seeds, rc_strerror(rc));
        its_rsink_free(s);
        return NULL;
    }
    if ((rc = inv_fanout_new(128, rs_one, s, &s->fanout)) < 0) {
        fprintf(stderr, "its_rsink_new: inv_fanout_new: %s\n", inv_strerror(rc));
        its_rsink_free(s);
        return NULL;
    }
    return s;
}

void its_rsink_free(its_rsink *s)
{
    if (s == NULL)
        return;
    inv_fanout_free(s->fanout);
    if (s->rc != NULL)
        rc_free(s->rc);
    free(s);
}

inv_redis_sink its_rsink_sink(its_rsink *s)
{
    inv_redis_sink k = {rs_del, s};
    return k;
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
    uint64_t count, purges, installs;
    int64_t last_stock;            /* of the last install */
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

/* An install counts as an eviction to its version (the floor it leaves)
 * plus the row it carried. */
static void ls_install(void *ctx, const char *sku, int64_t version, const inv_item *item)
{
    its_lsink *l = ctx;
    ls_evict(ctx, sku, version);
    pthread_mutex_lock(&l->mu);
    l->count--;
    l->installs++;
    l->last_stock = item->stock;
    pthread_mutex_unlock(&l->mu);
}

static void ls_purge(void *ctx)
{
    its_lsink *l = ctx;
    pthread_mutex_lock(&l->mu);
    l->len = 0;                    /* every version forgotten */
    l->purges++;
    pthread_mutex_unlock(&l->mu);
}

inv_local_sink its_lsink_sink(its_lsink *l)
{
    inv_local_sink k = {.evict = ls_evict, .purge = ls_purge, .ctx = l};
    return k;
}

uint64_t its_lsink_purges(its_lsink *l)
{
    pthread_mutex_lock(&l->mu);
    uint64_t n = l->purges;
    pthread_mutex_unlock(&l->mu);
    return n;
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

inv_local_sink its_lsink_sink_installing(its_lsink *l)
{
    inv_local_sink k = its_lsink_sink(l);
    k.install = ls_install;
    return k;
}

uint64_t its_lsink_installs(its_lsink *l, int64_t *last_stock)
{
    pthread_mutex_lock(&l->mu);
    uint64_t n = l->installs;
    if (last_stock != NULL)
        *last_stock = l->last_stock;
    pthread_mutex_unlock(&l->mu);
    return n;
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
