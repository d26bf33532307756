/*
 * The MySQL agent's row counter (agents/mysql/dump_count.c): a dump tool's script read in
 * pieces of any size, the tables it creates and the rows it inserts, and what it refuses.
 */
#include "unit.h"

#include <stdio.h>

#include "agent_internal.h"
#include "dump_count.h"
#include "mysql_agent.h"

/* A piece of mariadb-dump's output, with everything that must not count as rows. */
static const char dump[] =
	"-- MariaDB dump 10.19  Distrib 10.11.19-MariaDB\n"
	"/*!40101 SET NAMES utf8mb4 */;\n"
	"DROP TABLE IF EXISTS `canary`;\n"
	"CREATE TABLE `canary` (\n"
	"  `id` int(11) NOT NULL,\n"
	"  `v` varchar(100) DEFAULT 'INSERT INTO `canary` VALUES (9)',\n"
	"  PRIMARY KEY (`id`)\n"
	") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;\n"
	"LOCK TABLES `canary` WRITE;\n"
	"/*!40000 ALTER TABLE `canary` DISABLE KEYS */;\n"
	/* The 10.11 shape: a line break after VALUES, one row a line. */
	"INSERT INTO `canary` VALUES\n"
	"(1,'a (b) c',0),\n"
	"(2,'it\\'s; (not) a row\\\\',0),\n"
	"(3,'\\\\',0x28293B),\n"
	"(4,NULL,(1));\n"
	/* The older shape, and a second statement for the same table. */
	"INSERT INTO `canary` VALUES (5,'x',0),(6,'()''()',0);\n"
	"UNLOCK TABLES;\n"
	"CREATE TABLE `empty` (`id` int) ENGINE=InnoDB;\n"
	"CREATE TABLE `we``ird ü` (`id` int);\n"
	"INSERT INTO `we``ird ü` VALUES (1);\n"
	"/*!50001 CREATE VIEW `canary_view` AS SELECT\n"
	" 1 AS `id` */;\n"
	"CREATE SEQUENCE `seq` start with 1 minvalue 1 maxvalue 9 increment by 1 cache 20 nocycle ENGINE=InnoDB;\n"
	"DO SETVAL(`seq`, 1, 0);\n"
	"DELIMITER ;;\n"
	"/*!50003 CREATE*/ /*!50003 TRIGGER t AFTER UPDATE ON canary FOR EACH ROW\n"
	"INSERT INTO `log` VALUES (1),(2) */;;\n"
	"CREATE TABLE `not_a_table` (id int);\n"
	"DELIMITER ;\n"
	"-- Dump completed\n";

static const char expected[] = "{\"tables\":{\"canary\":6,\"empty\":0,\"we`ird \xc3\xbc\":1}}";

static char *
count_in_pieces(const char *text, size_t len, size_t piece, char *detail, size_t detail_size, tb_error *err)
{
	my_dump_count *d = my_dump_count_new();
	char *json;

	assert_non_null(d);
	for (size_t at = 0; at < len; at += piece)
		my_dump_count_feed(d, text + at, at + piece > len ? len - at : piece);
	json = my_dump_count_finish(d, detail, detail_size, err);
	my_dump_count_free(d);
	return json;
}

static void
test_counts_a_dump(void **state)
{
	char detail[64];
	tb_error err;
	char *json;

	(void) state;
	json = count_in_pieces(dump, strlen(dump), strlen(dump), detail, sizeof(detail), &err);
	assert_non_null(json);
	assert_string_equal(json, expected);
	assert_string_equal(detail, "3 tables, 7 rows");
	free(json);
}

/* The stream arrives in pieces cut anywhere: names, keywords, strings and escapes split. */
static void
test_any_piece_size(void **state)
{
	tb_error err;

	(void) state;
	for (size_t piece = 1; piece <= 40; piece++)
	{
		char *json = count_in_pieces(dump, strlen(dump), piece, NULL, 0, &err);

		assert_non_null(json);
		assert_string_equal(json, expected);
		free(json);
	}
}

