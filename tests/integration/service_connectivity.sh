#!/usr/bin/env bash
# Production connectivity of the binary:
#   - librdkafka properties passed through ([kafka] keys with a dot): an
#     unknown one, a bad value and a reserved one refuse the start with an
#     error naming the property (never a secret's value); good ones start;
#   - Redis AUTH with an ACL user restricted to what cachesvc needs (the
#     rules docs/redis.md recommends), the password from
#     CACHESVC_REDIS_PASSWORD: reads, fills and the delayed delete work; a
#     wrong password refuses the start with the node named, and no log line
#     holds the password;
#   - PostgreSQL with scram-sha-256 passwords: a passfile (PGPASSFILE), a
#     password in the URL (logged redacted), none (refused), and TLS with
#     sslmode=verify-full against a test CA (a wrong CA is refused).
. "$(dirname "$0")/../support/service_lib.sh"
P=25800; RP=25810; PGP=25830
U=http://127.0.0.1:$P

# refused NAME WANT [flags...]: the binary must exit non-zero by itself
# (not hang) with WANT in its log.
refused() {
  local name=$1 want=$2 rc; shift 2
  timeout 40 "$CACHESVC_BIN" --server.listen=127.0.0.1:$P --server.workers=2 "$@" \
    >"$T/$name.log" 2>&1
  rc=$?
  if [ $rc -ne 0 ] && [ $rc -ne 124 ] && grep -qF -- "$want" "$T/$name.log"; then
    ok "$name: refused ($(grep -F -- "$want" "$T/$name.log" | head -1 | sed 's/^ts=[^ ]* //'))"
  else
    fail "$name: rc=$rc, '$want' not in the log"; tail -5 "$T/$name.log"
  fi
}
# no_secret WORD: no log of this test holds WORD.
no_secret() {
  if grep -rqF -- "$1" "$T"/*.log; then fail "a log holds the secret: $(grep -rlF -- "$1" "$T"/*.log)"
  else ok "no log holds the secret"; fi
}
SQL="--store.url=sqlite:$T/svc.db"

# ---- Kafka properties (embedded cluster) -----------------------------------
refused kafka-unknown "kafka property no.such.property: unknown" $SQL --kafka.no.such.property=1
refused kafka-bad-value "kafka property socket.timeout.ms" $SQL --kafka.socket.timeout.ms=soon
refused kafka-reserved "kafka property enable.auto.commit may not be overridden" $SQL \
  --kafka.enable.auto.commit=false
CACHESVC_KAFKA_PROP_SASL_PASSWORDX=hunter2-kafka refused kafka-secret \
  "kafka property sasl.passwordx" $SQL
start_svc kafka-good $P $SQL --kafka.client.id=ops-test --kafka.socket.timeout.ms=15000 \
  --kafka.fetch.wait.max.ms=20 --kafka.security.protocol=SASL_SSL --kafka.sasl.mechanisms=PLAIN \
  --kafka.sasl.username=u --kafka.sasl.password=hunter2-kafka || { fail "start with good properties"; finish; }
KPID=$LAST_PID
wait_ready $U; expect 200 "" "ready with pass-through properties (embedded: security ones not applied)"
req PUT $U/v1/items/k1 '{"stock":5}' "${ADMIN[@]}"; expect 201 "" "create"
req POST $U/v1/items/k1/decrement '{"user_id":"u1","qty":1}'; expect 200 "" "decrement"
stop_svc $KPID
no_secret hunter2-kafka

# ---- Redis: AUTH with a restricted ACL user -------------------------------
RPW=rpw-$(od -An -N9 -tx1 /dev/urandom | tr -d ' \n')
ACL='~stock:* resetchannels -@all +get +set +unlink +del +eval +evalsha +script|load +scan +ping +cluster|slots +readonly +asking'
CLEANUPS+=("'$SRC/scripts/redis-cluster' down --dir '$T/redis'")
SEEDS=$(REDIS_CLUSTER_PASSWORD=$RPW "$SRC/scripts/redis-cluster" up --dir "$T/redis" --port $RP \
          --user cachesvc --acl "$ACL" | tail -1)
[ -n "$SEEDS" ] || { fail "redis-cluster up with a password"; finish; }
rget() { REDISCLI_AUTH=$RPW redis-cli -c -p $RP --no-auth-warning GET "stock:{$1}" 2>/dev/null; }

# The eviction protocol, so that the delayed delete leaves a tombstone to
# see (the update protocol spares the writer's copy at the same version).
CACHESVC_REDIS_PASSWORD=$RPW start_svc redis-auth $P $SQL --redis.url="$SEEDS" \
  --redis.user=cachesvc --redis.connections=2 --kafka.invalidation_delay_ms=100 \
  --cache.local_ttl_ms=500 --kafka.broadcast_mode=evict || { fail "start with redis.user/password"; finish; }
RPID=$LAST_PID
wait_ready $U; expect 200 '"redis":"up"' "ready, Redis up with AUTH"
check "the password is not on the command line" \
  bash -c "! tr '\0' ' ' </proc/$RPID/cmdline | grep -qF -- '$RPW'"
req PUT $U/v1/items/hot '{"stock":100}' "${ADMIN[@]}"; expect 201 "" "create"
v0=$(json_num version <<<"$BODY")
for i in $(seq 1 150); do [ "$(rget hot)" = "$v0|~" ] && break; sleep 0.1; done
check "the delayed delete (EVALSHA) left its tombstone ($(rget hot))" [ "$(rget hot)" = "$v0|~" ]
sleep 0.6
req GET $U/v1/items/hot; expect 200 "\"version\":$v0" "read"
check "Redis filled through the ACL user ($(rget hot))" grep -q "^$v0|100|" <<<"$(rget hot)"
sleep 0.6
req GET $U/v1/items/hot; check "X-Cache redis after the local TTL" [ "$(header X-Cache)" = redis ]
curl -s $U/metrics >"$T/metrics"
check "no AUTH refused (metrics)" \
  bash -c "! grep '^cachesvc_redis_node_auth_failures_total' '$T/metrics' | grep -qv ' 0$'"
check "auth failure counter exported" grep -q '^cachesvc_redis_node_auth_failures_total{' "$T/metrics"
# Killed connections come back authenticated.
for p in $(seq $RP $((RP + 5))); do
  REDISCLI_AUTH=$RPW redis-cli -p $p --no-auth-warning client kill user cachesvc >/dev/null
done
sleep 0.6
req GET $U/v1/items/hot; expect 200 "\"version\":$v0" "read after Redis dropped every connection"
stop_svc $RPID

CACHESVC_REDIS_PASSWORD=wrong-$RPW refused redis-wrong "redis refused the credentials" $SQL \
  --redis.url="$SEEDS" --redis.user=cachesvc
check "the refusal names the node and the answer" \
  grep -q 'err=".*127.0.0.1:258[0-9][0-9] answered AUTH with WRONGPASS' "$T/redis-wrong.log"
refused redis-nopass "NOAUTH" $SQL --redis.url="$SEEDS"
no_secret "$RPW"

# ---- PostgreSQL: passwords and TLS -----------------------------------------
PG=$("$SRC/scripts/postgres" up --dir "$T/pg" --port $PGP | tail -1) || { fail "postgres up"; finish; }
CLEANUPS+=("'$SRC/scripts/postgres' down --dir '$T/pg'")
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
psql_pg() { as_pg "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$T/pg" -p $PGP -U postgres -d postgres "$@"; }
PPW=ppw-$(od -An -N9 -tx1 /dev/urandom | tr -d ' \n')
psql_pg -c "CREATE ROLE shop LOGIN PASSWORD '$PPW'" -c "CREATE DATABASE shopdb OWNER shop" \
        -c "CREATE ROLE shoptls LOGIN PASSWORD '$PPW'" -c "CREATE DATABASE shoptlsdb OWNER shoptls" \
  || { fail "create roles"; finish; }
HBA="$T/pg/data/pg_hba.conf"
{ echo "hostnossl all shoptls 127.0.0.1/32 reject"
  echo "hostssl all shoptls 127.0.0.1/32 scram-sha-256"
  echo "host all shop 127.0.0.1/32 scram-sha-256"
  cat "$HBA"; } >"$HBA.new" && cat "$HBA.new" >"$HBA" && rm -f "$HBA.new"
# A test CA and a server certificate for 127.0.0.1 (verify-full checks it).
mkdir -p "$T/tls"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=cachesvc test CA" \
  -keyout "$T/tls/ca.key" -out "$T/tls/ca.crt" 2>/dev/null
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=other CA" \
  -keyout "$T/tls/other.key" -out "$T/tls/other.crt" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -addext "subjectAltName=IP:127.0.0.1" \
  -keyout "$T/pg/data/server.key" -out "$T/tls/server.csr" 2>/dev/null
openssl x509 -req -in "$T/tls/server.csr" -CA "$T/tls/ca.crt" -CAkey "$T/tls/ca.key" \
  -CAcreateserial -days 2 -copy_extensions copy -out "$T/pg/data/server.crt" 2>/dev/null
chown postgres:postgres "$T/pg/data/server.key" "$T/pg/data/server.crt" 2>/dev/null
chmod 600 "$T/pg/data/server.key"
psql_pg -c "ALTER SYSTEM SET ssl = on" -c "SELECT pg_reload_conf()" >/dev/null \
  || { fail "enable ssl"; finish; }
sleep 0.5
PGURL="postgresql://shop@127.0.0.1:$PGP/shopdb"

refused pg-no-password "no password supplied" --store.url="$PGURL"
refused pg-wrong-password "password authentication failed for user" \
  --store.url="postgresql://shop:wrong-$PPW@127.0.0.1:$PGP/shopdb"
printf '127.0.0.1:%s:shopdb:shop:%s\n' $PGP "$PPW" >"$T/pgpass"; chmod 600 "$T/pgpass"
PGPASSFILE=$T/pgpass start_svc pg-passfile $P --store.url="$PGURL" \
  || { fail "start with PGPASSFILE"; finish; }
wait_ready $U; expect 200 "" "ready: password from PGPASSFILE (scram-sha-256)"
req PUT $U/v1/items/pg1 '{"stock":3}' "${ADMIN[@]}"; expect 201 "" "create in PostgreSQL"
req POST $U/v1/items/pg1/decrement '{"user_id":"u1","qty":1}'; expect 200 "" "decrement in PostgreSQL"
stop_svc $LAST_PID

start_svc pg-url-password $P --store.url="postgresql://shop:$PPW@127.0.0.1:$PGP/shopdb" \
  || { fail "start with a password in the URL"; finish; }
wait_ready $U; expect 200 "" "ready: password in the URL"
check "the URL is logged with its password redacted" \
  grep -q 'postgresql://shop:<redacted>@127.0.0.1' "$T/pg-url-password.log"
stop_svc $LAST_PID

TLSURL="postgresql://shoptls@127.0.0.1:$PGP/shoptlsdb?sslmode=verify-full&sslrootcert=$T/tls/ca.crt"
printf '127.0.0.1:%s:shoptlsdb:shoptls:%s\n' $PGP "$PPW" >>"$T/pgpass"
PGPASSFILE=$T/pgpass start_svc pg-tls $P --store.url="$TLSURL" \
  || { fail "start with sslmode=verify-full"; finish; }
wait_ready $U; expect 200 "" "ready: TLS verify-full (the role is refused without TLS)"
req PUT $U/v1/items/tls1 '{"stock":3}' "${ADMIN[@]}"; expect 201 "" "create over TLS"
stop_svc $LAST_PID
PGPASSFILE=$T/pgpass refused pg-tls-wrong-ca "store open failed" \
  --store.url="postgresql://shoptls@127.0.0.1:$PGP/shoptlsdb?sslmode=verify-full&sslrootcert=$T/tls/other.crt"
check "the TLS refusal says why" grep -q "certificate verify failed" "$T/pg-tls-wrong-ca.log"
PGPASSFILE=$T/pgpass PGSSLMODE=disable refused pg-tls-disabled "store open failed" \
  --store.url="postgresql://shoptls@127.0.0.1:$PGP/shoptlsdb"
no_secret "$PPW"
finish
