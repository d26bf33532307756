/* Unit tests of the key hierarchy: master key files, tenant key wrapping. */
#include "unit.h"

#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "keys.h"

static char dir[] = "/tmp/tb-test-keys-XXXXXX";

static void
path_in_dir(char *out, size_t size, const char *name)
{
	snprintf(out, size, "%s/%s", dir, name);
}

static void
test_master_generate_and_load(void **state)
{
	char path[256];
	master_key a, b;
	struct stat sb;
	tb_error err = {0};

	(void) state;
	path_in_dir(path, sizeof(path), "master");
	assert_int_equal(keys_master_generate(path, &err), 0);
	assert_int_equal(stat(path, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0600);
	assert_int_equal(sb.st_size, 65);
	assert_int_equal(keys_master_load(path, &a, &err), 0);
	assert_int_equal(keys_master_load(path, &b, &err), 0);
	assert_memory_equal(a.key, b.key, sizeof(a.key));
	assert_string_equal(a.id, b.id);
	assert_int_equal(strlen(a.id), KEYS_ID_LEN);

	/* never overwrites */
	assert_int_equal(keys_master_generate(path, &err), -1);
	assert_int_equal(err.code, TB_ERR_EXISTS);
	assert_int_equal(keys_master_load(path, &b, &err), 0);
	assert_memory_equal(a.key, b.key, sizeof(a.key));
}

static void
test_master_refuses_loose_modes_and_garbage(void **state)
{
	char path[256];
	master_key key;
	tb_error err = {0};
	FILE *f;

	(void) state;
	path_in_dir(path, sizeof(path), "loose");
	f = fopen(path, "w");
	fputs("00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n", f);
	fclose(f);
	chmod(path, 0644);
	assert_int_equal(keys_master_load(path, &key, &err), -1);
	assert_non_null(strstr(err.msg, "chmod 600"));
	chmod(path, 0600);
	assert_int_equal(keys_master_load(path, &key, &err), 0);

	path_in_dir(path, sizeof(path), "short");
	f = fopen(path, "w");
	fputs("0011223344\n", f);
	fclose(f);
	chmod(path, 0600);
	assert_int_equal(keys_master_load(path, &key, &err), -1);
	assert_int_equal(err.code, TB_ERR_KEY);
	/* the message never echoes key material */
	assert_null(strstr(err.msg, "0011223344"));

	path_in_dir(path, sizeof(path), "missing");
	assert_int_equal(keys_master_load(path, &key, &err), -1);
	assert_int_equal(err.code, TB_ERR_NOT_FOUND);
}

static void
test_tenant_wrap_unwrap(void **state)
{
	master_key master, other;
	tenant_key key, back;
	tb_error err = {0};
	char hex[2 * CRYPTO_KEY_LEN + 1];
	char *doc;

	(void) state;
	assert_int_equal(
		keys_master_from_hex("00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff", &master, &err), 0);
	assert_int_equal(
		keys_master_from_hex("ff112233445566778899aabbccddeeff00112233445566778899aabbccddeeff", &other, &err), 0);
	assert_int_equal(keys_tenant_generate("acme", &key, &err), 0);
	doc = keys_tenant_wrap(&master, &key, &err);
	assert_non_null(doc);
	crypto_hex_encode(key.key, sizeof(key.key), hex);
	assert_null(strstr(doc, hex)); /* only the wrapped form is stored */

	assert_int_equal(keys_tenant_unwrap(&master, doc, "acme", key.id, &back, &err), 0);
	assert_memory_equal(back.key, key.key, sizeof(key.key));
	assert_string_equal(back.id, key.id);

	assert_int_equal(keys_tenant_unwrap(&other, doc, "acme", key.id, &back, &err), -1);
	assert_int_equal(err.code, TB_ERR_KEY);
	assert_non_null(strstr(err.msg, master.id));
	assert_non_null(strstr(err.msg, other.id));

	assert_int_equal(keys_tenant_unwrap(&master, doc, "globex", key.id, &back, &err), -1);
	assert_int_equal(err.code, TB_ERR_CORRUPT);
	free(doc);
}

/* A key document edited to claim another tenant fails: tenant and id are in the AAD. */
static void
test_tenant_doc_swapped(void **state)
{
	master_key master;
	tenant_key key, back;
	tb_error err = {0};
	char *doc, *p;

	(void) state;
	assert_int_equal(
		keys_master_from_hex("00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff", &master, &err), 0);
	assert_int_equal(keys_tenant_generate("acme", &key, &err), 0);
	doc = keys_tenant_wrap(&master, &key, &err);
	p = strstr(doc, "\"acme\"");
	assert_non_null(p);
	memcpy(p + 1, "acmf", 4);
	assert_int_equal(keys_tenant_unwrap(&master, doc, "acmf", key.id, &back, &err), -1);
	assert_int_equal(err.code, TB_ERR_KEY);
	free(doc);
}

static void
test_key_ids_sort_by_age(void **state)
{
	tenant_key a, b;
	tb_error err = {0};

	(void) state;
	assert_int_equal(keys_tenant_generate("acme", &a, &err), 0);
	sleep(1);
	assert_int_equal(keys_tenant_generate("acme", &b, &err), 0);
	assert_true(strcmp(a.id, b.id) < 0);
	assert_int_equal(keys_tenant_generate("Acme", &a, &err), -1);
	assert_int_equal(err.code, TB_ERR_INVALID);
}

static void
test_secret_seal_open(void **state)
{
	master_key master, other;
	tb_error err = {0};
	char *sealed, *back = NULL;

	(void) state;
	assert_int_equal(
		keys_master_from_hex("00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff", &master, &err), 0);
	assert_int_equal(
		keys_master_from_hex("ff112233445566778899aabbccddeeff00112233445566778899aabbccddeeff", &other, &err), 0);
	sealed = keys_secret_seal(&master, "source password", "s3cr3t p@ss", &err);
	assert_non_null(sealed);
	assert_null(strstr(sealed, "s3cr3t"));
	assert_int_equal(keys_secret_open(&master, "source password", sealed, &back, &err), 0);
	assert_string_equal(back, "s3cr3t p@ss");
	free(back);
	assert_int_equal(keys_secret_open(&other, "source password", sealed, &back, &err), -1);
	assert_int_equal(err.code, TB_ERR_KEY);
	assert_int_equal(keys_secret_open(&master, "another context", sealed, &back, &err), -1);
	assert_int_equal(err.code, TB_ERR_KEY);
	sealed[strlen(sealed) - 1] ^= 1;
	assert_int_equal(keys_secret_open(&master, "source password", sealed, &back, &err), -1);
	free(sealed);
}

static int
setup(void **state)
{
	(void) state;
	return mkdtemp(dir) ? 0 : -1;
}

static int
teardown(void **state)
{
	char cmd[300];

	(void) state;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_master_generate_and_load), cmocka_unit_test(test_master_refuses_loose_modes_and_garbage),
		cmocka_unit_test(test_tenant_wrap_unwrap),       cmocka_unit_test(test_tenant_doc_swapped),
		cmocka_unit_test(test_key_ids_sort_by_age),      cmocka_unit_test(test_secret_seal_open),
	};

	return cmocka_run_group_tests_name("keys", tests, setup, teardown);
}
