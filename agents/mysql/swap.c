/*
 * Putting a restored database in the live one's place. MySQL cannot rename a database,
 * and RENAME TABLE moves neither a table with triggers nor a view to another database.
 * So the definitions (triggers, views, routines, events) are read with SHOW CREATE,
 * the triggers and views taken off, every table moved in one RENAME TABLE statement
 * (atomic: live.t -> old.t and fresh.t -> live.t together), and the definitions made
 * again where their tables now are, each under the sql_mode, character set and time
 * zone it was created with, as the dump tool itself does.
 */
#include "mysql_agent.h"

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crypto.h"

typedef enum my_kind
{
	MY_TRIGGER,
	MY_VIEW,
	MY_PROCEDURE,
	MY_FUNCTION,
	MY_EVENT,
} my_kind;

static const char *const kind_names[] = {"TRIGGER", "VIEW", "PROCEDURE", "FUNCTION", "EVENT"};

typedef struct my_object
{
	my_kind kind;
	char *name;
	char *create; /* the CREATE statement */
	char *sql_mode;
	char *charset_client;
	char *collation_connection;
	char *time_zone;
	bool done;
} my_object;

typedef struct my_objects
{
	my_object *items;
	int count;
	char **tables; /* base tables and sequences */
	int ntables;
} my_objects;

/* Which objects of the current database, in the order they can be created. */
static const char *const list_queries[] = {
	"SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = DATABASE()"
	" ORDER BY EVENT_OBJECT_TABLE, ACTION_TIMING, EVENT_MANIPULATION, ACTION_ORDER",
	"SELECT TABLE_NAME FROM information_schema.VIEWS WHERE TABLE_SCHEMA = DATABASE() ORDER BY TABLE_NAME",
	"SELECT ROUTINE_NAME FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = DATABASE()"
	" AND ROUTINE_TYPE = 'PROCEDURE' ORDER BY ROUTINE_NAME",
	"SELECT ROUTINE_NAME FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = DATABASE()"
	" AND ROUTINE_TYPE = 'FUNCTION' ORDER BY ROUTINE_NAME",
	"SELECT EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA = DATABASE() ORDER BY EVENT_NAME",
};

static void
objects_free(my_objects *objs)
{
	for (int i = 0; i < objs->count; i++)
	{
		my_object *o = &objs->items[i];

		free(o->name);
		free(o->create);
		free(o->sql_mode);
		free(o->charset_client);
		free(o->collation_connection);
		free(o->time_zone);
	}
	for (int i = 0; i < objs->ntables; i++)
		free(objs->tables[i]);
	free(objs->items);
	free(objs->tables);
	memset(objs, 0, sizeof(*objs));
}

static char *
column(MYSQL_RES *res, MYSQL_ROW row, const char *name)
{
	unsigned int n = mysql_num_fields(res);
	MYSQL_FIELD *fields = mysql_fetch_fields(res);

	for (unsigned int i = 0; i < n; i++)
		if (strcmp(fields[i].name, name) == 0)
			return row[i] ? strdup(row[i]) : NULL;
	return NULL;
}

/* SHOW CREATE of one object, from the database it is in (so names in it stay unqualified). */
static int
capture_one(MYSQL *conn, my_kind kind, const char *name, my_objects *objs, tb_error *err)
{
	static const char *const create_columns[] = {"SQL Original Statement", "Create View", "Create Procedure",
												 "Create Function", "Create Event"};
	char *ident = my_ident(name), *sql = NULL;
	MYSQL_RES *res = NULL;
	MYSQL_ROW row;
	my_object *o;

	if (ident == NULL || asprintf(&sql, "SHOW CREATE %s %s", kind_names[kind], ident) < 0 ||
		mysql_query(conn, sql) != 0 || (res = mysql_store_result(conn)) == NULL || (row = mysql_fetch_row(res)) == NULL)
	{
		tb_error_set(err, TB_ERR_IO, "cannot read the definition of %s %s: %s", kind_names[kind], name,
					 mysql_error(conn));
		free(ident);
		free(sql);
		if (res)
			mysql_free_result(res);
		return -1;
	}
	objs->items = realloc(objs->items, sizeof(my_object) * (size_t) (objs->count + 1));
	o = &objs->items[objs->count++];
	memset(o, 0, sizeof(*o));
	o->kind = kind;
	o->name = strdup(name);
	o->create = column(res, row, create_columns[kind]);
	o->sql_mode = column(res, row, "sql_mode");
	o->charset_client = column(res, row, "character_set_client");
	o->collation_connection = column(res, row, "collation_connection");
	o->time_zone = column(res, row, "time_zone");
	mysql_free_result(res);
	free(ident);
	free(sql);
	if (o->create == NULL)
		return tb_error_set(err, TB_ERR_IO, "no definition of %s %s is visible (missing privilege?)", kind_names[kind],
							name);
	return 0;
}

