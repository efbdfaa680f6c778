/*
 * proto.c: what the client knows about the Redis protocol without doing any
 * I/O: key hash slots, command properties, redirect and CLUSTER SLOTS
 * parsing, node addresses.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cachesvc/redis/rc_int.h"

/* CRC16-CCITT (XMODEM), polynomial 0x1021, as Redis Cluster uses. */
static const uint16_t crc16tab[256] = {
    0x0000, 0x1021, 0x2042, 0x3063, 0x4084, 0x50a5, 0x60c6, 0x70e7,
    0x8108, 0x9129, 0xa14a, 0xb16b, 0xc18c, 0xd1ad, 0xe1ce, 0xf1ef,
    0x1231, 0x0210, 0x3273, 0x2252, 0x52b5, 0x4294, 0x72f7, 0x62d6,
    0x9339, 0x8318, 0xb37b, 0xa35a, 0xd3bd, 0xc39c, 0xf3ff, 0xe3de,
    0x2462, 0x3443, 0x0420, 0x1401, 0x64e6, 0x74c7, 0x44a4, 0x5485,
    0xa56a, 0xb54b, 0x8528, 0x9509, 0xe5ee, 0xf5cf, 0xc5ac, 0xd58d,
    0x3653, 0x2672, 0x1611, 0x0630, 0x76d7, 0x66f6, 0x5695, 0x46b4,
    0xb75b, 0xa77a, 0x9719, 0x8738, 0xf7df, 0xe7fe, 0xd79d, 0xc7bc,
    0x48c4, 0x58e5, 0x6886, 0x78a7, 0x0840, 0x1861, 0x2802, 0x3823,
    0xc9cc, 0xd9ed, 0xe98e, 0xf9af, 0x8948, 0x9969, 0xa90a, 0xb92b,
    0x5af5, 0x4ad4, 0x7ab7, 0x6a96, 0x1a71, 0x0a50, 0x3a33, 0x2a12,
    0xdbfd, 0xcbdc, 0xfbbf, 0xeb9e, 0x9b79, 0x8b58, 0xbb3b, 0xab1a,
    0x6ca6, 0x7c87, 0x4ce4, 0x5cc5, 0x2c22, 0x3c03, 0x0c60, 0x1c41,
    0xedae, 0xfd8f, 0xcdec, 0xddcd, 0xad2a, 0xbd0b, 0x8d68, 0x9d49,
    0x7e97, 0x6eb6, 0x5ed5, 0x4ef4, 0x3e13, 0x2e32, 0x1e51, 0x0e70,
    0xff9f, 0xefbe, 0xdfdd, 0xcffc, 0xbf1b, 0xaf3a, 0x9f59, 0x8f78,
    0x9188, 0x81a9, 0xb1ca, 0xa1eb, 0xd10c, 0xc12d, 0xf14e, 0xe16f,
    0x1080, 0x00a1, 0x30c2, 0x20e3, 0x5004, 0x4025, 0x7046, 0x6067,
    0x83b9, 0x9398, 0xa3fb, 0xb3da, 0xc33d, 0xd31c, 0xe37f, 0xf35e,
    0x02b1, 0x1290, 0x22f3, 0x32d2, 0x4235, 0x5214, 0x6277, 0x7256,
    0xb5ea, 0xa5cb, 0x95a8, 0x8589, 0xf56e, 0xe54f, 0xd52c, 0xc50d,
    0x34e2, 0x24c3, 0x14a0, 0x0481, 0x7466, 0x6447, 0x5424, 0x4405,
    0xa7db, 0xb7fa, 0x8799, 0x97b8, 0xe75f, 0xf77e, 0xc71d, 0xd73c,
    0x26d3, 0x36f2, 0x0691, 0x16b0, 0x6657, 0x7676, 0x4615, 0x5634,
    0xd94c, 0xc96d, 0xf90e, 0xe92f, 0x99c8, 0x89e9, 0xb98a, 0xa9ab,
    0x5844, 0x4865, 0x7806, 0x6827, 0x18c0, 0x08e1, 0x3882, 0x28a3,
    0xcb7d, 0xdb5c, 0xeb3f, 0xfb1e, 0x8bf9, 0x9bd8, 0xabbb, 0xbb9a,
    0x4a75, 0x5a54, 0x6a37, 0x7a16, 0x0af1, 0x1ad0, 0x2ab3, 0x3a92,
    0xfd2e, 0xed0f, 0xdd6c, 0xcd4d, 0xbdaa, 0xad8b, 0x9de8, 0x8dc9,
    0x7c26, 0x6c07, 0x5c64, 0x4c45, 0x3ca2, 0x2c83, 0x1ce0, 0x0cc1,
    0xef1f, 0xff3e, 0xcf5d, 0xdf7c, 0xaf9b, 0xbfba, 0x8fd9, 0x9ff8,
    0x6e17, 0x7e36, 0x4e55, 0x5e74, 0x2e93, 0x3eb2, 0x0ed1, 0x1ef0,
};

