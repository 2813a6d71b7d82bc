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
# subprocesses, all notebooks at once; the executed notebook is kept for the execution tests.

_RUNNER = textwrap.dedent('''\
    import json, sys
    from tools.course_format import skip_iri_grammar
    skip_iri_grammar()         # 5-6 s of every process that imports nbgrader
    from nbgrader.validator import Validator
    from traitlets.config import Config

    path, invert, out = sys.argv[1], sys.argv[2] == "1", sys.argv[3]

    class KeepingValidator(Validator):
        executed = None

        def _preprocess(self, nb):
            self.executed = super()._preprocess(nb)
            return self.executed

    cfg = Config()
    cfg.Execute.timeout = 600          # per cell: the Triton interpreter is slow
    cfg.Validator.invert = invert
    validator = KeepingValidator(config=cfg)
    results = validator.validate(path)
    with open(out, "w") as f:
        json.dump({"results": results, "notebook": validator.executed}, f)
''')


def _execute_all(kind, slugs, build_root, out_dir):
    """(slug, "source"|"release") -> {"results": validate results, "notebook": executed nb}."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in [env.get("PYTHONPATH")] if p])
    env["PATH"] = os.pathsep.join([str(BIN), env.get("PATH", "")])
    env.setdefault("MPLBACKEND", "Agg")
    jobs = []
    for slug in slugs:
        for which, folder in (("source", "notebooks"), ("release", "release")):
            jobs.append(((slug, which), build_root / folder / slug / f"{slug}.ipynb"))

    def run(job):
        key, path = job
        out = out_dir / (f"{kind}_{key[0]}_{key[1]}.json")
        proc = subprocess.run([sys.executable, "-c", _RUNNER, str(path), "1" if key[1] == "release" else "0",
                               str(out)], env=env, capture_output=True, text=True, timeout=3 * 3600)
        if proc.returncode or not out.exists():
            return key, {"error": f"validator crashed (rc={proc.returncode}):\n{proc.stderr[-4000:]}"}
        data = json.loads(out.read_text())
        if data["notebook"] is not None:
            data["notebook"] = nbformat.from_dict(data["notebook"])
        return key, data

    workers = max(1, min(len(jobs), os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        return dict(pool.map(run, jobs))


@pytest.fixture(scope="session")
def demo_executions(demo_root, tmp_path_factory):
    return _execute_all("demo", [DEMO_SLUG], demo_root, tmp_path_factory.mktemp("demo_executions"))


def selected_slugs(session) -> list:
    """The real notebooks that the selected tests execute (`pytest -k p3` selects Problem 3's only)."""
    wanted = {item.callspec.params["target"][1] for item in session.items
              if "executions" in getattr(item, "fixturenames", ()) and hasattr(item, "callspec")
              and item.callspec.params.get("target", ("",))[0] == "repo"}
    return [slug for slug in REAL_SLUGS if slug in wanted]


@pytest.fixture(scope="session")
def repo_executions(repo_build, tmp_path_factory, request):
    """The selected real notebooks at once, as many at a time as there are CPU cores."""
    return _execute_all("repo", selected_slugs(request.session), repo_build,
                        tmp_path_factory.mktemp("repo_executions"))


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
# The given kernel code of Problems 3-7 is one lineage: each problem pastes the previous one's loop
# (`_attn_fwd_tiles`), mask modes and kernel (`_flash_attention_fwd`) and changes only what its text
# introduces. Pasted code drifts (renamed variables, reordered math, bare ints for named modes) and
# a student comparing two notebooks then cannot tell what is new. Each entry names what the problem's
# text introduces and how the code may change for it: a string is a pattern that every changed line
# (added or removed) must match; a (pattern, replacement) pair is a rewrite of the previous problem's
# lines (an added argument, a renamed mode) applied before comparing. Any other difference fails
# with the diff, and an entry that no longer matches anything fails too, so the table stays honest.
KERNEL_LINEAGE = {
    4: {  # causal phases
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
        "two phases: diag_lo, diag_hi": [
            r"\bdiag_(lo|hi)\b", r"^acc, l_i, m_i = _attn_fwd_tiles\(", r"^# (phase [12]|Problem 3): ", r"^else:$"],
    },
    5: {  # the K/V head
        "query heads N_Q_HEADS, GROUP, kv_h": [
            (r"\bN_HEADS\b", "N_Q_HEADS"), r"\bGROUP\b", r"\bkv_h\b", r"^(IS_CAUSAL|HEAD_DIM): tl\.constexpr, ",
            r"^(K|V)_ptr \+= b\.to\(tl\.int64\) \* stride_(kb|vb) \+ h\.to"],
    },
    6: {  # the window
        "mode CAUSAL_WINDOW (_window_mask) replaces CAUSAL; WINDOW argument": [
            (r"\bCAUSAL\b", "CAUSAL_WINDOW"), r"^CAUSAL_WINDOW = tl\.constexpr", r"^visible = ",
            (r'do_not_specialize=\["N_Q_HEADS"\]', 'do_not_specialize=["N_Q_HEADS", "WINDOW"]'),
            (r"qk_scale,$", "qk_scale, WINDOW,"), (r"qk_scale, (\w+), BLOCK_N\)$", r"qk_scale, WINDOW, \1, BLOCK_N)")],
        "the m_i = -inf guard": [
            r"\bm_sub\b", r"^p = tl\.math\.exp2\(qk \* qk_scale - m_ij", r"^alpha = tl\.math\.exp2\(m_i - m_ij\)",
            r"^if MASK == NO_MASK:$", r"^else:$", r"^# a row with no visible key so far"],
        "window ranges lo, full_lo, full_hi, hi and three causal phases": [
            r"\b(lo|full_lo|full_hi|hi|last_m|diag_lo|diag_hi)\b", r"^acc, l_i, m_i = _attn_fwd_tiles\(",
            r"^# (first key tile|from full_lo|before full_hi|window edge|unmasked|diagonal|phase [12]):? "],
        "the division guards padded rows": [
            r"^acc = acc / ", r"^# The one division\.", r"^# stored\) may have seen no key"],
    },
    7: {  # the sinks
        "mode CAUSAL_WINDOW_SINKS (_sink_window_mask) replaces CAUSAL_WINDOW; SINKS argument": [
            (r"\bCAUSAL_WINDOW\b", "CAUSAL_WINDOW_SINKS"), r"^CAUSAL_WINDOW_SINKS = tl\.constexpr",
            r"^visible = _(sink_)?window_mask\(", (r', "WINDOW"\]', ', "WINDOW", "SINKS"]'),
            (r"qk_scale, WINDOW,", "qk_scale, WINDOW, SINKS,")],
        "mode SINK_KEYS and the sink phase [0, sink_hi)": [
            r"\bSINK_KEYS\b", r"^qk = tl\.where\(\(offs_n < SINKS\)", r"\bsink_hi\b",
            r"^acc, l_i, m_i = _attn_fwd_tiles\(", r"^# (whole tiles holding keys|visit \(and their mask counts\)|sinks: )"],
    },
}
LINEAGE_SLUGS = {n: PROBLEMS[n].slug for n in (3, 4, 5, 6, 7)}


def _reference_module_source(slug):
    text = (REPO / "notebooks" / slug / f"{slug}.py").read_text(encoding="utf-8")
    return bc.solution_module(slug, text, bc.source_notebook(slug, text)).decode()


def _given_kernel_lines(slug):
    """The mask-mode constants, `_attn_fwd_tiles` and `_flash_attention_fwd` (decorators included) of
    the reference module, one stripped line each with runs of blanks collapsed (alignment is free)."""
    import ast
    src = _reference_module_source(slug)
    lines, out = src.splitlines(), []
    for node in ast.parse(src).body:
        keep = isinstance(node, ast.FunctionDef) and node.name in ("_attn_fwd_tiles", "_flash_attention_fwd")
        keep |= (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)
                 and ast.unparse(node.value.func) == "tl.constexpr")
        if keep:
            start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
            out += [" ".join(line.split()) for line in lines[start - 1:node.end_lineno] if line.strip()]
    return out


