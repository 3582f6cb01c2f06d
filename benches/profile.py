#!/usr/bin/env python3
"""Where a request's CPU goes: `perf script` output (call stacks) read from stdin, each
sample put in one bucket, the buckets scaled to microseconds per request.

    perf script -i perf.data | python3 benches/profile.py CPU_US_PER_REQUEST [--min-share PCT]

A sample goes to the first bucket in BUCKETS one of whose patterns a frame of its stack
contains (so a bucket holds what its work calls: the instantiation's allocations count
as instantiation), else to the crate of its innermost frame. The shares are of the
node's samples; CPU_US_PER_REQUEST (user + system time over requests answered, measured
around the same load) turns them into microseconds. Run by `benches/profile.sh`.
"""

import re
import sys

# Rust's legacy symbol mangling, as guest functions carry it in the names wasmtime gives
# perf: `_ZN10serde_core3ser...17h0123456789abcdefE` -> `serde_core::ser::...`.
ESCAPES = {"$LT$": "<", "$GT$": ">", "$RF$": "&", "$BP$": "*", "$C$": ",", "$SP$": "@",
           "$u20$": " ", "$u27$": "'", "$u5b$": "[", "$u5d$": "]", "$u7b$": "{", "$u7d$": "}",
           "$u7e$": "~", "..": "::"}


def demangle(name):
    """A legacy-mangled Rust symbol in `name` made readable (its hash dropped); anything
    else as it is.

    >>> demangle("wasm[12]::function[23]::_ZN10serde_core3ser12SerializeMap15serialize_entry17h6d6745a690edb9b6E")
    'wasm[12]::function[23]::serde_core::ser::SerializeMap::serialize_entry'
    >>> demangle("_ZN5alloc11collections5btree3map25IntoIter$LT$K$C$V$C$A$GT$10dying_next17hec653fd0749da42dE")
    'alloc::collections::btree::map::IntoIter<K,V,A>::dying_next'
    >>> demangle("_ZN4core3fmt5Error3new17h0123456789abcdefE+0x10")
    'core::fmt::Error::new+0x10'
    >>> demangle("dlfree")
    'dlfree'
    """
    start = name.find("_ZN")
    if start < 0:
        return name
    # Length-prefixed identifiers up to the closing `E`.
    parts, i = [], start + 3
    while i < len(name) and name[i].isdigit():
        j = i
        while j < len(name) and name[j].isdigit():
            j += 1
        n = int(name[i:j])
        parts.append(name[j:j + n])
        i = j + n
    if not parts or i >= len(name) or name[i] != "E":
        return name
    if re.fullmatch(r"h[0-9a-f]{16}", parts[-1]):
        parts.pop()
    text = "::".join(parts)
    for k, v in ESCAPES.items():
        text = text.replace(k, v)
    return name[:start] + text + name[i + 1:]


def guest_function(frame):
    """A guest frame's function as the node's perf map names it (`wasm[12]::function[221]::
    dlfree`, a trampoline, or a bare name), else one row for code with no name.

    >>> guest_function("7f880f07c65b wasm[12]::function[221]::dlfree+0x59b (/tmp/perf-15698.map)")
    'wasm[12]::function[221]::dlfree'
    >>> guest_function("7fc028053294 [unknown] (/tmp/perf-19448.map)")[:30]
    'guest code with no name (not i'
    """
    sym = re.sub(r"^[0-9a-f]+ ", "", frame)
    sym = re.sub(r"(\+0x[0-9a-f]+)? \([^)]*\)\s*$", "", sym)
    if "perf-" not in frame or sym.startswith("[unknown]"):
        return "guest code with no name (not in a perf map: the node writes one with NANOGRID_PERF_MAP=1)"
    return demangle(sym)

