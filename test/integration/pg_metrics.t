#!/bin/bash
# Prometheus metrics: tenant_backup.metrics_address (off by default, refused at ALTER
# SYSTEM unless a numeric host:port of one interface) starts a worker of its own that
# serves GET /metrics only, one bounded request at a time (a silent client is dropped,
# it never holds the worker); the exposition passes promtool check metrics, names no
# locator or secret, and a real Prometheus scraping it answers queries with the
# catalog's values and raises the shipped alerts; the audit chain's state is served.
# Also promtool check rules / test rules on contrib/prometheus.
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/../lib/pg.sh"

command -v promtool >/dev/null && command -v prometheus >/dev/null ||
	skip_all "prometheus and promtool are not installed (make deps)"
CONTRIB=$(cd "$(dirname "$0")/../../contrib/prometheus" && pwd)

# ------------------------------------------------------------ alerting rules

out=$(promtool check rules "$CONTRIB/alerts.yml" 2>&1)
ok $? "promtool check rules accepts contrib/prometheus/alerts.yml"
like "$out" 'SUCCESS: 8 rules found' "with its eight rules"
out=$(cd "$CONTRIB" && promtool test rules alerts_test.yml 2>&1)
ok $? "promtool test rules: every alert fires when it should and only then (alerts_test.yml)"
[ $? -eq 0 ] || diag "$out"

# ------------------------------------------------------------ the setting

scratch_dir
mkdir -p "$D/store"
chown postgres "$D/store"
"$TB" keygen --out "$D/master.key" 2>/dev/null || { echo "Bail out! tenant-backup keygen failed ($TB)"; exit 1; }
chown postgres "$D/master.key"
MPORT=$(free_port)
pg_start "$D/pg" "$(free_port)" "tenant_backup.storage = 'file://$D/store'
tenant_backup.master_key_file = '$D/master.key'
tenant_backup.default_schedule = '100 years'
tenant_backup.naptime = 200
archive_mode = on
archive_library = 'tenant_backup'
tenant_backup.archive_tenant = 'vault'"
psql_q "CREATE EXTENSION tenant_backup" >/dev/null || pg_bail "$D/pg/server.log" "CREATE EXTENSION failed"

is "$(psql_q "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'tenant_backup metrics'")" 0 \
	"metrics are off by default: no metrics worker"
for bad in "localhost:$MPORT" "0.0.0.0:$MPORT" "[::]:$MPORT" "::1:$MPORT" "127.0.0.1" "127.0.0.1:" \
	"127.0.0.1:0" "127.0.0.1:65536" "127.0.0.1:9x" "127.0.0.1:+90" "[::1]$MPORT" "127.0.0.1 :$MPORT" \
	"127.0.0.1:$MPORT -x"; do
	out=$(psql_q "ALTER SYSTEM SET tenant_backup.metrics_address = '$bad'" 2>&1)
	like "$out" 'ERROR:  invalid value for parameter "tenant_backup.metrics_address"' \
		"ALTER SYSTEM refuses metrics_address '$bad'"
done
out=$(psql_q "ALTER SYSTEM SET tenant_backup.metrics_address = '0.0.0.0:$MPORT'" 2>&1)
like "$out" 'DETAIL:  Metrics name every tenant: give the address of one interface' \
	"a wildcard address is refused with why (metrics name every tenant)"
out=$(psql_q "ALTER SYSTEM SET tenant_backup.metrics_address = 'localhost:$MPORT'" 2>&1)
like "$out" 'names are not resolved' "a host name is refused: numeric addresses only"
unlike "$(grep -c metrics_address "$D/pg/data/postgresql.auto.conf" 2>/dev/null)" '^[1-9]' \
	"nothing refused reached postgresql.auto.conf"
psql_q "ALTER SYSTEM SET tenant_backup.metrics_address = '[::1]:$MPORT'" >/dev/null
ok $? "ALTER SYSTEM takes an IPv6 address in brackets"
psql_q "ALTER SYSTEM SET tenant_backup.metrics_address = '127.0.0.1:$MPORT'" >/dev/null
ok $? "and 127.0.0.1:port"
pg_restart "$D/pg"
is "$(wait_for 50 0.2 1 psql_q "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'tenant_backup metrics'")" 1 \
	"after a restart a metrics worker of its own runs (not the launcher)"
is "$(psql_q "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'tenant_backup launcher'")" 1 \
	"beside the launcher"

