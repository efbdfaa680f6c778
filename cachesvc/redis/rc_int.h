/*
 * rc_int.h: internals of the Redis Cluster client, shared by its own files
 * and its tests (and benchmark driver) only. Nothing outside cachesvc/redis/
 * and tests of the client includes it: the service and the invalidator use
 * rc.h, which names no hiredis type.
 */
#ifndef CACHESVC_RC_INT_H
#define CACHESVC_RC_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include <hiredis/hiredis.h>

#include "cachesvc/redis/rc.h"
#include "runtime/rt.h"

#define RC_SLOTS 16384
#define RC_MAX_REPLICAS 8
#define RC_HOST_MAX 46   /* an IPv6 address in text, with its NUL */

/* ------------------------------------------------------------------------ */
/* The raw command API: any command, its reply as hiredis parsed it. The    */
/* versioned functions, rc_ping and rc_purge_items are built on it; the     */
/* client's tests drive the servers with it.                                */

/* A reply is hiredis's redisReply: type is one of RC_REPLY_*, str/len hold
 * strings, status and error text, integer integers, element/elements
 * arrays. Free one with rc_reply_free(). */
typedef redisReply rc_reply;
#define RC_REPLY_STRING  REDIS_REPLY_STRING
#define RC_REPLY_ARRAY   REDIS_REPLY_ARRAY
#define RC_REPLY_INTEGER REDIS_REPLY_INTEGER
#define RC_REPLY_NIL     REDIS_REPLY_NIL
#define RC_REPLY_STATUS  REDIS_REPLY_STATUS
#define RC_REPLY_ERROR   REDIS_REPLY_ERROR

/* Runs one command: argv[0] is the command name, argvlen[i] the length of
 * argv[i] (argvlen NULL: strlen). The key (argv[1] for most commands, the
 * first key of EVAL/EVALSHA) picks the node; keyless commands go to some
 * master. MGET, DEL, UNLINK, EXISTS and TOUCH with keys in several slots are
 * split by slot (the parts run concurrently) and their replies combined.
 * Redirects, retries and failover are handled inside, within deadline.
 *
 * Returns 0 and sets *out to the reply (the caller owns it, frees it with
 * rc_reply_free); RC_ESERVER if Redis answered with an error, *out then
 * holds that error reply (its str is the text); or another RC_E* code with
 * *out set to NULL. out may be NULL when the reply is not wanted.
 * Commands are retried after a lost connection only when they are
 * idempotent (reads, SET, DEL, the versioned scripts); others then fail
 * with RC_ECONN. */
int rc_command(rc_cluster *c, int argc, const char **argv,
               const size_t *argvlen, int64_t deadline, rc_reply **out);

/* Frees a reply from rc_command (NULL is fine). Any thread. */
void rc_reply_free(rc_reply *r);

/* ------------------------------------------------------------------------ */
/* Introspection, for the client's tests and benchmark. The service reads  */
/* the same counters through rc_metrics_append (rc.h).                      */

/* Refreshes the slot map now (synchronously), bypassing the cooldown.
 * Returns 0 or an RC_E* code; the old map stays in use on failure. */
int rc_refresh(rc_cluster *c, int64_t deadline);

/* Per node counters, declared once here (X macro): each entry is
 * X(name, help). All are monotonic counters except inflight. */
#define RC_NODE_COUNTERS(X)                                                    \
    X(inflight,  "requests written to the node and not yet answered (gauge)") \
    X(batches,   "pipelined writes to the node")                              \
    X(commands,  "commands written to the node")                              \
    X(moved,     "MOVED redirections received from the node")                 \
    X(ask,       "ASK redirections received from the node")                   \
    X(retries,   "requests retried after an error from or about the node")    \
    X(errors,    "connection failures, timeouts and malformed replies")       \
    X(auth_failures, "connections the node refused at AUTH (wrong user or password)") \
    X(refreshes, "slot map refreshes answered by the node")

typedef struct rc_node_stats {
    char addr[64];            /* "host:port" */
    int master;               /* 1 if it served slots at the last refresh */
    int up;                   /* 0 while marked down */
    RC_NODE_COUNTERS(KIT_FIELD)
} rc_node_stats;

/* Copies the counters of up to max nodes into out and returns the number of
 * nodes known (which may exceed max). Callable from any thread. */
int rc_stats(rc_cluster *c, rc_node_stats *out, int max);

/* Slot map refreshes done so far (successful ones). Any thread. */
uint64_t rc_refresh_count(rc_cluster *c);

/* ------------------------------------------------------------------------ */
/* proto.c: protocol knowledge that needs no I/O.                            */