# (bucket, patterns): the first that matches a sample's stack takes it.
BUCKETS = [
    ("memory reset at teardown (PAGEMAP_SCAN, copies)", ("deallocate_memory",)),
    ("Store teardown, rest", ("drop_in_place<wasmtime::runtime::store::Store", "StoreOpaque as core::ops::drop::Drop")),
    ("instantiation", ("instantiate_async",)),
    ("Store and WASI context made", ("Runtime::new_store",)),
    # Two buckets `bucket` fills by where the guest's code is in the stack (see GUEST).
    ("guest code", ()),
    ("host functions the guest calls (WASI, wasi:http, kv)", ()),
    ("call into the guest (fiber, lowering, lifting)", ("on_fiber", "call_async", "LowerContext", "LiftContext")),
    ("spans (tracing)", ("nanogrid::trace::", "finish_trace", "finish_run")),
    ("kernel: writing the answer (loopback TCP, waking the client)", ("do_writev", "sys_writev", "sys_sendmsg", "sys_sendto")),
    ("kernel: reading requests", ("sys_recvfrom", "sys_read", "sys_recvmsg")),
    ("kernel: epoll_wait", ("sys_epoll_wait", "sys_epoll_pwait")),
    ("kernel: interrupts and rescheduling", ("asm_sysvec", "asm_common_interrupt", "irqentry_exit")),
    ("kernel: other", ("[kernel.kallsyms]",)),
]


# How a frame of guest code shows: wasmtime's JIT code, named when the node runs with
# NANOGRID_PERF_MAP=1 (then perf reads /tmp/perf-PID.map).
GUEST = ("[JIT]", "perf-", "wasm[")


def stacks(lines):
    """Each sample's frames, innermost first: perf script prints a header line per sample
    and then one indented line per frame, samples separated by blank lines."""
    frames = []
    for line in lines:
        if not line.strip():
            if frames:
                yield frames
            frames = []
        elif line[0] in " \t":
            frames.append(line.strip())
    if frames:
        yield frames


def leaf_crate(frame):
    """The crate (or library) of a frame: `hyper::proto::...` -> `hyper`."""
    sym = re.sub(r"^[0-9a-f]+ ", "", frame)
    sym = re.sub(r"\+0x[0-9a-f]+.*$", "", sym).lstrip("<")
    if "::" in sym:
        return "other: " + sym.split("::")[0]
    lib = re.search(r"\(([^)]*)\)\s*$", frame)
    if lib and ("libc" in lib.group(1) or "vdso" in lib.group(1)):
        return "other: libc (" + sym[:40] + ")" if sym.startswith("__mem") else "other: libc"
    return "other: " + (sym[:40] or "unknown")


def bucket(frames):
    for name, patterns in BUCKETS:
        if name == "guest code" and any(g in frames[0] for g in GUEST):
            return name
        if name.startswith("host functions") and any(g in f for f in frames for g in GUEST):
            return name
        if patterns and any(p in f for f in frames for p in patterns):
            return name
    return leaf_crate(frames[0])


def main():
    if len(sys.argv) < 2:
        sys.exit("usage: profile.py CPU_US_PER_REQUEST [--min-share PCT] < perf-script-output")
    cpu = float(sys.argv[1])
    min_share = float(sys.argv[sys.argv.index("--min-share") + 1]) if "--min-share" in sys.argv else 0.5
    counts = {}
    guest = {}
    total = 0
    for frames in stacks(sys.stdin):
        total += 1
        b = bucket(frames)
        counts[b] = counts.get(b, 0) + 1
        if b == "guest code":
            f = guest_function(frames[0])
            guest[f] = guest.get(f, 0) + 1
    if total == 0:
        sys.exit("no samples with call stacks in the input (was perf recording the node?)")
    print(f"{total} samples; {cpu:.2f} µs of CPU per request\n")
    print("| where | share of samples | µs per request |")
    print("| --- | ---: | ---: |")
    rest = 0
    for name, n in sorted(counts.items(), key=lambda kv: -kv[1]):
        share = 100 * n / total
        if share < min_share:
            rest += n
            continue
        print(f"| {name} | {share:.1f} % | {cpu * n / total:.2f} |")
    if rest:
        print(f"| everything under {min_share} % each | {100 * rest / total:.1f} % | {cpu * rest / total:.2f} |")
    top = [(f, n) for f, n in sorted(guest.items(), key=lambda kv: -kv[1]) if 100 * n / total >= min_share][:12]
    if top:
        print("\nThe guest code's hottest functions (innermost frame; `wasm[N]` is a core module of the component):\n")
        print("| guest function | share of samples | µs per request |")
        print("| --- | ---: | ---: |")
        for f, n in top:
            print(f"| `{f}` | {100 * n / total:.1f} % | {cpu * n / total:.2f} |")


if __name__ == "__main__":
    main()
