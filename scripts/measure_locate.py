"""Measure `locate` against an independent extractor (poppler's `pdftotext -bbox-layout`) on real PDFs:
how often a phrase pdftotext prints is found, the box IoU against pdftotext's word boxes, and how many
phrases with one digit changed are matched anyway (must be 0); with `--ocr`, OCR word recall instead: each
page rendered at `--dpi` (150) and OCR'd, against PyMuPDF's words of the same page. Usage:
    python scripts/measure_locate.py DIR_OR_PDFS... [--pages 3] [--phrases 20]
    python scripts/measure_locate.py DIR_OR_PDFS... --ocr [--dpi 150] [--ocr-pages 15]"""

from __future__ import annotations

import argparse
import html
import random
import re
import subprocess
import sys
from pathlib import Path

from docread.text.evidence import locate_document

WORD = re.compile(r'<word xMin="([\d.]+)" yMin="([\d.]+)" xMax="([\d.]+)" yMax="([\d.]+)">(.*?)</word>')


def pdftotext_lines(path: Path, page: int) -> list[list[tuple[str, tuple]]]:
    out = subprocess.run(
        ["pdftotext", "-q", "-bbox-layout", "-f", str(page), "-l", str(page), str(path), "-"],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    lines = []
    for chunk in out.split("<line")[1:]:
        words = [(html.unescape(w[4]), tuple(float(v) for v in w[:4])) for w in WORD.findall(chunk)]
        if words:
            lines.append(words)
    return lines


def page_count(path: Path) -> int:
    info = subprocess.run(["pdfinfo", str(path)], capture_output=True, text=True, timeout=60).stdout
    found = re.search(r"Pages:\s+(\d+)", info)
    return int(found[1]) if found else 0


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def union(boxes):
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))


def phrases(lines, count: int, rng: random.Random) -> list[tuple[str, tuple]]:
    """Up to `count` phrases of 1-4 consecutive words of one line, with their union box."""
    candidates = []
    for words in lines:
        for i in range(len(words)):
            for n in range(1, 5):
                if i + n <= len(words):
                    text = " ".join(w for w, _ in words[i : i + n])
                    if sum(c.isalnum() for c in text) >= 3:
                        candidates.append((text, union([b for _, b in words[i : i + n]])))
    rng.shuffle(candidates)
    return candidates[:count]


