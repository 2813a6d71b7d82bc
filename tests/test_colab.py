"""Self-study and Colab: the badge, setup and preflight cells every notebook starts with.

The cells live in tools/colab_header.py and the build injects them; these tests check that they are
really at the top of every notebook, that they run in a fresh kernel without touching the network
where the course is installed, that the setup cell would install from the right place (keeping
torch and triton) where it is not, that preflight reports and warns, that the README's Colab links
point at files that exist, and that the notebooks' picture cells render PNGs.
"""
from __future__ import annotations

import base64
import importlib
import importlib.util
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import nbformat
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tools import build_course as bc  # noqa: E402
from tools import colab_header as ch  # noqa: E402

SLUGS = bc.find_slugs(REPO)
COLAB_LINK = re.compile(r"https://colab\.research\.google\.com/github/([^/\s)]+)/([^/\s)]+)/blob/([^/\s)]+)/"
                        r"([^\s)]+\.ipynb)")
PICTURE_CALL = re.compile(r"\b(show_mask|show_tile_schedule|show_error_heatmap|plot_benchmark)\(")


def _kernel_env() -> dict:
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in [env.get("PYTHONPATH")] if p])
    env.pop("TRITON_INTERPRET", None)          # the notebook's own `import autograder` sets it
    env.pop("AUTOGRADER_TIER", None)
    # no network: any pip call would fail fast instead of downloading
    env.update(PIP_NO_INDEX="1", PIP_INDEX_URL="http://127.0.0.1:9/simple", https_proxy="http://127.0.0.1:9",
               http_proxy="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9",
               MPLBACKEND="Agg")
    return env


def _execute(nb, timeout=600):
    """Run `nb` in a fresh python3 kernel of this environment (nbclient), return it executed."""
    from nbclient import NotebookClient
    env = _kernel_env()
    old = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)                     # nbclient's kernel inherits this process's environment
    try:
        NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=True,
                       resources={"metadata": {"path": str(REPO)}}).execute()
    finally:
        os.environ.clear()
        os.environ.update(old)
    return nb


def _errors(nb):
    return [f"cell {i}: {o.ename}: {o.evalue}" for i, c in enumerate(nb.cells) if c.cell_type == "code"
            for o in c.get("outputs", []) if o.output_type == "error"]


def _text(cell) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.output_type == "stream")


# ---------------------------------------------------------------------------------------------
# the header cells


@pytest.mark.parametrize("folder", ["notebooks", "release"])
@pytest.mark.parametrize("slug", SLUGS)
def test_every_notebook_starts_with_badge_setup_preflight(slug, folder):
    nb = nbformat.read(REPO / folder / slug / f"{slug}.ipynb", as_version=4)
    expected = ch.header_cells(slug)
    head = nb.cells[:len(expected)]
    assert [(c.cell_type, c.source) for c in head] == [(kind, src) for kind, _, src in expected], \
        f"{folder}/{slug}: the first cells are not tools/colab_header.py's; run `{bc.COMMAND}`"
    for cell in head:
        meta = cell.metadata.nbgrader
        # plain given cells: locked, never graded, never a solution (so `nbgrader validate --invert` ignores them)
        assert meta.locked and not meta.grade and not meta.solution
    assert ch.colab_url(slug) in head[0].source
    # the notebook's own content follows: its first code cell imports autograder before any kernel
    first_own_code = next(c for c in nb.cells[len(expected):] if c.cell_type == "code")
    assert "import autograder" in first_own_code.source


def test_setup_and_preflight_run_in_a_fresh_kernel_without_network():
    """Where autograder imports (the venv, `pip install -e .`), the setup cell calls no pip at all."""
    spy = textwrap.dedent('''\
        import subprocess
        PIP_CALLS = []
        def _spy(real):
            def call(*args, **kwargs):
                if "pip" in repr(args) + repr(kwargs.get("args")):
                    PIP_CALLS.append(args)
                    raise RuntimeError("the setup cell tried pip although autograder imports")
                return real(*args, **kwargs)
            return call
        for _name in ("check_call", "run", "call", "check_output"):
            setattr(subprocess, _name, _spy(getattr(subprocess, _name)))
        ''')
    cells = [nbformat.v4.new_code_cell(spy)]
    cells += [nbformat.v4.new_code_cell(src) for kind, _, src in ch.header_cells(SLUGS[0] if SLUGS else "p1_x")
              if kind == "code"]
    cells.append(nbformat.v4.new_code_cell("assert PIP_CALLS == []\nprint(sorted(environment))"))
    nb = _execute(nbformat.v4.new_notebook(cells=cells), timeout=300)
    assert not _errors(nb), _errors(nb)
    setup_out, preflight_out = _text(nb.cells[1]), _text(nb.cells[2])
    assert "installing autograder" not in setup_out
    assert "[autograder] preflight" in preflight_out and "torch    " + torch.__version__ in preflight_out
    for key in ("tier", "device", "dtype", "python", "torch", "triton", "warnings"):
        assert f"'{key}'" in _text(nb.cells[3])


