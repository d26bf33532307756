#!/bin/sh
# The MySQL agent scenario again, with S3 storage (Swift s3api, SigV4 checked).
TB_TEST_STORAGE=s3 exec "$(dirname "$0")/mysql_agent.t"