uint16_t rc__crc16(const char *buf, size_t len)
{
    uint16_t crc = 0;
    for (size_t i = 0; i < len; i++)
        crc = (uint16_t)((crc << 8) ^ crc16tab[((crc >> 8) ^ (uint8_t)buf[i]) & 0xff]);
    return crc;
}

/* Redis's keyHashSlot(): only the part between the first '{' and the next
 * '}' is hashed, when that part is not empty. */
unsigned rc_keyslot(const char *key, size_t len)
{
    size_t s, e;
    for (s = 0; s < len; s++)
        if (key[s] == '{')
            break;
    if (s == len)
        return rc__crc16(key, len) & (RC_SLOTS - 1);
    for (e = s + 1; e < len; e++)
        if (key[e] == '}')
            break;
    if (e == len || e == s + 1)
        return rc__crc16(key, len) & (RC_SLOTS - 1);
    return rc__crc16(key + s + 1, e - s - 1) & (RC_SLOTS - 1);
}

/* Commands whose handling differs from "key in argv[1], not idempotent".
 * Names are matched without regard to case. */
static const struct {
    const char *name;
    int flags;
} cmdtab[] = {
    {"GET", RC_CMD_READ | RC_CMD_IDEMPOTENT},
    {"MGET", RC_CMD_READ | RC_CMD_IDEMPOTENT | RC_CMD_SPLIT_ARR},
    {"EXISTS", RC_CMD_IDEMPOTENT | RC_CMD_SPLIT_SUM},
    {"TTL", RC_CMD_IDEMPOTENT},
    {"PTTL", RC_CMD_IDEMPOTENT},
    {"STRLEN", RC_CMD_IDEMPOTENT},
    {"TYPE", RC_CMD_IDEMPOTENT},
    {"GETRANGE", RC_CMD_IDEMPOTENT},
    {"HGET", RC_CMD_IDEMPOTENT},
    {"HGETALL", RC_CMD_IDEMPOTENT},
    {"SET", RC_CMD_IDEMPOTENT},   /* not with NX, XX or GET: rc_command checks */
    {"PSETEX", RC_CMD_IDEMPOTENT},
    {"SETEX", RC_CMD_IDEMPOTENT},
    {"DEL", RC_CMD_IDEMPOTENT | RC_CMD_SPLIT_SUM},
    {"UNLINK", RC_CMD_IDEMPOTENT | RC_CMD_SPLIT_SUM},
    {"TOUCH", RC_CMD_IDEMPOTENT | RC_CMD_SPLIT_SUM},
    {"PEXPIREAT", RC_CMD_IDEMPOTENT},
    {"EXPIREAT", RC_CMD_IDEMPOTENT},
    {"PERSIST", RC_CMD_IDEMPOTENT},
    {"EVAL", RC_CMD_EVAL},
    {"EVALSHA", RC_CMD_EVAL},
    {"EVAL_RO", RC_CMD_EVAL | RC_CMD_IDEMPOTENT},
    {"EVALSHA_RO", RC_CMD_EVAL | RC_CMD_IDEMPOTENT},
    {"FCALL", RC_CMD_EVAL},
    {"FCALL_RO", RC_CMD_EVAL | RC_CMD_IDEMPOTENT},
    {"PING", RC_CMD_KEYLESS | RC_CMD_IDEMPOTENT},
    {"ECHO", RC_CMD_KEYLESS | RC_CMD_IDEMPOTENT},
    {"INFO", RC_CMD_KEYLESS | RC_CMD_IDEMPOTENT},
    {"TIME", RC_CMD_KEYLESS | RC_CMD_IDEMPOTENT},
    {"DBSIZE", RC_CMD_KEYLESS | RC_CMD_IDEMPOTENT},
    {"CLUSTER", RC_CMD_KEYLESS},
    {"SCRIPT", RC_CMD_KEYLESS},
    {"FUNCTION", RC_CMD_KEYLESS},
    {"CONFIG", RC_CMD_KEYLESS},
    {"CLIENT", RC_CMD_KEYLESS},
    {"COMMAND", RC_CMD_KEYLESS | RC_CMD_IDEMPOTENT},
    {"DEBUG", RC_CMD_KEYLESS},
    {"FLUSHALL", RC_CMD_KEYLESS},
    {"FLUSHDB", RC_CMD_KEYLESS},
    {"RANDOMKEY", RC_CMD_KEYLESS | RC_CMD_IDEMPOTENT},
    {"KEYS", RC_CMD_KEYLESS | RC_CMD_IDEMPOTENT},
    {"SCAN", RC_CMD_KEYLESS | RC_CMD_IDEMPOTENT},
    {"ROLE", RC_CMD_KEYLESS | RC_CMD_IDEMPOTENT},
    {"MEMORY", RC_CMD_KEYLESS},
    {"SLOWLOG", RC_CMD_KEYLESS},
    {"LATENCY", RC_CMD_KEYLESS},
    {"LASTSAVE", RC_CMD_KEYLESS | RC_CMD_IDEMPOTENT},
    {"WAIT", RC_CMD_KEYLESS},
    {"READONLY", RC_CMD_KEYLESS | RC_CMD_IDEMPOTENT},
    {"READWRITE", RC_CMD_KEYLESS | RC_CMD_IDEMPOTENT},
    {"ASKING", RC_CMD_KEYLESS | RC_CMD_IDEMPOTENT},
    {"HELLO", RC_CMD_KEYLESS},
    {"AUTH", RC_CMD_KEYLESS},
    {"SAVE", RC_CMD_KEYLESS},
    {"BGSAVE", RC_CMD_KEYLESS},
};

