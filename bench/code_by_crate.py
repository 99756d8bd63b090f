"""Code size of a wasm module by Rust crate, from its `name` section (a module built with
`strip = "debuginfo"`, before wasm-opt drops the names): python3 bench/code_by_crate.py FILE.wasm"""

import collections
import re
import sys


def leb(data: bytes, i: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[i]
        i += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return result, i


GENERIC = {"core", "alloc", "std"}


def crate(name: str) -> str:
    """The crate a function's code comes from: its path's first segment; for `<Type as Trait>::f`
    the type's crate, or the trait's when the type is generic or from core/alloc/std."""
    legacy = re.match(r"_ZN(\d+)", name)
    if legacy:
        segment = name[legacy.end():legacy.end() + int(legacy.group(1))]
        if not segment.startswith("_$LT$"):
            return segment
        own = re.match(r"_\$LT\$(?:\$RF\$|\$BP\$|mut\$u20\$|\$u5b\$)*([a-z_0-9]+)\.\.", segment)
        trait = re.search(r"\$u20\$as\$u20\$([a-z_0-9]+)\.\.", segment)
        if own and own.group(1) not in GENERIC:
            return own.group(1)
        if trait and trait.group(1) not in GENERIC:
            return trait.group(1)
        return own.group(1) if own else "core"
    v0 = re.search(r"Cs[0-9a-zA-Z]+_(\d+)([a-z_0-9]+)", name)
    if name.startswith("_R") and v0:
        return v0.group(2)[: int(v0.group(1))]
    return "(other: libc, compiler-rt, exports)"


data = open(sys.argv[1], "rb").read()
i, imported, bodies, names = 8, 0, [], {}
while i < len(data):
    section = data[i]
    size, i = leb(data, i + 1)
    end = i + size
    if section == 2:  # imports: functions among them take the first indices
        count, j = leb(data, i)
        for _ in range(count):
            for _ in range(2):
                n, j = leb(data, j)
                j += n
            kind = data[j]
            j += 1
            if kind == 0:
                imported += 1
                _, j = leb(data, j)
            elif kind == 1:
                j += 1
                flags, j = leb(data, j)
                _, j = leb(data, j)
                if flags & 1:
                    _, j = leb(data, j)
            elif kind == 2:
                flags, j = leb(data, j)
                _, j = leb(data, j)
                if flags & 1:
                    _, j = leb(data, j)
            else:
                j += 2
    elif section == 10:
        count, j = leb(data, i)
        for _ in range(count):
            body, j = leb(data, j)
            bodies.append(body)
            j += body
    elif section == 0:
        n, j = leb(data, i)
        if data[j:j + n] == b"name":
            j += n
            while j < end:
                kind = data[j]
                sub, j = leb(data, j + 1)
                if kind == 1:
                    count, k = leb(data, j)
                    for _ in range(count):
                        index, k = leb(data, k)
                        n, k = leb(data, k)
                        names[index] = data[k:k + n].decode(errors="replace")
                        k += n
                j += sub
    i = end
sizes = collections.Counter()
for index, body in enumerate(bodies):
    sizes[crate(names.get(index + imported, ""))] += body
total = sum(sizes.values())
print(f"code section {total / 1e6:.2f} MB in {len(bodies)} functions ({len(names)} named)")
for name, size in sizes.most_common(20):
    print(f"{size / 1e6:6.2f} MB {100 * size / total:5.1f}%  {name}")