/* Names from a one-column query. */
static int
query_names(MYSQL *conn, const char *sql, char ***names, int *count, tb_error *err)
{
	MYSQL_RES *res;
	MYSQL_ROW row;

	if (mysql_query(conn, sql) != 0 || (res = mysql_store_result(conn)) == NULL)
		return tb_error_set(err, TB_ERR_IO, "cannot list the objects of a database: %s", mysql_error(conn));
	while ((row = mysql_fetch_row(res)) != NULL)
	{
		*names = realloc(*names, sizeof(char *) * (size_t) (*count + 1));
		(*names)[(*count)++] = strdup(row[0]);
	}
	mysql_free_result(res);
	return 0;
}

/* The base tables and sequences of db into objs->tables (replacing any). */
static int
list_tables(MYSQL *conn, const char *db, my_objects *objs, tb_error *err)
{
	for (int i = 0; i < objs->ntables; i++)
		free(objs->tables[i]);
	free(objs->tables);
	objs->tables = NULL;
	objs->ntables = 0;
	if (mysql_select_db(conn, db) != 0)
		return tb_error_set(err, TB_ERR_IO, "cannot use database \"%s\": %s", db, mysql_error(conn));
	return query_names(conn,
					   "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()"
					   " AND TABLE_TYPE <> 'VIEW' ORDER BY TABLE_NAME",
					   &objs->tables, &objs->ntables, err);
}

static int
capture(MYSQL *conn, const char *db, my_objects *objs, tb_error *err)
{
	memset(objs, 0, sizeof(*objs));
	if (list_tables(conn, db, objs, err) != 0)
		return -1;
	for (int kind = MY_TRIGGER; kind <= MY_EVENT; kind++)
	{
		char **names = NULL;
		int count = 0, rc = query_names(conn, list_queries[kind], &names, &count, err);

		for (int i = 0; i < count; i++)
		{
			if (rc == 0)
				rc = capture_one(conn, (my_kind) kind, names[i], objs, err);
			free(names[i]);
		}
		free(names);
		if (rc != 0)
			return -1;
	}
	return 0;
}

/* Drops the objects of some kinds (a bit per kind) from db. */
static int
drop_objects(MYSQL *conn, const char *db, const my_objects *objs, unsigned kinds, tb_error *err)
{
	char *db_ident = my_ident(db);
	int rc = 0;

	for (int i = 0; rc == 0 && i < objs->count; i++)
	{
		const my_object *o = &objs->items[i];
		char *ident;

		if (!(kinds & (1u << o->kind)))
			continue;
		ident = my_ident(o->name);
		rc = my_exec(conn, "taking a definition off for the swap", err, "DROP %s IF EXISTS %s.%s", kind_names[o->kind],
					 db_ident, ident);
		free(ident);
	}
	free(db_ident);
	return rc;
}

/* Creates one object in the current database under the settings it was made with. */
static int
create_one(MYSQL *conn, const my_object *o, bool disable_event, tb_error *err)
{
	char *mode = o->sql_mode ? my_literal(conn, o->sql_mode) : NULL;
	char *zone = o->time_zone ? my_literal(conn, o->time_zone) : NULL;
	int rc = 0;

	if (mode)
		rc = my_exec(conn, "setting sql_mode", err, "SET SESSION sql_mode = %s", mode);
	if (rc == 0 && zone)
		rc = my_exec(conn, "setting time_zone", err, "SET SESSION time_zone = %s", zone);
	if (rc == 0 && o->charset_client)
		rc = my_exec(conn, "setting the client character set", err,
					 "SET SESSION character_set_client = %s, collation_connection = %s", o->charset_client,
					 o->collation_connection ? o->collation_connection : o->charset_client);
	if (rc == 0 && mysql_real_query(conn, o->create, (unsigned long) strlen(o->create)) != 0)
		rc = tb_error_set(err, TB_ERR_IO, "%s: %s (error %u)", o->name, mysql_error(conn), mysql_errno(conn));
	if (rc == 0 && disable_event && o->kind == MY_EVENT)
	{
		char *ident = my_ident(o->name);

		rc = my_exec(conn, "disabling an event of the previous database", err, "ALTER EVENT %s DISABLE", ident);
		free(ident);
	}
	free(mode);
	free(zone);
	return rc;
}

