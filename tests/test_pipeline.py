"""The notebook pipeline: notebooks/<slug>/<slug>.py -> source .ipynb, student release, solutions/.

Every test runs on a small synthetic notebook (so the pipeline is tested even before any notebook
exists) and on every real notebook present, built into a temporary directory. The tests marked
`slow` execute notebooks (the whole source notebook with its solutions; the release up to its
stubs) through nbgrader's own Validator: select them with `-m slow`, skip them with `-m "not slow"`.
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import os
import re
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from autograder.problems import PROBLEMS  # noqa: E402
from tools import build_course as bc  # noqa: E402
from tools import executed_notebooks as executed  # noqa: E402

BIN = Path(sys.executable).parent
REAL_SLUGS = bc.find_slugs(REPO)
DEMO_SLUG = "p1_demo"
TARGETS = [("demo", DEMO_SLUG)] + [("repo", slug) for slug in REAL_SLUGS]
TARGET_IDS = [slug if kind == "repo" else "demo" for kind, slug in TARGETS]
# slug prefixes ("p3") of the problems whose module exposes flash_attention_forward; the demo is "p1_demo"
FA_PROBLEMS = {p.slug.split("_")[0] for p in PROBLEMS.values() if p.entry_point == "flash_attention_forward"}
SIGNATURE = "(q, k, v, is_causal=False, window_size=None, sink_size=None)"
STUB_LINES = {"# YOUR CODE HERE", "raise NotImplementedError()"}

# A complete, honest (if tiny) Problem 1 in the source format: blockwise online softmax in PyTorch.
DEMO_SOURCE = textwrap.dedent('''\
    # %% [markdown]
    # # Demo: blockwise attention in PyTorch
    #
    # A synthetic notebook that exercises every feature of the source format.

    # %% export=true
    import math

    import autograder
    import torch

    BLOCK_N = 16

    # %% solution="p1_forward" export=true
    def flash_attention_forward(q, k, v, is_causal=False, window_size=None, sink_size=None):
        """O [B, Hq, N, D] and lse [B, Hq, N], one key tile at a time."""
        B, Hq, Hkv, N, D = autograder.validate_attention_inputs(q, k, v, is_causal, window_size, sink_size)
        ### BEGIN SOLUTION
        k = k.repeat_interleave(Hq // Hkv, dim=1).float()      # [B, Hq, N, D]
        v = v.repeat_interleave(Hq // Hkv, dim=1).float()
        mask = autograder.masks.attention_mask(is_causal, window_size, sink_size)
        visible = autograder.masks.dense_mask(mask, N, device=q.device)   # [N, N]
        m_i = torch.full((B, Hq, N), float("-inf"), device=q.device)
        l_i = torch.zeros((B, Hq, N), device=q.device)
        acc = torch.zeros((B, Hq, N, D), device=q.device)
        for start in range(0, N, BLOCK_N):
            s = q.float() @ k[:, :, start:start + BLOCK_N].transpose(-1, -2) / math.sqrt(D)
            s = s.masked_fill(~visible[:, start:start + BLOCK_N], float("-inf"))
            m_new = torch.maximum(m_i, s.amax(-1))
            # a row that has seen no key yet keeps m = -inf: shift by 0 instead to avoid -inf - -inf
            m_safe = m_new.masked_fill(m_new == float("-inf"), 0.0)
            alpha = torch.exp(m_i - m_safe)
            p = torch.exp(s - m_safe[..., None])
            l_i = l_i * alpha + p.sum(-1)
            acc = acc * alpha[..., None] + p @ v[:, :, start:start + BLOCK_N]
            m_i = m_new
        return (acc / l_i[..., None]).to(q.dtype), m_i + torch.log(l_i)
        ### END SOLUTION

    # %%
    print("given code runs too")

    # %% tests="p1_basic" points=1
    autograder.check(1, flash_attention_forward, cases=[autograder.Case("basic", 1, 2, 2, 40, 16, seed=1)])

    # %% tests="p1_masks" points=2
    autograder.check(1, flash_attention_forward, cases=[autograder.Case("window", 1, 2, 1, 37, 16, is_causal=True,
                                                                        window_size=8, seed=2)])
    ### BEGIN HIDDEN TESTS
    autograder.check(1, flash_attention_forward, cases=[autograder.Case("sinks", 1, 4, 2, 45, 16, is_causal=True,
                                                                        window_size=5, sink_size=3, seed=77)])
    ### END HIDDEN TESTS
    ''')


# ---------------------------------------------------------------------------------------------
# fixtures: build once per session into temporary course directories


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo_course")
    src = root / "notebooks" / DEMO_SLUG / f"{DEMO_SLUG}.py"
    src.parent.mkdir(parents=True)
    src.write_text(DEMO_SOURCE)
    bc.write(root, bc.render(root))
    return root


@pytest.fixture(scope="session")
def repo_render():
    return bc.render(REPO)


@pytest.fixture(scope="session")
def repo_build(tmp_path_factory, repo_render):
    root = tmp_path_factory.mktemp("repo_build")
    bc.write(root, repo_render)
    return root


def _roots(request, kind):
    """(where the .py sources are, where their derived files were built): requested lazily, so a
    broken real notebook does not take the synthetic notebook's tests down with it."""
    if kind == "demo":
        root = request.getfixturevalue("demo_root")
        return root, root
    return REPO, request.getfixturevalue("repo_build")


@pytest.fixture(params=TARGETS, ids=TARGET_IDS)
def target(request):
    kind, slug = request.param
    src_root, build_root = _roots(request, kind)
    return kind, slug, src_root, build_root


def _read(path: Path):
    return nbformat.read(path, as_version=4)


def _regions(source: str, begin: str, end: str):
    """(lines inside begin/end regions, lines outside), stripped."""
    inside, outside, depth = [], [], False
    for line in source.splitlines():
        if begin in line:
            depth = True
        elif end in line:
            depth = False
        else:
            (inside if depth else outside).append(line.strip())
    return inside, outside


def _secret_and_public_lines(nb):
    """Stripped lines of solution/hidden-test regions, and the lines every student may see."""
    secret, public = set(), set(STUB_LINES)
    for cell in nb.cells:
        sol_in, rest = _regions(cell.source, bc.BEGIN_SOLUTION, bc.END_SOLUTION)
        hid_in, rest = _regions("\n".join(rest), bc.BEGIN_HIDDEN, bc.END_HIDDEN)
        secret |= set(sol_in) | set(hid_in)
        public |= set(rest)
    return {s for s in secret if s} - public, public


# ---------------------------------------------------------------------------------------------
# notebook execution through nbgrader's Validator (the code behind `nbgrader validate`), in
# subprocesses, all notebooks at once (tools/executed_notebooks.py). A real notebook's execution is
# recorded under a content hash in tests/executed/: a current record stands for executing it again.


def _execute_all(slugs, build_root, records=None):
    """(slug, "source"|"release") -> {"results": validate results, "notebook": executed nb}: the
    record where one matches the notebook and its inputs (`records`), else a fresh execution."""
    found, jobs = {}, []
    for slug in slugs:
        for which, folder in executed.WHICH.items():
            path = build_root / folder / slug / f"{slug}.ipynb"
            data = executed.load(slug, which, executed.key(path, which), records) if records else None
            if data is None:
                jobs.append(((slug, which), path))
            else:
                found[(slug, which)] = data

    def run(job):
        (slug, which), path = job
        return (slug, which), executed.execute(path, which)

    with ThreadPoolExecutor(max(1, min(len(jobs), os.cpu_count() or 1))) as pool:
        found.update(pool.map(run, jobs))
    for data in found.values():
        if data.get("notebook") is not None:
            data["notebook"] = nbformat.from_dict(data["notebook"])
    return found


