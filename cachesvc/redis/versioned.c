/*
 * versioned.c: cached items as "<version>|<payload>" strings, and the two
 * Lua scripts that keep an older version from replacing a newer one.
 *
 * A delete does not leave the key empty: it writes a tombstone,
 * "<version>|~", kept for a while (the caller's tomb_px_ms). Without it, a
 * reader that read version v from the database before v+1 committed could
 * fill v after the delete of v+1 had run on an empty key, and every
 * instance without a floor would serve v until its expiry (memcache's
 * leases close the same window). With it, a fill older than the tombstone
 * is refused. A fill at the tombstone's own version is taken: the delete of
 * v+1 removes the copies that were current before v+1 committed, and a
 * reader holding v+1 read it after that commit (a later commit would have
 * left a newer tombstone behind it).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cachesvc/redis/rc_int.h"

/* Both scripts compare versions as decimal strings (length first, then
 * bytes), so the full uint64 range stays exact: Lua numbers are doubles.
 * A stored value whose version part does not parse counts as older. */
#define RC_LUA_VERSION_OF                                                     \
    "local function ver(v)\n"                                                 \
    "  if not v then return nil end\n"                                        \
    "  local sep = string.find(v, '|', 1, true)\n"                            \
    "  if not sep then return nil end\n"                                      \
    "  local s = string.sub(v, 1, sep - 1)\n"                                 \
    "  if not string.match(s, '^[1-9]%d*$') and s ~= '0' then return nil end\n" \
    "  return s\n"                                                            \
    "end\n"                                                                   \
    "local function newer(a, b)\n" /* a > b */                                \
    "  if #a ~= #b then return #a > #b end\n"                                 \
    "  return a > b\n"                                                        \
    "end\n"                                                                   \
    "local function tomb(v)\n"                                                \
    "  return v ~= nil and string.sub(v, -2) == '|~'\n"                       \
    "end\n"

/* KEYS[1]; ARGV[1] version, ARGV[2] payload, ARGV[3] px (<= 0: no TTL).
 * Returns 1 written, 0 refused (a stored value at the same version or
 * newer, or a tombstone newer than the given version). */
const char *const rc__fill_script =
    RC_LUA_VERSION_OF
    "local v = redis.call('GET', KEYS[1])\n"
    "local cur = ver(v)\n"
    "if cur then\n"
    "  if tomb(v) then\n"
    "    if newer(cur, ARGV[1]) then return 0 end\n"
    "  elseif not newer(ARGV[1], cur) then return 0 end\n"
    "end\n"
    "local px = tonumber(ARGV[3])\n"
    "if px and px > 0 then\n"
    "  redis.call('SET', KEYS[1], ARGV[1] .. '|' .. ARGV[2], 'PX', px)\n"
    "else\n"
    "  redis.call('SET', KEYS[1], ARGV[1] .. '|' .. ARGV[2])\n"
    "end\n"
    "return 1\n";

/* KEYS[1]; ARGV[1] version, ARGV[2] the tombstone's px, ARGV[3] "1" to
 * spare a copy at exactly the version. Returns 1 when the key now holds a
 * tombstone at the version (a copy at or below it, an older tombstone, an
 * unparsable value or nothing was there), 0 when a newer version (a copy
 * or a tombstone), or a spared copy at the version, is kept. */
const char *const rc__delete_script =
    RC_LUA_VERSION_OF
    "local v = redis.call('GET', KEYS[1])\n"
    "local cur = ver(v)\n"
    "if cur and newer(cur, ARGV[1]) then return 0 end\n"
    "if cur and tomb(v) and cur == ARGV[1] then return 1 end\n"
    "if cur and cur == ARGV[1] and ARGV[3] == '1' then return 0 end\n"
    "redis.call('SET', KEYS[1], ARGV[1] .. '|~', 'PX', tonumber(ARGV[2]))\n"
    "return 1\n";