/*
 * Creates the objects of some kinds in db. Views may use views: those that fail for a
 * missing table or view are tried again after the others, until none is left or a
 * round makes no progress.
 */
static int
create_objects(MYSQL *conn, const char *db, my_objects *objs, unsigned kinds, bool disable_events, tb_error *err)
{
	tb_error reset_err;
	int rc = 0;

	if (mysql_select_db(conn, db) != 0)
		return tb_error_set(err, TB_ERR_IO, "cannot use database \"%s\": %s", db, mysql_error(conn));
	for (int i = 0; i < objs->count; i++)
		objs->items[i].done = !(kinds & (1u << objs->items[i].kind));
	for (;;)
	{
		bool progress = false;
		int waiting = 0;

		for (int i = 0; rc == 0 && i < objs->count; i++)
		{
			my_object *o = &objs->items[i];

			if (o->done)
				continue;
			if (create_one(conn, o, disable_events, err) == 0)
				o->done = progress = true;
			else if (o->kind == MY_VIEW && (mysql_errno(conn) == 1146 || mysql_errno(conn) == 1356))
				waiting++;
			else
				rc = -1;
		}
		if (rc != 0 || waiting == 0)
			break;
		if (!progress)
		{
			rc = -1;
			break;
		}
	}
	my_exec(conn, "resetting the session", &reset_err,
			"SET SESSION sql_mode = DEFAULT, time_zone = DEFAULT, NAMES utf8mb4");
	if (rc != 0)
		return tb_error_prefix(err, "creating a definition in database \"%s\"", db);
	return 0;
}

/* One RENAME TABLE: every table of live to old and every table of fresh to live. */
static int
rename_tables(MYSQL *conn, const char *live, const char *fresh, const char *old, const my_objects *live_objs,
			  const my_objects *fresh_objs, tb_error *err)
{
	char *names[3] = {my_ident(live), my_ident(fresh), my_ident(old)};
	char *sql = NULL;
	size_t size = 0;
	FILE *out = open_memstream(&sql, &size);
	bool first = true;
	int rc;

	fputs("RENAME TABLE ", out);
	for (int side = 0; side < 2; side++)
	{
		const my_objects *objs = side == 0 ? live_objs : fresh_objs;
		const char *from = side == 0 ? names[0] : names[1], *to = side == 0 ? names[2] : names[0];

		for (int i = 0; i < objs->ntables; i++)
		{
			char *t = my_ident(objs->tables[i]);

			fprintf(out, "%s%s.%s TO %s.%s", first ? "" : ", ", from, t, to, t);
			first = false;
			free(t);
		}
	}
	fclose(out);
	rc = first ? 0 : my_exec(conn, "moving the tables", err, "%s", sql);
	free(sql);
	for (int i = 0; i < 3; i++)
		free(names[i]);
	return rc;
}

#define KINDS_ON_TABLES ((1u << MY_TRIGGER) | (1u << MY_VIEW))
#define KINDS_ALL ((1u << MY_TRIGGER) | (1u << MY_VIEW) | (1u << MY_PROCEDURE) | (1u << MY_FUNCTION) | (1u << MY_EVENT))

/* What a swap needs to be finished by anyone: journaled before the first definition is taken off. */
typedef struct my_swap_state
{
	char *live, *fresh, *old, *fresh_options;
	my_objects live_objs, fresh_objs;
} my_swap_state;

static void
swap_state_free(my_swap_state *st)
{
	free(st->live);
	free(st->fresh);
	free(st->old);
	free(st->fresh_options);
	objects_free(&st->live_objs);
	objects_free(&st->fresh_objs);
}