@pytest.mark.parametrize("problem", sorted(KERNEL_LINEAGE))
def test_given_kernel_differs_from_the_previous_problem_only_where_declared(problem):
    import difflib
    if not all((REPO / "notebooks" / LINEAGE_SLUGS[p]).is_dir() for p in (problem - 1, problem)):
        pytest.skip("notebook missing")
    before, after = _given_kernel_lines(LINEAGE_SLUGS[problem - 1]), _given_kernel_lines(LINEAGE_SLUGS[problem])
    entries = [(what, item) for what, items in KERNEL_LINEAGE[problem].items() for item in items]
    used = set()
    for what, item in entries:
        if isinstance(item, tuple):
            rewritten = [re.sub(item[0], item[1], line) for line in before]
            if rewritten != before:
                used.add((what, item))
            before = rewritten
    diff = list(difflib.unified_diff(before, after, f"Problem {problem - 1} (declared rewrites applied)",
                                     f"Problem {problem}", n=0, lineterm=""))
    undeclared = []
    for d in diff:
        if d[:1] not in "+-" or d.startswith(("+++", "---")):
            continue
        hits = {(what, item) for what, item in entries if isinstance(item, str) and re.search(item, d[1:])}
        used |= hits
        if not hits:
            undeclared.append(d)
    assert not undeclared, (
        f"Problem {problem}'s given kernel code differs from Problem {problem - 1}'s in lines its text does "
        f"not introduce (make them equal, or declare the change in KERNEL_LINEAGE):\n" + "\n".join(undeclared)
        + "\n\nfull diff:\n" + "\n".join(diff))
    stale = [f"{what}: {item}" for what, item in entries if (what, item) not in used]
    assert not stale, f"KERNEL_LINEAGE[{problem}] declares changes that no longer happen:\n" + "\n".join(stale)


def test_given_kernels_share_constants():
    """One name per mask mode and one mode per value across the course (MASK == 2 means one thing),
    and every wrapper folds log2(e) into qk_scale through the same named constant."""
    import ast
    modes = {}
    for problem, slug in LINEAGE_SLUGS.items():
        if not (REPO / "notebooks" / slug).is_dir():
            continue
        src = _reference_module_source(slug)
        assert src.count("LOG2E = 1.4426950408889634") == 1 and src.count("1.4426950408889634") == 1, slug
        assert "qk_scale = 1.0 / math.sqrt(D) * LOG2E" in src, slug
        for node in ast.parse(src).body:
            if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)
                    and ast.unparse(node.value.func) == "tl.constexpr"):
                modes.setdefault(node.targets[0].id, set()).add(ast.literal_eval(node.value.args[0]))
        if problem >= 4:
            assert not re.search(r"MASK\s*==\s*\d", src), f"{slug}: compare MASK with a named mode, not a number"
    values = {}
    for name, vals in modes.items():
        assert len(vals) == 1, f"mask mode {name} has the values {sorted(vals)} in different problems"
        values.setdefault(vals.pop(), []).append(name)
    shared = {v: names for v, names in values.items() if len(names) > 1}
    assert not shared, f"one value, several mask modes: {shared}"
