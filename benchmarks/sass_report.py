"""Instruction counts of the hot CUDA kernels' main loops, from their SASS (no GPU needed).

Compiles csrc/cuda/ops.cu for one architecture with line info, disassembles it with
nvdisasm, finds each kernel's main loop (the innermost loop holding all its tensor-core
MMAs, or for kernels without MMAs the longest loop) and counts its instructions by
where they come from:

- ``tile``: the per-tile code in the loop, or in a loop of tiles around it (tile_of, start_tile, tile_results and the
  result stores, the top-k / radius selection), split into ``tile:interior`` (the
  unchecked stores of tiles wholly inside the output), ``tile:edge`` (the checked ones)
  and ``tile:other``;
- ``slice``: everything else in the loop, i.e. what runs once per K slice, split by kind:
  ``mma`` (BMMA / HMMA / IMMA, wgmma's BGMMA / HGMMA / IGMMA), ``ldsm`` (ldmatrix), ``cp.async`` (LDGSTS), ``other``
  (of which ``calls``: subroutine calls, e.g. a 64-bit division, on every slice).

Each kernel also gets its registers and spill-store bytes from ``ptxas -v``.

Counts are static (instructions in the code, each path once), which for the per-slice
code is also the per-slice count: it has no branches but the rare ones into per-tile code.
An instruction counts by the source line the compiler gives it, so a value recomputed
inside the loop keeps the line where it was set up.
They show where issue slots go when no GPU is at hand; times come from bench_gpu.py.

    python benchmarks/sass_report.py                   # sm_90, writes results/sass-sm_90.json
    python benchmarks/sass_report.py --baseline HEAD~3 # the same counts for an older ops.cu too
    python benchmarks/sass_report.py --arch sm_90a     # with the wgmma kernels (sm_90a code only)

Needs nvcc and nvdisasm (``pip install nvidia-cuda-nvdisasm`` provides one; its
nvidia/cu*/bin folder is searched too).
"""
from __future__ import annotations

import argparse
import collections
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(os.environ.get("FASTSPLINE_BENCH_RESULTS") or Path(__file__).resolve().parent / "results")

# Kernels reported: label -> a piece of the mangled name.
KERNELS = {
    "cdist async square (and)": "cdist_mma_async_kernelILb0ENS1_9WarpTilesILi4ELi4E",
    "cdist async wide (and)": "cdist_mma_async_kernelILb0ENS1_9WarpTilesILi2ELi8E",
    "cdist sync (and)": "cdist_mma_kernelILb0E",
    "topk async": "topk_mma_async_kernel",
    "radius async (fill)": "radius_mma_async_kernelILb1E",
    "pack stream float32": "pack_stream_kernelIfLi8ELb1E",
    "pack columns16 float32": "pack_columns16_kernelIfE",
}
# Kernels with code for one architecture only (elsewhere a stub): the wgmma cdist kernels.
ARCH_KERNELS = {
    "sm_90a": {"cdist wgmma square": "cdist_wgmma_kernelINS1_10WgmmaTiles",
               "cdist wgmma wide": "cdist_wgmma_kernelINS1_14WgmmaWideTilesENS1_9WgmmaMathIS3_Li4ELi1ELb0E",
               "cdist wgmma deep": "cdist_wgmma_kernelINS1_14WgmmaWideTilesENS1_9WgmmaMathIS3_Li4ELi1ELb1E",
               "cdist wgmma cluster": "cdist_cluster_kernelILi3ELi1E",
               "cdist wgmma cluster4": "cdist_cluster_kernelILi3ELi2E"},
}
MMA = r"(BMMA|HMMA|IMMA|BGMMA|HGMMA|IGMMA)"  # mma.sync and wgmma in the SASS

