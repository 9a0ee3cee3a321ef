#!/usr/bin/env python3
"""Checks the documentation's links, so the book and the README cannot rot.

- Every relative link in docs/*.md and README.md must name a file that exists (docs pages, or
  repository files such as ../wit/0.2.0/plugin.wit), and a `#fragment` must name a heading of
  the Markdown page it points to (slugs as mdBook and GitHub make them).
- Every page in docs/ must be in docs/SUMMARY.md, and every page SUMMARY.md names must exist.
Exits 1 listing every problem (file:line: link: what is wrong).

Usage: scripts/check-docs-links.py
"""
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
FENCE = re.compile(r"^\s*(```|~~~)")


def lines_outside_code(path):
    """(line number, text) of the lines that are not inside fenced code blocks."""
    fenced = False
    with open(path, encoding="utf-8") as file:
        for number, line in enumerate(file, 1):
            if FENCE.match(line):
                fenced = not fenced
                continue
            if not fenced:
                yield number, line


def slug(heading):
    """mdBook's (and GitHub's) id for a heading."""
    text = re.sub(r"`|\*", "", heading)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text).strip().lower()
    text = "".join(c for c in text if c.isalnum() or c in " -_")
    return text.replace(" ", "-")


def anchors(path, cache={}):
    if path not in cache:
        found = set()
        for _, line in lines_outside_code(path):
            match = HEADING.match(line)
            if match:
                base = slug(match.group(2))
                name, n = base, 1
                while name in found:
                    name, n = f"{base}-{n}", n + 1
                found.add(name)
        cache[path] = found
    return cache[path]


def check_file(path, problems):
    where = os.path.relpath(path, ROOT)
    for number, line in lines_outside_code(path):
        line = re.sub(r"`[^`]*`", "", line)
        for target in LINK.findall(line):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):
                continue
            file_part, _, fragment = target.partition("#")
            resolved = os.path.normpath(os.path.join(os.path.dirname(path), file_part)) if file_part else path
            if not os.path.exists(resolved):
                problems.append(f"{where}:{number}: {target}: no such file")
                continue
            if fragment and resolved.endswith(".md") and fragment not in anchors(resolved):
                problems.append(f"{where}:{number}: {target}: no heading #{fragment} in {os.path.relpath(resolved, ROOT)}")


def main():
    problems = []
    pages = sorted(name for name in os.listdir(DOCS) if name.endswith(".md"))
    for name in pages:
        check_file(os.path.join(DOCS, name), problems)
    check_file(os.path.join(ROOT, "README.md"), problems)
    summary = os.path.join(DOCS, "SUMMARY.md")
    listed = set()
    for number, line in lines_outside_code(summary):
        for target in LINK.findall(line):
            listed.add(target.partition("#")[0])
    for name in pages:
        if name != "SUMMARY.md" and name not in listed:
            problems.append(f"docs/{name}: not in docs/SUMMARY.md, so not in the book")
    for problem in problems:
        print(problem)
    if problems:
        sys.exit(1)
    print(f"docs links: {len(pages)} pages and README.md, every link and anchor resolves")


if __name__ == "__main__":
    main()
