#!/bin/bash
# The agents' log and --version: with --log-format json (or log_format = json) every
# line an agent writes through a backup, a restore and a failing job is one JSON object
# with time (RFC 3339 UTC), level, agent, job, tenant, engine and message, and a
# tenant-controlled value holding a quote and a newline (a Redis key prefix, echoed in
# the failure's message) stays inside its string on its line; text stays the default;
# every binary prints "<name> <version>" with the extension's version and exits 0.
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/../lib/pg.sh"
. "$(dirname "$0")/../lib/agents.sh"
. "$(dirname "$0")/../lib/redis.sh"
agent_use tenant-backup-agent-redis
PG_PORT=$(free_port)
R=$(free_port)
CLOSED=$(free_port)
# A quote, a newline and a backslash: each would end a naively written JSON line or string.
PREFIX=$'we"ird\\\nkeys:'

scratch_dir
agent_bed_setup $PG_PORT logs
redis_start "$D/redis" $R

VERSION=$(sed -n "s/^default_version = '\([^']*\)'.*/\1/p" "$(dirname "$0")/../../extension/tenant_backup.control")
BIN=$(dirname "$TB")
for program in tenant-backup tenant-backup-agent-mysql tenant-backup-agent-redis tenant-backup-agent-mongodb; do
	out=$("$BIN/$program" --version)
	rc=$?
	is "$rc:$out" "0:$program $VERSION" "$program --version prints its name and the extension's version"
done

add_tenant() { # TENANT PORT
	psql -X -q -v ON_ERROR_STOP=1 -At -v prefix="$PREFIX" <<SQL >/dev/null
SELECT tenant_backup.tenant_create('$1');
SELECT tenant_backup.tenant_add_database('$1', 'redis', 'redis://tbagent:$REDIS_PASSWORD_URI@127.0.0.1:$2/0',
	jsonb_build_object('key_prefix', :'prefix'::text));
SQL
}
rtool fill $R 0 "$PREFIX" weird
add_tenant weird $R
add_tenant gone $CLOSED

# Checks a log: every line a JSON object with the fields; prints what the test compares.
check_json_log() { # FILE
	python3 - "$1" <<'PY'
import json, re, sys
fields = ("time", "level", "agent", "job", "tenant", "engine", "message")
lines = open(sys.argv[1], encoding="utf-8").read().split("\n")[:-1]
bad, jobs, tenants, prefixed = [], set(), set(), 0
for line in lines:
    try:
        doc = json.loads(line)
    except ValueError:
        bad.append(line)
        continue
    if not isinstance(doc, dict) or set(doc) != set(fields) \
            or not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", doc["time"]) \
            or doc["level"] not in ("info", "warning", "error") or doc["engine"] != "redis" \
            or not doc["agent"].startswith("logs-"):
        bad.append(line)
        continue
    if doc["job"] is not None:
        jobs.add(doc["job"])
        tenants.add(doc["tenant"])
    if 'we"ird\\\nkeys:' in doc["message"]:
        prefixed += 1
print("lines=%d bad=%d jobs=%d tenants=%s prefix_in_messages=%s" % (
    len(lines), len(bad), len(jobs), ",".join(sorted(tenants)), prefixed > 0))
for line in bad:
    print("# not a log object: %r" % line, file=sys.stderr)
PY
}

psql_q "SELECT tenant_backup.tenant_backup('weird', 'redis')" >/dev/null
agent_once logs-json --log-format json
is "$?" 0 "a backup run by an agent with --log-format json succeeds"
psql_q "SELECT tenant_backup.tenant_restore('weird', 'redis', wait => false)" \
	"SELECT tenant_backup.tenant_backup('gone', 'redis')" >/dev/null
agent_once logs-json --log-format json
is "$?" 1 "the agent's --once run of a restore and a failing backup exits 1"
is "$(psql_q "SELECT string_agg(tenant || ' ' || kind || ' ' || state, ', ' ORDER BY id) FROM tenant_backup.jobs")" \
	"weird backup succeeded, weird restore succeeded, gone backup failed" "the three jobs ran"
is "$(check_json_log "$D/logs-json.log")" \
	"lines=$(wc -l <"$D/logs-json.log") bad=0 jobs=3 tenants=gone,weird prefix_in_messages=True" \
	"every line is one JSON object with the fields; the key prefix with a quote, a backslash and a newline stays in its message"
like "$(grep -c '"level":"error","agent":"logs-json","job":[0-9]*,"tenant":"gone"' "$D/logs-json.log")" '^[1-9]' \
	"the failed backup's line is an error naming its job and tenant"

# The configuration's log_format (here from the environment) does the same; text is the default.
psql_q "SELECT tenant_backup.tenant_backup('weird', 'redis')" >/dev/null
TENANT_BACKUP_LOG_FORMAT=json agent_once logs-env
like "$(check_json_log "$D/logs-env.log")" '^lines=[1-9][0-9]* bad=0 jobs=1 tenants=weird ' \
	"log_format = json from the configuration writes JSON lines"
psql_q "SELECT tenant_backup.tenant_backup('weird', 'redis')" >/dev/null
agent_once logs-text
is "$(grep -cvE '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z tenant-backup-agent-redis\[[0-9]+\]: ' \
	"$D/logs-text.log")" 0 "without --log-format every line is today's text: time, program[pid], message"
like "$(cat "$D/logs-text.log")" 'backup of tenant "weird" .* succeeded' "the text log tells the backup's outcome"

out=$("$AGENT_BIN" --log-format xml 2>&1)
is "$?:$out" "1:tenant-backup-agent-redis: log_format must be text or json" "an unknown log format is refused"

done_testing
