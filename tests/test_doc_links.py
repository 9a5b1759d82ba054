"""The README and the docs point only to files that exist, and cite only tests that exist.

Every relative link `[text](target)` or `![alt](target)` in README.md and the Markdown
pages of docs/ (the benchmark and notebook pages the site renders included) must name a
file or folder of the repository, relative to the page; links into the site's pages keep
their `#anchor`, which `mkdocs build --strict` checks. Every `tests/...py::test_name` the
docs cite must be a test function of that file.
"""

import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Links outside code spans and fenced blocks; the target stops at whitespace or ")".
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
TEST_ID = re.compile(r"(tests/[\w/]+\.py)::(\w+)")


def pages():
    found = [os.path.join(ROOT, "README.md")]
    for folder in ("docs", "bench", "colab"):  # docs/bench and docs/notebooks link to the other two
        for where, _, names in os.walk(os.path.join(ROOT, folder)):
            found += [os.path.join(where, name) for name in sorted(names) if name.endswith(".md")]
    return found


def prose(text):
    """The text outside fenced code blocks and inline code spans."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def relative_links(text):
    for target in LINK.findall(prose(text)):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # a URL or an anchor on the same page
        yield target.split("#", 1)[0]


PAGES = pages()


def test_the_pages_are_found():
    names = {os.path.relpath(p, ROOT) for p in PAGES}
    assert {"README.md", "docs/index.md", "docs/api/models.md", "bench/RESULTS.md", "colab/README.md"} <= names


def test_relative_links_reads_markdown():
    text = "[a](x.md#part) ![b](img/p.png) [c](https://example.org) [d](#here) `[e](no.md)`\n```\n[f](no2.md)\n```\n"
    assert list(relative_links(text)) == ["x.md", "img/p.png"]


@pytest.mark.parametrize("page", PAGES, ids=[os.path.relpath(p, ROOT) for p in PAGES])
def test_every_relative_link_names_a_file_that_exists(page):
    with open(page, encoding="utf-8") as f:
        text = f.read()
    missing = [t for t in relative_links(text) if not os.path.exists(os.path.join(os.path.dirname(page), t))]
    assert not missing, f"{os.path.relpath(page, ROOT)} links to files that do not exist: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=[os.path.relpath(p, ROOT) for p in PAGES])
def test_cited_tests_exist(page):
    with open(page, encoding="utf-8") as f:
        text = f.read()
    missing = []
    for path, name in TEST_ID.findall(text):
        full = os.path.join(ROOT, path)
        source = open(full, encoding="utf-8").read() if os.path.exists(full) else ""
        if not re.search(rf"^def {name}\(", source, flags=re.M):
            missing.append(f"{path}::{name}")
    assert not missing, f"{os.path.relpath(page, ROOT)} cites tests that do not exist: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=[os.path.relpath(p, ROOT) for p in PAGES])
def test_no_colab_badge_to_an_unestablished_repository(page):
    with open(page, encoding="utf-8") as f:
        assert "colab.research.google.com/github/" not in f.read()
