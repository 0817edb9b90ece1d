"""Build the development set: completion cases sampled from real, pinned open-source packages.

    python benchmarks/build_devset.py [--workspace benchmarks/workspace] [--out benchmarks/devset.jsonl]
                                      [--per-kind 100] [--seed 0] [--install-only] [--exclude FILE]

A held-out sample for checking what was tuned on the dev set: another seed, minus the dev
set's cases (`--seed 7 --exclude benchmarks/devset.jsonl --out /tmp/heldout.jsonl`).

The pinned packages are installed with `pip --no-deps` into the workspace (skipped when its
stamp file already lists exactly these pins). Two kinds of cases are sampled, spread evenly
over the packages:

- `deref`: the cursor right after `obj.`, where jedi resolves the true attribute to a
  definition in another module of the same package, and jedi's completion at the cursor of
  the truncated document lists it (the setting of the monitor-guided decoding paper).
- `line`: the cursor at a token boundary, or inside an identifier, of a single-line statement.

In both, the rest of the current line is removed from the document and becomes the `target`.
One JSON object per line: `{"id", "kind", "file", "line", "character", "text", "target",
"ident"?}`, with `line`/`character` 0-based and `character` in UTF-16 code units. The id is
`file:line:column`, 1-based as editors and compilers print it. Sampling depends only on the
seed and the installed files: sorted file lists, seeded `random.Random`, no set/dict order.
"""

from __future__ import annotations

import argparse
import ast
import io
import json
import keyword
import random
import re
import subprocess
import sys
import time
import tokenize
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import jedi

ROOT = Path(__file__).resolve().parents[1]

# networkx 3.7 requires Python >= 3.12; 3.6.1 is the newest release that installs on 3.11.
PINS: dict[str, str] = {
    "flask": "3.1.3",
    "starlette": "1.10.0",
    "pygments": "2.21.0",
    "jsonschema": "4.26.0",
    "markdown": "3.11.3",
    "sqlparse": "0.6.1",
    "tomlkit": "0.15.2",
    "networkx": "3.6.1",
}
STAMP = ".devset-pins.json"
KINDS = ("deref", "line")

MAX_FILE_BYTES = 60_000  # keeps the JSONL a few MB; the biggest files are mostly data tables
SKIP_DIRS = {"tests", "test", "testing", "benchmarks", "vendor", "_vendor", "vendored", "externals"}
# Files that say they are generated are data, not code anyone types.
GENERATED = re.compile(r"auto(matically|-)?\s*generated|do not (edit|modify)", re.IGNORECASE)
# Characters that str.splitlines() (and some editors) treat as line breaks but LSP does not;
# a file with any of them would make line numbers ambiguous between tools.
ODD_BREAKS = re.compile("[\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")

MIN_LINE_CODE = 20  # characters of code on a `line` case's line, after the indentation
MIN_TARGET = 4
P_MID_WORD = 0.25  # share of `line` cases with the cursor inside an identifier
P_PREFERRED = 0.8  # otherwise, share placed after an operator, opening bracket or keyword
P_KEEP_IMPORT = 0.3  # import lines are a fifth of short statements; keep them a minority
MAX_PER_IDENT = 2  # `super().__init__` alone would otherwise be a tenth of the deref cases
MAX_TRIES = 600  # jedi checks per package for `deref`, to bound the build time
CLOSERS = {")", "]", "}"}
# Token types whose text hides code inside a string (3.12+ tokenizes f-strings piecewise).
STRING_OPEN = {getattr(tokenize, n) for n in ("FSTRING_START", "TSTRING_START") if hasattr(tokenize, n)}
STRING_CLOSE = {getattr(tokenize, n) for n in ("FSTRING_END", "TSTRING_END") if hasattr(tokenize, n)}


@dataclass
class Source:
    """One parsed source file of a package."""

    pkg: str
    rel: str  # path relative to the workspace, with forward slashes
    path: Path
    text: str
    lines: list[str]  # without their newlines
    tokens: list[tokenize.TokenInfo]
    tree: ast.Module
    starts: list[int] = field(default_factory=list)  # offset of each line in text

    def __post_init__(self) -> None:
        offset = 0
        for line in self.lines:
            self.starts.append(offset)
            offset += len(line) + 1


