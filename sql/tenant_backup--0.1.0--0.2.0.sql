-- tenant_backup 0.1.0 -> 0.2.0: hardening against hostile tenants, operators, agents
-- and storage. CREATE EXTENSION installs 0.1.0 and runs this script, so every test
-- runs it; test/integration/pg_upgrade.t updates an installed 0.1.0 with data.

\echo Use "ALTER EXTENSION tenant_backup UPDATE" to load this file. \quit
