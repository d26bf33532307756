#!/bin/sh
# The CLI file-storage scenario again, with the CLI built under AddressSanitizer and UBSan.
[ -n "${TB_ASAN_BIN:-}" ] || { echo "1..0 # SKIP TB_ASAN_BIN not set (make test sets it)"; exit 0; }
TB_BIN=$TB_ASAN_BIN exec "$(dirname "$0")/cli_file.t"
