"""English text collections that any Debian machine already holds, written as BEIR corpora.

Training data beyond one collection (issue 19): the reranker learns from pseudo-queries made
from many corpora (:mod:`training.cross_encoder.data.pseudo_queries`). Two sources need no
download and no model: Debian's package descriptions (software, ~60k packages in apt's
``Translation-en`` lists, fetched by ``apt-get update -o Acquire::Languages=en``; the short
description is a title, the long one the text) and the installed manual pages (command
documentation; the NAME line's summary is the title, DESCRIPTION the text). Only
``corpus.jsonl`` is written; nothing is copied into the repository.

Example::

    python -m training cross-encoder corpus debian --out .cache/corpora/debian --limit 20000
    python -m training cross-encoder corpus manpages --out .cache/corpora/manpages --limit 800
"""

from __future__ import annotations

import json
import logging
import random
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Iterator

logger = logging.getLogger(__name__)

MIN_WORDS = 25
_SKIP_SUFFIXES = ("-dev", "-dbg", "-dbgsym", "-doc", "-data", "-common", "-l10n", "-locale")


def write_corpus(docs: Iterable[dict], out: Path) -> int:
    """``out/corpus.jsonl`` (``_id``, ``title``, ``text``), written atomically; returns the count."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "corpus.jsonl.tmp"
    n = 0
    with open(tmp, "w", encoding="utf-8") as f:
        for doc in docs:
            f.write(json.dumps(doc, ensure_ascii=False) + "\n")
            n += 1
    tmp.replace(out / "corpus.jsonl")
    return n


def parse_debian_records(text: str) -> Iterator[dict]:
    """Package records of ``apt-cache dumpavail`` -> ``{"_id", "title", "text"}`` (continuation lines joined)."""
    for record in text.split("\n\n"):
        name, title, lines, in_desc = None, None, [], False
        for line in record.splitlines():
            if line.startswith("Package:"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith(("Description:", "Description-en:")):
                title, in_desc = line.split(":", 1)[1].strip(), True
            elif in_desc and line.startswith(" "):
                body = line.strip()
                lines.append("" if body == "." else body)
            else:
                in_desc = False
        if name and title:
            yield {"_id": name, "title": title, "text": " ".join(x for x in lines if x)}


def _translation_records(lists: Path = Path("/var/lib/apt/lists")) -> list[str]:
    """The text of apt's English description lists (compressed; apt-helper reads every format apt writes)."""
    files = sorted(lists.glob("*_i18n_Translation-en*"))
    return [subprocess.run(["/usr/lib/apt/apt-helper", "cat-file", str(f)], check=True, capture_output=True,
                           text=True).stdout for f in files]


def debian_descriptions(limit: int, seed: int = 13, records: str | None = None) -> list[dict]:
    """A seeded sample of distinct, substantive package descriptions (``records``: dumpavail text, for tests)."""
    if records is None:
        records = "\n\n".join(_translation_records())
    seen_titles, docs = set(), []
    for doc in parse_debian_records(records):
        key = doc["title"].lower()
        if doc["_id"].endswith(_SKIP_SUFFIXES) or key in seen_titles or len(doc["text"].split()) < MIN_WORDS:
            continue
        seen_titles.add(key)
        docs.append(doc)
    if len(docs) < 100:
        raise ValueError(f"only {len(docs)} package descriptions with a long text: apt keeps them in the "
                         "Translation-en lists; run `apt-get update -o Acquire::Languages=en` first")
    docs.sort(key=lambda d: d["_id"])
    random.Random(seed).shuffle(docs)
    return docs[:limit]


_SECTION = re.compile(r"^([A-Z][A-Z ]+)$")


def parse_man_page(rendered: str) -> dict | None:
    """A rendered manual page (``man -P cat``) -> ``{"title", "text"}`` from NAME and DESCRIPTION, or None."""
    sections: dict[str, list[str]] = {}
    current = None
    for line in rendered.splitlines():
        m = _SECTION.match(line.rstrip())
        if m:
            current = m.group(1).strip()
            sections.setdefault(current, [])
        elif current:
            sections[current].append(line.strip())
    name = " ".join(x for x in sections.get("NAME", []) if x)
    desc = " ".join(x for x in sections.get("DESCRIPTION", []) if x)
    if " - " not in name or len(desc.split()) < MIN_WORDS:
        return None
    summary = name.split(" - ", 1)[1].strip()
    return {"title": summary, "text": " ".join(desc.split()[:300])}


def man_pages(limit: int, seed: int = 13, root: Path = Path("/usr/share/man/man1"), threads: int = 2) -> list[dict]:
    """Rendered section-1 manual pages, a seeded sample of ``limit`` (those without NAME/DESCRIPTION skipped)."""
    pages = sorted(p for p in Path(root).glob("*.1*") if p.is_file())
    random.Random(seed).shuffle(pages)

    def render(path: Path) -> dict | None:
        try:
            out = subprocess.run(["man", "-P", "cat", str(path)], capture_output=True, text=True, timeout=20,
                                 env={"MANWIDTH": "2000", "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}).stdout
        except (subprocess.TimeoutExpired, OSError):
            return None
        doc = parse_man_page(re.sub(r".\x08", "", out))
        return None if doc is None else {"_id": path.name.split(".")[0], **doc}

    docs, seen = [], set()
    with ThreadPoolExecutor(threads) as pool:
        for start in range(0, len(pages), 64):
            for doc in pool.map(render, pages[start:start + 64]):
                if doc and doc["_id"] not in seen and doc["title"].lower() not in seen:
                    seen.update((doc["_id"], doc["title"].lower()))
                    docs.append(doc)
            logger.info("manual pages: %d of %d wanted (%d rendered)", len(docs), limit, start + 64)
            if len(docs) >= limit:
                break
    return docs[:limit]
