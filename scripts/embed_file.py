#!/usr/bin/python3
"""Writes a C file that holds a file's bytes: embed_file.py NAME IN OUT gives
`const char NAME[]` (NUL-terminated) and `const size_t NAME_len`."""
import sys

name, src, out = sys.argv[1:4]
data = open(src, "rb").read()
with open(out, "w") as f:
    f.write("#include <stddef.h>\n")
    f.write(f"extern const char {name}[];\nextern const size_t {name}_len;\n")
    f.write(f"const char {name}[] = {{\n")
    for i in range(0, len(data), 16):
        f.write("    " + ", ".join(str(b) for b in data[i:i + 16]) + ",\n")
    f.write("    0};\n")
    f.write(f"const size_t {name}_len = {len(data)};\n")