def install(workspace: Path) -> None:
    """pip-install the pins into the workspace unless its stamp already lists exactly them."""
    stamp = workspace / STAMP
    wanted = sorted(f"{name}=={version}" for name, version in PINS.items())
    try:
        if json.loads(stamp.read_text())["pins"] == wanted:
            print(f"workspace {workspace} already holds the pins", file=sys.stderr)
            return
    except (OSError, ValueError, KeyError, TypeError):
        pass
    workspace.mkdir(parents=True, exist_ok=True)
    # --upgrade replaces package folders left by other pins instead of keeping them.
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--upgrade", "--target", str(workspace), *wanted]
    print("+", " ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, check=True)
    stamp.write_text(json.dumps({"pins": wanted}, indent=1) + "\n")


def package_files(workspace: Path, pkg: str) -> list[Path]:
    """The package's .py files, sorted, without tests and vendored code."""
    root = workspace / pkg
    files = [p for p in root.rglob("*.py") if not SKIP_DIRS.intersection(p.relative_to(root).parts[:-1])]
    return sorted((p for p in files if not p.name.startswith("test_") and p.name != "conftest.py"),
                  key=lambda p: p.relative_to(workspace).as_posix())


def load_source(workspace: Path, pkg: str, path: Path) -> Source | None:
    """Parse a file, or None when it is too big, not UTF-8, generated, or has odd line breaks."""
    data = path.read_bytes()
    if len(data) > MAX_FILE_BYTES:
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if text.startswith("\ufeff") or ODD_BREAKS.search(text) or GENERATED.search(text[:3000]):
        return None
    try:
        tree = ast.parse(text)
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (SyntaxError, tokenize.TokenError, ValueError):
        return None
    rel = path.relative_to(workspace).as_posix()
    return Source(pkg, rel, path, text, text.split("\n"), tokens, tree)


def line_tokens(src: Source) -> dict[int, list[tokenize.TokenInfo]]:
    """Code tokens per 1-based row, leaving out tokens inside f-/t-strings (3.12+)."""
    rows: dict[int, list[tokenize.TokenInfo]] = {}
    depth = 0
    for tok in src.tokens:
        if tok.type in STRING_OPEN:
            depth += 1
        elif tok.type in STRING_CLOSE:
            depth -= 1
        elif depth == 0 and tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT,
                                             tokenize.DEDENT, tokenize.ENDMARKER):
            rows.setdefault(tok.start[0], []).append(tok)
    return rows


def clean_rows(src: Source, rows: dict[int, list[tokenize.TokenInfo]]) -> set[int]:
    """Rows that a case may cut: no comment, no trailing whitespace, not part of a multi-line token."""
    spanned = {r for tok in src.tokens for r in range(tok.start[0] + 1, tok.end[0] + 1)}
    out = set()
    for row, toks in rows.items():
        line = src.lines[row - 1]
        # A trailing backslash would end the target with a line continuation.
        if line != line.rstrip() or line.endswith("\\") or row in spanned:
            continue
        if any(t.type == tokenize.COMMENT for t in toks):
            continue
        # A token that continues onto the next row (a string) would leave the target open.
        if any(t.end[0] != row for t in toks):
            continue
        out.add(row)
    return out


