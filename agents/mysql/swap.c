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

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

static int
capture(MYSQL *conn, const char *db, my_objects *objs, tb_error *err)
{
	memset(objs, 0, sizeof(*objs));
	if (mysql_select_db(conn, db) != 0)
		return tb_error_set(err, TB_ERR_IO, "cannot use database \"%s\": %s", db, mysql_error(conn));
	if (query_names(conn,
					"SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()"
					" AND TABLE_TYPE <> 'VIEW' ORDER BY TABLE_NAME",
					&objs->tables, &objs->ntables, err) != 0)
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
		rc = my_exec(conn, "taking a definition off for the swap", err, "DROP %s %s.%s", kind_names[o->kind], db_ident,
					 ident);
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
#define KINDS_ROUTINES ((1u << MY_PROCEDURE) | (1u << MY_FUNCTION) | (1u << MY_EVENT))

int
my_swap(MYSQL *conn, const char *live, const char *fresh, const char *old, tb_error *err)
{
	my_objects live_objs, fresh_objs;
	char *fresh_options = NULL, *live_options = NULL, *live_ident = my_ident(live), *old_ident = my_ident(old),
		 *fresh_ident = my_ident(fresh);
	int rc = -1;

	memset(&live_objs, 0, sizeof(live_objs));
	memset(&fresh_objs, 0, sizeof(fresh_objs));
	if (capture(conn, live, &live_objs, err) != 0 || capture(conn, fresh, &fresh_objs, err) != 0 ||
		(fresh_options = my_database_options(conn, fresh, err)) == NULL ||
		(live_options = my_database_options(conn, live, err)) == NULL ||
		my_exec(conn, "creating the database for the previous contents", err, "CREATE DATABASE %s %s", old_ident,
				live_options) != 0)
		goto done;
	if (drop_objects(conn, fresh, &fresh_objs, 1u << MY_TRIGGER, err) != 0 ||
		drop_objects(conn, live, &live_objs, KINDS_ON_TABLES, err) != 0 ||
		rename_tables(conn, live, fresh, old, &live_objs, &fresh_objs, err) != 0)
	{
		tb_error undo_err;

		/* Nothing moved: live gets its own triggers and views back, the fresh copy goes. */
		if (create_objects(conn, live, &live_objs, KINDS_ON_TABLES, false, &undo_err) != 0)
			tb_error_prefix(err, "%s; putting the live definitions back also failed", undo_err.msg);
		my_exec(conn, "dropping the database for the previous contents", &undo_err, "DROP DATABASE %s", old_ident);
		my_exec(conn, "dropping the restored database", &undo_err, "DROP DATABASE %s", fresh_ident);
		goto done;
	}
	/* The tables are swapped; now the definitions follow them. */
	/* The properties first: a routine, trigger or event records the collation of its database. */
	if (drop_objects(conn, live, &live_objs, KINDS_ROUTINES, err) != 0 ||
		my_exec(conn, "giving the database the backup's properties", err, "ALTER DATABASE %s %s", live_ident,
				fresh_options) != 0 ||
		create_objects(conn, live, &fresh_objs, KINDS_ALL, false, err) != 0)
	{
		tb_error_prefix(err,
						"the tables were swapped, but the definitions were not all made (those of the backup "
						"are in database \"%s\", the previous contents in \"%s\")",
						fresh, old);
		goto done;
	}
	if (create_objects(conn, old, &live_objs, KINDS_ALL, true, err) != 0)
	{
		tb_error_prefix(err, "restored, but the previous database \"%s\" lacks some of its definitions", old);
		goto done;
	}
	rc = my_exec(conn, "dropping the emptied restored database", err, "DROP DATABASE %s", fresh_ident);
done:
	objects_free(&live_objs);
	objects_free(&fresh_objs);
	free(fresh_options);
	free(live_options);
	free(live_ident);
	free(old_ident);
	free(fresh_ident);
	return rc;
}