# Per-tile code: functions / structs by the line that opens them, and the on_tile lambdas
# handed to stream_tiles (their parameter list ends with `const int (&acc)`) and the
# wgmma kernels' `on_tile`.
TILE_OPENERS = (
    r"void tile_results\(", r"^struct StorePair\b", r"^struct StoreShared\b", r"^struct GlobalPops\b",
    r"^struct SharedPops\b", r"void store_pairs\(", r"void store_tile\(", r"void topk_merge_tile\(", r"void radius_scan_tile\(",
    r"^struct PersistentTiles\b", r"auto start_tile = ", r"\[&\]\([^)]*const int \(&acc\)",
    r"void wgmma_tile_results\(", r"const auto on_tile = \[&\]",
)
INTERIOR_CALL = r"StorePair<false>\("  # store_pairs' call for interior tiles
EDGE_CALL = r"emit_to\(checked\)"      # and for edge tiles


def find_tool(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for site in sys.path:
        for hit in glob.glob(os.path.join(site, "nvidia", "cu*", "bin", name)):
            return hit
    raise SystemExit(f"sass_report: {name} not found on PATH or in an nvidia-cuda-{name} pip package "
                     f"(pip install nvidia-cuda-{name})")


def block_lines(src: list[str], start: int) -> range:
    """1-based lines from `start` to the brace that closes the first one opened there."""
    depth, opened = 0, False
    for i in range(start - 1, len(src)):
        for ch in src[i]:
            if ch == "{":
                depth, opened = depth + 1, True
            elif ch == "}":
                depth -= 1
        if opened and depth <= 0:
            return range(start, i + 2)
    return range(start, len(src) + 1)


def tile_line_sets(src: list[str]) -> tuple[set[int], set[int]]:
    tile: set[int] = set()
    interior: set[int] = set()
    for n, line in enumerate(src, 1):
        if any(re.search(p, line.strip()) for p in TILE_OPENERS):
            tile.update(block_lines(src, n))
        if re.search(INTERIOR_CALL, line):
            interior.add(n)
    return tile, interior


@dataclass
class Instr:
    addr: int
    text: str
    chain: tuple[int, ...]  # source lines, innermost first (ops.cu only)


def parse(disasm: str, mangled_piece: str, source_name: str) -> list[Instr]:
    lines = disasm.split("\n")
    try:
        start = next(i for i, l in enumerate(lines) if l.startswith(".text.") and mangled_piece in l)
    except StopIteration:
        raise SystemExit(f"sass_report: no kernel matching {mangled_piece!r} in the disassembly") from None
    out: list[Instr] = []
    labels: dict[str, int] = {}
    pending: list[str] = []
    chain: list[int] = []
    fresh = True
    for l in lines[start + 1:]:
        if l.startswith("//-----"):
            break
        if m := re.match(r"^(\.L_x_\d+):", l):
            pending.append(m.group(1))
            continue
        if l.lstrip().startswith("//## File"):
            if fresh:
                chain, fresh = [], False
            chain += [int(x) for x in re.findall(r'"[^"]*' + re.escape(source_name) + r'", line (\d+)', l)][:1]
            continue
        if m := re.match(r"\s*/\*([0-9a-f]{4,})\*/\s+(.*?);", l):
            text = re.sub(r"^\{?\s*@!?U?P\w+\s+", "", m.group(2).strip().lstrip("{ "))
            addr = int(m.group(1), 16)
            out.append(Instr(addr, text, tuple(chain)))
            for p in pending:
                labels[p] = addr
            pending, fresh = [], True
    for ins in out:  # branch targets as addresses
        if m := re.search(r"\((\.L_x_\d+)\)", ins.text):
            ins.text = ins.text.replace(m.group(1), hex(labels.get(m.group(1), -1)))
    return out


def loops(ins: list[Instr]) -> dict[int, int]:
    """Loops as head index -> index of its last backward branch (a loop is a head with every
    backward branch to it; the last one ends it)."""
    index = {x.addr: i for i, x in enumerate(ins)}
    ends: dict[int, int] = {}
    for i, x in enumerate(ins):
        if x.text.startswith("BRA") and (m := re.search(r"\((0x[0-9a-f]+|-0x1)\)", x.text)):
            target = int(m.group(1), 16)
            if target < x.addr and target in index:
                ends[index[target]] = max(ends.get(index[target], i), i)
    if not ends:
        raise SystemExit("sass_report: kernel has no loop")
    return ends


def main_loop(ins: list[Instr]) -> tuple[int, int]:
    """Index range of the main loop: the loop holding the most MMAs, the innermost such (a
    loop around it, e.g. the persistent kernels' loop of tiles, holds them too); without
    MMAs, the longest loop."""
    ends = loops(ins)

    def key(head: int) -> tuple[int, int]:  # the shortest loop holding the most MMAs
        mmas = sum(1 for y in ins[head:ends[head] + 1] if re.match(MMA, y.text))
        return (mmas, head - ends[head]) if mmas else (0, ends[head] - head)

    head = max(ends, key=key)
    return head, ends[head]


def tile_loop(ins: list[Instr], j: int, i: int) -> tuple[int, int] | None:
    """The smallest loop strictly around the main loop j..i (the pipelined kernels' loop of
    tiles, around their loop of K slices), or None."""
    around = [(h, e) for h, e in loops(ins).items() if h <= j and e >= i and (h, e) != (j, i)]
    return min(around, key=lambda he: he[1] - he[0]) if around else None


def tile_kind(x: Instr, interior: set[int], edge: set[int]) -> str:
    return "interior" if any(n in interior for n in x.chain) else "edge" if any(n in edge for n in x.chain) else "other"


def classify(ins: list[Instr], tile: set[int], interior: set[int], edge: set[int]) -> dict[str, int]:
    """Counts of the main loop's instructions by kind (per slice, or per tile by source
    line), plus, for a loop of tiles around it, that loop's other instructions (all per tile)."""
    j, i = main_loop(ins)
    counts: collections.Counter[str] = collections.Counter()
    for x in ins[j:i + 1]:
        op = x.text.split()[0] if x.text else ""
        if re.match(MMA, op):  # per slice whatever line the compiler gives it (a BGMMA got the tile's)
            counts["slice:mma"] += 1
        elif any(n in tile for n in x.chain):
            counts[f"tile:{tile_kind(x, interior, edge)}"] += 1
        elif op.startswith("LDSM"):
            counts["slice:ldsm"] += 1
        elif op.startswith("LDGSTS"):
            counts["slice:cp.async"] += 1
        else:
            counts["slice:other"] += 1
            # A call of a named subroutine (a 64-bit division, an emulated MMA) on every slice;
            # calls to a label are control-flow idioms, not subroutines.
            if op.startswith("CALL") and re.search(r"\(\$?[A-Za-z_]", x.text):
                counts["slice:calls"] += 1
    if (outer := tile_loop(ins, j, i)) is not None:
        for x in ins[outer[0]:j] + ins[i + 1:outer[1] + 1]:
            counts[f"tile:{tile_kind(x, interior, edge)}"] += 1
    return {"loop_instructions": i - j + 1, **dict(sorted(counts.items()))}


def disassemble(tree: Path, arch: str, work: Path) -> tuple[dict[str, dict[str, int]], str]:
    """tree's ops.cu compiled for arch: ptxas resources per kernel, and the SASS with line info."""
    if not (tree / "csrc" / "cuda" / "ops.cu").is_file():
        raise SystemExit(f"sass_report: no csrc/cuda/ops.cu under {tree}: run it from a fastspline checkout")
    nvcc, nvdisasm = find_tool("nvcc"), find_tool("nvdisasm")
    cubin = work / f"ops-{arch}-{tree.name}.cubin"
    cmd = [nvcc, "-std=c++17", "-O3", "--expt-relaxed-constexpr", f"-arch={arch}", "-cubin", "-lineinfo",
           "-Xptxas", "-v", f"-I{tree / 'csrc'}", "-o", str(cubin), str(tree / "csrc" / "cuda" / "ops.cu")]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"sass_report: nvcc failed:\n{done.stderr[-3000:]}")
    disasm = subprocess.run([nvdisasm, "-gi", str(cubin)], capture_output=True, text=True, check=True).stdout
    return ptxas_resources(done.stderr), disasm


