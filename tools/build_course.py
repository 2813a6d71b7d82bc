"""Build every derived file of the course from the notebook sources.

One source of truth per problem: notebooks/<slug>/<slug>.py, a jupytext "percent" script whose cell
headers carry the nbgrader roles (see notebooks/README.md). From it this script derives

    notebooks/<slug>/<slug>.ipynb   nbgrader source notebook: no outputs, nbgrader cell metadata
    release/<slug>/<slug>.ipynb     student notebook, made by nbgrader's generate_assignment
    solutions/<slug>.py             importable reference module: the cells marked export=true
    solutions/__init__.py           the list of solution modules
    README.md (badge table)         the "Open in Colab" table between the COLAB_TABLE markers

Every notebook starts with the cells of tools/colab_header.py (Colab badge, setup, preflight): they are
injected here, so a change to them is one edit there.

Everything is rendered in memory (nbgrader runs in a throw-away course directory, without a
gradebook), so a build is a pure function of the sources and rebuilds are byte-identical.

    python tools/build_course.py            write what changed, delete derived files of deleted sources
    python tools/build_course.py --check    write nothing; exit 1 listing every stale file
    python tools/build_course.py --repo owner/name [--branch main]
                                            set the student repository (tools/colab_header.py's
                                            COURSE_REPO) that every Colab link and the setup cell use, and rebuild
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import re
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if sys.path[0] == str(REPO / "tools"):   # run by path: the repository takes the place of tools/ (imports: `tools.`)
    sys.path[0] = str(REPO)
elif str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
from tools import colab_header, course_format  # noqa: E402

course_format.skip_iri_grammar()
COMMAND = "python tools/build_course.py"

BEGIN_SOLUTION, END_SOLUTION = course_format.BEGIN_SOLUTION, course_format.END_SOLUTION
BEGIN_HIDDEN, END_HIDDEN = course_format.BEGIN_HIDDEN, course_format.END_HIDDEN
HEADER_KEYS = {"solution", "tests", "points", "export"}
ID_RE = re.compile(r"^[a-z][a-z0-9_]*$")

# Stable notebook metadata: nothing that depends on who built it, where, or with which Python.
NOTEBOOK_METADATA = {
    "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
    "language_info": {"name": "python"},
}


class SourceError(Exception):
    """A notebook source breaks the format of notebooks/README.md."""


# ---------------------------------------------------------------------------------------------
# discovery


def find_slugs(root: Path) -> list[str]:
    """Slugs whose source exists: notebooks/<slug>/<slug>.py."""
    return course_format.find_slugs(root / "notebooks", ".py")


# ---------------------------------------------------------------------------------------------
# source notebook


def _header_line(text: str, index: int) -> int:
    """1-based line in the .py of the index-th cell header, for error messages."""
    headers = [i + 1 for i, line in enumerate(text.splitlines()) if line.startswith("# %%")]
    return headers[index] if index < len(headers) else 0


def _dump(nb) -> bytes:
    import nbformat
    nbformat.validate(nb)
    text = nbformat.writes(nb, version=4)  # sorted keys, one line of source per JSON string
    return (text if text.endswith("\n") else text + "\n").encode()


def _cell_id(used: set, grade_id: str) -> str:
    cid = grade_id.replace("_", "-")[:64]
    assert cid not in used, cid
    used.add(cid)
    return cid


def source_notebook(slug: str, text: str):
    """The nbgrader source notebook of one .py source (an nbformat NotebookNode, no outputs)."""
    import jupytext
    import nbformat

    where = f"notebooks/{slug}/{slug}.py"
    parsed = jupytext.reads(text, fmt="py:percent")
    prefix = slug.split("_", 1)[0]
    cells, grade_ids, used_ids, seen_hash = [], set(), set(), {}
    for index, cell in enumerate(parsed.cells):
        line = _header_line(text, index)
        meta = dict(cell.metadata)
        for k in ("lines_to_next_cell", "lines_to_end_of_cell_marker"):
            meta.pop(k, None)
        unknown = set(meta) - HEADER_KEYS
        if unknown:
            raise SourceError(f"{where}:{line}: unknown cell header key(s) {sorted(unknown)}; "
                              f"allowed: {sorted(HEADER_KEYS)}")
        src = cell.source
        is_solution, is_tests = "solution" in meta, "tests" in meta
        if cell.cell_type not in ("code", "markdown"):
            raise SourceError(f"{where}:{line}: {cell.cell_type} cells are not supported")
        if cell.cell_type == "markdown" and meta:
            raise SourceError(f"{where}:{line}: markdown cells take no header keys, got {sorted(meta)}")
        if is_solution and is_tests:
            raise SourceError(f"{where}:{line}: a cell is either solution=... or tests=..., not both")
        if "points" in meta and not is_tests:
            raise SourceError(f"{where}:{line}: points= only goes with tests=...")
        if "export" in meta and meta["export"] is not True:
            raise SourceError(f"{where}:{line}: write export=true (got export={meta['export']!r})")
        if is_tests and meta.get("export"):
            raise SourceError(f"{where}:{line}: tests cells are never exported to solutions/")
        has_solution_markers = BEGIN_SOLUTION in src or END_SOLUTION in src
        has_hidden_markers = BEGIN_HIDDEN in src or END_HIDDEN in src
        if has_solution_markers and not is_solution:
            raise SourceError(f"{where}:{line}: {BEGIN_SOLUTION} / {END_SOLUTION} only go in solution=... cells")
        if has_hidden_markers and not is_tests:
            raise SourceError(f"{where}:{line}: hidden test regions only go in tests=... cells")
        if is_solution:
            _check_regions(src, BEGIN_SOLUTION, END_SOLUTION, f"{where}:{line}", required=True)
        if is_tests:
            _check_regions(src, BEGIN_HIDDEN, END_HIDDEN, f"{where}:{line}", required=False)

        if is_solution or is_tests:
            grade_id = meta["solution" if is_solution else "tests"]
            if not isinstance(grade_id, str) or not ID_RE.match(grade_id) or not grade_id.startswith(prefix):
                raise SourceError(f"{where}:{line}: id {grade_id!r} must be lowercase [a-z0-9_] and start "
                                  f"with the problem, {prefix!r} (e.g. {prefix}_kernel)")
        else:
            # Given cells are locked too, so a student cannot silently edit instructions or given code.
            # Their id follows the content, so inserting a cell does not renumber every other cell.
            digest = hashlib.sha1(src.encode()).hexdigest()[:8]
            n = seen_hash.get(digest, 0)
            seen_hash[digest] = n + 1
            kind = "md" if cell.cell_type == "markdown" else "code"
            grade_id = f"{prefix}_{kind}_{digest}" + (f"_{n}" if n else "")
        if grade_id in grade_ids:
            raise SourceError(f"{where}:{line}: duplicate id {grade_id!r}")
        grade_ids.add(grade_id)

        nbg = {"grade": False, "grade_id": grade_id, "locked": True, "schema_version": 3,
               "solution": False, "task": False}
        if is_solution:
            nbg.update(solution=True, locked=False)
        if is_tests:
            points = meta.get("points")
            if not isinstance(points, (int, float)) or isinstance(points, bool) or points <= 0:
                raise SourceError(f"{where}:{line}: tests cell {grade_id!r} needs points=<positive number>")
            nbg.update(grade=True, points=points)
        new_meta = {"nbgrader": nbg}
        if meta.get("export"):
            new_meta["export"] = True
        if cell.cell_type == "code":
            new = nbformat.v4.new_code_cell(src, metadata=new_meta)
        else:
            new = nbformat.v4.new_markdown_cell(src, metadata=new_meta)
        new.id = _cell_id(used_ids, grade_id)
        cells.append(new)

    if not any(c.metadata["nbgrader"]["grade"] for c in cells):
        raise SourceError(f"{where}: no tests=... cell: nothing would be graded")
    cells = _header_cells(slug, prefix, grade_ids, used_ids, where) + cells
    nb = nbformat.v4.new_notebook(cells=cells, metadata=json.loads(json.dumps(NOTEBOOK_METADATA)))
    nb.nbformat, nb.nbformat_minor = 4, 5
    return nb


def _header_cells(slug: str, prefix: str, grade_ids: set, used_ids: set, where: str) -> list:
    """The badge, setup and preflight cells of tools/colab_header.py: plain given cells, locked."""
    import nbformat

    cells = []
    for kind, suffix, src in colab_header.header_cells(slug):
        grade_id = f"{prefix}_{suffix}"
        if grade_id in grade_ids:
            raise SourceError(f"{where}: id {grade_id!r} is reserved for the injected {suffix} cell")
        grade_ids.add(grade_id)
        meta = {"nbgrader": {"grade": False, "grade_id": grade_id, "locked": True, "schema_version": 3,
                             "solution": False, "task": False}}
        new = (nbformat.v4.new_code_cell if kind == "code" else nbformat.v4.new_markdown_cell)(src, metadata=meta)
        new.id = _cell_id(used_ids, grade_id)
        cells.append(new)
    return cells


def _check_regions(src: str, begin: str, end: str, where: str, required: bool) -> None:
    depth, count = 0, 0
    for line in src.splitlines():
        if begin in line:
            if depth:
                raise SourceError(f"{where}: nested {begin}")
            if line.strip() != begin:
                raise SourceError(f"{where}: put {begin} alone on its line (got {line.strip()!r})")
            depth, count = 1, count + 1
        elif end in line:
            if not depth:
                raise SourceError(f"{where}: {end} without {begin}")
            if line.strip() != end:
                raise SourceError(f"{where}: put {end} alone on its line (got {line.strip()!r})")
            depth = 0
    if depth:
        raise SourceError(f"{where}: {begin} without {end}")
    if required and not count:
        raise SourceError(f"{where}: solution cell without a {begin} ... {end} region "
                          f"(nbgrader would replace the whole cell by a stub)")


# ---------------------------------------------------------------------------------------------
# release notebook (nbgrader generate_assignment)


def _nbgrader_config(root: Path, course: Path):
    """The repo's nbgrader_config.py, pointed at a throw-away course directory, without a gradebook."""
    from traitlets.config import Config, PyFileConfigLoader

    cfg = Config()
    cfg_file = root / "nbgrader_config.py"
    if not cfg_file.is_file():
        cfg_file = REPO / "nbgrader_config.py"
    cfg.merge(PyFileConfigLoader(cfg_file.name, path=str(cfg_file.parent)).load_config())
    cfg.CourseDirectory.root = str(course)
    cfg.CourseDirectory.db_url = f"sqlite:///{course / 'gradebook.db'}"
    cfg.GenerateAssignment.no_database = True   # the CLI's --no-db
    cfg.SaveCells.enabled = False
    cfg.GenerateAssignment.force = True
    return cfg


