#!/usr/bin/python3
"""Dev cross-check (not run by the test suite): expected metric values for test/eval/metrics.test.ts.

BLEU-1..4 come from NLTK 3.8 through the shared tool /work/shared/tools/reference_bleu.py (corpus_bleu, no
smoothing). CIDEr-D and ROUGE-L come from the small independent re-implementation below, written from the
published coco-caption definitions (pycocoevalcap Cider and Rouge); pycocoevalcap itself is not installed here.

Usage:
  make_expected.py flickr8k N TOKENIZE   first N images of Flickr8k.token.txt (file order); candidate =
                                         caption #0, references = the image's other captions
  make_expected.py coco N TOKENIZE       first N images of coco/captions_val2017.json (`images` order, 0 = all);
                                         candidate = the image's first annotation, references = the others
  make_expected.py FILE.json - TOKENIZE  a pairs file: {"pairs": [{"id", "candidate", "references": [...]}]}
TOKENIZE: none (split on whitespace) or basic (NFC, lowercase, every Unicode P*/S* character deleted, split),
as the classic recipe's str.translate deletes punctuation ("t-shirt" -> "tshirt").
Prints one JSON object: images, Bleu_1..4, CIDEr, ROUGE_L.
"""
import json
import math
import os
import subprocess
import sys
import tempfile
import unicodedata
from collections import Counter

DATA = os.environ.get("CAPTIONER_SHARED_DATA", "/work/shared/data")


def tok(s, mode):
    if mode == "none":
        return s.split()
    s = unicodedata.normalize("NFC", s).lower()
    s = "".join("" if unicodedata.category(c)[0] in "PS" else c for c in s)
    return s.split()


def load(kind, n):
    pairs = []
    if kind == "flickr8k":
        groups = {}
        for line in open(os.path.join(DATA, "flickr8k/Flickr8k.token.txt"), encoding="utf-8"):
            line = line.rstrip("\r\n")
            if not line:
                continue
            key, cap = line.split("\t", 1)
            groups.setdefault(key.rsplit("#", 1)[0], []).append(cap)
        for k, caps in list(groups.items())[:n]:
            pairs.append({"id": k, "candidate": caps[0], "references": caps[1:]})
    elif kind == "coco":
        d = json.load(open(os.path.join(DATA, "coco/captions_val2017.json"), encoding="utf-8"))
        caps = {}
        for a in d["annotations"]:
            caps.setdefault(a["image_id"], []).append(a["caption"])
        imgs = d["images"] if n == 0 else d["images"][:n]
        for im in imgs:
            c = caps[im["id"]]
            pairs.append({"id": str(im["id"]), "candidate": c[0], "references": c[1:]})
    else:
        pairs = json.load(open(kind, encoding="utf-8"))["pairs"]
    return pairs


def ngrams(words, n):
    c = Counter()
    for k in range(1, n + 1):
        for i in range(len(words) - k + 1):
            c[tuple(words[i : i + k])] += 1
    return c


def cider_d(hyps, refs, n=4, sigma=6.0):
    hc = [ngrams(h, n) for h in hyps]
    rc = [[ngrams(r, n) for r in rs] for rs in refs]
    df = Counter()
    for rs in rc:
        for g in set(g for r in rs for g in r):
            df[g] += 1
    log_n = math.log(len(hyps))

    def vec(c):
        v = [dict() for _ in range(n)]
        for g, tf in c.items():
            v[len(g) - 1][g] = tf * (log_n - math.log(max(1.0, df.get(g, 0))))
        norms = [math.sqrt(sum(x * x for x in d.values())) for d in v]
        bigrams = sum(tf for g, tf in c.items() if len(g) == 2)
        return v, norms, bigrams

    scores = []
    for h, rs in zip(hc, rc):
        hv, hn, hl = vec(h)
        total = 0.0
        for r in rs:
            rv, rn, rl = vec(r)
            pen = math.exp(-((hl - rl) ** 2) / (2 * sigma * sigma))
            for k in range(n):
                dot = sum(min(w, rv[k].get(g, 0.0)) * rv[k].get(g, 0.0) for g, w in hv[k].items())
                if hn[k] > 0 and rn[k] > 0:
                    dot /= hn[k] * rn[k]
                total += dot * pen
        scores.append(10.0 * total / n / len(rs))
    return sum(scores) / len(scores)


def lcs(a, b):
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(hyps, refs, beta=1.2):
    out = []
    for h, rs in zip(hyps, refs):
        p = max((lcs(r, h) / len(h)) if h else 0.0 for r in rs)
        r_ = max((lcs(r, h) / len(r)) if r else 0.0 for r in rs)
        out.append(0.0 if p == 0 or r_ == 0 else (1 + beta**2) * p * r_ / (r_ + beta**2 * p))
    return sum(out) / len(out)


def main():
    kind, n, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    pairs = load(kind, 0 if n == "-" else int(n))
    hyps = [tok(p["candidate"], mode) for p in pairs]
    refs = [[tok(r, mode) for r in p["references"]] for p in pairs]
    with tempfile.TemporaryDirectory() as d:
        cf, rf = os.path.join(d, "c.json"), os.path.join(d, "r.json")
        json.dump([{"image_id": p["id"], "caption": " ".join(h)} for p, h in zip(pairs, hyps)], open(cf, "w"))
        anns = [{"image_id": p["id"], "caption": " ".join(r)} for p, rs in zip(pairs, refs) for r in rs]
        json.dump({"annotations": anns}, open(rf, "w"))
        bleu = json.loads(subprocess.run(["/usr/bin/python3", "/work/shared/tools/reference_bleu.py", cf, rf], check=True, capture_output=True, text=True).stdout)
    bleu.update({"CIDEr": cider_d(hyps, refs), "ROUGE_L": rouge_l(hyps, refs)})
    print(json.dumps(bleu))


main()
