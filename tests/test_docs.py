"""Every documentation reference in the repository resolves: `docs/<page>.md#<section>` in code,
gin files and tests, and relative links in the Markdown pages, to a file and a heading."""
import glob
import os
import re

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = [p for pattern in ("irl_lm/**/*.py", "tests/**/*.py", "benchmarks/**/*.py",
                             "gin/**/*.gin", "notebooks/*.ipynb", "launch/*.sh", "setup.py")
           for p in glob.glob(os.path.join(REPO, pattern), recursive=True)]
PAGES = [os.path.join(REPO, "README.md"), os.path.join(REPO, "launch", "README.md"),
         *glob.glob(os.path.join(REPO, "docs", "*.md"))]
DOC_REFERENCE = re.compile(r"docs/([\w-]+\.md)(?:#([\w-]+))?")
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _anchor(heading: str) -> str:
  """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces to '-'."""
  return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path: str) -> set[str]:
  with open(path, encoding="utf-8") as f:
    return {_anchor(line.lstrip("#")) for line in f if re.match(r"#{1,6} ", line)}


def _resolves(path: str, anchor: str | None) -> bool:
  return os.path.isfile(path) and (not anchor or anchor in _anchors(path))


def test_the_anchor_rule():
  assert _anchor(" T5 1.1 parameter layout") == "t5-11-parameter-layout"
  assert _anchor("Tasks and data: where the files go") == "tasks-and-data-where-the-files-go"


def test_code_gin_files_and_tests_cite_existing_doc_sections():
  missing = []
  for source in SOURCES:
    with open(source, encoding="utf-8") as f:
      text = f.read()
    missing += [f"{os.path.relpath(source, REPO)}: docs/{page}#{anchor}"
                for page, anchor in DOC_REFERENCE.findall(text)
                if not _resolves(os.path.join(REPO, "docs", page), anchor)]
    assert "DESIGN" + ".md" not in text, source  # the design notes live in docs/design.md
  assert not missing


@pytest.mark.parametrize("page", PAGES, ids=lambda p: os.path.relpath(p, REPO))
def test_relative_links_in_the_pages_resolve(page):
  with open(page, encoding="utf-8") as f:
    links = LINK.findall(f.read())
  broken = []
  for link in links:
    if re.match(r"[a-z]+://", link):
      continue
    target, _, anchor = link.partition("#")
    path = os.path.normpath(os.path.join(os.path.dirname(page), target)) if target else page
    if not (os.path.exists(path) and (os.path.isdir(path) or _resolves(path, anchor))):
      broken.append(link)
  assert not broken