int rc__cmd_flags(const char *name, size_t len)
{
    if (len == 0)
        return 0;
    /* The hot ones first, without the table walk. */
    if (len == 3 && (name[1] | 0x20) == 'e' && (name[2] | 0x20) == 't') {
        if ((name[0] | 0x20) == 'g')
            return RC_CMD_READ | RC_CMD_IDEMPOTENT;
        if ((name[0] | 0x20) == 's')
            return RC_CMD_IDEMPOTENT;
    }
    for (size_t i = 0; i < sizeof cmdtab / sizeof cmdtab[0]; i++)
        if ((cmdtab[i].name[0] | 0x20) == (name[0] | 0x20) &&
            strlen(cmdtab[i].name) == len && strncasecmp(cmdtab[i].name, name, len) == 0)
            return cmdtab[i].flags;
    return 0;
}

int rc__cmd_key(int flags, int argc, const char **argv, const size_t *argvlen)
{
    if (flags & RC_CMD_KEYLESS)
        return -1;
    if (flags & RC_CMD_EVAL) {
        if (argc < 4 || argvlen[2] == 0 || argvlen[2] > 9)
            return -1;
        long numkeys = 0;
        for (size_t i = 0; i < argvlen[2]; i++) {
            char ch = argv[2][i];
            if (ch < '0' || ch > '9')
                return -1;
            numkeys = numkeys * 10 + (ch - '0');
        }
        return numkeys > 0 ? 3 : -1;
    }
    return argc >= 2 ? 1 : -1;
}

/* Parses a decimal in s[0..len) into *out (0..max). Returns 0 or -1. */
static int parse_uint(const char *s, size_t len, unsigned long max, unsigned long *out)
{
    unsigned long v = 0;
    if (len == 0 || len > 10)
        return -1;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (unsigned long)(s[i] - '0');
    }
    if (v > max)
        return -1;
    *out = v;
    return 0;
}

int rc__parse_addr(const char *s, size_t len, char *host, size_t hostcap, int *port)
{
    const char *colon = NULL, *hs = s;
    size_t hl;
    unsigned long p;

    for (size_t i = len; i > 0; i--)
        if (s[i - 1] == ':') {
            colon = s + i - 1;
            break;
        }
    if (colon == NULL)
        return -EINVAL;
    hl = (size_t)(colon - s);
    if (hl >= 2 && s[0] == '[' && s[hl - 1] == ']') {
        hs = s + 1;
        hl -= 2;
    }
    if (hl >= hostcap || memchr(hs, ',', hl) != NULL)
        return -EINVAL;
    if (parse_uint(colon + 1, len - (size_t)(colon + 1 - s), 65535, &p) < 0 || p == 0)
        return -EINVAL;
    memcpy(host, hs, hl);
    host[hl] = '\0';
    *port = (int)p;
    return 0;
}

int rc__parse_redirect(const char *s, size_t len, unsigned *slot, char *host,
                       size_t hostcap, int *port)
{
    int kind;
    size_t i;
    const char *sp;
    unsigned long v;

    if (len > 6 && memcmp(s, "MOVED ", 6) == 0) {
        kind = 1;
        i = 6;
    } else if (len > 4 && memcmp(s, "ASK ", 4) == 0) {
        kind = 2;
        i = 4;
    } else {
        return 0;
    }
    sp = memchr(s + i, ' ', len - i);
    if (sp == NULL || parse_uint(s + i, (size_t)(sp - (s + i)), RC_SLOTS - 1, &v) < 0)
        return 0;
    *slot = (unsigned)v;
    sp++;
    /* "MOVED 3999 :6380" means the host of the node that answered. */
    if ((size_t)(sp - s) < len && *sp == ':') {
        if (parse_uint(sp + 1, len - (size_t)(sp + 1 - s), 65535, &v) < 0 || v == 0)
            return 0;
        host[0] = '\0';
        *port = (int)v;
        return kind;
    }
    if (rc__parse_addr(sp, len - (size_t)(sp - s), host, hostcap, port) < 0)
        return 0;
    return kind;
}