int rc__parse_versioned(const char *s, size_t len, uint64_t *version,
                        const char **payload, size_t *plen)
{
    uint64_t v = 0;
    size_t i;

    for (i = 0; i < len && s[i] != '|'; i++) {
        if (s[i] < '0' || s[i] > '9' || i >= 20)
            return RC_EBADVALUE;
        uint64_t d = (uint64_t)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return RC_EBADVALUE;
        v = v * 10 + d;
    }
    if (i == 0 || i == len)
        return RC_EBADVALUE;
    *version = v;
    *payload = s + i + 1;
    *plen = len - i - 1;
    return 0;
}

int rc_item_key(char *dst, size_t cap, const char *sku, size_t skulen)
{
    if (cap < skulen + 9 || skulen > INT32_MAX - 9)
        return RC_ENOSPC;
    memcpy(dst, "stock:{", 7);
    memcpy(dst + 7, sku, skulen);
    dst[7 + skulen] = '}';
    dst[8 + skulen] = '\0';
    return (int)skulen + 8;
}

int rc_get_versioned(rc_cluster *c, const char *key, size_t keylen,
                     uint64_t *version, char *buf, size_t cap, size_t *len,
                     int64_t deadline)
{
    const char *argv[2] = {"GET", key};
    size_t argvlen[2] = {3, keylen};
    rc_reply *r = NULL;
    const char *payload;
    size_t plen;
    int rc;

    rc = rc_command(c, 2, argv, argvlen, deadline, &r);
    if (rc < 0)
        goto out;
    if (r->type == RC_REPLY_NIL) {
        rc = 0;
        goto out;
    }
    if (r->type != RC_REPLY_STRING) {
        rc = RC_EPROTO;
        goto out;
    }
    if ((rc = rc__parse_versioned(r->str, r->len, version, &payload, &plen)) < 0)
        goto out;
    if (plen == 1 && payload[0] == '~') {   /* a tombstone */
        *len = 0;
        rc = 2;
        goto out;
    }
    *len = plen;
    if (plen > cap) {
        rc = RC_ENOSPC;
        goto out;
    }
    memcpy(buf, payload, plen);
    rc = 1;
out:
    rc_reply_free(r);
    return rc;
}

/* Runs one of the scripts: EVALSHA, then EVAL if the node answers
 * NOSCRIPT (which also caches the script there). Returns the script's
 * integer result (0 or 1) or an RC_E* code. */
static int run_script(rc_cluster *c, const char *script, const char *sha,
                      int argc, const char **argv, size_t *argvlen, int64_t deadline)
{
    rc_reply *r = NULL;
    int rc;

    deadline = rc__deadline(c, deadline);
    argv[0] = "EVALSHA";
    argvlen[0] = 7;
    argv[1] = sha;
    argvlen[1] = 40;
    rc = rc_command(c, argc, argv, argvlen, deadline, &r);
    if (rc == RC_ESERVER && r->len >= 8 && memcmp(r->str, "NOSCRIPT", 8) == 0) {
        rc_reply_free(r);
        r = NULL;
        argv[0] = "EVAL";
        argvlen[0] = 4;
        argv[1] = script;
        argvlen[1] = strlen(script);
        rc = rc_command(c, argc, argv, argvlen, deadline, &r);
    }
    if (rc < 0)
        goto out;
    if (r->type != RC_REPLY_INTEGER) {
        rc = RC_EPROTO;
        goto out;
    }
    rc = r->integer != 0;
out:
    rc_reply_free(r);
    return rc;
}