@pytest.fixture(scope="session")
def demo_executions(demo_root, tmp_path_factory):
    return _execute_all([DEMO_SLUG], demo_root)


def selected_slugs(session) -> list:
    """The real notebooks that the selected tests execute (`pytest -k p3` selects Problem 3's only)."""
    wanted = {item.callspec.params["target"][1] for item in session.items
              if "executions" in getattr(item, "fixturenames", ()) and hasattr(item, "callspec")
              and item.callspec.params.get("target", ("",))[0] == "repo"}
    return [slug for slug in REAL_SLUGS if slug in wanted]


@pytest.fixture(scope="session")
def repo_executions(repo_build, tmp_path_factory, request):
    """The selected real notebooks: recorded executions where current, the others executed here, as
    many at a time as there are CPU cores."""
    return _execute_all(selected_slugs(request.session), repo_build, executed.RECORDS)


@pytest.fixture
def executions(target, request):
    return request.getfixturevalue(f"{target[0]}_executions")


def _execution(executions, kind, slug, which):
    data = executions[(slug, which)]
    if "error" in data:
        pytest.fail(data["error"])
    return data


def _errors(nb):
    """(cell index, cell, error output) for every error output of an executed notebook."""
    return [(i, cell, out) for i, cell in enumerate(nb.cells) if cell.cell_type == "code"
            for out in cell.get("outputs", []) if out.output_type == "error"]


def _describe(cell, out):
    first = cell.source.strip().splitlines()[:3]
    tb = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(out.get("traceback", [])[-2:]))
    return (f"cell {cell.metadata.get('nbgrader', {}).get('grade_id')!r} ({' / '.join(first)} ...) raised "
            f"{out.ename}: {out.evalue}\n{tb[-1500:]}")


# ---------------------------------------------------------------------------------------------
# the build itself


def test_executed_records_are_current():
    """tests/executed/ holds a current record of every real notebook's two executions (the key covers
    the notebook, the autograder and the pinned versions): after a change, `make build` re-executes."""
    todo = executed.stale(REAL_SLUGS)
    assert not todo, (f"{len(todo)} stale execution record(s), e.g. tests/executed/{todo[0][0]}.{todo[0][1]}.json: "
                      "run `make build` (it re-executes only those)")