/*
 * Takes a journaled swap from wherever it stopped to its end; every step can be done
 * again. The RENAME TABLE is atomic: it has happened when old holds tables or fresh
 * none. Then the definitions of both sides are taken off live and the backup's made,
 * the previous ones made in old (events disabled), and the emptied fresh dropped.
 */
static int
swap_forward(MYSQL *conn, my_swap_state *st, tb_error *err)
{
	my_objects old_now = {0};
	char *live_ident = my_ident(st->live), *fresh_ident = my_ident(st->fresh);
	int rc = -1;

	if (list_tables(conn, st->fresh, &st->fresh_objs, err) != 0 || list_tables(conn, st->old, &old_now, err) != 0)
		goto done;
	if (old_now.ntables == 0 && st->fresh_objs.ntables > 0)
	{
		if (list_tables(conn, st->live, &st->live_objs, err) != 0 ||
			drop_objects(conn, st->fresh, &st->fresh_objs, 1u << MY_TRIGGER, err) != 0 ||
			drop_objects(conn, st->live, &st->live_objs, KINDS_ON_TABLES, err) != 0 ||
			rename_tables(conn, st->live, st->fresh, st->old, &st->live_objs, &st->fresh_objs, err) != 0)
		{
			tb_error undo_err;
			char *old_ident = my_ident(st->old);

			/* Nothing moved: live gets its own triggers and views back, the fresh copy goes. */
			if (create_objects(conn, st->live, &st->live_objs, KINDS_ON_TABLES, false, &undo_err) != 0)
				tb_error_prefix(err, "%s; putting the live definitions back also failed", undo_err.msg);
			my_exec(conn, "dropping the database for the previous contents", &undo_err, "DROP DATABASE %s", old_ident);
			my_exec(conn, "dropping the restored database", &undo_err, "DROP DATABASE %s", fresh_ident);
			free(old_ident);
			goto done;
		}
	}
	/* The properties first: a routine, trigger or event records the collation of its database. */
	if (drop_objects(conn, st->live, &st->live_objs, KINDS_ALL, err) != 0 ||
		drop_objects(conn, st->live, &st->fresh_objs, KINDS_ALL, err) != 0 ||
		my_exec(conn, "giving the database the backup's properties", err, "ALTER DATABASE %s %s", live_ident,
				st->fresh_options) != 0 ||
		create_objects(conn, st->live, &st->fresh_objs, KINDS_ALL, false, err) != 0)
	{
		tb_error_prefix(err,
						"the tables were swapped, but the definitions were not all made (those of the backup "
						"are in database \"%s\", the previous contents in \"%s\")",
						st->fresh, st->old);
		goto done;
	}
	if (drop_objects(conn, st->old, &st->live_objs, KINDS_ALL, err) != 0 ||
		create_objects(conn, st->old, &st->live_objs, KINDS_ALL, true, err) != 0)
	{
		tb_error_prefix(err, "restored, but the previous database \"%s\" lacks some of its definitions", st->old);
		goto done;
	}
	rc = my_exec(conn, "dropping the emptied restored database", err, "DROP DATABASE IF EXISTS %s", fresh_ident);
done:
	objects_free(&old_now);
	free(live_ident);
	free(fresh_ident);
	return rc;
}

/* ---- the journal: one row per job in tenant_backup_agent.swap_journal on the tenant's server */

#define JOURNAL_MAC_DOMAIN "tenant-backup mysql swap journal\n"

/* The journal's MAC of body (hex, 64 digits + NUL); false when out of memory. */
static bool
journal_mac(const agent_job *job, const char *body, char out[2 * CRYPTO_SHA256_LEN + 1])
{
	uint8_t mac[EVP_MAX_MD_SIZE];
	unsigned int mac_len = 0;
	char *message = NULL;

	if (asprintf(&message, "%s%s", JOURNAL_MAC_DOMAIN, body) < 0)
		return false;
	HMAC(EVP_sha256(), job->master->key, sizeof(job->master->key), (const unsigned char *) message, strlen(message),
		 mac, &mac_len);
	free(message);
	crypto_hex_encode(mac, CRYPTO_SHA256_LEN, out);
	crypto_wipe(mac, sizeof(mac));
	return mac_len == CRYPTO_SHA256_LEN;
}