def test_setup_cell_installs_from_the_repository_keeping_torch_and_triton(monkeypatch):
    """Where autograder is missing, the cell pip-installs COURSE_REPO@branch with torch/triton pinned."""
    calls = []
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "autograder" else real_find_spec(name, *a))
    monkeypatch.setattr(subprocess, "run", lambda cmd, *a, **k: calls.append(cmd) or
                        subprocess.CompletedProcess(cmd, 0, "", ""))
    exec(compile(ch.setup_cell(), "<setup cell>", "exec"), {})
    assert len(calls) == 1, calls
    cmd = calls[0]
    assert cmd[:4] == [sys.executable, "-m", "pip", "install"]
    assert cmd[-1] == f"git+{ch.repo_url()}@{ch.COURSE_BRANCH}"
    constraints = Path(cmd[cmd.index("-c") + 1])
    pins = constraints.read_text().split()
    constraints.unlink()
    assert f"torch=={importlib.metadata.version('torch')}" in pins
    assert f"triton=={importlib.metadata.version('triton')}" in pins


def test_setup_cell_is_a_no_op_where_autograder_imports(monkeypatch):
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("pip called"))
    exec(compile(ch.setup_cell(), "<setup cell>", "exec"), {})


@pytest.mark.parametrize("repo, stderr, says", [
    ("COURSE-OWNER/flash-attention-course", "fatal: could not read Username for 'https://github.com'",
     "does not know the course's repository yet"),
    ("my-org/fa-course", "ERROR: ... Failed to establish a new connection: [Errno -3] Temporary failure in name "
     "resolution", "no internet access"),
    ("my-org/fa-course", "ERROR: Could not find a version that satisfies the requirement triton==9.9",
     "pip said: ERROR: Could not find a version that satisfies the requirement triton==9.9"),
])
def test_setup_cell_failure_says_what_happened_and_what_to_do(monkeypatch, repo, stderr, says):
    """A failed install ends in one sentence (SystemExit: no traceback in Jupyter), not pip's CalledProcessError."""
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "autograder" else real_find_spec(name, *a))
    monkeypatch.setattr(subprocess, "run", lambda cmd, *a, **k: subprocess.CompletedProcess(cmd, 1, "", stderr + "\n"))
    monkeypatch.setattr(ch, "COURSE_REPO", repo)
    with pytest.raises(SystemExit) as exc:
        exec(compile(ch.setup_cell(), "<setup cell>", "exec"), {})
    message = str(exc.value)
    assert message.startswith(f"setup: autograder could not be installed from https://github.com/{repo}: ")
    assert says in message and message.endswith(".") and "\n" not in message, message


# ---------------------------------------------------------------------------------------------
# README


def test_readme_colab_links_point_at_release_notebooks():
    readme = (REPO / "README.md").read_text()
    links = COLAB_LINK.findall(readme)
    assert links, "README has no Colab link"
    owner, name = ch.COURSE_REPO.split("/")
    for link_owner, link_name, branch, path in links:
        assert (link_owner, link_name, branch) == (owner, name, ch.COURSE_BRANCH), \
            f"README links {link_owner}/{link_name}@{branch}, tools/colab_header.py says {owner}/{name}@" \
            f"{ch.COURSE_BRANCH}: run `{bc.COMMAND}`"
        assert (REPO / path).is_file(), f"README's Colab link points at {path}, which does not exist"
    linked = {path for *_, path in links}
    assert linked == {f"release/{s}/{s}.ipynb" for s in SLUGS}, "README's badge table misses a notebook"
    assert ch.readme_table(SLUGS) in readme, f"README's badge table is stale: run `{bc.COMMAND}`"


GITHUB_LINK = re.compile(r"(?<![\w.])github\.com/([\w.-]+)/([\w.-]+?)(?:\.git)?(?=[/@\\\"'\s)]|$)")