static bool has_prefix(const char *s, size_t len, const char *p)
{
    size_t pl = strlen(p);
    return len >= pl && memcmp(s, p, pl) == 0;
}

bool rc__retryable_error(const char *s, size_t len)
{
    return has_prefix(s, len, "TRYAGAIN") || has_prefix(s, len, "CLUSTERDOWN") ||
           has_prefix(s, len, "LOADING") || has_prefix(s, len, "MASTERDOWN");
}

/* Fills one address of a range from a node entry [host, port, ...]. */
static int parse_node(const rc_reply *e, const char *self_host, char *host, int *port)
{
    const rc_reply *h, *p;

    if (e->type != RC_REPLY_ARRAY || e->elements < 2)
        return RC_EPROTO;
    h = e->element[0];
    p = e->element[1];
    if (p->type != RC_REPLY_INTEGER || p->integer <= 0 || p->integer > 65535)
        return RC_EPROTO;
    if (h->type == RC_REPLY_NIL || (h->type == RC_REPLY_STRING &&
                                    (h->len == 0 || (h->len == 1 && h->str[0] == '?')))) {
        if (strlen(self_host) >= RC_HOST_MAX)
            return RC_EPROTO;
        strcpy(host, self_host);
    } else if (h->type == RC_REPLY_STRING && h->len < RC_HOST_MAX &&
               memchr(h->str, '\0', h->len) == NULL) {
        memcpy(host, h->str, h->len);
        host[h->len] = '\0';
    } else {
        return RC_EPROTO;
    }
    *port = (int)p->integer;
    return 0;
}

int rc__parse_slots(const rc_reply *r, const char *self_host, rc__range **out)
{
    rc__range *ranges = NULL;
    int n = 0, rc;

    *out = NULL;
    if (r == NULL || r->type != RC_REPLY_ARRAY)
        return RC_EPROTO;
    if (r->elements > RC_SLOTS)
        return RC_EPROTO;
    if (r->elements > 0 && (ranges = calloc(r->elements, sizeof *ranges)) == NULL)
        return RC_ENOMEM;
    for (size_t i = 0; i < r->elements; i++) {
        const rc_reply *e = r->element[i];
        rc__range *g = &ranges[n];

        if (e->type != RC_REPLY_ARRAY || e->elements < 3 ||
            e->element[0]->type != RC_REPLY_INTEGER ||
            e->element[1]->type != RC_REPLY_INTEGER) {
            rc = RC_EPROTO;
            goto fail;
        }
        if (e->element[0]->integer < 0 || e->element[1]->integer >= RC_SLOTS ||
            e->element[0]->integer > e->element[1]->integer) {
            rc = RC_EPROTO;
            goto fail;
        }
        g->start = (unsigned)e->element[0]->integer;
        g->end = (unsigned)e->element[1]->integer;
        for (size_t j = 2; j < e->elements && g->naddrs < 1 + RC_MAX_REPLICAS; j++) {
            rc = parse_node(e->element[j], self_host, g->addrs[g->naddrs].host,
                            &g->addrs[g->naddrs].port);
            if (rc < 0)
                goto fail;
            g->naddrs++;
        }
        n++;
    }
    *out = ranges;
    return n;
fail:
    free(ranges);
    return rc;
}

static size_t ndigits(size_t v)
{
    size_t n = 1;
    while (v >= 10) {
        v /= 10;
        n++;
    }
    return n;
}

size_t rc__format_len(int argc, const char **argv, const size_t *argvlen)
{
    size_t n = 1 + ndigits((size_t)argc) + 2;
    (void)argv;
    for (int i = 0; i < argc; i++)
        n += 1 + ndigits(argvlen[i]) + 2 + argvlen[i] + 2;
    return n;
}

/* Writes the decimal v at p and returns the end. */
static char *put_uint(char *p, size_t v)
{
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        *p++ = tmp[--n];
    return p;
}

size_t rc__format(char *dst, int argc, const char **argv, const size_t *argvlen)
{
    char *p = dst;
    *p++ = '*';
    p = put_uint(p, (size_t)argc);
    *p++ = '\r';
    *p++ = '\n';
    for (int i = 0; i < argc; i++) {
        *p++ = '$';
        p = put_uint(p, argvlen[i]);
        *p++ = '\r';
        *p++ = '\n';
        memcpy(p, argv[i], argvlen[i]);
        p += argvlen[i];
        *p++ = '\r';
        *p++ = '\n';
    }
    return (size_t)(p - dst);
}
