"""Every reference to a file of the repository resolves: a newcomer who follows a link, a path
in backticks or a comment citing a page must find it.

Checked:
- in every Markdown file: links (relative to the page, as Markdown means them, with their
  #anchor against the target page's headings), paths in backticks (relative to the page, to the
  repository, or, for a short path such as `domain/facts.py`, to a folder of the page's part of
  the tree), and paths starting with a top-level folder (`deploy/`, `services/`...) anywhere;
- in the comments and docstrings of the code, scripts and configuration: paths starting with a
  top-level folder, and every Markdown page cited (`docs/domain.md`, `NOTICE.md`).

Not references: URLs, URL paths (`/v1/referrals`), paths under the home directory or in a
variable (`~/.cache/reflexe`, `$libs/.complete`), paths into what git ignores (`.venv/`,
`.local/`: made on the machine at run time), and words with a slash that name no file
(`application/json`, `12/03/1944`). `<name>`, `{name}` and `*` are placeholders: at least one
file must match.
"""

from __future__ import annotations

import ast
import io
import re
import subprocess
import tokenize
from dataclasses import dataclass
from functools import cache
from pathlib import Path, PurePosixPath

import pytest

REPO = Path(__file__).resolve().parents[3]

# What a file name written in a page looks like when it has no folder: `settings.py`.
FILE_SUFFIXES = {".md", ".py", ".pyi", ".sh", ".sql", ".yml", ".yaml", ".json", ".toml", ".txt", ".proto",
                 ".js", ".css", ".html", ".java", ".csv"}
PLACEHOLDER = re.compile(r"<[^<>/]*>|\{[^{}/]*\}")
TRAILING = ".,;:)!?'\""