def _course_links(root):
    """{file: [(kind, owner/name, branch or None)]}: every Colab link and every github.com link (the setup
    cell's git+ URL) in the README and the built notebooks (docs/ shows made-up examples)."""
    files = [root / "README.md", *sorted((root / "release").rglob("*.ipynb")),
             *sorted((root / "notebooks").glob("*/*.ipynb"))]
    out = {}
    for path in files:
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8")
        links = [("colab", f"{o}/{n}", b) for o, n, b, _ in COLAB_LINK.findall(text)]
        links += [("git", f"{o}/{n}", None) for o, n in GITHUB_LINK.findall(text)]
        # a setup cell's repository and branch: `COURSE_REPO = "https://github.com/o/n"` ... `@main"])`
        links += [("branch", None, b) for b in re.findall(r"git\+\{\{?COURSE_REPO\}?\}@([\w./-]+)\\?\"", text)]
        out[path.relative_to(root).as_posix()] = links
    return out


def test_every_colab_link_and_install_url_uses_the_one_setting():
    links = _course_links(REPO)
    for slug in SLUGS:
        kinds = {kind for kind, *_ in links[f"release/{slug}/{slug}.ipynb"]}
        assert kinds == {"colab", "git", "branch"}, f"release/{slug}: badge or setup cell missing ({kinds})"
    wrong = [(f, link) for f, found in links.items() for link in found
             if link[1] not in (None, ch.COURSE_REPO) or link[2] not in (None, ch.COURSE_BRANCH)]
    assert not wrong, (f"links that are not tools/colab_header.py's {ch.COURSE_REPO}@{ch.COURSE_BRANCH} "
                       f"(run `{bc.COMMAND}`): {wrong[:5]}")


def test_build_option_repoints_every_link(tmp_path, monkeypatch):
    """`build_course.py --repo owner/name --branch b` saves the setting and every derived link follows."""
    settings = tmp_path / "colab_header.py"
    settings.write_text(ch.SETTINGS.read_text())
    monkeypatch.setattr(ch, "SETTINGS", settings)
    monkeypatch.setattr(ch, "COURSE_REPO", ch.COURSE_REPO)       # restored after the test
    monkeypatch.setattr(ch, "COURSE_BRANCH", ch.COURSE_BRANCH)
    root = tmp_path / "course"
    slug = SLUGS[0]
    (root / "notebooks" / slug).mkdir(parents=True)
    (root / "notebooks" / slug / f"{slug}.py").write_text((REPO / "notebooks" / slug / f"{slug}.py").read_text())
    (root / "README.md").write_text((REPO / "README.md").read_text())
    assert bc.main(["--root", str(root)]) == 0
    before = _course_links(root)
    assert {link[1] for found in before.values() for link in found} - {None} == {ch.COURSE_REPO}

    assert bc.main(["--root", str(root), "--repo", "someone/fa-course", "--branch", "spring"]) == 0
    assert 'COURSE_REPO = "someone/fa-course"' in settings.read_text()
    assert 'COURSE_BRANCH = "spring"' in settings.read_text()
    after = _course_links(root)
    assert {f: len(found) for f, found in after.items()} == {f: len(found) for f, found in before.items()}
    assert {(link[1], link[2]) for found in after.values() for link in found} == \
        {("someone/fa-course", "spring"), ("someone/fa-course", None), (None, "spring")}
    assert bc.main(["--root", str(root), "--check"]) == 0
    with pytest.raises(SystemExit):
        bc.main(["--root", str(root), "--repo", "https://github.com/someone/fa-course"])


def test_readme_table_is_regenerated_between_markers():
    text = f"intro\n{ch.TABLE_BEGIN}\nold rows\n{ch.TABLE_END}\noutro\n"
    new = ch.update_readme(text, ["p1_a", "p2_b"])
    assert new.startswith("intro\n") and new.endswith("\noutro\n") and "old rows" not in new
    assert ch.colab_url("p2_b") in new and ch.update_readme(new, ["p1_a", "p2_b"]) == new
    assert ch.update_readme("no markers here", ["p1_a"]) is None


# ---------------------------------------------------------------------------------------------
# preflight


def test_preflight_reports_this_machine(capsys):
    from autograder import device
    from autograder.preflight import preflight
    info = preflight()
    out = capsys.readouterr().out
    assert info["tier"] == device.TIER and info["dtype"] == str(device.DTYPE).removeprefix("torch.")
    assert info["torch"] == torch.__version__ and info["python"] == sys.version.split()[0]
    assert info["triton"] == importlib.metadata.version("triton")
    assert isinstance(info["warnings"], list)
    if device.TIER == "cpu":
        # the CPU banner (why the interpreter, why not bf16) comes from autograder.device, not a copy
        assert device.BANNER.removeprefix("[autograder] ") in out and "bf16" in out


