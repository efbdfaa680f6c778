/*
 * Integration test of the Redis Cluster client's authentication, against a
 * real 3+3 cluster whose servers require a password and know an ACL user
 * (scripts/redis-cluster up --password ... --user USER), started by
 * tests/integration/redis_auth.sh:
 *
 *   redis_auth_test SEEDS DIR USER     (the password in REDIS_TEST_PASSWORD;
 *                                       REDISCLI_AUTH lets redis-cli in)
 *
 * Checks, in order, on the same cluster:
 *   - no password, a wrong password, an unknown user, a user who may not
 *     run CLUSTER SLOTS: rc_connect fails with RC_EAUTH at once (well
 *     before its deadline), rc_auth_error names the node and what it
 *     answered, and never the password;
 *   - the right credentials with two pooled connections per node and
 *     replica reads: writes and reads over every slot, every node (masters
 *     and replicas) holds connections of USER;
 *   - connections killed by the server (CLIENT KILL USER): the client
 *     reconnects, authenticates again, and every command succeeds;
 *   - a MOVED redirect: followed on an authenticated connection;
 *   - kill -9 of a master: the promoted replica accepts the client's
 *     connections, writes resume, acknowledged writes are readable.
 *
 * Exits 0 when every check passed. Each check prints what failed.
 */
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cachesvc/redis/rc_int.h"
#include "tests/support/check.h"
#include "tests/support/sh.h"

static const char *g_seeds, *g_dir, *g_user, *g_password;
static int g_port;

/* A client of the test's cluster; NULL (a failed check names rc_new's
 * error) when it cannot be created. */
static rc_cluster *client(const char *user, const char *password, int conns, int replica_reads)
{
    rc_config cfg = {
        .seeds = g_seeds,
        .conns_per_node = conns,
        .connect_timeout_ms = 500,
        .command_timeout_ms = 1000,
        .replica_reads = replica_reads,
        .refresh_cooldown_ms = 50,
        .user = user,
        .password = password,
    };
    rc_cluster *c;
    int rc = rc_new(&cfg, &c);
    CHECK(rc == 0, "rc_new: %s", rc_strerror(rc));
    return c;
}

static uint64_t sum_auth_failures(rc_cluster *c)
{
    rc_node_stats st[32];
    int n = rc_stats(c, st, 32);
    uint64_t s = 0;
    for (int i = 0; i < n && i < 32; i++)
        s += st[i].auth_failures;
    return s;
}

/* Connects with credentials that must be refused: RC_EAUTH well before the
 * deadline, and an error text that names a node and contains want. */
static void expect_refused(const char *what, const char *user, const char *password,
                           const char *want)
{
    rc_cluster *c = client(user, password, 1, 0);
    char text[512] = "";
    int64_t t0 = rt_now_ms();
    int rc;

    if (c == NULL)
        return;
    rc = rc_connect(c, rt_deadline_ms(5000));
    int64_t ms = rt_now_ms() - t0;
    rc_auth_error(c, text, sizeof text);
    printf("%s: rc_connect -> %s after %" PRId64 " ms; rc_auth_error: %s\n", what,
           rc_strerror(rc), ms, text);
    CHECK(rc == RC_EAUTH, "%s: got %s", what, rc_strerror(rc));
    CHECK(ms < 2000, "%s: took %" PRId64 " ms (a refusal must not wait for the deadline)",
          what, ms);
    CHECK(strstr(text, "127.0.0.1:") != NULL, "%s: no node named in '%s'", what, text);
    CHECK(strstr(text, want) != NULL, "%s: '%s' not in '%s'", what, want, text);
    CHECK(strstr(text, g_password) == NULL, "%s: the password leaked into the error", what);
    if (password != NULL && password[0] != '\0')
        CHECK(strstr(text, password) == NULL, "%s: the given password leaked", what);
    if (strcmp(want, "WRONGPASS") == 0)
        CHECK(sum_auth_failures(c) > 0, "%s: auth_failures counter stayed 0", what);
    rc_free(c);
}

/* Connections of g_user on the node at port (CLIENT LIST, as the default
 * user). */
static int user_conns(int port)
{
    char out[8192];
    if (sh(out, sizeof out, "redis-cli -p %d --no-auth-warning client list | grep -c ' user=%s '",
           port, g_user) != 0 && out[0] == '\0')
        return -1;
    return atoi(out);
}

static int set_get_all(rc_cluster *c, const char *prefix, int n, int64_t timeout_ms)
{
    char key[64], val[64];
    int bad = 0;
    for (int i = 0; i < n; i++) {
        snprintf(key, sizeof key, "%s:%d", prefix, i);
        snprintf(val, sizeof val, "v-%d", i);
        const char *argv[3] = {"SET", key, val};
        int rc = rc_command(c, 3, argv, NULL, rt_deadline_ms(timeout_ms), NULL);
        if (rc != 0) {
            if (bad++ < 3)
                fprintf(stderr, "  SET %s: %s\n", key, rc_strerror(rc));
        }
    }
    return bad;
}