# ------------------------------------------------------------ the catalog behind it

URL=http://127.0.0.1:$MPORT/metrics
psql_q "CREATE DATABASE acme_db" "CREATE DATABASE doomed" >/dev/null
PGDATABASE=acme_db psql_q "CREATE TABLE t AS SELECT g FROM generate_series(1, 5000) g" >/dev/null
psql_q "SELECT tenant_backup.tenant_create('acme')" "SELECT tenant_backup.tenant_create('globex')" \
	"SELECT tenant_backup.tenant_create('shop')" "SELECT tenant_backup.tenant_create('vault', 'dedicated')" \
	"SELECT tenant_backup.tenant_add_database('acme', 'postgres', 'acme_db')" \
	"SELECT tenant_backup.tenant_add_database('globex', 'postgres', 'doomed')" \
	"SELECT tenant_backup.tenant_add_database('shop', 'mysql', 'mysql://app:Hunter2-secret@db.example/shopdb')" \
	"SELECT tenant_backup.tenant_set_schedule('acme', '6 hours')" >/dev/null
psql_q "DROP DATABASE doomed" >/dev/null
psql_q "SELECT tenant_backup.tenant_backup('acme', wait => true)" >/dev/null
ok $? "a backup of acme succeeded"
psql_q "SELECT tenant_backup.tenant_backup('globex', wait => true)" >/dev/null 2>&1
is "$(wait_for 100 0.2 failed psql_q "SELECT state FROM tenant_backup.jobs WHERE tenant = 'globex'")" failed \
	"a backup of globex (its database dropped) failed after its attempts"
psql_q "SELECT tenant_backup.tenant_backup('shop')" >/dev/null
psql_q "SELECT tenant_backup.agent_hello('mysql-1.example', '{mysql}', 'host1', '1.0')" \
	"UPDATE tenant_backup.agent_registry SET jobs_done = 4, jobs_failed = 1,
	 last_seen = now() - interval '20 minutes' WHERE name = 'mysql-1.example'" >/dev/null