def release_files(root: Path, sources: dict[str, bytes]) -> dict[str, bytes]:
    """Run generate_assignment on the freshly built source notebooks; return {repo path: bytes}."""
    import nbformat
    from nbgrader.converters import GenerateAssignment
    from nbgrader.coursedir import CourseDirectory

    out: dict[str, bytes] = {}
    if not sources:
        return out
    with tempfile.TemporaryDirectory(prefix="build_course_") as tmp:
        course = Path(tmp)
        cfg = _nbgrader_config(root, course)
        src_dir = course / cfg.CourseDirectory.source_directory
        rel_dir = course / cfg.CourseDirectory.release_directory
        for slug, data in sources.items():
            # The other files of the source folder (pictures, data) travel too; nbgrader's
            # CourseDirectory.ignore (nbgrader_config.py) keeps the .py source out of the release.
            shutil.copytree(root / "notebooks" / slug, src_dir / slug,
                            ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__", "*.ipynb"))
            (src_dir / slug / f"{slug}.ipynb").write_bytes(data)
        logging.getLogger("traitlets").setLevel(logging.WARNING)
        for slug in sources:
            coursedir = CourseDirectory(config=cfg)
            coursedir.assignment_id = slug
            converter = GenerateAssignment(coursedir=coursedir, config=cfg)
            converter.log.setLevel(logging.WARNING)
            try:
                converter.start()
            except BaseException as exc:  # nbgrader raises NbGraderException / SystemExit
                raise SourceError(f"notebooks/{slug}: nbgrader generate_assignment failed: {exc!r}") from exc
        for path in sorted(p for p in rel_dir.rglob("*") if p.is_file()):
            rel = "release/" + path.relative_to(rel_dir).as_posix()
            if path.suffix == ".ipynb":
                nb = nbformat.read(path, as_version=4)
                for cell in nb.cells:
                    cell.metadata.pop("export", None)   # a build detail, not the student's business
                # nbgrader's checksums are hashes of cell content; nothing in the notebook depends
                # on time, but normalise the serialisation so the bytes match the source notebook's.
                out[rel] = _dump(nb)
            else:
                out[rel] = path.read_bytes()
    return out


# ---------------------------------------------------------------------------------------------
# solution modules


def solution_module(slug: str, text: str, nb) -> bytes:
    """The export=true cells, solution delimiter lines removed (their code kept)."""
    where = f"notebooks/{slug}/{slug}.py"
    chunks = []
    for cell in nb.cells:
        if cell.cell_type != "code" or not cell.metadata.get("export"):
            continue
        lines = [ln for ln in cell.source.splitlines() if ln.strip() not in (BEGIN_SOLUTION, END_SOLUTION)]
        for ln in lines:
            if ln.lstrip().startswith(("%", "!")):
                raise SourceError(f"{where}: export=true cell {cell.metadata['nbgrader']['grade_id']!r} has "
                                  f"IPython syntax ({ln.strip()!r}); keep magics out of exported cells")
        chunks.append("\n".join(lines).strip("\n"))
    if not chunks:
        return b""
    title = next((ln.lstrip("# ").strip() for c in nb.cells if c.cell_type == "markdown"
                  for ln in c.source.splitlines() if ln.startswith("# ")), slug)
    header = (f'"""Reference solution: {title}.\n\n'
              f"GENERATED from {where} (its export=true cells) by `{COMMAND}`.\n"
              f'Do not edit: edit the notebook source and rebuild.\n"""\n')
    body = header + "\n" + "\n\n\n".join(chunks) + "\n"
    try:
        compile(body, f"solutions/{slug}.py", "exec")
    except SyntaxError as exc:
        raise SourceError(f"{where}: the exported cells do not form a valid module: {exc}") from exc
    return body.encode()


def solutions_init(modules: list[str]) -> bytes:
    listed = "".join(f'    "{m}",\n' for m in modules)
    return (f'"""Reference solutions of the course, one module per notebook.\n\n'
            f"GENERATED by `{COMMAND}` from notebooks/<slug>/<slug>.py (the export=true cells).\n"
            f"Do not edit. Import one with `import solutions.<slug>`; importing this package loads none.\n"
            f'"""\n\nMODULES = (\n{listed})\n').encode()


# ---------------------------------------------------------------------------------------------
# the whole build


def render(root: Path = REPO) -> dict[str, bytes]:
    """Every derived file of the course under `root`, as {posix path relative to root: bytes}."""
    out: dict[str, bytes] = {}
    sources: dict[str, bytes] = {}
    modules = []
    for slug in find_slugs(root):
        text = (root / "notebooks" / slug / f"{slug}.py").read_text(encoding="utf-8")
        nb = source_notebook(slug, text)
        data = _dump(nb)
        sources[slug] = data
        out[f"notebooks/{slug}/{slug}.ipynb"] = data
        module = solution_module(slug, text, nb)
        if module:
            out[f"solutions/{slug}.py"] = module
            modules.append(slug)
    out.update(release_files(root, sources))
    out["solutions/__init__.py"] = solutions_init(modules)
    readme = root / "README.md"
    if readme.is_file():
        text = colab_header.update_readme(readme.read_text(encoding="utf-8"),
                                          sorted(rel.split("/")[1] for rel in out
                                                 if rel.startswith("release/") and rel.endswith(".ipynb")))
        if text is not None:
            out["README.md"] = text.encode()
    return out


def derived_on_disk(root: Path) -> set[str]:
    """Files under `root` that the build owns: they must all be in render()'s output."""
    owned = set()
    nb_dir = root / "notebooks"
    if nb_dir.is_dir():
        for d in nb_dir.iterdir():
            if d.is_dir() and (d / f"{d.name}.ipynb").is_file():
                owned.add(f"notebooks/{d.name}/{d.name}.ipynb")
    rel = root / "release"
    if rel.is_dir():
        owned |= {p.relative_to(root).as_posix() for p in rel.rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts and ".ipynb_checkpoints" not in p.parts
                  and p.name != ".gitkeep"}
    sol = root / "solutions"
    if sol.is_dir():
        owned |= {p.relative_to(root).as_posix() for p in sol.glob("*.py")}
    return owned


def compare(root: Path, files: dict[str, bytes]) -> tuple[list[str], list[str], list[str]]:
    """(missing, different, stale) relative paths of `root` against the rendered `files`."""
    missing, different = [], []
    for rel, data in sorted(files.items()):
        path = root / rel
        if not path.is_file():
            missing.append(rel)
        elif path.read_bytes() != data:
            different.append(rel)
    stale = sorted(derived_on_disk(root) - set(files))
    return missing, different, stale


def write(root: Path, files: dict[str, bytes]) -> list[str]:
    missing, different, stale = compare(root, files)
    for rel in missing + different:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(files[rel])
    for rel in stale:
        (root / rel).unlink()
        parent = (root / rel).parent
        while parent != root and parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()
            parent = parent.parent
    return [f"wrote   {r}" for r in missing + different] + [f"removed {r}" for r in stale]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a derived file is stale")
    parser.add_argument("--root", type=Path, default=REPO, help="course root (default: this repository)")
    parser.add_argument("--repo", metavar="OWNER/NAME",
                        help="the GitHub student repository every Colab link and the setup cell point at "
                             "(saved in tools/colab_header.py)")
    parser.add_argument("--branch", help="with --repo: the branch Colab opens and the setup cell installs")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    if args.branch and not args.repo:
        parser.error("--branch goes with --repo")
    if args.repo:
        if args.check:
            parser.error("--repo rewrites tools/colab_header.py: it does not go with --check")
        try:
            colab_header.set_repo(args.repo, args.branch)
        except ValueError as exc:
            parser.error(str(exc))
        print(f"build_course: Colab links and the setup cell now use {colab_header.repo_url()} "
              f"(branch {colab_header.COURSE_BRANCH})")
    try:
        files = render(root)
    except SourceError as exc:
        print(f"build_course: error: {exc}", file=sys.stderr)
        return 2
    slugs = find_slugs(root)
    if args.check:
        missing, different, stale = compare(root, files)
        if missing or different or stale:
            print(f"build_course: derived files are out of date; run `{COMMAND}`:", file=sys.stderr)
            for label, items in (("missing", missing), ("differs", different), ("stale  ", stale)):
                for rel in items:
                    print(f"  {label} {rel}", file=sys.stderr)
            return 1
        print(f"build_course: {len(files)} derived files of {len(slugs)} notebook(s) are up to date")
        return 0
    for line in write(root, files):
        print(line)
    print(f"build_course: {len(slugs)} notebook(s), {len(files)} derived files up to date")
    if colab_header.is_placeholder():
        print(f"build_course: note: Colab links point at the placeholder {colab_header.COURSE_REPO}; "
              f"publish the student repository and run `{COMMAND} --repo owner/name`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
