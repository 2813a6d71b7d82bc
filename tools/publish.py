"""Write the public student repository: the release notebooks, autograder and a README written for students.

    python tools/publish.py DIR        DIR: a clone of the public repository (its .git and other files stay)

The public tree holds exactly what students need and nothing that gives answers away:

    release/         the student notebooks (nbgrader removed the solutions and the hidden tests)
    autograder/      the checks the notebooks import (the setup cell installs it on Colab)
    pyproject.toml   installs autograder; its packages never name `solutions`
    README.md        tools/public_readme.md with the Colab badge table: open in Colab, or install and run Jupyter

Before it writes anything it checks that the built files are up to date (`make check-build`), and after, that
no solution or hidden-test marker reached DIR. docs/instructor.md, "Publishing the student repository".
"""
from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if sys.path[0] == str(REPO / "tools"):   # run by path: the repository takes the place of tools/ (imports: `tools.`)
    sys.path[0] = str(REPO)
elif str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
from tools import build_course, colab_header, course_format  # noqa: E402

PUBLIC_README = REPO / "tools" / "public_readme.md"
COPIED = ("release", "autograder", "pyproject.toml")
# what must never be published: a line holding one of these gives an answer or a hidden test away
LEAKS = (*course_format.SOLUTION_WORDS, *course_format.HIDDEN_WORDS, "import solutions", "from solutions")


class PublishError(Exception):
    pass


def public_readme(slugs: list[str]) -> str:
    text = colab_header.update_readme(PUBLIC_README.read_text(encoding="utf-8"), slugs)
    if text is None:
        raise PublishError(f"{PUBLIC_README} lost its COLAB_TABLE markers")
    # the markers name this repository's tools, which students do not get
    return "".join(line for line in text.splitlines(keepends=True)
                   if line.strip() not in (colab_header.TABLE_BEGIN, colab_header.TABLE_END))


def leaks(root: Path) -> list[str]:
    """'path:line: text' for every line under root that holds a solution or hidden-test marker."""
    found = []
    for path in sorted(root.rglob("*")):
        if ".git" in path.relative_to(root).parts or not path.is_file() or path.suffix in (".pyc", ".png"):
            continue
        for i, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if any(word in line for word in LEAKS):
                found.append(f"{path.relative_to(root)}:{i}: {line.strip()[:100]}")
    return found


def publish(dest: Path) -> list[str]:
    """Write the public tree into dest; the paths written, relative to dest."""
    stale, missing, extra = build_course.compare(REPO, build_course.render(REPO))
    if stale or missing or extra:
        raise PublishError(f"the built files are not what the sources say ({len(stale + missing + extra)} differ): "
                           f"run `make build` (or {build_course.COMMAND}) and commit first")
    packages = re.search(r"^packages\s*=\s*\[([^\]]*)\]", (REPO / "pyproject.toml").read_text(encoding="utf-8"), re.M)
    if packages is None or "solutions" in packages.group(1):
        raise PublishError("pyproject.toml's [tool.setuptools] packages must list autograder's packages and never "
                           "`solutions`: that would install the answers")
    if colab_header.is_placeholder():
        print(f"publish: the Colab links still point at the placeholder {colab_header.COURSE_REPO}; "
              f"set the public repository first: {build_course.COMMAND} --repo owner/name", file=sys.stderr)
    dest.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        target = dest / name
        if target.is_dir():
            shutil.rmtree(target)
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(REPO / name, target)
    (dest / "README.md").write_text(public_readme(course_format.find_slugs(REPO / "release", ".ipynb")),
                                    encoding="utf-8")
    found = leaks(dest)
    if found:
        raise PublishError("answers reached the public tree; nothing may be pushed:\n  " + "\n  ".join(found[:20]))
    return [*COPIED, "README.md"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dest", type=Path, help="the public repository's working tree (a clone)")
    args = parser.parse_args(argv)
    if args.dest.resolve() == REPO or REPO in args.dest.resolve().parents:
        print("publish: DIR must be outside this repository (a clone of the public one)", file=sys.stderr)
        return 2
    try:
        written = publish(args.dest)
    except PublishError as exc:
        print(f"publish: {exc}", file=sys.stderr)
        return 1
    print(f"publish: wrote {', '.join(written)} into {args.dest}; review, then commit and push there")
    return 0


if __name__ == "__main__":
    sys.exit(main())