def defined_names(src: Source) -> set[str]:
    """Names this module defines: functions, classes, assigned names and `x.attr = ...` stores."""
    names: set[str] = set()
    for node in ast.walk(src.tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
    return names


def make_case(src: Source, kind: str, row: int, col: int, ident: str | None = None) -> dict:
    """Cut the line at (1-based row, code-point column): the removed rest is the target."""
    line = src.lines[row - 1]
    start = src.starts[row - 1]
    text = src.text[: start + col] + src.text[start + len(line):]
    prefix = line[:col]
    character = len(prefix.encode("utf-16-le")) // 2
    case = {
        "id": f"{src.rel}:{row}:{character + 1}",
        "kind": kind,
        "file": src.rel,
        "line": row - 1,
        "character": character,
        "text": text,
        "target": line[col:],
    }
    if ident is not None:
        case["ident"] = ident
    return case


def deref_candidates(src: Source, rows: dict[int, list[tokenize.TokenInfo]], clean: set[int],
                     elsewhere: set[str]) -> list[tuple[int, int, str]]:
    """(row, col, name) of each `obj.name` whose name some other module of the package defines."""
    out = []
    for row in sorted(clean):
        toks = rows[row]
        if toks[0].string in ("import", "from"):  # `from .mod import x` is not a dereference
            continue
        for prev, tok in zip(toks, toks[1:]):
            if (tok.type == tokenize.NAME and prev.string == "." and prev.end == tok.start
                    and tok.string in elsewhere and not keyword.iskeyword(tok.string)):
                out.append((row, tok.start[1], tok.string))
    return out


def jedi_resolves(src: Source, row: int, col: int, ident: str, project: jedi.Project) -> bool:
    """True when jedi finds `ident` in another module of the package and completes it at the cut."""
    import jedi

    here = src.path.resolve()
    pkg_root = here.parents[src.rel.count("/") - 1]
    try:
        script = jedi.Script(src.text, path=src.path, project=project)
        defs = script.goto(row, col, follow_imports=True)
        if not any(d.name == ident and d.module_path is not None
                   and Path(d.module_path).resolve().is_relative_to(pkg_root)
                   and Path(d.module_path).resolve() != here for d in defs):
            return False
        case = make_case(src, "deref", row, col)
        cut = jedi.Script(case["text"], path=src.path, project=project)
        return any(c.name == ident for c in cut.complete(row, col))
    except Exception as exc:  # jedi has internal errors on odd code; such a case is just skipped
        print(f"  jedi failed at {src.rel}:{row}:{col + 1}: {exc!r}", file=sys.stderr)
        return False


def line_cursor(src: Source, toks: list[tokenize.TokenInfo], rng: random.Random) -> int | None:
    """A column strictly inside the line: after an operator/keyword, any boundary, or mid-word."""
    line = src.lines[toks[0].start[0] - 1]
    indent = toks[0].start[1]

    def ok(col: int) -> bool:
        target = line[col:]
        return col > indent and len(target) >= MIN_TARGET and re.search(r"\w", target) is not None

    mid = [t.start[1] + k for t in toks
           if t.type == tokenize.NAME and not keyword.iskeyword(t.string) and len(t.string) >= 4
           for k in range(1, len(t.string) - 1) if ok(t.start[1] + k)]
    preferred, other = [], []
    for prev, tok in zip(toks, toks[1:]):
        if not ok(tok.start[1]):
            continue
        after_op = prev.type == tokenize.OP and prev.string not in CLOSERS
        after_kw = prev.type == tokenize.NAME and keyword.iskeyword(prev.string)
        (preferred if after_op or after_kw else other).append(tok.start[1])
    if mid and rng.random() < P_MID_WORD:
        return rng.choice(mid)
    if preferred and (not other or rng.random() < P_PREFERRED):
        return rng.choice(preferred)
    pool = preferred + other
    return rng.choice(pool) if pool else None


def statement_rows(src: Source, clean: set[int], rows: dict[int, list[tokenize.TokenInfo]]) -> list[int]:
    """Rows where a single-line statement (not a bare string) starts the line and has enough code."""
    out = set()
    for node in ast.walk(src.tree):
        if not isinstance(node, ast.stmt) or node.lineno != node.end_lineno or node.lineno not in clean:
            continue
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # docstrings, bare strings, `...`
        toks = rows[node.lineno]
        line = src.lines[node.lineno - 1]
        if toks[0].start[1] != len(line) - len(line.lstrip()):
            continue
        if len(line.strip()) >= MIN_LINE_CODE:
            out.add(node.lineno)
    return sorted(out)


def file_rounds(per_file: list[list]) -> Iterator:
    """Interleave shuffled per-file candidate lists, one from each file per round, to spread cases."""
    depth = 0
    while True:
        any_left = False
        for cands in per_file:
            if depth < len(cands):
                any_left = True
                yield cands[depth]
        if not any_left:
            return
        depth += 1


def sample_package(kind: str, pkg: str, sources: list[Source], rng: random.Random, project: jedi.Project,
                   taken: set[tuple[str, int]], seen_lines: set[str], idents: dict[str, int]) -> Iterator[dict]:
    """Yield accepted cases of one kind for one package, in a seeded order, checking lazily."""
    rows_of = {s.rel: line_tokens(s) for s in sources}
    clean_of = {s.rel: clean_rows(s, rows_of[s.rel]) for s in sources}
    order = list(sources)
    rng.shuffle(order)
    per_file: list[list[tuple[Source, int, int, str | None]]] = []
    if kind == "deref":
        names = {s.rel: defined_names(s) for s in sources}
        files_defining: dict[str, int] = {}
        for s in sources:
            for n in names[s.rel]:
                files_defining[n] = files_defining.get(n, 0) + 1
        for s in order:
            # A cheap filter before jedi: the name must be defined in some other module.
            elsewhere = {n for n, k in files_defining.items() if k > (n in names[s.rel])}
            cands = [(s, r, c, n) for r, c, n in deref_candidates(s, rows_of[s.rel], clean_of[s.rel], elsewhere)]
            rng.shuffle(cands)
            per_file.append(cands)
    else:
        for s in order:
            cands = [(s, r, -1, None) for r in statement_rows(s, clean_of[s.rel], rows_of[s.rel])]
            rng.shuffle(cands)
            per_file.append(cands)
    tries = 0
    for src, row, col, ident in file_rounds(per_file):
        line = src.lines[row - 1].strip()
        if (src.rel, row) in taken or line in seen_lines:
            continue
        if kind == "deref":
            if idents.get(ident, 0) >= MAX_PER_IDENT:
                continue
            if tries >= MAX_TRIES:
                print(f"  {pkg}: gave up after {tries} jedi checks", file=sys.stderr)
                return
            tries += 1
            if not jedi_resolves(src, row, col, ident, project):
                continue
            case = make_case(src, kind, row, col, ident)
            idents[ident] = idents.get(ident, 0) + 1
        else:
            if line.startswith(("import ", "from ")) and rng.random() >= P_KEEP_IMPORT:
                continue
            col = line_cursor(src, rows_of[src.rel][row], rng)
            if col is None:
                continue
            case = make_case(src, kind, row, col)
        taken.add((src.rel, row))
        seen_lines.add(line)
        yield case


def build(workspace: Path, per_kind: int, seed: int) -> list[dict]:
    """Sample `per_kind` cases of each kind, round-robin over the packages."""
    import jedi
    import parso.cache

    # parso evicts parsed modules whose last use (for pickles loaded from ~/.cache/parso: the
    # time they were pickled) is over 10 min old once 600 are cached, while jedi still holds
    # them; jedi then raises KeyError in get_parso_cache_node (jedi#1888). That made results
    # depend on the disk cache; a build parses only a few hundred modules, so never evict.
    parso.cache._CACHED_SIZE_TRIGGER = 10**9
    project = jedi.Project(workspace)
    sources: dict[str, list[Source]] = {}
    for pkg in sorted(PINS):
        loaded = [load_source(workspace, pkg, p) for p in package_files(workspace, pkg)]
        sources[pkg] = [s for s in loaded if s is not None]
        print(f"{pkg}: {len(sources[pkg])} of {len(loaded)} files usable", file=sys.stderr)
    cases: list[dict] = []
    taken: set[tuple[str, int]] = set()  # (file, row): one case per line over both kinds
    seen_lines: set[str] = set()  # the same code line in two places would be a duplicate case
    idents: dict[str, int] = {}  # deref cases per attribute name
    for kind in KINDS:
        t0 = time.perf_counter()
        # String seeds hash with SHA-512 inside random, so they do not depend on PYTHONHASHSEED.
        gens = {pkg: sample_package(kind, pkg, sources[pkg], random.Random(f"{seed}:{kind}:{pkg}"),
                                    project, taken, seen_lines, idents) for pkg in sorted(PINS)}
        count = 0
        while count < per_kind and gens:
            for pkg in list(gens):
                if count >= per_kind:
                    break
                case = next(gens[pkg], None)
                if case is None:
                    del gens[pkg]
                    continue
                cases.append(case)
                count += 1
                print(f"{kind} {count}/{per_kind} {case['id']} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    return cases


def sort_key(case: dict) -> tuple:
    """Kind, then id with its numbers compared as numbers."""
    return case["kind"], case["file"], case["line"], case["character"]


def main(argv: list[str] | None = None) -> int:
    """Install the pins, sample the cases and write the JSONL."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workspace", type=Path, default=ROOT / "benchmarks" / "workspace")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "devset.jsonl")
    ap.add_argument("--per-kind", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--install-only", action="store_true")
    ap.add_argument("--exclude", type=Path, action="append", default=[],
                    help="leave out the cases whose id is in this JSONL (a held-out sample: --seed 7 --exclude benchmarks/devset.jsonl)")
    args = ap.parse_args(argv)
    workspace = args.workspace.resolve()
    # Read before the minutes of sampling, so that a wrong path fails at once.
    taken = {json.loads(line)["id"] for path in args.exclude for line in path.read_text(encoding="utf-8").splitlines() if line.strip()}
    t0 = time.perf_counter()
    install(workspace)
    if args.install_only:
        return 0
    cases = [c for c in sorted(build(workspace, args.per_kind, args.seed), key=sort_key) if c["id"] not in taken]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", encoding="utf-8", newline="\n") as f:
        for case in cases:
            f.write(json.dumps(case, ensure_ascii=False) + "\n")
    counts: dict[str, int] = {}
    for case in cases:
        key = f"{case['kind']} {case['file'].split('/')[0]}"
        counts[key] = counts.get(key, 0) + 1
    for key in sorted(counts):
        print(f"{key}: {counts[key]}", file=sys.stderr)
    print(f"wrote {len(cases)} cases to {args.out} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
