#!/bin/sh
# One style for every C file of the project: clang-format with the checked-in
# .clang-format must find nothing to change. Fix with:
#   clang-format -i $(git ls-files 'src/*.[ch]' 'tests/*.c' 'bench/*.c')
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
if git rev-parse --git-dir >/dev/null 2>&1; then
    files=$(git ls-files 'src/*.c' 'src/*.h' 'tests/*.c' 'bench/*.c')
else
    files=$(find src tests bench -name '*.[ch]' ! -name 'embedded_*.c' | sort)
fi
# shellcheck disable=SC2086
if clang-format --dry-run --Werror $files; then
    echo "format: $(echo "$files" | wc -l) files follow .clang-format"
else
    echo "format: the files above differ from .clang-format (see the fix at the top of $0)"
    exit 1
fi