static json_t *
objects_json(const my_objects *objs)
{
	json_t *list = json_array();

	for (int i = 0; i < objs->count; i++)
	{
		const my_object *o = &objs->items[i];

		json_array_append_new(list, json_pack("{s:i, s:s, s:s, s:s?, s:s?, s:s?, s:s?}", "kind", (int) o->kind, "name",
											  o->name, "create", o->create, "sql_mode", o->sql_mode, "charset_client",
											  o->charset_client, "collation_connection", o->collation_connection,
											  "time_zone", o->time_zone));
	}
	return list;
}

static char *
json_text(json_t *o, const char *key)
{
	const char *v = json_string_value(json_object_get(o, key));

	return v ? strdup(v) : NULL;
}

static int
objects_from_json(json_t *list, my_objects *objs, tb_error *err)
{
	size_t i;
	json_t *o;

	memset(objs, 0, sizeof(*objs));
	json_array_foreach(list, i, o)
	{
		json_int_t kind = json_integer_value(json_object_get(o, "kind"));
		my_object *item;

		if (kind < MY_TRIGGER || kind > MY_EVENT || !json_is_string(json_object_get(o, "name")) ||
			!json_is_string(json_object_get(o, "create")))
			return tb_error_set(err, TB_ERR_CORRUPT, "a swap journal entry is malformed");
		objs->items = realloc(objs->items, sizeof(my_object) * (size_t) (objs->count + 1));
		item = &objs->items[objs->count++];
		memset(item, 0, sizeof(*item));
		item->kind = (my_kind) kind;
		item->name = json_text(o, "name");
		item->create = json_text(o, "create");
		item->sql_mode = json_text(o, "sql_mode");
		item->charset_client = json_text(o, "charset_client");
		item->collation_connection = json_text(o, "collation_connection");
		item->time_zone = json_text(o, "time_zone");
	}
	return 0;
}

/* Writes (replaces) job's row: the phase and, when swapping, all of st. */
static int
journal_write(MYSQL *conn, const agent_job *job, const char *phase, const char *live, const char *fresh,
			  const my_swap_state *st, tb_error *err)
{
	json_t *doc =
		json_pack("{s:I, s:s, s:s, s:s}", "job", (json_int_t) job->id, "phase", phase, "live", live, "fresh", fresh);
	char *body = NULL, *body_lit = NULL, *live_lit = NULL, mac[2 * CRYPTO_SHA256_LEN + 1];
	int rc;

	if (doc && st)
	{
		json_object_set_new(doc, "old", json_string(st->old));
		json_object_set_new(doc, "fresh_options", json_string(st->fresh_options));
		json_object_set_new(doc, "live_objects", objects_json(&st->live_objs));
		json_object_set_new(doc, "fresh_objects", objects_json(&st->fresh_objs));
	}
	if (doc == NULL || (body = json_dumps(doc, JSON_COMPACT)) == NULL || (body_lit = my_literal(conn, body)) == NULL ||
		(live_lit = my_literal(conn, live)) == NULL || !journal_mac(job, body, mac))
		rc = tb_error_set(err, TB_ERR_NOMEM, "out of memory for the swap journal");
	else
	{
		rc = my_exec(conn, "writing the swap journal", err,
					 "REPLACE INTO tenant_backup_agent.swap_journal (job, live, body, mac) VALUES (%lld, %s, %s, '%s')",
					 (long long) job->id, live_lit, body_lit, mac);
	}
	json_decref(doc);
	free(body);
	free(body_lit);
	free(live_lit);
	return rc;
}

/* Holds job's named lock on conn (for as long as conn lives): 1 got it, 0 another session has it, -1. */
static int
journal_lock(MYSQL *conn, int64_t job_id, tb_error *err)
{
	char sql[96];
	MYSQL_RES *res;
	MYSQL_ROW row;
	int got;

	snprintf(sql, sizeof(sql), "SELECT GET_LOCK('tenant_backup_swap_%lld', 0)", (long long) job_id);
	if (mysql_query(conn, sql) != 0 || (res = mysql_store_result(conn)) == NULL)
		return tb_error_set(err, TB_ERR_IO, "cannot take the swap journal's lock: %s", mysql_error(conn));
	row = mysql_fetch_row(res);
	got = row && row[0] && strcmp(row[0], "1") == 0;
	mysql_free_result(res);
	return got;
}