ACME_SOURCE=$(psql_q "SELECT id FROM tenant_backup.sources WHERE tenant = 'acme'")
ACME_FINISHED=$(psql_q "SELECT floor(extract(epoch FROM finished))::bigint FROM tenant_backup.backups
						WHERE tenant = 'acme' AND status = 'complete'")
ACME_STORED=$(psql_q "SELECT bytes_stored FROM tenant_backup.backups WHERE tenant = 'acme' AND status = 'complete'")

# The WAL archiver of the dedicated tenant vault: a segment switched out gets archived.
psql_q "SELECT pg_switch_wal()" >/dev/null
wal_archived() { psql_q "SELECT last_archived IS NOT NULL FROM tenant_backup._wal_archive_lag()"; }
is "$(wait_for 100 0.2 t wal_archived)" t "the archiver archived a WAL segment of vault"

# ------------------------------------------------------------ one scrape

curl -sS -o "$D/scrape.txt" -D "$D/scrape.head" "$URL"
ok $? "GET /metrics answers"
like "$(head -n 1 "$D/scrape.head")" '^HTTP/1.0 200 OK' "with 200"
like "$(cat "$D/scrape.head")" 'Content-Type: text/plain; version=0.0.4' "in the Prometheus text format"
like "$(cat "$D/scrape.head")" 'Connection: close' "and closes the connection"
out=$(promtool check metrics <"$D/scrape.txt" 2>&1)
ok $? "promtool check metrics finds nothing wrong with the exposition"
[ -z "$out" ] || diag "$out"
acme="{tenant=\"acme\",engine=\"postgres\",source_id=\"$ACME_SOURCE\"}"
like "$(grep -F "tenant_backup_last_success_timestamp_seconds$acme " "$D/scrape.txt")" " $ACME_FINISHED(\.[0-9]+)?$" \
	"acme's last success time is the catalog's"
is "$(grep -F "tenant_backup_last_backup_stored_bytes$acme " "$D/scrape.txt" | cut -d' ' -f2)" "$ACME_STORED" \
	"acme's stored size is the catalog's"
is "$(grep -F "tenant_backup_schedule_seconds$acme " "$D/scrape.txt" | cut -d' ' -f2)" 21600 "acme's schedule: 6 hours"
like "$(grep -F "tenant_backup_last_backup_duration_seconds$acme " "$D/scrape.txt")" ' [0-9.]+$' "its duration"
is "$(grep -F "tenant_backup_backup_overdue$acme " "$D/scrape.txt" | cut -d' ' -f2)" 0 "acme is not overdue"
is "$(grep -E '^tenant_backup_backup_consecutive_failures\{tenant="globex"' "$D/scrape.txt" | cut -d' ' -f2)" 1 \
	"globex: one backup failing since its last success (none)"
is "$(grep -E '^tenant_backup_backup_failures_total\{tenant="globex"' "$D/scrape.txt" | cut -d' ' -f2)" 1 \
	"globex: one failed backup job in all"
is "$(grep -E '^tenant_backup_jobs_queued\{tenant="shop",engine="mysql"' "$D/scrape.txt" | cut -d' ' -f2)" 1 \
	"shop: one job queued (no agent claims it)"
is "$(grep -E '^tenant_backup_jobs_running\{tenant="shop"' "$D/scrape.txt" | cut -d' ' -f2)" 0 "and none running"
is "$(grep -F 'tenant_backup_agent_jobs_done_total{agent="mysql-1.example"} ' "$D/scrape.txt" | cut -d' ' -f2)" 4 \
	"the agent's jobs done"
like "$(grep -F 'tenant_backup_engine_agent_last_seen_timestamp_seconds{engine="mysql"} ' "$D/scrape.txt")" \
	' [0-9]{10}' "the newest heartbeat of a mysql agent"
vault='{tenant="vault",engine="postgres"}'
like "$(grep -F "tenant_backup_wal_pending_files$vault " "$D/scrape.txt")" ' [0-9]+$' "vault's WAL files waiting"
like "$(grep -F "tenant_backup_wal_archive_lag_seconds$vault " "$D/scrape.txt")" ' [0-9.e+-]+$' "its archive lag"
like "$(grep -F "tenant_backup_wal_last_archived_timestamp_seconds$vault " "$D/scrape.txt")" ' [0-9]{10}' \
	"when the archiver last archived"
is "$(grep -F "tenant_backup_wal_gap$vault " "$D/scrape.txt" | cut -d' ' -f2)" 0 "no gap in vault's archive"
is "$(grep '^tenant_backup_audit_chain_ok ' "$D/scrape.txt" | cut -d' ' -f2)" 1 "the audit chain is intact"
unlike "$(cat "$D/scrape.txt")" 'Hunter2|shopdb|db\.example|acme_db|doomed' \
	"no locator, database name or password in the metrics"

# Label values are escaped per the exposition format (names are validated; escaped anyway).
is "$(psql_q "SELECT tenant_backup._metrics_label(E'a\"b\\\\c\nd')")" '"a\"b\\c\nd"' \
	"a label value's quote, backslash and line feed are escaped"

psql_q "CREATE ROLE ops LOGIN IN ROLE tenant_backup_operator" >/dev/null
like "$(PGUSER=ops psql_q "SELECT tenant_backup._metrics()")" '^# HELP tenant_backup_last_success_timestamp_seconds' \
	"an operator can read the same exposition with SELECT tenant_backup._metrics()"
psql_q "CREATE ROLE nobody LOGIN" >/dev/null
like "$(PGUSER=nobody psql_q "SELECT tenant_backup._metrics()" 2>&1)" 'permission denied' "a plain role cannot"

# ------------------------------------------------------------ only GET /metrics, bounded

is "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$MPORT/")" 404 "GET / is 404"
is "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$MPORT/metrics/../etc")" 404 "GET /metrics/../etc is 404"
is "$(curl -s -o /dev/null -w '%{http_code}' -X POST "$URL")" 404 "POST /metrics is 404"
is "$(printf 'GET /metrics\r\n\r\n' | timeout 10 python3 -c '
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(sys.stdin.buffer.read())
print(s.recv(100).split(b"\r\n")[0].decode())' "$MPORT")" "HTTP/1.0 404 Not Found" "a request line without HTTP version is 404"

# A client that connects and never sends: the worker drops it after its read timeout
# (3 s) and serves the next scrape; it never waits for ever.
python3 -c '
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
start = time.time()
s.settimeout(30)
got = s.recv(100)
print("closed after %.0f s, %d bytes" % (time.time() - start, len(got)))' "$MPORT" >"$D/silent.out" &
silent=$!
sleep 0.5
start=$(date +%s)
code=$(curl -s -m 20 -o /dev/null -w '%{http_code}' "$URL")
elapsed=$(($(date +%s) - start))
is "$code" 200 "a scrape behind a silent client is served"
ok "$([ "$elapsed" -le 6 ] && echo 0 || echo 1)" "within the silent client's read timeout (took ${elapsed} s)"
wait "$silent"
like "$(cat "$D/silent.out")" '^closed after [2-5] s, 0 bytes' "the silent client was closed without an answer"

