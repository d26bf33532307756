/*
 * The MySQL agent's row counter (agents/mysql/dump_count.c): a dump tool's script read in
 * pieces of any size, the tables it creates and the rows it inserts, and what it refuses.
 */
#include "unit.h"

#include <stdio.h>

#include "dump_count.h"

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

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_counts_a_dump), cmocka_unit_test(test_any_piece_size),
		cmocka_unit_test(test_empty_dump),    cmocka_unit_test(test_refuses_unknown_shapes),
		cmocka_unit_test(test_long_name),     cmocka_unit_test(test_contents),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