uint16_t rc__crc16(const char *buf, size_t len);

/* Command properties, from the command's name. */
enum {
    RC_CMD_KEYLESS    = 1 << 0,  /* no key: any master may run it */
    RC_CMD_IDEMPOTENT = 1 << 1,  /* safe to resend after a lost connection */
    RC_CMD_READ       = 1 << 2,  /* a plain read a replica may answer */
    RC_CMD_EVAL       = 1 << 3,  /* keys start at argv[3], argv[2] = numkeys */
    RC_CMD_SPLIT_SUM  = 1 << 4,  /* multi-key, reply = sum of integers */
    RC_CMD_SPLIT_ARR  = 1 << 5,  /* multi-key, reply = array in key order */
};
int rc__cmd_flags(const char *name, size_t len);

/* Index in argv of the key that routes the command, or -1 if it has none
 * (keyless, or EVAL with numkeys 0). */
int rc__cmd_key(int flags, int argc, const char **argv, const size_t *argvlen);

/* Parses "MOVED <slot> <host>:<port>" or "ASK <slot> <host>:<port>" (an
 * error reply's text). Returns 1 for MOVED, 2 for ASK, 0 otherwise. */
int rc__parse_redirect(const char *s, size_t len, unsigned *slot,
                       char *host, size_t hostcap, int *port);

/* Error replies worth retrying after a pause: TRYAGAIN, CLUSTERDOWN,
 * LOADING, MASTERDOWN. */
bool rc__retryable_error(const char *s, size_t len);

/* Parses "host:port" or "[v6]:port" of length len. Returns 0 or -EINVAL. */
int rc__parse_addr(const char *s, size_t len, char *host, size_t hostcap,
                   int *port);

/* The RESP encoding of a command: its length, and the encoding written at
 * dst (which has room for rc__format_len bytes); returns the bytes written. */
size_t rc__format_len(int argc, const char **argv, const size_t *argvlen);
size_t rc__format(char *dst, int argc, const char **argv, const size_t *argvlen);

/* One range of CLUSTER SLOTS: addrs[0] is the master, then replicas. */
typedef struct rc__range {
    unsigned start, end;
    int naddrs;
    struct { char host[RC_HOST_MAX]; int port; } addrs[1 + RC_MAX_REPLICAS];
} rc__range;

/* Parses a CLUSTER SLOTS reply into a malloc'ed array of ranges (*out, the
 * caller frees it) and returns their count, or RC_EPROTO for a reply of the
 * wrong shape, RC_ENOMEM. An empty host ("" or "?") becomes self_host, the
 * address of the node that answered. Replicas beyond RC_MAX_REPLICAS are
 * dropped. */
int rc__parse_slots(const rc_reply *r, const char *self_host, rc__range **out);

/* ------------------------------------------------------------------------ */
/* versioned.c                                                               */

/* Splits "<version>|<payload>". Returns 0, or RC_EBADVALUE. */
int rc__parse_versioned(const char *s, size_t len, uint64_t *version,
                        const char **payload, size_t *plen);
void rc__sha1_hex(const void *data, size_t len, char hex[41]);
extern const char *const rc__fill_script;
extern const char *const rc__delete_script;

/* ------------------------------------------------------------------------ */
/* Requests and connections (conn.c).                                        */

enum { RC_REQ_PENDING, RC_REQ_DONE, RC_REQ_CANCELLED };

typedef struct rc__req {
    struct rc__req *next;      /* link in a connection queue */
    char *cmd;                 /* what to write: ASKING (if asked) + body */
    char *body;                /* where the caller formats the command */
    size_t cmdlen;
    int skip;                  /* replies to discard before ours (ASKING) */
    int written;               /* 1 once handed to write() */
    bool batch_end;            /* the last request of its write */
    int err;                   /* transport error, or 0 */
    rc_reply *reply;           /* the reply, owned until taken */
    int64_t sent_ns;           /* when written */
    _Atomic int state;         /* RC_REQ_* */
    _Atomic int refs;          /* the caller and the connection */
    rt_event *ev;              /* signalled on completion (pending -> done) */
    char buf[];                /* cmd points here */
} rc__req;

typedef struct rc__node rc__node;

typedef struct rc__conn {
    rc__node *node;
    pthread_mutex_t mu;        /* guards the queues and the flags below */
    rc__req *sq_head, *sq_tail;  /* queued, not written yet */
    rc__req *iq_head, *iq_tail;  /* written, waiting for their replies */
    int sq_len;
    int batches_out;           /* writes whose last reply has not come */
    bool writer_idle;          /* the writer waits on wake */
    bool window_full;          /* ... for replies, not for requests */
    bool broken;               /* the reader saw the connection fail */
    bool closing;              /* rc_free: the writer must exit */
    bool writer_started;       /* the writer coroutine was spawned */
    int fd;                    /* -1 while disconnected */
    rt_event *wake;            /* wakes the writer */
    rt_co *writer, *reader;
    redisReader *rd;           /* owned by the reader while it runs */
    char *obuf;                /* the writer's output buffer */
    size_t ocap;
    int break_err;             /* why the reader gave up */
} rc__conn;

