"""#22 item 5: every file, folder, anchor and module the README and getting-started name exists
(the README's `-d @job.json` example named a file that was not there). Checked on the text: the
links (relative ones, with their #anchors), the repository paths in code, the `@FILE` of curl
examples and the modules of `python -m`."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import ROOT

DOCS = ["README.md", "docs/getting-started.md"]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
CODE = re.compile(r"```[^\n]*\n(.*?)```|`([^`]+)`", re.S)
# a path into the repository: under one of its top-level folders, or one of its top-level files
REPO_PATH = re.compile(
    r"(?<![\w./-])((?:\.ci|docs|helm|nodes|cluster|logstore|tests|bench)/[\w./-]*[\w/]"
    r"|Dockerfile|pyproject\.toml|CHANGELOG\.md|README\.md)(?![\w/])"
)
AT_FILE = re.compile(r"(?<![\w])@([\w./-]+)")  # curl -d @FILE
MODULE = re.compile(r"python -m ([\w.]+)")


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to dashes."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    out: set[str] = set()
    seen: dict[str, int] = {}
    in_code = False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        m = None if in_code else re.match(r"#{1,6} (.+)", line)
        if m:
            base = slug(m.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


def named(doc: str) -> list[tuple[str, str]]:
    """(kind, what) for everything ``doc`` names."""
    text = (ROOT / doc).read_text()
    out: list[tuple[str, str]] = []
    for target in LINK.findall(text):
        if not re.match(r"[a-z]+:", target):
            out.append(("link", target))
    for block, inline in CODE.findall(text):
        code = block or inline
        out += [("path", p) for p in REPO_PATH.findall(code)]
        out += [("at-file", p) for p in AT_FILE.findall(code) if "." in p or "/" in p]
        out += [("module", m) for m in MODULE.findall(code)]
    return out


CASES = [(doc, kind, what) for doc in DOCS for kind, what in named(doc)]


def test_the_docs_name_things_at_all():
    kinds = {kind for _, kind, _ in CASES}
    assert {"link", "path", "module", "at-file"} <= kinds, kinds
    assert len(CASES) > 30


@pytest.mark.parametrize(("doc", "kind", "what"), CASES, ids=[f"{d}:{w}" for d, _, w in CASES])
def test_what_the_docs_name_exists(doc: str, kind: str, what: str):
    if kind == "link":
        target, _, anchor = what.partition("#")
        path = ((ROOT / doc).parent / target).resolve() if target else ROOT / doc
        assert path.exists(), f"{doc} links to {what}: no such file"
        if anchor and path.suffix == ".md":
            assert anchor in anchors(path), f"{doc} links to {what}: no such heading"
    elif kind in ("path", "at-file"):
        assert (ROOT / what).exists(), f"{doc} names {what}: no such file or folder"
    else:
        base = ROOT / what.replace(".", "/")
        assert base.with_suffix(".py").exists() or (base / "__main__.py").exists(), (
            f"{doc} runs python -m {what}: no such module"
        )


def test_slugs_follow_github():
    assert slug("Where webhooks may go") == "where-webhooks-may-go"
    assert slug("D156. etcd: TLS and `auth`") == "d156-etcd-tls-and-auth"


def test_the_json_example_is_the_yaml_example():
    import json

    import yaml

    examples = ROOT / "docs/examples"
    assert json.loads((examples / "hello.json").read_text()) == yaml.safe_load(
        (examples / "hello.yaml").read_text()
    )
