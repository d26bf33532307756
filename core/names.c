/* Tenant and engine name validation (see names.h). */
#include "names.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

static const char *const names_engines[] = {"postgres", "mysql", "mongodb", "redis"};

int
names_check_tenant(const char *tenant, tb_error *err)
{
	size_t len;

	if (tenant == NULL || tenant[0] == '\0')
		return tb_error_set(err, TB_ERR_INVALID, "tenant name is empty");
	len = strlen(tenant);
	if (len > NAMES_TENANT_MAX)
		return tb_error_set(err, TB_ERR_INVALID, "tenant name '%.*s…' is longer than %d characters", 20, tenant,
							NAMES_TENANT_MAX);
	for (size_t i = 0; i < len; i++)
	{
		char c = tenant[i];
		int ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || (i > 0 && (c == '_' || c == '-'));

		if (!ok)
			return tb_error_set(err, TB_ERR_INVALID,
								"invalid tenant name '%s': use lower-case letters, digits, '_' and '-', "
								"starting with a letter or digit",
								tenant);
	}
	return 0;
}

int
names_check_engine(const char *engine, tb_error *err)
{
	if (engine != NULL)
		for (size_t i = 0; i < sizeof(names_engines) / sizeof(names_engines[0]); i++)
			if (strcmp(engine, names_engines[i]) == 0)
				return 0;
	return tb_error_set(err, TB_ERR_INVALID, "unknown engine '%s': use postgres, mysql, mongodb or redis",
						engine ? engine : "");
}

int
names_wal_object(const char *file, char *object, size_t object_size, char *backup_id, size_t id_size, tb_error *err)
{
	size_t len = strlen(file), i;
	const char *rest = file + 8;

	/* Eight hex digits of timeline, then a segment's 16 or ".history". */
	if (len < 16 || len > 60 || strspn(file, "0123456789ABCDEF") < 8 ||
		!(strcmp(rest, ".history") == 0 ||
		  (strspn(rest, "0123456789ABCDEF") == 16 &&
		   (rest[16] == '\0' || strcmp(rest + 16, ".partial") == 0 ||
			(rest[16] == '.' && strspn(rest + 17, "0123456789ABCDEF") == 8 && strcmp(rest + 25, ".backup") == 0)))))
		return tb_error_set(err, TB_ERR_INVALID, "'%s' is not the name of a WAL segment or history file", file);
	if ((size_t) snprintf(object, object_size, "wal/%.8s/%s.tbk", file, file) >= object_size || len >= id_size)
		return tb_error_set(err, TB_ERR_INVALID, "WAL file name '%s' is too long", file);
	for (i = 0; i < len; i++)
		backup_id[i] = file[i] == '.' ? '-' : (char) tolower((unsigned char) file[i]);
	backup_id[len] = '\0';
	return 0;
}