def mutate(text: str) -> str | None:
    digits = [i for i, c in enumerate(text) if c.isdigit() and c.isascii()]
    if not digits:
        return None
    i = digits[len(digits) // 2]
    return text[:i] + str((int(text[i]) + 1) % 10) + text[i + 1 :]


def measure(paths: list[Path], pages: int, per_page: int) -> dict:
    rng = random.Random(0)
    stats = {"docs": 0, "pages": 0, "phrases": 0, "found": 0, "iou50": 0, "mutated": 0, "wrong_digit": 0}
    by_kind: dict[str, int] = {}
    misses = []
    for path in paths:
        n = page_count(path)
        if not n:
            continue
        used = False
        for page in range(1, min(n, pages) + 1):
            lines = pdftotext_lines(path, page)
            picked = phrases(lines, per_page, rng)
            if not picked:
                continue
            page_text = "".join(w for line in lines for w, _ in line)
            mutated = {m: t for t, _ in picked if (m := mutate(t)) and "".join(m.split()) not in page_text}
            try:
                (located,) = list(locate_document(str(path), [t for t, _ in picked] + list(mutated), pages=str(page)))
            except Exception as e:  # an unreadable file is not a measurement
                print(f"skip {path.name} page {page}: {e}", file=sys.stderr)
                continue
            if located.error is not None or located.source != "layer":
                continue
            used = True
            stats["pages"] += 1
            for text, box in picked:
                hits = located.found.get(" ".join(text.split()), [])
                stats["phrases"] += 1
                if hits:
                    stats["found"] += 1
                    by_kind[hits[0]["match"]] = by_kind.get(hits[0]["match"], 0) + 1
                    stats["iou50"] += max(iou(h["bbox"], box) for h in hits) >= 0.5
                else:
                    misses.append(f"{path.name} p{page}: {text!r}")
            for query in mutated:
                stats["mutated"] += 1
                digits = re.sub(r"\D", "", query)  # a hit with other digits than the query's is wrong
                hits = located.found.get(" ".join(query.split()), [])
                wrong = [h for h in hits if re.sub(r"\D", "", h["text"]) != digits]
                stats["wrong_digit"] += bool(wrong)
                if wrong:
                    misses.append(f"WRONG DIGIT {path.name} p{page}: {query!r} -> {wrong[0]['text']!r}")
        stats["docs"] += used
    stats["kinds"] = by_kind
    stats["misses"] = misses
    return stats


def _norm(word: str) -> str:
    return word.strip(".,;:!?()[]{}\"'“”‘’").casefold()


def ocr_recall(paths: list[Path], dpi: float, count: int, min_words: int = 30) -> list[dict]:
    """OCR word recall on the first page of each PDF with at least `min_words` text-layer words (up to
    `count` pages): the share of PyMuPDF's words (outer punctuation and case aside) that OCR also reads,
    each word counted as often as it occurs; `glued` is the same with all spaces ignored (characters)."""
    from collections import Counter

    from docread.intake import open_document
    from docread.text.pagetext import TextMode, page_text

    rows = []
    for path in paths:
        if len(rows) >= count:
            break
        try:
            with open_document(str(path), pages="1", dpi=dpi) as document:
                page = document.pages[0]
                truth = page_text(document, page, TextMode.layer)
                words = [w for w in (_norm(w.text) for w in truth.words) if w]
                if len(words) < min_words:
                    continue
                ocr = page_text(document, page, TextMode.ocr)
        except Exception as e:  # an unreadable file is not a measurement
            print(f"skip {path.name}: {e}", file=sys.stderr)
            continue
        got = Counter(w for w in (_norm(w.text) for w in ocr.words) if w)
        hit = sum(min(n, got[w]) for w, n in Counter(words).items())
        ocr_chars = Counter("".join(ocr.text.split()).casefold())
        true_chars = Counter("".join(words))
        glued = sum(min(n, ocr_chars[c]) for c, n in true_chars.items()) / max(1, sum(true_chars.values()))
        rows.append({"file": path.name, "words": len(words), "recall": hit / len(words), "chars": glued})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path)
    parser.add_argument("--pages", type=int, default=3, help="first pages of each PDF measured")
    parser.add_argument("--phrases", type=int, default=20, help="phrases sampled per page")
    parser.add_argument("--ocr", action="store_true", help="measure OCR word recall instead")
    parser.add_argument("--dpi", type=float, default=150, help="rendering dpi for --ocr")
    parser.add_argument("--ocr-pages", type=int, default=15, help="pages measured by --ocr")
    args = parser.parse_args()
    pdfs = sorted(p for a in args.paths for p in ([a] if a.is_file() else a.rglob("*.pdf")))
    if args.ocr:
        import statistics

        rows = ocr_recall(pdfs, args.dpi, args.ocr_pages)
        for r in rows:
            print(f"{r['file']:40} words {r['words']:5}  recall {r['recall']:.3f}  characters {r['chars']:.3f}")
        if rows:
            recalls = [r["recall"] for r in rows]
            print(
                f"pages: {len(rows)}, OCR word recall at {args.dpi:g} dpi: median {statistics.median(recalls):.3f}, "
                f"mean {statistics.mean(recalls):.3f}, min {min(recalls):.3f}"
            )
        return
    s = measure(pdfs, args.pages, args.phrases)
    print(f"PDFs with a text layer: {s['docs']}, pages: {s['pages']}, phrases: {s['phrases']}")
    print(f"found: {s['found']}/{s['phrases']} = {s['found'] / max(1, s['phrases']):.1%} (kinds {s['kinds']})")
    print(f"IoU >= 0.5: {s['iou50']}/{s['phrases']} = {s['iou50'] / max(1, s['phrases']):.1%}")
    print(f"wrong-digit matches: {s['wrong_digit']} of {s['mutated']} phrases with one digit changed")
    for line in s["misses"][:40]:
        print("  miss:", line)


if __name__ == "__main__":
    main()
