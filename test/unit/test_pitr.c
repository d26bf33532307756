/* Unit tests of recovery targets: parsed whole and strictly, formatted again by us. */
#include "unit.h"

#include "pitr.h"

static void
test_times(void **state)
{
	static const struct
	{
		const char *text, *formatted;
	} good[] = {
		{"2026-11-25 10:15:00+00", "2026-11-25 10:15:00+00"},
		{"2026-11-25T10:15:00Z", "2026-11-25 10:15:00+00"},
		{"2026-11-25 10:15:00.25+00:00", "2026-11-25 10:15:00.250000+00"},
		{"2026-11-25 12:15:00.123456+0200", "2026-11-25 10:15:00.123456+00"},
		{"2026-11-25 05:15:00-05", "2026-11-25 10:15:00+00"},
	};
	static const char *const bad[] = {
		"yesterday",
		"2026-11-25 10:15:00",
		"2026-11-25 10:15:00+00\nrestore_command = 'touch /tmp/x'",
		"2026-11-25 10:15:00+00'",
		"2026-11-25 10:15:00+00 ",
		" 2026-11-25 10:15:00+00",
		"2026-11-25 10:15:00.+00",
		"2026-11-25 10:15:00.5e3+00",
		"2026-11-25 10:15:00.1234567+00",
		"2026-11-25 10:15:00+00:",
		"2026-11-25 10:15:00+0",
		"2026-02-29 10:15:00+00",
		"2026-11-25 24:00:00+00",
		"2026-11-25 10:15:60+00",
		"+2026-11-25 10:15:00+00",
		"2026-11-25 10:15:00+16",
	};
	char out[PITR_TEXT_MAX];

	(void) state;
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
	{
		pitr_time t;

		if (pitr_parse_time(good[i].text, &t) != 0)
			fail_msg("'%s' refused", good[i].text);
		pitr_format_time(&t, out, sizeof(out));
		assert_string_equal(out, good[i].formatted);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
	{
		pitr_time t;

		if (pitr_parse_time(bad[i], &t) == 0)
			fail_msg("'%s' accepted", bad[i]);
	}
}

static void
test_lsns(void **state)
{
	static const char *const bad[] = {
		"0/3000060'\nrestore_command = 'touch /tmp/x'",
		"0/3000060 ",
		"0x0/3000060",
		"0/",
		"/3000060",
		"0//3000060",
		"0/3000060/1",
		"123456789/0",
		"-1/0",
		"",
	};
	char out[PITR_TEXT_MAX];
	uint64_t lsn;

	(void) state;
	assert_int_equal(pitr_parse_lsn("0/3000060", &lsn), 0);
	assert_int_equal(lsn, 0x3000060);
	assert_int_equal(pitr_parse_lsn("1a/ffffffff", &lsn), 0);
	pitr_format_lsn(lsn, out, sizeof(out));
	assert_string_equal(out, "1A/FFFFFFFF");
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (pitr_parse_lsn(bad[i], &lsn) == 0)
			fail_msg("'%s' accepted", bad[i]);
}

static void
test_wal_segments(void **state)
{
	pitr_wal_name n;
	char name[PITR_WAL_NAME_LEN + 1];
	const uint64_t mb16 = 16 * 1024 * 1024, gb1 = 1024 * 1024 * 1024;

	(void) state;
	assert_int_equal(pitr_wal_name_parse("0000000200000001000000FF", &n), 0);
	assert_int_equal(n.timeline, 2);
	assert_int_equal(n.log, 1);
	assert_int_equal(n.seg, 0xFF);
	/* 256 segments of 16 MiB to a log: segment FF of log 1 is number 511, and the next is 00000002...00. */
	assert_int_equal(pitr_wal_segno(&n, mb16), 511);
	pitr_wal_name_format(2, 512, mb16, name, sizeof(name));
	assert_string_equal(name, "000000020000000200000000");
	pitr_wal_name_format(2, 510, mb16, name, sizeof(name));
	assert_string_equal(name, "0000000200000001000000FE");
	/* 1 GiB segments: four to a log. */
	assert_int_equal(pitr_wal_name_parse("000000010000000300000002", &n), 0);
	assert_int_equal(pitr_wal_segno(&n, gb1), 14);
	pitr_wal_name_format(1, 15, gb1, name, sizeof(name));
	assert_string_equal(name, "000000010000000300000003");
	for (const char **bad =
			 (const char *[]){"", "00000001000000000000000", "0000000100000000000000001", "00000001000000000000000a",
							  "00000001000000000000000G", "000000010000000000000001.partial", NULL};
		 *bad; bad++)
		assert_int_equal(pitr_wal_name_parse(*bad, &n), -1);
}

static void
test_wal_backup_ids(void **state)
{
	(void) state;
	assert_true(pitr_is_wal_backup_id("000000010000000000000003"));
	assert_true(pitr_is_wal_backup_id("00000002-history"));
	assert_true(pitr_is_wal_backup_id("000000010000000000000003-00000028-backup"));
	assert_true(pitr_is_wal_backup_id("0000000100000000000000a3-partial"));
	assert_false(pitr_is_wal_backup_id("42"));
	assert_false(pitr_is_wal_backup_id("1234567890123456789"));
	assert_false(pitr_is_wal_backup_id("9f3a00112233aabb"));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_times),
		cmocka_unit_test(test_lsns),
		cmocka_unit_test(test_wal_segments),
		cmocka_unit_test(test_wal_backup_ids),
	};

	return cmocka_run_group_tests_name("pitr", tests, NULL, NULL);
}