def report(tree: Path, arch: str, work: Path, compiled: tuple[dict, str] | None = None) -> dict[str, dict]:
    """The counts per reported kernel (``compiled``: disassemble's result, if already made)."""
    resources, disasm = compiled or disassemble(tree, arch, work)
    src = (tree / "csrc" / "cuda" / "ops.cu").read_text().split("\n")
    tile, interior = tile_line_sets(src)
    edge = {n for n, line in enumerate(src, 1) if re.search(EDGE_CALL, line)}
    out = {}
    for label, piece in {**KERNELS, **ARCH_KERNELS.get(arch, {})}.items():
        found = [r for name, r in resources.items() if piece in name]
        if not found and label not in KERNELS:  # an older ops.cu (--baseline) without it
            continue
        out[label] = {**(found[0] if len(found) == 1 else {}),
                      **classify(parse(disasm, piece, "ops.cu"), tile, interior, edge)}
    return out


def ptxas_report(log: str) -> dict[tuple[str, str], dict[str, int]]:
    """Registers and spill bytes (stores, loads) per (kernel, architecture) from ``ptxas -v``
    output (also read by tests/test_cuda_resources.py)."""
    report: dict[tuple[str, str], dict[str, int]] = {}
    current = None
    for line in log.splitlines():
        if m := re.search(r"Compiling entry function '(\w+)' for '(sm_\d+a?)'", line):
            current = (m.group(1), m.group(2))
            report[current] = {}
        elif current and (m := re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", line)):
            report[current].update(spill_stores=int(m.group(1)), spill_loads=int(m.group(2)))
        elif current and (m := re.search(r"Used (\d+) registers", line)):
            report[current]["registers"] = int(m.group(1))
    return report


def ptxas_resources(log: str) -> dict[str, dict[str, int]]:
    """Registers and spill-store bytes per kernel from the ``ptxas -v`` output of one architecture."""
    out: dict[str, dict[str, int]] = {}
    for (kernel, _), r in ptxas_report(log).items():
        out[kernel] = {"spill_bytes": r["spill_stores"]} if "spill_stores" in r else {}
        if "registers" in r:
            out[kernel]["registers"] = r["registers"]
    return out


def checkout(rev: str, work: Path) -> Path:
    tree = work / "baseline"
    tree.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "csrc"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    return tree


def print_table(title: str, rows: dict[str, dict]) -> None:
    keys = ["registers", "spill_bytes", "loop_instructions", "slice:mma", "slice:ldsm", "slice:cp.async",
            "slice:other", "slice:calls", "tile:interior", "tile:edge", "tile:other"]
    heads = {"registers": ("regs", ""), "spill_bytes": ("spill", "bytes"), "loop_instructions": ("loop", "")}
    print(f"\n{title}")
    print(f"{'kernel':28s}" + "".join(f"{heads.get(k, k.split(':')[::-1])[0]:>9s}" for k in keys))
    print(f"{'':28s}" + "".join(f"{heads.get(k, k.split(':')[::-1])[1]:>9s}" for k in keys))
    for label, r in rows.items():
        print(f"{label:28s}" + "".join(f"{r.get(k, 0):>9d}" for k in keys))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", default="sm_90", help="nvcc -arch (default sm_90)")
    p.add_argument("--baseline", metavar="REV", help="also count the ops.cu of this git revision")
    p.add_argument("--out", type=Path, help="JSON path (default results/sass-ARCH.json)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        payload: dict = {"arch": args.arch, "static_counts": True,
                         "nvcc": re.sub(r".*release ", "", subprocess.run(
                             [find_tool("nvcc"), "--version"], capture_output=True, text=True).stdout.strip().split("\n")[-2]),
                         "current": report(ROOT, args.arch, work)}
        print_table(f"{args.arch}: this checkout", payload["current"])
        if args.baseline:
            rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", args.baseline], capture_output=True,
                                 text=True, check=True).stdout.strip()
            payload["baseline"] = {"rev": rev, "kernels": report(checkout(args.baseline, work), args.arch, work)}
            print_table(f"{args.arch}: {rev}", payload["baseline"]["kernels"])
    sys.path.insert(0, str(ROOT))
    from fastspline._files import atomic_write_json

    out = args.out or RESULTS / f"sass-{args.arch}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, payload)
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
