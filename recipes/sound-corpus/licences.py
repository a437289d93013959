#!/usr/bin/env python3
"""Licence of every clip, from its package's /usr/share/doc/<pkg>/copyright (Debian machine-readable
format: the last ``Files:`` stanza whose glob matches the file wins; a package without one gets its
first ``License:`` line).  Writes OUTDIR/licences.csv and prints hours and licences per package.

    python3 recipes/sound-corpus/licences.py --extract data/.extract --outdir OUTDIR
"""
from __future__ import annotations

import argparse
import csv
import fnmatch
import importlib.util
import os
import re
from collections import Counter, defaultdict

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("build_corpus", os.path.join(HERE, "build_corpus.py"))
bc = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bc)

RENDERED = {"fluid-soundfont-gm": "MIT (FluidR3_GM.sf2, rendered with fluidsynth)",
            "espeak-ng": "GPL-3+ (espeak-ng-data, synthesised)",
            "openttd-opensfx": "CC-BY-SA-3.0 (src/wav/*; per-sound CC-BY-3.0 / CC0 / CC-BY-SA-3.0 originals)",
            "musescore-general-soundfont": "MIT, parts PD / CC0 (MuseScore_General_Full.sf3, rendered with fluidsynth)"}
# packages whose copyright file is not machine-readable (licence read from the text by hand)
TEXT_LICENCES = {"freepats": "GPL-2+ with a composition exception (copyright text)",
                 "openclonk-data": "CC-BY-3.0 (Sound.ocg/authors.txt: sound effects CC-BY-3.0 if not stated "
                                   "otherwise; engine ISC)"}


def stanzas(path):
    out, cur = [], None
    text = open(path, encoding="utf-8", errors="replace").read()
    for para in re.split(r"\n\s*\n", text):
        f = re.search(r"^Files:\s*(.*(?:\n[ \t]+.*)*)", para, re.M)
        lic = re.search(r"^License:\s*(.*)", para, re.M)
        if f and lic:
            out.append((f.group(1).split(), lic.group(1).strip()))
        elif lic and cur is None:
            cur = lic.group(1).strip()
    return out, cur


def licence_for(pkg, relpath, cache={}):
    if pkg in RENDERED:
        return RENDERED[pkg]
    if pkg in TEXT_LICENCES:
        return TEXT_LICENCES[pkg]
    if pkg not in cache:
        p = os.path.join(ARGS.extract, pkg, "usr/share/doc", pkg, "copyright")
        cache[pkg] = stanzas(p) if os.path.exists(p) else ([], "unknown")
    st, first = cache[pkg]
    best = None
    for globs, lic in st:
        for g in globs:
            if fnmatch.fnmatch(relpath, g) or fnmatch.fnmatch(relpath, "*/" + g) or g == "*":
                best = lic
    return best or first or "unknown"


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--extract", required=True)
    ap.add_argument("--outdir", required=True)
    ARGS = ap.parse_args()
    man = {r["path"]: r for r in csv.DictReader(open(os.path.join(ARGS.outdir, "manifest.csv")))}
    rows = []
    hours = defaultdict(float)
    lics = defaultdict(Counter)
    for r in csv.DictReader(open(os.path.join(ARGS.outdir, "sources.csv"))):
        pkg, src = r["package"], r["source"].split("#seg")[0]
        root = bc.PKG_ROOTS.get(pkg, "")
        rel = src
        if "_zip/" in root or root == "_zip":
            rel = re.sub(r"^[^/]*/", "", os.path.join(root.replace("_zip", "").strip("/"), src).lstrip("/")) \
                if root == "_zip" else os.path.join(root.split("/", 2)[2] if root.count("/") >= 2 else "", src)
        elif root:
            rel = os.path.join(root, src)
        lic = licence_for(pkg, rel)
        rows.append(dict(r, licence=lic))
        hours[pkg] += float(man[r["path"]]["duration"]) / 3600
        lics[pkg][lic] += 1
    with open(os.path.join(ARGS.outdir, "licences.csv"), "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["path", "package", "source", "licence"])
        w.writeheader()
        w.writerows(rows)
    print("| package | clips | hours | licences of the clips used (clips) |")
    print("|---|---:|---:|---|")
    for pkg in sorted(hours, key=lambda p: -hours[p]):
        ls = "; ".join(f"{k} ({v})" for k, v in lics[pkg].most_common())
        print(f"| {pkg} | {sum(lics[pkg].values())} | {hours[pkg]:.2f} | {ls} |")


if __name__ == "__main__":
    main()