def _fake(monkeypatch, **attrs):
    from autograder import device
    for key, value in attrs.items():
        monkeypatch.setattr(device, key, value)


def test_preflight_warns_about_a_t4(monkeypatch):
    from autograder.preflight import preflight
    _fake(monkeypatch, TIER="gpu", DEVICE=torch.device("cuda"), CAPABILITY=(7, 5), GPU_NAME="Tesla T4",
          DTYPE=torch.float16, DTYPES=(torch.float16,))
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    warnings = " ".join(preflight(verbose=False)["warnings"])
    assert "sm_75" in warnings and "float16" in warnings and "64 KiB" in warnings


def test_preflight_warns_about_old_triton_and_cuda_torch_without_gpu(monkeypatch):
    import triton
    from autograder import device
    from autograder.preflight import preflight
    monkeypatch.setattr(triton, "__version__", "3.1.0")
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    monkeypatch.delenv("AUTOGRADER_TIER", raising=False)
    _fake(monkeypatch, TIER="cpu")
    warnings = preflight(verbose=False)["warnings"]
    assert any("Triton 3.1.0 is older than 3.2" in w for w in warnings), warnings
    assert any("CUDA build" in w and "T4 GPU" in w for w in warnings), warnings
    monkeypatch.setattr(triton, "__version__", "3.2.0")
    monkeypatch.setattr(torch.version, "cuda", None)
    assert device.TIER == "cpu" and not [w for w in preflight(verbose=False)["warnings"]
                                         if "older than" in w or "CUDA build" in w]


def test_preflight_warns_about_bf16_in_the_interpreter(monkeypatch):
    from autograder.preflight import preflight
    _fake(monkeypatch, TIER="gpu", DEVICE=torch.device("cuda"), CAPABILITY=(9, 0), GPU_NAME="H100",
          DTYPE=torch.bfloat16, DTYPES=(torch.bfloat16,))
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    warnings = preflight(verbose=False)["warnings"]
    assert any("bf16 in the Triton interpreter" in w for w in warnings), warnings
    assert any("TRITON_INTERPRET is set on a GPU machine" in w for w in warnings), warnings


@pytest.mark.parametrize("kernel_first", [True, False])
def test_preflight_detects_kernels_defined_before_the_interpreter_switch(tmp_path, kernel_first):
    (tmp_path / "my_kernels.py").write_text(textwrap.dedent('''\
        import triton
        import triton.language as tl

        @triton.jit
        def add_kernel(X, N: tl.constexpr):
            pass
        '''))
    imports = ["import my_kernels", "import autograder"]
    code = "; ".join((imports if kernel_first else imports[::-1]) +
                     ["from autograder.preflight import preflight", "print(preflight(verbose=False)['warnings'])"])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(REPO)]), AUTOGRADER_TIER="cpu")
    env.pop("TRITON_INTERPRET", None)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    flagged = "my_kernels.add_kernel" in proc.stdout and "before TRITON_INTERPRET was set" in proc.stdout
    assert flagged == kernel_first, proc.stdout


# ---------------------------------------------------------------------------------------------
# the notebooks' pictures


def _picture_cells(nb):
    return [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and PICTURE_CALL.search(c.source)]


@pytest.mark.parametrize("slug", [s for s in SLUGS if _picture_cells(
    nbformat.read(REPO / "notebooks" / s / f"{s}.ipynb", as_version=4))] if SLUGS else [])
def test_picture_cells_render_png(slug):
    """The source notebook, run up to its last picture cell: every picture cell shows a real PNG."""
    nb = nbformat.read(REPO / "notebooks" / slug / f"{slug}.ipynb", as_version=4)
    pictures = _picture_cells(nb)
    nb.cells = nb.cells[:pictures[-1] + 1]
    _execute(nb)
    assert not _errors(nb), _errors(nb)
    for i in pictures:
        pngs = [o.data["image/png"] for o in nb.cells[i].get("outputs", [])
                if o.output_type in ("display_data", "execute_result") and "image/png" in o.get("data", {})]
        assert pngs, f"{slug}: picture cell {i} ({nb.cells[i].source.strip().splitlines()[-1]!r}) shows no PNG"
        for png in pngs:
            raw = base64.b64decode(png)
            assert raw[:8] == b"\x89PNG\r\n\x1a\n" and len(raw) > 5000, \
                f"{slug}: picture cell {i} renders a {len(raw)}-byte PNG: empty figure?"