# ------------------------------------------------------------ a real Prometheus

PPORT=$(free_port)
mkdir -p "$D/prom"
cp "$CONTRIB/alerts.yml" "$D/prom/alerts.yml"
cat >"$D/prom/prom.yml" <<EOF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [alerts.yml]
scrape_configs:
  - job_name: tenant_backup
    static_configs:
      - targets: ['127.0.0.1:$MPORT']
EOF
prometheus --config.file="$D/prom/prom.yml" --storage.tsdb.path="$D/prom/data" \
	--web.listen-address="127.0.0.1:$PPORT" >"$D/prom/prometheus.log" 2>&1 &
PROM_PID=$!
on_exit "kill $PROM_PID 2>/dev/null; wait $PROM_PID 2>/dev/null"

promql() { # QUERY: the first result's value, or nothing
	curl -s -G "http://127.0.0.1:$PPORT/api/v1/query" --data-urlencode "query=$1" |
		python3 -c 'import json, sys
r = json.load(sys.stdin)["data"]["result"]
print(r[0]["value"][1] if r else "")' 2>/dev/null
}
alert_state() { # ALERTNAME LABEL=VALUE: pending or firing, or nothing
	curl -s "http://127.0.0.1:$PPORT/api/v1/alerts" | python3 -c 'import json, sys
name, (k, v) = sys.argv[1], sys.argv[2].split("=", 1)
for a in json.load(sys.stdin)["data"]["alerts"]:
    if a["labels"].get("alertname") == name and a["labels"].get(k) == v:
        print(a["state"]); break' "$1" "$2" 2>/dev/null
}

is "$(wait_for 60 0.5 1 promql 'up{job="tenant_backup"}')" 1 "Prometheus scrapes the endpoint (up = 1)"
is "$(promql "tenant_backup_last_backup_stored_bytes{tenant=\"acme\",engine=\"postgres\"}")" "$ACME_STORED" \
	"a query for acme's stored bytes returns the catalog's value"
like "$(promql "tenant_backup_last_success_timestamp_seconds{tenant=\"acme\"}")" "^$ACME_FINISHED(\.[0-9]+)?$" \
	"and its last success time"
is "$(promql 'sum(tenant_backup_jobs_queued)')" 1 "the queue depth summed over tenants: 1"
is "$(promql 'tenant_backup_agent_jobs_done_total{agent="mysql-1.example"}')" 4 "the agent's jobs done"
like "$(wait_for 40 0.5 pending alert_state TenantBackupFailing tenant=globex)" '^(pending|firing)$' \
	"the shipped TenantBackupFailing alert is raised for globex"
is "$(wait_for 40 0.5 firing alert_state TenantBackupAgentMissing engine=mysql)" firing \
	"TenantBackupAgentMissing fires: the mysql agent was last seen 20 minutes ago"
is "$(alert_state TenantBackupFailing tenant=acme)" "" "no failing alert for acme"

# ------------------------------------------------------------ the audit chain

psql_q "ALTER TABLE tenant_backup.audit DISABLE TRIGGER audit_append_only" \
	"UPDATE tenant_backup.audit SET actor = 'mallory' WHERE id = (SELECT min(id) FROM tenant_backup.audit
	 WHERE tenant = 'acme')" \
	"ALTER TABLE tenant_backup.audit ENABLE TRIGGER audit_append_only" "SELECT pg_reload_conf()" >/dev/null
is "$(psql_q "SELECT ok FROM tenant_backup.tenant_audit_verify()")" f "an audit row was changed behind the log's back"
is "$(wait_for 40 0.5 0 promql 'tenant_backup_audit_chain_ok')" 0 \
	"after a reload the worker verified the chain again and Prometheus sees it broken"
is "$(wait_for 40 0.5 firing alert_state TenantBackupAuditChainBroken severity=critical)" firing \
	"TenantBackupAuditChainBroken fires"

unlike "$(grep -E 'tenant_backup metrics: .* failed' "$D/pg/server.log")" . "the metrics worker logged no failure"
done_testing