int rc_fill_if_newer(rc_cluster *c, const char *key, size_t keylen,
                     uint64_t version, const void *payload, size_t len,
                     int64_t px_ms, int64_t deadline)
{
    char ver[24], px[24];
    const char *argv[7] = {NULL, NULL, "1", key, ver, payload, px};
    size_t argvlen[7] = {0, 0, 1, keylen, 0, len, 0};

    if (len == 1 && ((const char *)payload)[0] == '~')
        return RC_EINVAL;   /* the tombstone's mark */
    argvlen[4] = (size_t)snprintf(ver, sizeof ver, "%" PRIu64, version);
    argvlen[6] = (size_t)snprintf(px, sizeof px, "%" PRId64, px_ms > 0 ? px_ms : 0);
    return run_script(c, rc__fill_script, c->fill_sha, 7, argv, argvlen, deadline);
}

static int delete_versioned(rc_cluster *c, const char *key, size_t keylen, uint64_t version,
                            int64_t tomb_px_ms, int spare_equal, int64_t deadline)
{
    char ver[24], px[24];
    const char *argv[7] = {NULL, NULL, "1", key, ver, px, spare_equal ? "1" : "0"};
    size_t argvlen[7] = {0, 0, 1, keylen, 0, 0, 1};

    argvlen[4] = (size_t)snprintf(ver, sizeof ver, "%" PRIu64, version);
    argvlen[5] = (size_t)snprintf(px, sizeof px, "%" PRId64, tomb_px_ms > 0 ? tomb_px_ms : 1);
    return run_script(c, rc__delete_script, c->delete_sha, 7, argv, argvlen, deadline);
}

int rc_delete_if_not_newer(rc_cluster *c, const char *key, size_t keylen,
                           uint64_t version, int64_t tomb_px_ms, int64_t deadline)
{
    return delete_versioned(c, key, keylen, version, tomb_px_ms, 0, deadline);
}

int rc_delete_if_older(rc_cluster *c, const char *key, size_t keylen,
                       uint64_t version, int64_t tomb_px_ms, int64_t deadline)
{
    return delete_versioned(c, key, keylen, version, tomb_px_ms, 1, deadline);
}

/* ------------------------------------------------------------------------ */
/* SHA-1 (FIPS 180-1), only to name the scripts for EVALSHA.                 */

#define ROL(v, n) (((v) << (n)) | ((v) >> (32 - (n))))

static void sha1_block(uint32_t h[5], const uint8_t *p)
{
    uint32_t w[80], a, b, c, d, e, f, k, t;
    int i;

    for (i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
               (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (; i < 80; i++)
        w[i] = ROL(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    a = h[0]; b = h[1]; c = h[2]; d = h[3]; e = h[4];
    for (i = 0; i < 80; i++) {
        if (i < 20) {
            f = (b & c) | (~b & d);
            k = 0x5a827999;
        } else if (i < 40) {
            f = b ^ c ^ d;
            k = 0x6ed9eba1;
        } else if (i < 60) {
            f = (b & c) | (b & d) | (c & d);
            k = 0x8f1bbcdc;
        } else {
            f = b ^ c ^ d;
            k = 0xca62c1d6;
        }
        t = ROL(a, 5) + f + e + k + w[i];
        e = d; d = c; c = ROL(b, 30); b = a; a = t;
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e;
}

void rc__sha1_hex(const void *data, size_t len, char hex[41])
{
    uint32_t h[5] = {0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476, 0xc3d2e1f0};
    const uint8_t *p = data;
    uint8_t tail[128];
    size_t n = len, tl;
    uint64_t bits = (uint64_t)len * 8;

    for (; n >= 64; n -= 64, p += 64)
        sha1_block(h, p);
    memset(tail, 0, sizeof tail);
    memcpy(tail, p, n);
    tail[n] = 0x80;
    tl = n + 1 + 8 <= 64 ? 64 : 128;
    for (int i = 0; i < 8; i++)
        tail[tl - 1 - i] = (uint8_t)(bits >> (8 * i));
    sha1_block(h, tail);
    if (tl == 128)
        sha1_block(h, tail + 64);
    for (int i = 0; i < 5; i++)
        snprintf(hex + 8 * i, 9, "%08x", h[i]);
}