int
my_journal_begin(MYSQL *conn, const agent_job *job, const char *live, const char *fresh, tb_error *err)
{
	if (my_exec(conn, "creating the swap journal", err, "CREATE DATABASE IF NOT EXISTS tenant_backup_agent") != 0 ||
		my_exec(conn, "creating the swap journal", err,
				"CREATE TABLE IF NOT EXISTS tenant_backup_agent.swap_journal (job BIGINT NOT NULL PRIMARY KEY,"
				" live VARCHAR(256) NOT NULL, body LONGTEXT NOT NULL, mac CHAR(64) NOT NULL, KEY (live))"
				" ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COMMENT='tenant-backup-agent-mysql: swaps in progress'") != 0)
		return -1;
	if (journal_lock(conn, job->id, err) != 1)
		return err->msg[0] ? -1
						   : tb_error_set(err, TB_ERR_EXISTS, "another session holds the swap lock of job %lld",
										  (long long) job->id);
	return journal_write(conn, job, "loading", live, fresh, NULL, err);
}

void
my_journal_end(MYSQL *conn, const agent_job *job, bool keep)
{
	tb_error ignored;
	char sql[96];

	if (!keep)
		my_exec(conn, "closing the swap journal", &ignored,
				"DELETE FROM tenant_backup_agent.swap_journal WHERE job = %lld", (long long) job->id);
	snprintf(sql, sizeof(sql), "DO RELEASE_LOCK('tenant_backup_swap_%lld')", (long long) job->id);
	mysql_query(conn, sql);
}

int
my_swap(MYSQL *conn, const agent_job *job, const char *live, const char *fresh, const char *old, tb_error *err)
{
	my_swap_state st = {.live = strdup(live), .fresh = strdup(fresh), .old = strdup(old)};
	char *live_options = NULL, *old_ident = my_ident(old), *fresh_ident = my_ident(fresh);
	int rc = -1;

	if (capture(conn, live, &st.live_objs, err) != 0 || capture(conn, fresh, &st.fresh_objs, err) != 0 ||
		(st.fresh_options = my_database_options(conn, fresh, err)) == NULL ||
		(live_options = my_database_options(conn, live, err)) == NULL ||
		my_exec(conn, "creating the database for the previous contents", err, "CREATE DATABASE %s %s", old_ident,
				live_options) != 0)
		goto done;
	/* From here a crash is finished by the next agent to touch the database (my_journal_repair). */
	if (journal_write(conn, job, "swapping", live, fresh, &st, err) != 0)
	{
		tb_error undo_err;

		my_exec(conn, "dropping the database for the previous contents", &undo_err, "DROP DATABASE %s", old_ident);
		goto done;
	}
	rc = swap_forward(conn, &st, err);
done:
	swap_state_free(&st);
	free(live_options);
	free(old_ident);
	free(fresh_ident);
	return rc;
}

