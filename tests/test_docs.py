"""The documentation is portable: no path of a particular machine, no words about who ran what,
no link to a file that is not there, no citation of a file outside the repository."""

from __future__ import annotations

import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DOCS = REPO_ROOT / "docs"

# An absolute path of one machine: /work/..., /root/..., /opt/..., /home/<name>/..., /tmp/<x>.
# The look-behind keeps URLs (https://host/opt/...) and relative paths (runs/root/...) out.
MACHINE_PATH = re.compile(
    r"(?<![\w.~-])(?:/(?:work|root|opt)/|/home/[\w.-]+/|/tmp/[\w.{-])",
)
# Who ran what: sessions, agents, "the lead".
WHO_RAN_WHAT = re.compile(r"\bsessions?\b|\bagents?\b|\bthe lead\b|\blead's\b", re.IGNORECASE)
# The citation of a file that is not part of the repository (built so this file does not match).
MISSING_SOURCE = "SEED_" + "FACTS"

MARKDOWN_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^\s*(```|~~~)")


def published_files() -> list[Path]:
    """README.md, every markdown file under docs/, the saved results and the benchmarks."""
    files = [REPO_ROOT / "README.md"]
    files += sorted(DOCS.rglob("*.md"))
    files += sorted(p for p in (DOCS / "results").glob("*") if p.is_file())
    files += sorted((DOCS / "example-run").glob("*.json"))
    files += sorted((REPO_ROOT / "benchmarks").glob("*.py"))
    return files


def markdown_files() -> list[Path]:
    return [REPO_ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


def source_files() -> list[Path]:
    """Every text file of the project that could cite another file."""
    files = [REPO_ROOT / name for name in ("README.md", "Makefile", "pyproject.toml")]
    files += sorted(DOCS.rglob("*.md"))
    files += sorted((DOCS / "results").glob("*"))
    for folder, pattern in (("src", "*.py"), ("tests", "*.py"), ("benchmarks", "*"),
                            ("scripts", "*")):  # fmt: skip
        files += sorted((REPO_ROOT / folder).rglob(pattern))
    return [p for p in files if p.is_file() and ".egg-info" not in str(p)]


def hits(paths: list[Path], pattern: re.Pattern[str]) -> list[str]:
    found = []
    for path in paths:
        text = path.read_text(encoding="utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), start=1):
            for match in pattern.finditer(line):
                found.append(
                    f"{path.relative_to(REPO_ROOT)}:{number}: {match.group(0)!r} in {line.strip()}"
                )
    return found


def test_the_files_to_check_exist() -> None:
    files = published_files()
    assert REPO_ROOT / "README.md" in files
    assert len([p for p in files if p.suffix == ".md"]) >= 10
    assert any(p.parent.name == "results" for p in files)
    assert any(p.parent.name == "benchmarks" for p in files)


def test_no_absolute_path_of_a_particular_machine() -> None:
    found = hits(published_files(), MACHINE_PATH)
    assert not found, (
        "absolute paths of one machine (use relative folders such as runs/<name>, or options "
        "anyone can pass):\n" + "\n".join(found)
    )


def test_no_words_about_who_ran_what() -> None:
    found = hits(published_files(), WHO_RAN_WHAT)
    assert not found, (
        "words about who ran what (state the machine's load as a plain fact instead):\n"
        + "\n".join(found)
    )


def test_the_patterns_catch_what_they_should() -> None:
    for bad in ("--root /work/runs/ptbench", "MNISTLAB_HOME=/tmp/mlhome", "/root/.cache/x",
                "/home/alice/mnist", "/opt/data", "`/tmp/rob/fast`"):  # fmt: skip
        assert MACHINE_PATH.search(bad), bad
    for good in ("runs/rob/fast", "https://example.org/opt/x", "runs/root/x", "/tmp", "~/tmp/x",
                 "`tmp_path`", "$XDG_CACHE_HOME/mnistlab"):  # fmt: skip
        assert not MACHINE_PATH.search(good), good
    for bad in ("during this session", "Other agents' jobs", "the lead's best model",
                "Session 4", "another agent"):  # fmt: skip
        assert WHO_RAN_WHAT.search(bad), bad
    for good in ("InferenceSession", "leads to", "misleading", "it leads"):
        assert not WHO_RAN_WHAT.search(good), good


def outside_code(path: Path, inline_code: bool = False) -> list[tuple[int, str]]:
    """(number, line) of every line outside fenced code blocks, inline code removed unless
    ``inline_code``."""
    lines = []
    in_fence = False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        if not in_fence:
            lines.append((number, line if inline_code else re.sub(r"`[^`]*`", "", line)))
    return lines


def relative_links(path: Path) -> list[tuple[int, str]]:
    """(line, target) of every markdown link outside code that is not a URL."""
    links = []
    for number, line in outside_code(path):
        for match in MARKDOWN_LINK.finditer(line):
            target = match.group(1)
            if not re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):
                links.append((number, target))
    return links


def anchors(path: Path) -> set[str]:
    """The anchors GitHub gives the headings of a markdown file."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    for _, line in outside_code(path, inline_code=True):
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading:
            slug = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower()).replace(" ", "-")
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def test_relative_links_point_to_existing_files() -> None:
    broken = []
    checked = 0
    for path in markdown_files():
        for number, target in relative_links(path):
            file_part, _, anchor = target.partition("#")
            linked = path if not file_part else path.parent / file_part
            checked += 1
            where = f"{path.relative_to(REPO_ROOT)}:{number}: ({target})"
            if not linked.exists():
                broken.append(f"{where}: no such file")
            elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
                broken.append(f"{where}: no heading with that anchor")
    assert checked > 20
    assert not broken, "links to files or headings that do not exist:\n" + "\n".join(broken)


def test_no_file_cites_a_source_outside_the_repository() -> None:
    found = hits(source_files(), re.compile(re.escape(MISSING_SOURCE), re.IGNORECASE))
    assert not found, (
        f"{MISSING_SOURCE} is not in the repository; cite docs/recipes.md instead:\n"
        + "\n".join(found)
    )


def test_the_readme_layout_lists_every_doc_and_sub_package() -> None:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    layout = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
    for doc in sorted(DOCS.glob("*.md")):
        assert doc.name in layout, f"README.md's layout does not list docs/{doc.name}"
    package = REPO_ROOT / "src" / "mnistlab"
    for sub in sorted(p for p in package.iterdir() if (p / "__init__.py").is_file()):
        assert f" {sub.name}/ " in layout, f"README.md's layout does not list {sub.name}/"
    for module in sorted(package.glob("*.py")):
        if module.name.startswith("_") and not module.name.startswith("__"):
            continue  # private helpers need no entry
        assert module.name in layout, f"README.md's layout does not list {module.name}"