def test_a_record_is_used_only_for_its_own_inputs(tmp_path):
    """A record stands for its execution only while nothing it depends on changed: one byte of the
    notebook, of an autograder file or of the pinned versions changes the key."""
    root = tmp_path / "repo"
    for rel in ("notebooks/p3_flash_attention_forward/p3_flash_attention_forward.ipynb", "Makefile",
                "autograder/spec/attention_cases.csv", "autograder/checks/core.py"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes((REPO / rel).read_bytes())
    nb = root / "notebooks/p3_flash_attention_forward/p3_flash_attention_forward.ipynb"
    base = executed.key(nb, "source", root)
    assert executed.key(nb, "release", root) != base
    records = tmp_path / "records"
    records.mkdir()
    executed.record_path("p3", "source", records).write_text(json.dumps({"key": base, "results": {}}))
    assert executed.load("p3", "source", base, records) == {"key": base, "results": {}}
    edits = {"notebooks/p3_flash_attention_forward/p3_flash_attention_forward.ipynb": (b"}", b" }"),
             "Makefile": (b"TORCH_VERSION  := 2", b"TORCH_VERSION  := 9"),
             "autograder/spec/attention_cases.csv": (b",", b";"), "autograder/checks/core.py": (b"\n", b"\n\n")}
    for rel, (old, new) in edits.items():
        original = (root / rel).read_bytes()
        assert old in original, (rel, old)
        (root / rel).write_bytes(original.replace(old, new, 1))
        changed = executed.key(nb, "source", root)
        assert changed != base, rel
        assert executed.load("p3", "source", changed, records) is None
        (root / rel).write_bytes(original)
    assert executed.key(nb, "source", root) == base
    # the Makefile's other lines (targets, messages) do not decide an execution
    (root / "Makefile").write_bytes((root / "Makefile").read_bytes() + b"\nhelp:\n\techo\n")
    assert executed.key(nb, "source", root) == base


def test_derived_files_are_up_to_date(repo_render):
    missing, different, stale = bc.compare(REPO, repo_render)
    problems = [f"missing {r}" for r in missing] + [f"differs {r}" for r in different] \
        + [f"stale   {r}" for r in stale]
    assert not problems, f"derived files are out of date; run `{bc.COMMAND}`:\n  " + "\n  ".join(problems)


def test_build_is_deterministic_and_check_mode_works(demo_root, capsys):
    again = bc.render(demo_root)
    on_disk = {rel: (demo_root / rel).read_bytes() for rel in again}
    assert again == on_disk, "two builds of the same sources differ"
    assert bc.main(["--check", "--root", str(demo_root)]) == 0

    # an edited derived file and a leftover of a deleted notebook are both reported, then repaired
    nb_path = demo_root / "release" / DEMO_SLUG / f"{DEMO_SLUG}.ipynb"
    original = nb_path.read_bytes()
    nb_path.write_bytes(original.replace(b"YOUR CODE HERE", b"YOUR CODE THERE"))
    ghost = demo_root / "solutions" / "p9_deleted.py"
    ghost.write_text("x = 1\n")
    capsys.readouterr()
    assert bc.main(["--check", "--root", str(demo_root)]) == 1
    err = capsys.readouterr().err
    assert f"differs release/{DEMO_SLUG}/{DEMO_SLUG}.ipynb" in err and "stale   solutions/p9_deleted.py" in err
    assert bc.main(["--root", str(demo_root)]) == 0
    assert nb_path.read_bytes() == original and not ghost.exists()
    assert bc.main(["--check", "--root", str(demo_root)]) == 0


def test_bad_sources_are_rejected(tmp_path):
    cases = {
        'solution="p1_x"\nx = 1\n': "without a ### BEGIN SOLUTION",
        'tests="p1_t"\nassert True\n': "needs points=",
        'tests="t" points=1\nassert True\n': "must be lowercase",
        'colour="red"\nx = 1\n': "unknown cell header key",
        '\n### BEGIN SOLUTION\nx = 1\n### END SOLUTION\n': "only go in solution=",
    }
    for header_and_body, message in cases.items():
        root = tmp_path / str(abs(hash(header_and_body)))
        src = root / "notebooks" / "p1_bad" / "p1_bad.py"
        src.parent.mkdir(parents=True)
        src.write_text('# %% tests="p1_ok" points=1\nassert True\n\n# %% ' + header_and_body)
        with pytest.raises(bc.SourceError, match=message):
            bc.render(root)


def test_jupytext_headers_become_nbgrader_metadata(target):
    kind, slug, src_root, build_root = target
    from nbgrader.nbgraderformat import MetadataValidator
    nb = _read(build_root / "notebooks" / slug / f"{slug}.ipynb")
    MetadataValidator().validate_nb(nb)
    assert nb.metadata.kernelspec.name == "python3"
    prefix = slug.split("_")[0]
    roles = {"solution": 0, "tests": 0}
    for cell in nb.cells:
        meta = cell.metadata.nbgrader
        assert meta.schema_version == 3 and meta.grade_id.startswith(prefix)
        assert "outputs" not in cell or cell.outputs == []
        if meta.solution:
            roles["solution"] += 1
            assert cell.cell_type == "code" and not meta.grade and not meta.locked
            assert bc.BEGIN_SOLUTION in cell.source
        elif meta.grade:
            roles["tests"] += 1
            assert meta.locked and meta.points > 0 and not cell.metadata.get("export")
        else:
            assert meta.locked, "given cells are locked so students cannot silently edit them"
    assert roles["solution"] and roles["tests"], f"{slug}: needs solution cells and tests cells"


def test_release_holds_no_solutions(target):
    kind, slug, src_root, build_root = target
    release_dir = build_root / "release" / slug
    files = sorted(p.relative_to(release_dir).as_posix() for p in release_dir.rglob("*") if p.is_file())
    assert f"{slug}.ipynb" in files
    assert not [f for f in files if f.endswith(".py") or ".ipynb_checkpoints" in f or f.endswith(".pyc")], files

    source = _read(build_root / "notebooks" / slug / f"{slug}.ipynb")
    release = _read(release_dir / f"{slug}.ipynb")
    secret, _ = _secret_and_public_lines(source)
    text = "\n".join(cell.source for cell in release.cells)
    for marker in ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"):
        assert marker not in text, f"{slug}: release still contains {marker!r}"
    released = {line.strip() for line in text.splitlines()}
    leaked = sorted(secret & released)
    assert not leaked, f"{slug}: solution / hidden test lines leaked into the release: {leaked[:10]}"
    assert any(STUB_LINES <= {ln.strip() for ln in c.source.splitlines()} for c in release.cells), \
        f"{slug}: no `# YOUR CODE HERE` stub in the release"
    assert all(not c.get("outputs") for c in release.cells if c.cell_type == "code")
    assert all("export" not in c.metadata for c in release.cells)


def _load_solution(kind, slug, build_root):
    if kind == "repo":
        path = REPO / "solutions" / f"{slug}.py"
        assert path.exists(), f"solutions/{slug}.py is missing: run `{bc.COMMAND}`"
        return importlib.import_module(f"solutions.{slug}"), path
    path = build_root / "solutions" / f"{slug}.py"
    spec = importlib.util.spec_from_file_location(f"_demo_solutions_{slug}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, path


def test_solution_module(target):
    kind, slug, src_root, build_root = target
    source = _read(build_root / "notebooks" / slug / f"{slug}.ipynb")
    if not any(c.metadata.get("export") for c in source.cells):
        pytest.skip(f"{slug} exports no cell")
    module, path = _load_solution(kind, slug, build_root)
    text = path.read_text()
    assert "GENERATED" in text and f"notebooks/{slug}/{slug}.py" in text and bc.COMMAND in text
    assert "BEGIN" not in text and "END SOLUTION" not in text and "HIDDEN" not in text
    _, public = _secret_and_public_lines(source)
    hidden = set()
    for cell in source.cells:
        hidden |= {ln for ln in _regions(cell.source, bc.BEGIN_HIDDEN, bc.END_HIDDEN)[0] if ln} - public
    leaked = sorted(hidden & {ln.strip() for ln in text.splitlines()})
    assert not leaked, f"hidden test lines leaked into solutions/{slug}.py: {leaked[:10]}"
    init = (build_root / "solutions" / "__init__.py").read_text()
    assert f'"{slug}"' in init
    if slug.split("_")[0] in FA_PROBLEMS:
        fn = getattr(module, "flash_attention_forward", None)
        assert callable(fn), f"solutions/{slug}.py has no flash_attention_forward"
        # the course signature first; keyword-only extras with defaults (Problem 1's tile sizes) are allowed
        params = list(inspect.signature(fn).parameters.values())
        head = inspect.Signature(params[:6])
        assert str(head) == SIGNATURE, inspect.signature(fn)
        assert all(p.default is not inspect.Parameter.empty for p in params[6:]), inspect.signature(fn)


def test_solution_modules_import_in_a_fresh_interpreter():
    """`python -c "import solutions.<slug>"` from the repository root, as a user would."""
    if not REAL_SLUGS:
        pytest.skip("no notebook sources yet")
    code = "; ".join(f"import solutions.{s}" for s in REAL_SLUGS if (REPO / "solutions" / f"{s}.py").exists())
    proc = subprocess.run([sys.executable, "-c", code or "import solutions"], cwd=REPO, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]


# ---------------------------------------------------------------------------------------------
# execution (slow on the CPU tier: Triton runs in its interpreter)


@pytest.mark.slow
def test_nbgrader_validate_source_passes(target, executions):
    kind, slug, *_ = target
    results = _execution(executions, kind, slug, "source")["results"]
    assert results == {}, f"nbgrader validate notebooks/{slug}/{slug}.ipynb:\n{json.dumps(results, indent=1)[:6000]}"


@pytest.mark.slow
def test_source_executes_without_error(target, executions):
    kind, slug, *_ = target
    nb = _execution(executions, kind, slug, "source")["notebook"]
    errors = _errors(nb)
    assert not errors, f"{slug}: " + "\n".join(_describe(c, o) for _, c, o in errors[:3])
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            text = out.get("text", "") if out.output_type == "stream" else ""
            assert "Traceback (most recent call last)" not in text, f"{slug}: a cell printed a traceback:\n{text}"


@pytest.mark.slow
def test_nbgrader_validate_release_fails_every_graded_cell(target, executions):
    kind, slug, *_ = target
    data = _execution(executions, kind, slug, "release")
    assert data["results"] == {}, f"nbgrader validate --invert release/{slug}: graded cells pass without any " \
                                  f"student code:\n{json.dumps(data['results'], indent=1)[:6000]}"
    graded = [c for c in data["notebook"].cells if c.metadata.get("nbgrader", {}).get("grade")]
    assert graded and all(any(o.output_type == "error" for o in c.outputs) for c in graded)


@pytest.mark.slow
def test_release_runs_up_to_a_not_implemented_check(target, executions):
    """A student running the fresh release first meets "not implemented yet", never a raw traceback.

    Jupyter's "Run All" stops at the first error, so that error must be autograder's NotImplementedYet:
    in the first failing tests cell, or earlier in a given "try it" cell that calls the stub through
    autograder (check_case); a given cell that calls the stub directly shows a Triton traceback instead."""
    kind, slug, *_ = target
    nb = _execution(executions, kind, slug, "release")["notebook"]
    errors = _errors(nb)
    assert errors, f"{slug}: the release runs without any error"

    def friendly(out):
        return out.ename == "NotImplementedYet" and "not implemented yet" in out.evalue

    index, cell, out = errors[0]
    assert friendly(out), (f"{slug}: the first error a student meets in the release is not autograder's "
                           f"'not implemented yet':\n" + _describe(cell, out))
    graded = [(c, o) for _, c, o in errors if c.metadata.nbgrader.grade]
    assert graded, f"{slug}: no tests cell fails in the release"
    cell, out = graded[0]
    assert friendly(out), f"{slug}: the first failing check should say 'not implemented yet':\n" + _describe(cell, out)


@pytest.mark.slow
def test_nbgrader_cli_with_repo_config(demo_root):
    """The real `nbgrader validate` command with the repository's nbgrader_config.py (writes nothing)."""
    env = dict(os.environ, PATH=os.pathsep.join([str(BIN), os.environ.get("PATH", "")]),
               PYTHONPATH=str(REPO), MPLBACKEND="Agg")
    before = sorted(p.name for p in REPO.iterdir())
    procs = [subprocess.Popen([str(BIN / "nbgrader"), "validate", *args,
                               str(demo_root / folder / DEMO_SLUG / f"{DEMO_SLUG}.ipynb")],
                              cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for args, folder in (([], "notebooks"), (["--invert"], "release"))]
    for proc in procs:
        output, _ = proc.communicate(timeout=900)
        assert proc.returncode == 0 and "Success!" in output, output
    assert sorted(p.name for p in REPO.iterdir()) == before, "nbgrader wrote files into the repository"


# ---------------------------------------------------------------------------------------------
# One kernel vocabulary, Problems 3-9. The given kernel code is one lineage: each problem pastes an
# earlier one's code and changes only what its text introduces. Problems 4-7 paste the previous
# forward (mask modes, the loop `_attn_fwd_tiles`, the kernel `_flash_attention_fwd`, the predicate
# `_visible`); Problems 8 and 9 paste the forward of Problems 5 and 7 (the kernel renamed `_attn_fwd`,
# with the log-sum-exp); Problem 9 pastes Problem 8's tile steps. Pasted code drifts (renamed
# variables, reordered math, bare ints for named modes) and a student comparing two notebooks then
# cannot tell what is new. Each entry names the functions compared ((this problem's name, the
# source's name)), whether the mode constants are compared too, and what the problem's text
# introduces and how the code may change for it: a string is a pattern that every changed line
# (added or removed) must match; a (pattern, replacement) pair is a rewrite of the source's lines (an
# added argument, a renamed mode) applied before comparing. Any other difference fails with the
# diff, and an entry that no longer matches anything fails too, so the table stays honest.
FORWARD = (("_attn_fwd_tiles", "_attn_fwd_tiles"), ("_flash_attention_fwd", "_flash_attention_fwd"))
KERNEL_LINEAGE = {
    (4, 3): dict(functions=FORWARD + (("flash_attention_forward", "flash_attention_forward"),), modes=True, changes={
        "mask modes replace the MASKED flag": [
            r"^(NO_MASK|BOUNDS|CAUSAL) = tl\.constexpr\(\d\)", r"\bMASK(ED)?\b", r"^(k|v) = tl\.load\((k|v)_ptrs\)$",
            r"^else: # a (full tile|tile may stick out past N)", r"^visible = ", r"^qk = tl\.where\(visible, ",
            r"^# the online softmax update of Problem 3$"],
        "offs_m reaches the loop (the causal mask needs the rows)": [
            (r"^offs_d, lo, hi, N, qk_scale,$", "offs_m, offs_d, lo, hi, N, qk_scale,"),
            (r"^offs_d, (.*), qk_scale, False, BLOCK_N\) # full tiles: no mask$", r"offs_m, offs_d, \1, qk_scale, NO_MASK, BLOCK_N)"),
            (r"^offs_d, (.*), qk_scale, True, BLOCK_N\) # the tail, if any$", r"offs_m, offs_d, \1, qk_scale, BOUNDS, BLOCK_N)")],
        "IS_CAUSAL, heavy query tiles first": [
            (r"^HEAD_DIM: tl\.constexpr, BLOCK_M", "IS_CAUSAL: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M"),
            r"\bIS_CAUSAL\b", r"^pid_m = ", r"^# which query tile, the fast index; causal:", r"\bstart_m\b",
            r"^offs_m = pid_m \* BLOCK_M \+ "],
        "two phases: [0, full_hi) unmasked, [full_hi, hi) causal": [
            r"\b(full_hi|hi)\b", r"^acc, l_i, m_i = _attn_fwd_tiles\(", r"^# (phase [12]|Problem 3): ", r"^else:$"],
        "the wrapper: causal tiles, and it refuses what later problems add": [
            (r"causal=False\)$", "causal=is_causal)"), (r"^HEAD_DIM=D, ", "IS_CAUSAL=is_causal, HEAD_DIM=D, "),
            r'^"""softmax\(q k\^T / sqrt\(D\)', r"^if (is_causal|window_size is not None or sink_size is not None):$",
            r'^raise ValueError\("this is Problem [34]', r'^"\(sliding windows Problem 6, sinks Problem 7\)"\)$'],
    }),
    (5, 4): dict(functions=FORWARD, modes=True, changes={  # the K/V head
        "query heads N_Q_HEADS, GROUP, kv_h": [
            (r"\bN_HEADS\b", "N_Q_HEADS"), r"\bGROUP\b", r"\bkv_h\b", r"^(IS_CAUSAL|HEAD_DIM): tl\.constexpr, ",
            r"^(K|V)_ptr \+= b\.to\(tl\.int64\) \* stride_(kb|vb) \+ h\.to"],
    }),
    (6, 5): dict(functions=FORWARD, modes=True, changes={  # the window
        "mode CAUSAL_WINDOW (_visible) replaces CAUSAL; WINDOW argument": [
            (r"\bCAUSAL\b", "CAUSAL_WINDOW"), r"^CAUSAL_WINDOW = tl\.constexpr", r"^visible = ",
            (r'do_not_specialize=\["N_Q_HEADS"\]', 'do_not_specialize=["N_Q_HEADS", "WINDOW"]'),
            (r"qk_scale,$", "qk_scale, WINDOW,"), (r"qk_scale, (\w+), BLOCK_N\)$", r"qk_scale, WINDOW, \1, BLOCK_N)")],
        "the m_i = -inf guard": [
            r"\bm_sub\b", r"^p = tl\.math\.exp2\(qk \* qk_scale - m_ij", r"^alpha = tl\.math\.exp2\(m_i - m_ij\)",
            r"^if MASK == NO_MASK:$", r"^else:$", r"^# a row with no visible key so far"],
        "window ranges lo, full_lo, full_hi, hi and three causal phases": [
            r"\b(lo|full_lo|full_hi|hi|last_m)\b", r"^acc, l_i, m_i = _attn_fwd_tiles\(",
            r"^# (first key tile|from full_lo|before full_hi|window edge|unmasked|diagonal|phase [12]):? "],
        "the division guards padded rows": [
            r"^acc = acc / ", r"^# The one division\.", r"^# stored\) may have seen no key"],
    }),
    (7, 6): dict(functions=(("_visible", "_visible"),) + FORWARD, modes=True, changes={  # the sinks
        "mode CAUSAL_WINDOW_SINKS (_visible gains SINKS) replaces CAUSAL_WINDOW; SINKS argument": [
            (r"\bCAUSAL_WINDOW\b", "CAUSAL_WINDOW_SINKS"), r"^CAUSAL_WINDOW_SINKS = tl\.constexpr",
            (r"^def _visible\(offs_m, offs_n, WINDOW\):$", "def _visible(offs_m, offs_n, WINDOW, SINKS):"),
            (r"^visible = _visible\(offs_m, offs_n, WINDOW\)$", "visible = _visible(offs_m, offs_n, WINDOW, SINKS)"),
            (r"\(causal, W keys\)", "(causal, W keys, S sinks)"), r"^is_sink = ", r"^return causal & ",
            (r', "WINDOW"\]', ', "WINDOW", "SINKS"]'), (r"qk_scale, WINDOW,", "qk_scale, WINDOW, SINKS,")],
        "mode SINK_KEYS and the sink phase [0, sink_hi)": [
            r"\bSINK_KEYS\b", r"^qk = tl\.where\(\(offs_n < SINKS\)", r"\bsink_hi\b",
            r"^acc, l_i, m_i = _attn_fwd_tiles\(", r"^# (whole tiles holding keys|visit \(and their mask counts\)|sinks: )"],
    }),
    (8, 5): dict(functions=(("_attn_fwd_tiles", "_attn_fwd_tiles"), ("_attn_fwd", "_flash_attention_fwd")), modes=True,
                 changes={  # "Problem 5's kernel, renamed _attn_fwd, with one more output: LSE_ptr"
        "the kernel is _attn_fwd; its (batch, head) index off_bh, as in the backward kernels": [
            (r"\b_flash_attention_fwd\b", "_attn_fwd"), (r"\bpid_bh\b", "off_bh")],
        "one more output: LSE_ptr, the base-2 log-sum-exp per row": [
            (r"^Q_ptr, K_ptr, V_ptr, O_ptr,$", "Q_ptr, K_ptr, V_ptr, O_ptr, LSE_ptr,"), r"^LSE_ptr \+= ",
            r"^# the backward's only memory of P", r"^tl\.store\(LSE_ptr \+ offs_m, m_i \+ tl\.math\.log2\(l_i\)"],
    }),
    (9, 7): dict(functions=(("_visible", "_visible"), ("_attn_fwd_tiles", "_attn_fwd_tiles"), ("_attn_fwd", "_flash_attention_fwd")),
                 modes=True, changes={  # "Problem 7's kernel, renamed _attn_fwd, ..., plus the sink logit and lse2"
        "the kernel is _attn_fwd; its (batch, head) index off_bh, as in the backward kernels": [
            (r"\b_flash_attention_fwd\b", "_attn_fwd"), (r"\bpid_bh\b", "off_bh")],
        "_visible takes its indices broadcast by the caller (the dK/dV step asks for the transposed tile)": [
            (r"^visible = _visible\(offs_m, offs_n, ", "visible = _visible(offs_m[:, None], offs_n[None, :], "),
            r'^"""Key offs_n visible from query offs_m|^indices broadcast by the caller', r"^(causal|in_window|is_sink) = offs_n ",
            r'^"""\[BLOCK_M, BLOCK_N\] bool: key offs_n\[j\] visible', r"^(causal|in_window|is_sink) = offs_n\[None, :\] "],
        "the sink logit starts every row's softmax": [
            (r"^GROUP: tl\.constexpr, IS_CAUSAL: tl\.constexpr,$", "GROUP: tl.constexpr, IS_CAUSAL: tl.constexpr, HAS_SINK_LOGITS: tl.constexpr,"),
            r"^if HAS_SINK_LOGITS:$", r"^# start from the sink", r"^(m_i|l_i) = tl\.zeros\(\[BLOCK_M\], dtype=tl\.float32\) \+ ",
            r"^else:$", r"Sink_ptr"],
        "one more output: LSE_ptr, the base-2 log-sum-exp per row": [
            (r"^Q_ptr, K_ptr, V_ptr, O_ptr,$", "Q_ptr, K_ptr, V_ptr, O_ptr, LSE_ptr, Sink_ptr,"), r"^LSE_ptr \+= ",
            r"^# the backward's only memory of P", r"^tl\.store\(LSE_ptr \+ offs_m, m_i \+ tl\.math\.log2\(l_i\)"],
    }),
    (9, 8): dict(functions=(("_bwd_dkdv_step", "_bwd_dkdv_step"), ("_bwd_dq_step", "_bwd_dq_step")), modes=False, changes={
        # "The tile steps (Problem 8's, with Problem 7's masks)"
        "Problem 7's modes: CAUSAL_WINDOW_SINKS (_visible) for CAUSAL, and SINK_KEYS; WINDOW, SINKS arguments": [
            (r"\bCAUSAL\b", "CAUSAL_WINDOW_SINKS"), (r"qk_scale,$", "qk_scale, WINDOW, SINKS,"),
            r"^pT? = tl\.where\(_visible\(", r"^elif MASK == SINK_KEYS:$", r"^pT? = tl\.where\(\(?offs_n(\[:, None\])? < SINKS",
            r"^pT = tl\.where\(offs_m\[None, :\] >= offs_n\[:, None\]", r"^p = tl\.where\(offs_n\[None, :\] <= offs_m\[:, None\]"],
    }),
}


def _reference_module_source(slug):
    text = (REPO / "notebooks" / slug / f"{slug}.py").read_text(encoding="utf-8")
    return bc.solution_module(slug, text, bc.source_notebook(slug, text)).decode()


_MODULES = {}


def _reference_module(problem):
    """(source, {name: top-level FunctionDef}, [mode constant Assigns]) of a problem's reference module."""
    import ast
    if problem not in _MODULES:
        src = _reference_module_source(PROBLEMS[problem].slug)
        body = ast.parse(src).body
        _MODULES[problem] = (src, {n.name: n for n in body if isinstance(n, ast.FunctionDef)},
                             [n for n in body if isinstance(n, ast.Assign) and isinstance(n.value, ast.Call)
                              and ast.unparse(n.value.func) == "tl.constexpr"])
    return _MODULES[problem]


def _have(*problems):
    return all((REPO / "notebooks" / PROBLEMS[p].slug).is_dir() for p in problems)


def _node_lines(src, node):
    """A top-level node's lines (decorators included), stripped, runs of blanks collapsed (alignment is free)."""
    start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
    return [" ".join(line.split()) for line in src.splitlines()[start - 1:node.end_lineno] if line.strip()]


@pytest.mark.parametrize("pair", sorted(KERNEL_LINEAGE), ids=lambda p: f"p{p[0]}_from_p{p[1]}")
def test_given_kernel_differs_from_its_source_only_where_declared(pair):
    import difflib
    problem, source = pair
    if not _have(problem, source):
        pytest.skip("notebook missing")
    spec = KERNEL_LINEAGE[pair]
    (src_a, fns_a, modes_a), (src_b, fns_b, modes_b) = _reference_module(problem), _reference_module(source)
    missing = [f"Problem {p}: {name}" for p, fns, names in ((problem, fns_a, [a for a, _ in spec["functions"]]),
                                                           (source, fns_b, [b for _, b in spec["functions"]]))
               for name in names if name not in fns]
    assert not missing, "KERNEL_LINEAGE compares functions that do not exist:\n" + "\n".join(missing)
    pairs = [(f"{b} -> {a}", _node_lines(src_b, fns_b[b]), _node_lines(src_a, fns_a[a])) for a, b in spec["functions"]]
    if spec["modes"]:
        pairs.insert(0, ("mask modes", [x for n in modes_b for x in _node_lines(src_b, n)],
                         [x for n in modes_a for x in _node_lines(src_a, n)]))
    entries = [(what, item) for what, items in spec["changes"].items() for item in items]
    used, undeclared, diffs = set(), [], []
    for name, before, after in pairs:
        for what, item in entries:
            if isinstance(item, tuple):
                rewritten = [re.sub(item[0], item[1], line) for line in before]
                if rewritten != before:
                    used.add((what, item))
                before = rewritten
        diff = list(difflib.unified_diff(before, after, f"Problem {source}'s {name} (declared rewrites applied)",
                                         f"Problem {problem}'s", n=0, lineterm=""))
        diffs += diff
        for d in diff:
            if d[:1] not in "+-" or d.startswith(("+++", "---")):
                continue
            hits = {(what, item) for what, item in entries if isinstance(item, str) and re.search(item, d[1:])}
            used |= hits
            if not hits:
                undeclared.append(f"{name}: {d}")
    assert not undeclared, (
        f"Problem {problem}'s given kernel code differs from Problem {source}'s in lines its text does not "
        f"introduce (make them equal, or declare the change in KERNEL_LINEAGE):\n" + "\n".join(undeclared)
        + "\n\nfull diff:\n" + "\n".join(diffs))
    stale = [f"{what}: {item}" for what, item in entries if (what, item) not in used]
    assert not stale, f"KERNEL_LINEAGE[{pair}] declares changes that no longer happen:\n" + "\n".join(stale)


def test_given_kernels_share_constants():
    """One name per mask mode and one mode per value across the course (MASK == 2 means one thing),
    modes compared and passed by name only, and every forward wrapper folds log2(e) into qk_scale
    through the same named constant."""
    import ast
    values, bare = {}, []
    for problem in range(3, 10):
        if not _have(problem):
            continue
        src, fns, modes = _reference_module(problem)
        if problem <= 7:
            assert src.count("LOG2E = 1.4426950408889634") == 1 and src.count("1.4426950408889634") == 1, problem
            assert "qk_scale = 1.0 / math.sqrt(D) * LOG2E" in src, problem
        names = set()
        for node in modes:
            names.add(node.targets[0].id)
            values.setdefault(node.targets[0].id, set()).add(ast.literal_eval(node.value.args[0]))
        takes_mask = {name: [a.arg for a in fn.args.args].index("MASK") for name, fn in fns.items()
                      if "MASK" in [a.arg for a in fn.args.args]}
        for fn in fns.values():
            for node in ast.walk(fn):
                if isinstance(node, ast.Compare) and ast.unparse(node.left) == "MASK":
                    right = ast.unparse(node.comparators[0])
                    if not (isinstance(node.ops[0], ast.Eq) and right in names):
                        bare.append(f"Problem {problem}, {fn.name}: {ast.unparse(node)}")
                elif isinstance(node, (ast.If, ast.IfExp)) and ast.unparse(node.test) == "MASK":
                    bare.append(f"Problem {problem}, {fn.name}: `if MASK:` (compare with a mode)")
                elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in takes_mask
                      and len(node.args) > takes_mask[node.func.id]):
                    arg = ast.unparse(node.args[takes_mask[node.func.id]])
                    if arg not in names | {"MASK"}:
                        bare.append(f"Problem {problem}, {fn.name}: {node.func.id}(..., MASK={arg}, ...)")
    assert not bare, "compare MASK with a named mode and pass modes by name, not as numbers:\n" + "\n".join(bare)
    by_value = {}
    for name, vals in values.items():
        assert len(vals) == 1, f"mask mode {name} has the values {sorted(vals)} in different problems"
        by_value.setdefault(vals.pop(), []).append(name)
    shared = {v: names for v, names in by_value.items() if len(names) > 1}
    assert not shared, f"one value, several mask modes: {shared}"


# The phases of every kernel, by their bounds: a query tile's key tiles (forward, dQ) or a key tile's
# query tiles (dK/dV). One name per bound across the course (the forward's [full_lo, full_hi) is
# unmasked in every problem, [full_hi, hi) is the diagonal), and each range runs with the modes its
# mask needs. A pass-through helper (`_bwd_dq_tiles`) loops over [lo, hi) with its caller's MASK.
PHASE_RANGES = {
    ("0", "n_full"): {"NO_MASK"}, ("n_full", "N"): {"BOUNDS"},                         # non-causal
    ("0", "full_hi"): {"NO_MASK"}, ("full_lo", "full_hi"): {"NO_MASK"},               # unmasked
    ("full_hi", "hi"): {"CAUSAL", "CAUSAL_WINDOW", "CAUSAL_WINDOW_SINKS"},            # diagonal (dK/dV: window edge)
    ("lo", "full_lo"): {"CAUSAL_WINDOW", "CAUSAL_WINDOW_SINKS"},                      # window edge
    ("0", "sink_hi"): {"SINK_KEYS"},                                                  # sinks
    ("start_n", "diag_hi"): {"CAUSAL", "CAUSAL_WINDOW_SINKS"},                        # dK/dV: the key tile's diagonal
    ("full_lo", "N"): {"NO_MASK"}, ("0", "N"): {"NO_MASK"},                           # dK/dV: unmasked to the end
    ("chunk_lo", "chunk_hi"): {"SINK_KEYS"},                                          # dK/dV: a chunk of the sink phase
    ("lo", "hi"): {"MASK"},                                                           # a pass-through helper
}


def _phases(fns, fn):
    """[(branch, lo, hi, mode)] of one kernel: its calls of a loop over tiles (a function taking lo, hi
    and MASK) and its `for ... in range(lo, hi, step)` loops around a step (a function taking MASK);
    branch is "causal" or "non-causal" inside `if IS_CAUSAL:`, else ""."""
    import ast
    params = {name: [a.arg for a in f.args.args] for name, f in fns.items()}
    out = []

    def mode_of(call):
        p = params.get(getattr(call.func, "id", None), [])
        return ast.unparse(call.args[p.index("MASK")]) if "MASK" in p and len(call.args) > p.index("MASK") else None

    def walk(nodes, branch):
        for node in nodes:
            if isinstance(node, ast.If) and ast.unparse(node.test) == "IS_CAUSAL":
                walk(node.body, "causal")
                walk(node.orelse, "non-causal")
                continue
            if (isinstance(node, ast.For) and isinstance(node.iter, ast.Call)
                    and ast.unparse(node.iter.func) == "range" and len(node.iter.args) == 3):
                modes = [mode_of(c) for c in ast.walk(node) if isinstance(c, ast.Call) and mode_of(c)]
                if modes:
                    out.append((branch, *(ast.unparse(a) for a in node.iter.args[:2]), modes[0]))
                    continue
            for call in (c for c in ast.walk(node) if isinstance(c, ast.Call)):
                p = params.get(getattr(call.func, "id", None), [])
                if {"lo", "hi", "MASK"} <= set(p) and len(call.args) > p.index("MASK"):
                    out.append((branch, ast.unparse(call.args[p.index("lo")]), ast.unparse(call.args[p.index("hi")]),
                                ast.unparse(call.args[p.index("MASK")])))
            for field in ("body", "orelse"):
                if not isinstance(node, (ast.For, ast.If, ast.While)) and field == "body":
                    continue
                walk(getattr(node, field, []), branch)

    walk(fns[fn].body, "")
    return out


def test_given_kernels_name_predicate_and_phase_bounds_alike():
    """The visibility predicate is `_visible` wherever a problem has one (the function a masked mode
    calls for "key j visible from query i"), and every phase of every kernel runs over a range named
    from PHASE_RANGES with a mode its mask allows."""
    import ast
    wrong = []
    for problem in range(4, 10):
        if not _have(problem):
            continue
        src, fns, _ = _reference_module(problem)
        for name in fns:
            if re.search(r"mask|visib", name, re.I) and name != "_visible":
                wrong.append(f"Problem {problem}: the predicate {name} (call it _visible)")
        for fn in fns.values():
            for node in ast.walk(fn):
                pred = None
                if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "visible":
                    pred = node.value
                elif isinstance(node, ast.Call) and ast.unparse(node.func) == "tl.where" and node.args:
                    pred = node.args[0]
                if isinstance(pred, ast.Call) and getattr(pred.func, "id", None) in fns and pred.func.id != "_visible":
                    wrong.append(f"Problem {problem}, {fn.name}: the predicate {pred.func.id} (call it _visible)")
            for branch, lo, hi, mode in _phases(fns, fn.name):
                allowed = PHASE_RANGES.get((lo, hi))
                if allowed is None:
                    wrong.append(f"Problem {problem}, {fn.name}: a phase over [{lo}, {hi}) (bounds: {sorted(PHASE_RANGES)})")
                elif mode not in allowed:
                    wrong.append(f"Problem {problem}, {fn.name}: [{lo}, {hi}) runs with {mode}, not {sorted(allowed)}")
    assert not wrong, "one kernel vocabulary:\n" + "\n".join(wrong)


def _causal_bounds(fns, fn):
    """The assignments of the bounds a kernel computes in its `if IS_CAUSAL:` branch (name = expression,
    not a call of another kernel function)."""
    import ast
    branch = next(n for n in ast.walk(fns[fn]) if isinstance(n, ast.If) and ast.unparse(n.test) == "IS_CAUSAL")
    return [n for n in branch.body if isinstance(n, ast.Assign) and isinstance(n.targets[0], ast.Name)
            and not (isinstance(n.value, ast.Call) and getattr(n.value.func, "id", None) in fns)]


def _causal_ranges(problem, fn):
    """The bounds a kernel computes in its `if IS_CAUSAL:` branch, as a Python function of start_m, N,
    WINDOW, SINKS and the tile sizes (tl.maximum, tl.minimum and tl.cdiv on ints)."""
    import ast
    import types
    _, fns, _ = _reference_module(problem)
    assigns = _causal_bounds(fns, fn)
    code = "def ranges(start_m, N, WINDOW, SINKS, BLOCK_M, BLOCK_N, SINK_BLOCK):\n" + "".join(
        f"    {ast.unparse(a)}\n" for a in assigns) + f"    return dict({', '.join(f'{a.targets[0].id}={a.targets[0].id}' for a in assigns)})\n"
    tl = types.SimpleNamespace(maximum=max, minimum=min, cdiv=lambda a, b: -(-a // b))
    ns = {"tl": tl}
    exec(code, ns)
    return ns["ranges"]


def _range_cases():
    for block_m, block_n in ((16, 16), (32, 16), (16, 32), (64, 32), (128, 64), (64, 128)):
        for n in (1, 15, 16, 17, 33, 64, 100, 129, 300):
            for start_m in range(0, n, block_m):
                yield dict(start_m=start_m, N=n, BLOCK_M=block_m, BLOCK_N=block_n, SINK_BLOCK=16)


def test_given_kernels_window_ranges_reduce_to_problem_4s():
    """Problem 6: with no window (WINDOW = N) `lo = full_lo = 0`, and `full_hi`, `hi` are Problem 4's,
    except in a ragged last query tile, which may only run more tiles masked; Problem 7: with no sinks
    the sink phase is empty and the window ranges are Problem 6's."""
    if not _have(4, 6, 7):
        pytest.skip("notebook missing")
    p4, p6, p7 = _causal_ranges(4, "_flash_attention_fwd"), _causal_ranges(6, "_flash_attention_fwd"), \
        _causal_ranges(7, "_flash_attention_fwd")
    for case in _range_cases():
        r4, r6 = p4(WINDOW=case["N"], SINKS=0, **case), p6(WINDOW=case["N"], SINKS=0, **case)
        if case["start_m"] + case["BLOCK_M"] <= case["N"]:
            assert (r6["lo"], r6["full_lo"], r6["full_hi"], r6["hi"]) == (0, 0, r4["full_hi"], r4["hi"]), (case, r4, r6)
        else:
            visited = set(range(r6["lo"], r6["full_lo"])) | set(range(r6["full_lo"], r6["full_hi"])) \
                | set(range(r6["full_hi"], r6["hi"]))
            assert r6["lo"] == 0 and r6["hi"] == r4["hi"] and visited >= set(range(r4["hi"])), (case, r4, r6)
            assert set(range(r6["full_lo"], r6["full_hi"])) <= set(range(r4["full_hi"])), (case, r4, r6)
        for window in (1, 3, case["BLOCK_N"], case["BLOCK_M"] + 1, case["N"]):
            r6, r7 = p6(WINDOW=window, SINKS=0, **case), p7(WINDOW=window, SINKS=0, **case)
            assert r7.pop("sink_hi") == 0 and r7 == r6, (case, window, r6, r7)


@pytest.mark.parametrize("problem", [8, 9])
def test_given_kernel_dq_visits_the_forwards_key_tiles(problem):
    """Problem 8: "the dQ kernel, ... with the forward's phases"; Problem 9: "A query tile's key tiles are
    the forward's ...: the same ranges, the same masks. One difference: the sink phase steps through
    SINK_BLOCK keys": the same phases, and the same bounds computed the same way (sink_hi aside)."""
    import ast
    if not _have(problem):
        pytest.skip("notebook missing")
    _, fns, _ = _reference_module(problem)
    assert _phases(fns, "_attn_bwd_dq") == _phases(fns, "_attn_fwd")

    def bounds(fn):
        return {n.targets[0].id: ast.unparse(n.value) for n in _causal_bounds(fns, fn)}

    fwd, dq = bounds("_attn_fwd"), bounds("_attn_bwd_dq")
    differ = {"sink_hi"} if problem == 9 else set()
    assert {k: v for k, v in dq.items() if k not in differ} == {k: v for k, v in fwd.items() if k not in differ}
    assert differ <= set(dq) & set(fwd) and all(dq[k] != fwd[k] for k in differ), "the declared difference is gone"


def _jit_python(problem, name):
    """The Python function behind a small @triton.jit helper of the reference module: its body uses only
    comparisons and operators, so it runs on numpy arrays."""
    import ast
    _, fns, _ = _reference_module(problem)
    node = ast.parse(ast.unparse(fns[name])).body[0]
    node.decorator_list = []
    ns = {}
    exec(compile(ast.Module([node], []), f"p{problem}_{name}", "exec"), ns)
    return ns[name]


def test_given_kernels_keep_the_predicate_of_their_source():
    """Problem 7: "With SINKS = 0 it must be exactly Problem 6's `_visible`"; Problem 9: "`_visible` is
    Problem 7's predicate with its indices broadcast by the caller" (and the dK/dV step's transposed tile
    is its transpose); all three are the autograder's mask."""
    import numpy as np
    from autograder import masks
    if not _have(6, 7, 9):
        pytest.skip("notebook missing")
    p6, p7, p9 = _jit_python(6, "_visible"), _jit_python(7, "_visible"), _jit_python(9, "_visible")
    n = 40
    i, j = np.arange(n), np.arange(n)
    for window in (1, 2, 5, 16, n):
        for sinks in (0, 1, 3, 17, n):
            dense = masks.dense_mask(masks.attention_mask(True, window, sinks or None), n).numpy()
            v7 = p7(i, j, window, sinks)
            assert (v7 == dense).all(), (window, sinks)
            assert (p9(i[:, None], j[None, :], window, sinks) == v7).all(), (window, sinks)
            assert (p9(i[None, :], j[:, None], window, sinks) == v7.T).all(), (window, sinks)
            if sinks == 0:
                assert (p6(i, j, window) == v7).all(), window


# What Problem 9's text says it keeps of Problem 8's dK/dV kernel ("built as Problem 8's: a program per
# key tile and K/V head sums the steps of every query head of its group into dk, dv ..., scales dk by
# sm_scale once"): lines both kernels have.
SHARED_LINES = {
    (9, "_bwd_dkdv_window", 8, "_attn_bwd_dkdv"): [
        "dk = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)", "dv = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)",
        "for g in range(GROUP):", "h = (kv_h * GROUP + g).to(tl.int64)", "dk *= sm_scale"],
}


@pytest.mark.parametrize("key", sorted(SHARED_LINES), ids=lambda k: f"p{k[0]}_{k[1]}")
def test_given_kernel_lines_shared_where_the_text_says(key):
    problem, fn, source, source_fn = key
    if not _have(problem, source):
        pytest.skip("notebook missing")
    (src_a, fns_a, _), (src_b, fns_b, _) = _reference_module(problem), _reference_module(source)
    a = {line.split(" #")[0] for line in _node_lines(src_a, fns_a[fn])}
    b = {line.split(" #")[0] for line in _node_lines(src_b, fns_b[source_fn])}
    missing = [line for line in SHARED_LINES[key] if not (line in a and line in b)]
    assert not missing, f"Problem {problem}'s {fn} and Problem {source}'s {source_fn} no longer share:\n" + "\n".join(missing)


# Every "Problem N's ..." in the markdown of Problems 4-9, and the claims about a problem's own
# kernels, with the test that checks it against the code: a KERNEL_LINEAGE pair, another test of
# this section (by name), or None with the reason it is not a claim about code. A claim the text no
# longer makes fails, as does an unlisted "Problem N's".
TEXT_CLAIMS = [
    (4, r"you extend Problem 3's kernel", (4, 3)),
    (4, r"The rest \(Problem 3's loop and online softmax, the non-causal path\) is given", (4, 3)),
    (4, r"`is_causal=False` runs Problem 3's path", (4, 3)),
    (4, r"`_attn_fwd_tiles` is Problem 3's loop, generalised with a `MASK` mode", (4, 3)),
    (4, r"Given, and the same as Problem 3's except that it passes `IS_CAUSAL`", (4, 3)),
    (4, r"still gives Problem 3's answer", None),                          # what the checks call
    (4, r"so they run Problem 3's mask-free loop", (4, 3)),
    (5, r"`_attn_fwd_tiles`, Problem 4's inner loop, unchanged", (5, 4)),
    (6, r"The loop over key tiles `\[lo, hi\)` is given: Problem 5's, with the mode `CAUSAL_WINDOW`", (6, 5)),
    (6, r"then the ranges reduce to Problem 4's, `lo = full_lo = 0` and `full_hi` and `hi` are Problem 4's .*? Only a "
        r"ragged last query tile differs: .*? a few tiles that Problem 4 runs unmasked run masked",
     "test_given_kernels_window_ranges_reduce_to_problem_4s"),
    (6, r"reduce to Problem 4's and that GQA and the non-causal path still work", None),   # what the checks call
    (7, r"Problem 6's program visits the key tiles `\[lo, hi\)` in three phases", (7, 6)),
    (7, r"`_visible\(offs_m, offs_n, WINDOW, SINKS\)`, Problem 6's predicate with one more argument", (7, 6)),
    (7, r"With `SINKS = 0` it must be exactly Problem 6's `_visible`", "test_given_kernels_keep_the_predicate_of_their_source"),
    (7, r"The loop over key tiles `\[lo, hi\)` is given: Problem 6's, with the `SINKS` argument", (7, 6)),
    (7, r"The window ranges \(`lo`, `full_lo`, `full_hi`, `hi`\) are Problem 6's, given", (7, 6)),
    (7, r"within a few percent of Problem 6's", None),                     # a timing
    (8, r"Problem 5's kernel, renamed `_attn_fwd`, with one more output: `LSE_ptr`", (8, 5)),
    (8, r"The inner loop `_attn_fwd_tiles` and its mask modes \(`NO_MASK`, `BOUNDS`, `CAUSAL`\) are Problem 5's, unchanged",
     (8, 5)),
    (8, r"\(Problem 5's rule, `kv_h = h // GROUP`\)", (8, 5)),
    (8, r"Given: the dQ kernel, one program per query tile and query head, with the forward's phases",
     "test_given_kernel_dq_visits_the_forwards_key_tiles"),
    (9, r"the dQ kernel's loop = the forward's ranges", "test_given_kernel_dq_visits_the_forwards_key_tiles"),
    (9, r"The forward \(Problem 7's ranges, plus the sink logit\)", (9, 7)),
    (9, r"Problem 7's kernel, renamed `_attn_fwd`, with its mask modes, its loop `_attn_fwd_tiles` and its four phases",
     (9, 7)),
    (9, r"`_visible` is Problem 7's predicate with its indices broadcast by the caller",
     "test_given_kernels_keep_the_predicate_of_their_source"),
    (9, r"The tile steps \(Problem 8's, with Problem 7's masks\)", (9, 8)),
    (9, r"The rest of the dK/dV kernel is built as Problem 8's", "test_given_kernel_lines_shared_where_the_text_says"),
    (9, r"A query tile's key tiles are the forward's \(Problem 7's four phases\): the same ranges, the same masks, "
        r"Problem 8's step", "test_given_kernel_dq_visits_the_forwards_key_tiles"),
]


def _markdown_text(problem):
    """The markdown cells of a problem's source script, one string, whitespace runs collapsed."""
    slug = PROBLEMS[problem].slug
    nb = bc.source_notebook(slug, (REPO / "notebooks" / slug / f"{slug}.py").read_text(encoding="utf-8"))
    return " ".join(" ".join(c.source.split()) for c in nb.cells if c.cell_type == "markdown")


def test_lineage_claims_in_the_text_are_checked():
    """Each claim of TEXT_CLAIMS is still in the text and names a check that exists, and every
    "Problem N's" of the markdown of Problems 4-9 lies inside a listed claim."""
    problems = [p for p in range(4, 10) if _have(p)]
    texts = {p: _markdown_text(p) for p in problems}
    problems_here = set(problems)
    errors, covered = [], {p: [] for p in problems}
    for problem, pattern, check in TEXT_CLAIMS:
        if problem not in problems_here:
            continue
        spans = [m.span() for m in re.finditer(pattern, texts[problem])]
        if not spans:
            errors.append(f"Problem {problem}'s text no longer says /{pattern}/: update TEXT_CLAIMS")
        covered[problem] += spans
        if isinstance(check, tuple) and check not in KERNEL_LINEAGE:
            errors.append(f"/{pattern}/ names the lineage pair {check}, which KERNEL_LINEAGE lacks")
        if isinstance(check, str) and not callable(globals().get(check)):
            errors.append(f"/{pattern}/ names the test {check}, which does not exist")
    for problem in problems:
        for m in re.finditer(r"Problem \d's", texts[problem]):
            if not any(a <= m.start() < b for a, b in covered[problem]):
                errors.append(f"Problem {problem}: a claim about another problem's code is not checked (add it to "
                              f"TEXT_CLAIMS): ...{texts[problem][max(m.start() - 80, 0):m.end() + 80]}...")
    assert not errors, "\n".join(errors)