@cache
def repo_files() -> tuple[str, ...]:
    """Tracked files and new ones not ignored (a page added in a change is checked before its commit)."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout.splitlines()
    return tuple(sorted(f for f in set(listed) if (REPO / f).is_file()))


@cache
def repo_paths() -> frozenset[str]:
    """Every file and every folder holding one, relative to the repository."""
    paths = set()
    for f in repo_files():
        parts = PurePosixPath(f).parts
        paths.update("/".join(parts[:i]) for i in range(1, len(parts) + 1))
    return frozenset(paths)


@cache
def top_folders() -> tuple[str, ...]:
    return tuple(sorted({f.split("/")[0] for f in repo_files() if "/" in f}))


@cache
def repo_rooted() -> re.Pattern[str]:
    """A path starting with a top-level folder, not in the middle of a URL, a path or a variable."""
    folders = "|".join(re.escape(f) for f in top_folders())
    return re.compile(rf"(?<![\w./$~@-])(?:{folders})/[\w./<>{{}}*+-]*")


def ignored(path: str) -> bool:
    """In what git ignores: the path, or its top folder (which may not exist on this machine)."""
    first = path.split("/")[0]
    return any(_ignored(p) for p in (first, first + "/", path) if p not in ("", "/"))


@cache
def _ignored(path: str) -> bool:
    return subprocess.run(["git", "check-ignore", "-q", "--no-index", path], cwd=REPO,
                          capture_output=True).returncode == 0


@dataclass(frozen=True)
class Reference:
    source: str  # the file it is written in
    line: int
    target: str  # as written, anchor included
    kind: str  # link | code | path | page


def _normalise(base: PurePosixPath, target: str) -> str | None:
    """`base/target` with `..` folded, relative to the repository; None if it leaves it."""
    parts: list[str] = []
    for part in (base / target).parts:
        if part == "..":
            if not parts:
                return None
            parts.pop()
        elif part not in (".", ""):
            parts.append(part)
    return "/".join(parts)


def _pattern(path: str) -> str:
    """A path as a regular expression: a placeholder or * stands for any part of one name."""
    return re.escape(PLACEHOLDER.sub("\0", path.rstrip("/"))).replace("\\*", "\0").replace("\0", "[^/]*")


def _match(candidate: str, under: str | None = None) -> str | None:
    """The first repository path `candidate` names; with `under`, any path below that folder
    ending with it (`domain/facts.py` for `services/indicators/src/reflexe_indicators/domain/facts.py`)."""
    if under is None and not PLACEHOLDER.search(candidate) and "*" not in candidate:
        return candidate.rstrip("/") if candidate.rstrip("/") in repo_paths() else None
    pattern = _pattern(candidate) if under is None else re.escape(under) + r"(?:.*/)?" + _pattern(candidate)
    return next((p for p in sorted(repo_paths()) if re.fullmatch(pattern, p)), None)


@cache
def _headings(page: str) -> frozenset[str]:
    """GitHub's anchors of a page's headings."""
    text = _strip_fences((REPO / page).read_text(encoding="utf-8"))
    anchors = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(slug)
    return frozenset(anchors)


def _strip_fences(text: str) -> str:
    return re.sub(r"^(```|~~~).*?^\1", "", text, flags=re.MULTILINE | re.DOTALL)


def resolve(ref: Reference) -> str | None:
    """Why the reference does not resolve, or None when it does."""
    target, _, anchor = ref.target.partition("#")
    source_dir = PurePosixPath(ref.source).parent
    # A Markdown link is relative to its page; a path written elsewhere may also be from the top.
    bases = [source_dir] if ref.kind == "link" else [source_dir, PurePosixPath("")]
    found = None
    for base in bases:
        candidate = _normalise(base, target)
        if candidate is not None and (found := _match(candidate)):
            break
    if found is None and ref.kind == "code" and target.split("/")[0] not in top_folders():
        # A short path (`domain/facts.py` in a service's README): somewhere under the page's folder,
        # or anywhere for the pages at the top and in docs/.
        found = _match(target, "" if str(source_dir) in (".", "docs") else f"{source_dir}/")
    if found is None and ref.kind == "page" and "/" not in target:
        found = next((f for f in repo_files() if PurePosixPath(f).name == target), None)
    if found is None:
        return "no such file"
    if anchor and found.endswith(".md") and anchor not in _headings(found):
        return f"{found} has no heading #{anchor}"
    return None


# -- Markdown ------------------------------------------------------------------------------------

# Pages whose backticked paths name files of something else, not of this repository.
NAMES_OTHERS_FILES = {
    # the files of the npm package the geography data is derived from
    "libs/common/src/reflexe_common/geography/data/NOTICE.md",
}
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
CODE_SPAN = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")


def _path_like(word: str) -> bool:
    """A backticked word that names a file: a folder path, or a file name with a known suffix."""
    if not word or "://" in word or word[0] in "/~$@-" or "=" in word:
        return False
    if not re.fullmatch(r"[\w.<>{}*+-]+(/[\w.<>{}*+-]*)*", word):
        return False
    first = word.split("/")[0]
    if first in top_folders() or first in ("..", "."):
        return True
    if re.fullmatch(r"[\d.]+(/[\d.]+)+", word):
        return False  # a date or a network
    folder = word.endswith("/") and "/" in word[:-1]  # `deploy/grafana/`, not `adapters/` alone
    return folder or PurePosixPath(word.split("#")[0]).suffix in FILE_SUFFIXES


def markdown_references(page: str) -> list[Reference]:
    refs = []
    in_fence = False
    for number, line in enumerate((REPO / page).read_text(encoding="utf-8").splitlines(), start=1):
        if re.match(r"\s*(```|~~~)", line):
            in_fence = not in_fence
            continue
        if not in_fence:
            for target in LINK.findall(line):
                if not re.match(r"[a-z][a-z0-9+.-]*:", target) and not target.startswith("#"):
                    refs.append(Reference(page, number, target, "link"))
                elif target.startswith("#") and len(target) > 1:
                    refs.append(Reference(page, number, page.rsplit("/", 1)[-1] + target, "link"))
            for span in CODE_SPAN.findall(line):
                words = span.split()
                for word in words:
                    word = word.rstrip(TRAILING)
                    # In a command (`fhir-validator.sh FILE.json`) a bare file name is the user's.
                    if _path_like(word) and (len(words) == 1 or "/" in word) and page not in NAMES_OTHERS_FILES:
                        refs.append(Reference(page, number, word, "code"))
        for path in repo_rooted().findall(line):
            refs.append(Reference(page, number, path.rstrip(TRAILING), "path"))
    return refs


def markdown_pages() -> list[str]:
    return [f for f in repo_files() if f.endswith(".md")]


# -- Code ------------------------------------------------------------------------------------------

PAGE = re.compile(r"(?<![\w/.$-])(?:[\w.-]+/)*[\w.-]+\.md(?:#[\w-]+)?\b")
HASH_COMMENT = re.compile(r"(?:^|\s)#(?!!)(.*)$")
HTML_COMMENT = re.compile(r"<!--(.*?)(?:-->|$)|\{#(.*?)(?:#\}|$)")


def _python_comments(text: str) -> list[tuple[int, str]]:
    found = []
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type == tokenize.COMMENT:
            found.append((token.start[0], token.string))
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                first = body[0].lineno
                found += [(first + i, line) for i, line in enumerate(body[0].value.value.splitlines())]
    return found


def _other_comments(path: str, text: str) -> list[tuple[int, str]]:
    suffix = PurePosixPath(path).suffix
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        if suffix == ".sql":
            comment = line.partition("--")[2]
        elif suffix in (".js", ".css", ".java", ".proto"):
            stripped = line.strip()
            comment = line.partition("//")[2] or (stripped if stripped.startswith(("/*", "*")) else "")
        elif suffix == ".html":  # HTML and Jinja comments
            comment = " ".join(a or b for a, b in HTML_COMMENT.findall(line))
        else:
            match = HASH_COMMENT.search(line)
            comment = match.group(1) if match else ""
        if comment.strip():
            found.append((number, comment))
    return found


CODE_SUFFIXES = {".py", ".pyi", ".sh", ".sql", ".yml", ".yaml", ".toml", ".txt", ".js", ".css", ".html", ".java",
                 ".proto", ".cfg", ".ini"}
CODE_NAMES = {"Dockerfile", "reflexe", "run", ".gitignore", ".dockerignore"}


def code_files() -> list[str]:
    return [f for f in repo_files()
            if PurePosixPath(f).suffix in CODE_SUFFIXES or PurePosixPath(f).name in CODE_NAMES]


def code_references(path: str, text: str | None = None) -> list[Reference]:
    if text is None:
        text = (REPO / path).read_text(encoding="utf-8", errors="replace")
    if not repo_rooted().search(text) and ".md" not in text:
        return []  # nothing that could be a reference: spare the tokenizer
    comments = _python_comments(text) if path.endswith(".py") else _other_comments(path, text)
    refs = []
    for number, comment in comments:
        rooted = [p.rstrip(TRAILING) for p in repo_rooted().findall(comment)]
        refs += [Reference(path, number, p, "path") for p in rooted]
        refs += [Reference(path, number, p, "page") for p in PAGE.findall(comment)
                 if not any(p in r for r in rooted)]
    return refs


# -- The checks ------------------------------------------------------------------------------------

def unresolved(refs: list[Reference]) -> list[str]:
    problems = []
    for ref in refs:
        if ignored(ref.target.split("#")[0].split("*")[0].split("<")[0].split("{")[0] or "."):
            continue
        why = resolve(ref)
        if why:
            problems.append(f"{ref.source}:{ref.line}: {ref.kind} {ref.target!r}: {why}")
    return problems


@pytest.mark.parametrize("page", markdown_pages())
def test_every_reference_in_a_page_resolves(page: str) -> None:
    assert unresolved(markdown_references(page)) == []


def test_every_path_and_page_cited_in_code_comments_resolves() -> None:
    problems = []
    for path in code_files():
        problems += unresolved(code_references(path))
    assert problems == []


# -- The checks can fail ----------------------------------------------------------------------------

def test_the_reference_finder_sees_links_code_spans_and_paths_in_prose() -> None:
    page = "docs/architecture.md"
    refs = {(r.kind, r.target) for r in markdown_references(page)}
    assert ("link", "integration-fhir.md") in refs
    assert ("code", "libs/common/src/reflexe_common/topics.py") in refs
    assert any(kind == "path" for kind, _ in refs)


@pytest.mark.parametrize(("source", "kind", "target"), [
    ("docs/architecture.md", "link", "integration-fhir-v2.md"),
    ("docs/architecture.md", "link", "webhooks.md#no-such-heading"),
    ("README.md", "code", "deploy/local/no-such-script.sh"),
    ("services/indicators/README.md", "code", "domain/no_such_module.py"),
    ("README.md", "code", "services/<name>/NoSuchFile"),
    ("tests/fuzz/test_kafka_decoders.py", "path", "tests/integration/fuzz/test_kafka_handlers_fuzz.py"),
    ("services/referral/src/reflexe_referral/domain/model.py", "page", "referral.md"),
])
def test_a_reference_to_nothing_is_reported(source: str, kind: str, target: str) -> None:
    assert resolve(Reference(source, 1, target, kind)) is not None


@pytest.mark.parametrize(("source", "kind", "target"), [
    ("docs/architecture.md", "link", "webhooks.md#headers"),
    ("deploy/prometheus/README.md", "code", "tests/alerts_test.yml"),
    ("deploy/prometheus/README.md", "code", "../grafana/dashboards/*.json"),
    ("services/indicators/README.md", "code", "domain/facts.py"),
    ("README.md", "code", "services/<name>/src/reflexe_<name>/"),
    ("libs/common/src/reflexe_common/geography/__init__.py", "page", "data/NOTICE.md"),
])
def test_a_reference_to_a_file_resolves(source: str, kind: str, target: str) -> None:
    assert resolve(Reference(source, 1, target, kind)) is None


def test_words_with_a_slash_that_name_no_file_are_not_references() -> None:
    for word in ("application/json", "12/03/1944", "172.16.0.0/12", "apache/kafka", "/v1/referrals",
                 "~/.cache/reflexe", "http://HOST:8001/fhir", "<FINESS>/<MSH-10>"):
        assert not _path_like(word), word
    assert ignored(".venv/bin/python") and ignored(".local/infra/kafka/credentials")


def test_code_references_come_from_comments_and_docstrings_only() -> None:
    source = ('''"""Computes the facts (docs/no-such-page.md)."""\n'''
              '''def fold(service):\n'''
              '''    """As referral.md says."""\n'''
              '''    # see deploy/local/no-such-script.sh\n'''
              '''    return f"services/{service}/Dockerfile"  # a path the code builds, not a reference\n''')
    refs = code_references("services/indicators/src/reflexe_indicators/example.py", source)
    assert {(r.kind, r.target, r.line) for r in refs} == {
        ("path", "docs/no-such-page.md", 1), ("page", "referral.md", 3), ("path", "deploy/local/no-such-script.sh", 4)}
    assert len(unresolved(refs)) == 3
    shell = "#!/usr/bin/env bash\n# installs what tests/e2e/test_dashboards.py needs\ntouch \"$libs/.complete\"\n"
    assert [r.target for r in code_references("deploy/local/example.sh", shell)] == ["tests/e2e/test_dashboards.py"]