/* Reads prefix:0..n-1 back; replica reads may lag a write by a moment, so
 * a mismatch is read again from the master before it counts. */
static int check_all(rc_cluster *c, const char *prefix, int n)
{
    char key[64], val[64];
    int bad = 0;
    for (int i = 0; i < n; i++) {
        rc_reply *r = NULL;
        snprintf(key, sizeof key, "%s:%d", prefix, i);
        snprintf(val, sizeof val, "v-%d", i);
        const char *argv[2] = {"GET", key};
        int rc = rc_command(c, 2, argv, NULL, rt_deadline_ms(1000), &r);
        if (rc != 0 || r->type != RC_REPLY_STRING || strcmp(r->str, val) != 0) {
            rc_reply_free(r);
            r = NULL;
            rc__node *m = atomic_load(&c->slots[rc_keyslot(key, strlen(key))]);
            rc = m ? rc__node_exec(m, 2, argv, (size_t[]){3, strlen(key)}, rt_deadline_ms(1000),
                                   &r)
                   : RC_EUNAVAIL;
            if (rc != 0 || r->type != RC_REPLY_STRING || strcmp(r->str, val) != 0) {
                if (bad++ < 3)
                    fprintf(stderr, "  GET %s: %s\n", key, rc_strerror(rc));
            }
        }
        rc_reply_free(r);
    }
    return bad;
}

static int role_is_master(int port)
{
    char out[256];
    return sh(out, sizeof out,
              "redis-cli -p %d --no-auth-warning info replication | grep -c role:master",
              port) == 0 && atoi(out) == 1;
}

/* A replica's port and its master's, or -1. */
static int replica_and_master(int *master)
{
    char out[512];
    for (int p = g_port; p < g_port + 6; p++) {
        if (role_is_master(p))
            continue;
        if (sh(out, sizeof out,
               "redis-cli -p %d --no-auth-warning info replication | tr -d '\\r' | "
               "sed -n 's/^master_port://p'", p) == 0 && atoi(out) > 0) {
            *master = atoi(out);
            return p;
        }
    }
    return -1;
}