struct rc__node {
    rc_cluster *c;
    char host[RC_HOST_MAX];
    int port;
    char addr[64];             /* "host:port" */
    int nconns;
    rc__conn *conns;
    _Atomic int master;
    _Atomic int64_t down_until;  /* rt_now_ns() before which it is down */
    _Atomic int down_backoff_ms;
    _Atomic int nreplicas;
    _Atomic(rc__node *) replicas[RC_MAX_REPLICAS];
    _Atomic unsigned rr;       /* round robin among connections/replicas */
    _Atomic int auth_refused;  /* its last AUTH was refused: while it is
                                * marked down, submits fail with RC_EAUTH */
#define RC__X(name, help) _Atomic uint64_t name;
    RC_NODE_COUNTERS(RC__X)
#undef RC__X
    rc__node *next;            /* in the cluster's node list */
};

struct rc_cluster {
    rc_config cfg;
    char *seeds;               /* copy of cfg.seeds */
    pthread_mutex_t mu;        /* guards the node list and refresh state */
    rc__node *nodes;           /* every node ever seen; freed by rc_free */
    int nnodes;
    _Atomic(rc__node *) slots[RC_SLOTS];  /* master of each slot */
    _Atomic int standalone;
    _Atomic int refresh_wanted;
    _Atomic uint64_t refreshes;
    rt_event *refresh_ev;
    rt_mutex *refresh_mu;      /* one refresh at a time */
    int64_t last_refresh_ns;   /* under refresh_mu */
    rt_co *refresher;
    _Atomic int closing;
    bool started;
    char fill_sha[41], delete_sha[41];
    _Atomic unsigned seed;     /* jitter */
    char *auth_cmd;            /* the RESP of AUTH [user] password, sent first
                                * on every connection; NULL = no AUTH. Holds
                                * the password: wiped by rc_free, never
                                * logged */
    size_t auth_len;
    char auth_err[256];        /* rc_auth_error's text; under mu */
};

/* Records that node n refused the credentials (or asked for them): what
 * it answered to cmd (an error reply's text, len bytes) becomes
 * rc_auth_error's text and n's auth_failures counter grows. Any thread. */
void rc__auth_refused(rc__node *n, const char *cmd, const char *text, size_t len);

/* Returns node host:port, creating it (and its connections) if unknown.
 * NULL only when out of memory. */
rc__node *rc__node_get(rc_cluster *c, const char *host, int port);
bool rc__node_is_down(rc__node *n);
void rc__node_mark_down(rc__node *n);
void rc__node_mark_up(rc__node *n);
/* Asks the refresher for a refresh soon (throttled). Non-blocking. */
void rc__refresh_async(rc_cluster *c);

int rc__conn_init(rc__conn *cn, rc__node *n);
/* Closes the connection and joins its coroutines; from rc_free only. */
void rc__conn_close(rc__conn *cn);
void rc__conn_destroy(rc__conn *cn);

/* Creates a request with room for a command of bodylen bytes, which the
 * caller writes at r->body. With asking set, "ASKING" is sent first and its
 * reply skipped. The caller holds one reference. NULL when out of memory. */
rc__req *rc__req_new(size_t bodylen, bool asking);
void rc__req_unref(rc__req *r);

/* Queues r on one of node n's connections; the connection holds a
 * reference until it completes r. Returns 0, RC_EDOWN if n is marked down
 * (r untouched), RC_ECANCELED when closing. */
int rc__submit(rc__node *n, rc__req *r);

/* Waits until r completes or deadline. Returns 0 (r->reply/r->err set) or
 * RC_ETIMEDOUT (r is then cancelled; the connection drops it). */
int rc__wait(rc__req *r, int64_t deadline);

/* One command on one node, no redirects or retries: submit and wait.
 * Returns 0 with *out set, or a negative code (transport or timeout). */
int rc__node_exec(rc__node *n, int argc, const char **argv,
                  const size_t *argvlen, int64_t deadline, rc_reply **out);

/* Small helpers. */
unsigned rc__rand(rc_cluster *c);
int64_t rc__deadline(rc_cluster *c, int64_t deadline);

#endif /* CACHESVC_RC_INT_H */
