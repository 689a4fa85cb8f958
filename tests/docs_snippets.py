#!/usr/bin/env python3
"""Turns every ```cpp block of the given Markdown pages into a doctest TEST_CASE (docs stay true)."""
import pathlib
import sys

out_path, pages = sys.argv[1], sys.argv[2:]
lines = ['#include <doctest/doctest.h>', '#include <string>', '#include <vector>', '#include "dl/dl.hpp"',
         'using namespace dl;', '']
for page in pages:
    text = pathlib.Path(page).read_text(encoding='utf-8').splitlines()
    name, count, inside, block = pathlib.Path(page).name, 0, False, []
    for line in text:
        if not inside and line.strip() == '```cpp':
            inside, block = True, []
        elif inside and line.strip() == '```':
            inside, count = False, count + 1
            lines.append(f'TEST_CASE("docs/{name}: snippet {count}") {{')
            lines += ['  ' + b for b in block]
            lines += ['}', '']
        elif inside:
            block.append(line)
pathlib.Path(out_path).write_text('\n'.join(lines) + '\n', encoding='utf-8')