/* Finishes the journaled job in row (body, mac): a swap goes forward, a load's database goes. */
static int
repair_one(MYSQL *conn, const agent_job *job, const char *live, const char *body, const char *mac, bool *swapped,
		   tb_error *err)
{
	char expected[2 * CRYPTO_SHA256_LEN + 1], *ident;
	json_t *doc;
	json_error_t json_err;
	my_swap_state st = {0};
	const char *phase;
	int rc = -1;

	if (!journal_mac(job, body, expected))
		return tb_error_set(err, TB_ERR_NOMEM, "out of memory for the swap journal");
	if (strlen(mac) != strlen(expected) || CRYPTO_memcmp(mac, expected, strlen(expected)) != 0)
		return tb_error_set(err, TB_ERR_CORRUPT,
							"a swap journal entry of database \"%s\" is not this product's (its MAC does not check);"
							" remove it from tenant_backup_agent.swap_journal after checking the database",
							live);
	if ((doc = json_loads(body, 0, &json_err)) == NULL)
		return tb_error_set(err, TB_ERR_CORRUPT, "a swap journal entry of database \"%s\" is malformed", live);
	phase = json_string_value(json_object_get(doc, "phase"));
	st.live = json_text(doc, "live");
	st.fresh = json_text(doc, "fresh");
	if (phase == NULL || st.live == NULL || st.fresh == NULL || strcmp(st.live, live) != 0)
		tb_error_set(err, TB_ERR_CORRUPT, "a swap journal entry of database \"%s\" is malformed", live);
	else if (strcmp(phase, "loading") == 0)
	{
		/* The load never finished: what it made goes, the live database was not touched. */
		ident = my_ident(st.fresh);
		rc = my_exec(conn, "dropping a database left by an interrupted load", err, "DROP DATABASE IF EXISTS %s", ident);
		free(ident);
	}
	else if ((st.old = json_text(doc, "old")) == NULL || (st.fresh_options = json_text(doc, "fresh_options")) == NULL ||
			 objects_from_json(json_object_get(doc, "live_objects"), &st.live_objs, err) != 0 ||
			 objects_from_json(json_object_get(doc, "fresh_objects"), &st.fresh_objs, err) != 0)
	{
		if (err->code != TB_ERR_CORRUPT)
			tb_error_set(err, TB_ERR_CORRUPT, "a swap journal entry of database \"%s\" is malformed", live);
	}
	else if ((rc = swap_forward(conn, &st, err)) == 0)
		*swapped = true;
	json_decref(doc);
	swap_state_free(&st);
	return rc;
}

int
my_journal_repair(MYSQL *conn, const agent_job *job, const char *live, bool *own_swap_done, tb_error *err)
{
	char *live_lit = my_literal(conn, live), *sql = NULL;
	MYSQL_RES *res = NULL;
	MYSQL_ROW row;
	int rc = -1, exists;

	*own_swap_done = false;
	if (live_lit == NULL)
		return tb_error_set(err, TB_ERR_NOMEM, "out of memory");
	exists = mysql_query(conn, "SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'tenant_backup_agent'"
							   " AND TABLE_NAME = 'swap_journal'") == 0 &&
					 (res = mysql_store_result(conn)) != NULL
				 ? (int) mysql_num_rows(res)
				 : -1;
	if (res)
		mysql_free_result(res);
	res = NULL;
	if (exists <= 0)
	{
		free(live_lit);
		return exists < 0 ? tb_error_set(err, TB_ERR_IO, "cannot look for the swap journal: %s", mysql_error(conn)) : 0;
	}
	if (asprintf(&sql, "SELECT job, body, mac FROM tenant_backup_agent.swap_journal WHERE live = %s ORDER BY job",
				 live_lit) < 0)
		sql = NULL;
	if (sql == NULL || mysql_query(conn, sql) != 0 || (res = mysql_store_result(conn)) == NULL)
	{
		tb_error_set(err, TB_ERR_IO, "cannot read the swap journal of database \"%s\": %s", live, mysql_error(conn));
		goto done;
	}
	rc = 0;
	while (rc == 0 && (row = mysql_fetch_row(res)) != NULL)
	{
		long long id = atoll(row[0]);
		bool swapped = false;
		int locked = journal_lock(conn, id, err);

		/* A job whose agent is alive holds its lock: it is not ours to finish. */
		if (locked <= 0)
		{
			rc = locked;
			continue;
		}
		rc = repair_one(conn, job, live, row[1], row[2], &swapped, err);
		if (rc == 0)
		{
			agent_log("job %lld on database \"%s\" was interrupted; its %s was finished by job %lld", id, live,
					  swapped ? "swap" : "scratch database", (long long) job->id);
			*own_swap_done |= swapped && id == job->id;
			rc = my_exec(conn, "closing the swap journal", err,
						 "DELETE FROM tenant_backup_agent.swap_journal WHERE job = %lld", id);
		}
		{
			char unlock[96];

			snprintf(unlock, sizeof(unlock), "DO RELEASE_LOCK('tenant_backup_swap_%lld')", id);
			mysql_query(conn, unlock);
		}
	}
	if (rc != 0)
		tb_error_prefix(err, "finishing an interrupted restore of database \"%s\"", live);
done:
	if (res)
		mysql_free_result(res);
	free(sql);
	free(live_lit);
	return rc;
}