static void
test_empty_dump(void **state)
{
	char detail[64];
	tb_error err;
	char *json = count_in_pieces("", 0, 1, detail, sizeof(detail), &err);

	(void) state;
	assert_non_null(json);
	assert_string_equal(json, "{\"tables\":{}}");
	assert_string_equal(detail, "0 tables, 0 rows");
	free(json);
}

static void
test_refuses_unknown_shapes(void **state)
{
	static const char *const bad[] = {
		"INSERT INTO `t` (`a`) VALUES (1);\n", /* a column list */
		"INSERT INTO `t` VALUES (1));\n",      /* unbalanced */
		"INSERT INTO `t` VALUES (1,'abc);\n",  /* ends inside a string */
		"INSERT INTO `t` VALUES (1),\n(2)",    /* ends inside the statement */
		"CREATE TABLE `t\n` (a int);\n",       /* a line break in a name */
		"INSERT INTO `t` VALUESX (1);\n",      /* not the keyword */
	};
	tb_error err;

	(void) state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
	{
		char *json = count_in_pieces(bad[i], strlen(bad[i]), 3, NULL, 0, &err);

		if (json)
			fail_msg("counted %s as %s", bad[i], json);
		assert_non_null(strstr(err.msg, "the dump"));
	}
}

static void
test_long_name(void **state)
{
	char text[2048];
	tb_error err;
	char *json;

	(void) state;
	snprintf(text, sizeof(text), "CREATE TABLE `%0600d` (a int);\n", 0);
	json = count_in_pieces(text, strlen(text), 7, NULL, 0, &err);
	assert_null(json);
	assert_non_null(strstr(err.msg, "too long"));
}

/* The drill's side: rows added per table give the same JSON, sorted, whatever the order. */
static void
test_contents(void **state)
{
	my_contents *c = my_contents_new();
	char detail[64];
	tb_error err;
	char *json;

	(void) state;
	assert_non_null(c);
	assert_int_equal(my_contents_add(c, "we`ird \xc3\xbc", 1, &err), 0);
	assert_int_equal(my_contents_add(c, "empty", 0, &err), 0);
	assert_int_equal(my_contents_add(c, "canary", 4, &err), 0);
	assert_int_equal(my_contents_add(c, "canary", 2, &err), 0);
	json = my_contents_json(c, detail, sizeof(detail), &err);
	assert_string_equal(json, expected);
	assert_string_equal(detail, "3 tables, 7 rows");
	free(json);
	assert_int_equal(my_contents_add(c, "bad \xff", 1, &err), -1);
	assert_non_null(strstr(err.msg, "UTF-8"));
	my_contents_free(c);
}

/* Database names the agent passes to tools and statements: MariaDB's rules, and never an option. */
static void
test_name_check(void **state)
{
	char name[200];
	tb_error err;

	(void) state;
	assert_int_equal(my_name_check("t", "acme", &err), 0);
	assert_int_equal(my_name_check("t",
								   "Stra\xc3\x9f"
								   "en-1_$",
								   &err),
					 0);
	/* 64 characters, counted as characters: 64 two-byte ones pass. */
	name[0] = '\0';
	for (int i = 0; i < 64; i++)
		strcat(name, "\xc3\xbc");
	assert_int_equal(my_name_check("t", name, &err), 0);
	strcat(name, "x");
	assert_int_equal(my_name_check("t", name, &err), -1);
	assert_int_equal(my_name_check("the restore target", "--init-command=DROP DATABASE x", &err), -1);
	assert_non_null(strstr(err.msg, "the restore target is not a database name this agent accepts"));
	assert_non_null(strstr(err.msg, "not beginning with '-'"));
	assert_int_equal(my_name_check("t", "", &err), -1);
	assert_int_equal(my_name_check("t", "a/b", &err), -1);
	assert_int_equal(my_name_check("t", "a.b", &err), -1);
	assert_int_equal(my_name_check("t", "a\\b", &err), -1);
	assert_int_equal(my_name_check("t", "trailing ", &err), -1);
	assert_int_equal(my_name_check("t", "tab\there", &err), -1);
	assert_non_null(strstr(err.msg, "control character"));
	assert_true(my_is_system_schema("MySQL") && my_is_system_schema("sys") && !my_is_system_schema("mysql2"));
}