static int run(void)
{
    char out[4096];
    rc_cluster *c;
    int rc;

    /* 1. Refusals. */
    expect_refused("no password", NULL, NULL, "NOAUTH");
    char wrong[256];
    snprintf(wrong, sizeof wrong, "not-%s", g_password);
    expect_refused("wrong password", g_user, wrong, "WRONGPASS");
    expect_refused("unknown user", "nosuchuser", g_password, "WRONGPASS");
    expect_refused("default user, user's password wrong", NULL, wrong, "WRONGPASS");
    /* A user who may not run CLUSTER SLOTS. */
    for (int p = g_port; p < g_port + 6; p++)
        sh(out, sizeof out, "redis-cli -p %d --no-auth-warning acl setuser limited on '>%s' "
                            "'~*' -@all +get", p, g_password);
    expect_refused("no CLUSTER SLOTS permission", "limited", g_password, "NOPERM");
    {
        rc_config bad = {.seeds = g_seeds, .user = "someone", .password = ""};
        rc = rc_new(&bad, &c);
        CHECK(rc == RC_EINVAL && c == NULL, "rc_new refuses a user without a password: %s",
              rc_strerror(rc));
    }

    /* 2. The right credentials: pooled connections, replicas. */
    if ((c = client(g_user, g_password, 2, 1)) == NULL)
        return 1;
    rc = rc_connect(c, rt_deadline_ms(5000));
    CHECK(rc == 0, "rc_connect: %s", rc_strerror(rc));
    if (rc < 0) {
        rc_free(c);
        return 1;
    }
    CHECK(set_get_all(c, "auth", 2000, 1000) == 0, "writes with AUTH");
    /* Redis 7 leaves a replica out of CLUSTER SLOTS until its replication
     * offset moved (the writes above move it): refresh until the map has
     * every replica, so the reads below use them. */
    int with_replicas = 0;
    for (int i = 0; i < 100 && with_replicas < 3; i++) {
        rc_refresh(c, rt_deadline_ms(1000));
        with_replicas = 0;
        for (rc__node *n = c->nodes; n != NULL; n = n->next)
            with_replicas += atomic_load(&n->master) && atomic_load(&n->nreplicas) > 0;
        if (with_replicas < 3)
            rt_sleep(100);
    }
    CHECK(with_replicas == 3, "%d of 3 masters list their replica", with_replicas);
    CHECK(check_all(c, "auth", 2000) == 0, "reads with AUTH (replicas)");
    int nodes_with_user = 0;
    for (int p = g_port; p < g_port + 6; p++) {
        int k = user_conns(p);
        printf("node %d: %d connections of %s\n", p, k, g_user);
        nodes_with_user += k > 0;
    }
    CHECK(nodes_with_user == 6, "%d of 6 nodes hold authenticated connections",
          nodes_with_user);
    CHECK(sum_auth_failures(c) == 0, "no AUTH refused");

    /* 3. Every connection killed by the servers: reconnect and AUTH again. */
    for (int p = g_port; p < g_port + 6; p++)
        sh(out, sizeof out, "redis-cli -p %d --no-auth-warning client kill user %s", p, g_user);
    CHECK(set_get_all(c, "again", 1000, 3000) == 0, "writes after the connections were killed");
    CHECK(check_all(c, "again", 1000) == 0, "reads after the connections were killed");
    nodes_with_user = 0;
    for (int p = g_port; p < g_port + 6; p++)
        nodes_with_user += user_conns(p) > 0;
    CHECK(nodes_with_user == 6, "%d of 6 nodes reconnected with AUTH", nodes_with_user);

    /* 4. MOVED: point one slot at the wrong master; the client follows the
     * redirect to the right one. */
    {
        const char *key = "auth:moved";
        unsigned s = rc_keyslot(key, strlen(key));
        rc__node *right = atomic_load(&c->slots[s]), *wrongn = NULL;
        for (unsigned t = 0; t < RC_SLOTS && wrongn == NULL; t++) {
            rc__node *m = atomic_load(&c->slots[t]);
            if (m != NULL && m != right)
                wrongn = m;
        }
        uint64_t moved0 = atomic_load(&wrongn->moved);
        atomic_store(&c->slots[s], wrongn);
        const char *argv[3] = {"SET", key, "x"};
        rc = rc_command(c, 3, argv, NULL, rt_deadline_ms(2000), NULL);
        CHECK(rc == 0, "SET through a MOVED redirect: %s", rc_strerror(rc));
        CHECK(atomic_load(&wrongn->moved) > moved0, "the MOVED was seen");
    }

    /* 5. kill -9 of a master: its replica is promoted and must accept the
     * client's connections too. Replica reads off, so writes and reads go to
     * the new master. */
    rc_free(c);
    if ((c = client(g_user, g_password, 2, 0)) == NULL || rc_connect(c, rt_deadline_ms(5000)) < 0) {
        CHECK(0, "reconnect for the failover case");
        if (c)
            rc_free(c);
        return 1;
    }
    int m = -1, r = replica_and_master(&m);
    CHECK(r > 0 && m > 0, "found replica %d of master %d", r, m);
    if (r < 0 || m < 0) {
        rc_free(c);
        return 1;
    }
    int before = user_conns(r);
    sh(out, sizeof out, "kill -9 $(cat %s/redis-%d.pid)", g_dir, m);
    printf("killed master %d (replica %d had %d connections of %s)\n", m, r, before, g_user);
    int64_t t0 = rt_now_ms();
    int recovered = 0;
    while (rt_now_ms() - t0 < 30000) {
        if (role_is_master(r) && set_get_all(c, "probe", 64, 300) == 0) {
            recovered = 1;
            break;
        }
        rt_sleep(100);
    }
    CHECK(recovered, "writes resumed after the failover");
    printf("recovered %" PRId64 " ms after kill -9\n", rt_now_ms() - t0);
    CHECK(role_is_master(r), "replica %d was promoted", r);
    CHECK(user_conns(r) > 0, "the promoted node holds connections of %s", g_user);
    CHECK(set_get_all(c, "after", 1000, 2000) == 0, "writes after the failover");
    CHECK(check_all(c, "after", 1000) == 0, "reads after the failover");
    CHECK(check_all(c, "auth", 2000) == 0, "writes acknowledged before the failover");
    CHECK(sum_auth_failures(c) == 0, "no AUTH refused during the failover");
    rc_free(c);
    return 0;
}

static int g_rc;

static void run_co(void *arg)
{
    (void)arg;
    g_rc = run();
}

int main(int argc, char **argv)
{
    if (argc < 4 || getenv("REDIS_TEST_PASSWORD") == NULL) {
        fprintf(stderr, "usage: REDIS_TEST_PASSWORD=P %s SEEDS DIR USER\n", argv[0]);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    g_seeds = argv[1];
    g_dir = argv[2];
    g_user = argv[3];
    g_password = getenv("REDIS_TEST_PASSWORD");
    g_port = atoi(strncmp(g_seeds, "127.0.0.1:", 10) == 0 ? g_seeds + 10 : g_seeds);
    setvbuf(stdout, NULL, _IOLBF, 0);
    int rc = rt_main(&(rt_config){.workers = 2}, run_co, NULL);
    if (rc < 0) {
        fprintf(stderr, "rt_main: %d\n", rc);
        return 1;
    }
    CHECK(g_rc == 0, "the test returned %d", g_rc);
    return check_exit("auth");
}