/* An operator's locator carries its own credentials; the agent's go only to the hosts it lists. */
static void
test_locator_rules(void **state)
{
	char *keys[] = {"mysql_user", "mysql_password", "mysql_fallback_credentials_hosts"};
	char *values[] = {"agent", "agentpw", "127.0.0.1"};
	agent_config config = {.engine = "mysql", .nentries = 3, .keys = keys, .values = values};
	agent_job job = {.tenant = "t", .engine = "mysql", .config = &config, .password = "pw"};
	mysql_source src;
	tb_error err;
	static const struct
	{
		const char *locator;
		const char *error;
	} refused[] = {
		{"mysql://root@localhost/acme?socket=/run/mysqld/mysqld.sock", "names a socket"},
		{"mysql://root@localhost/acme", "names no TCP host"},
		{"mysql://u@127.0.0.1/MySQL", "names the server's own schema"},
		{"mysql://u@127.0.0.1/information_schema", "names the server's own schema"},
		{"mysql://u@127.0.0.1/--init-command=x", "is not a database name this agent accepts"},
		{"mysql://127.0.0.1/acme", "carries no user and password of its own"},
	};

	(void) state;
	unsetenv("TENANT_BACKUP_MYSQL_USER");
	unsetenv("TENANT_BACKUP_MYSQL_PASSWORD");
	unsetenv("TENANT_BACKUP_MYSQL_FALLBACK_CREDENTIALS_HOSTS");
	for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++)
	{
		job.locator = (char *) refused[i].locator;
		assert_int_equal(mysql_source_from_job(&job, &src, &err), -1);
		assert_non_null(strstr(err.msg, refused[i].error));
	}
	job.locator = "mysql://u@127.0.0.1/acme";
	job.password = NULL;
	assert_int_equal(mysql_source_from_job(&job, &src, &err), -1);
	assert_non_null(strstr(err.msg, "carries no user and password of its own"));
	job.password = "pw";
	assert_int_equal(mysql_source_from_job(&job, &src, &err), 0);
	assert_string_equal(src.user, "u");
	assert_string_equal(src.password, "pw");
	mysql_source_free(&src);
	/* A superuser's locator may use the agent's own credentials, on a listed host only. */
	job.locator_trusted = true;
	job.password = NULL;
	job.locator = "mysql://127.0.0.1/acme";
	assert_int_equal(mysql_source_from_job(&job, &src, &err), 0);
	assert_string_equal(src.user, "agent");
	assert_string_equal(src.password, "agentpw");
	mysql_source_free(&src);
	job.locator = "mysql://bob@db.elsewhere/acme";
	assert_int_equal(mysql_source_from_job(&job, &src, &err), 0);
	assert_null(src.password);
	mysql_source_free(&src);
	job.locator = "mysql://db.elsewhere/acme";
	assert_int_equal(mysql_source_from_job(&job, &src, &err), -1);
	assert_non_null(strstr(err.msg, "mysql_fallback_credentials_hosts"));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_counts_a_dump), cmocka_unit_test(test_any_piece_size),
		cmocka_unit_test(test_empty_dump),    cmocka_unit_test(test_refuses_unknown_shapes),
		cmocka_unit_test(test_long_name),     cmocka_unit_test(test_contents),
		cmocka_unit_test(test_name_check),    cmocka_unit_test(test_locator_rules),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
