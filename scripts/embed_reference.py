#!/usr/bin/env python3
"""Reference token ids and embeddings from the Python implementations, for nexusd's tests.

Token ids come from Hugging Face `tokenizers` (no special tokens, no truncation) and
vectors from `model2vec` (StaticModel.encode), both loading the same model directory
nexusd loads. The committed fixture daemon/src/embed/testdata/reference.json holds
only texts written for this purpose (LoCoMo is licensed for evaluation only and is
never committed); `--locomo FILE` adds dialog turns for a one-off wider check.

Usage:
  pip install model2vec tokenizers
  python3 scripts/embed_reference.py daemon/models/minilm-static-256 \
      daemon/src/embed/testdata/reference.json --vectors 32
  python3 scripts/embed_reference.py ../shared/data/minilm-static-256 /tmp/ref.json \
      --locomo ../shared/data/locomo-dev.turns.jsonl --vectors 1000
then, for the wider check:
  NEXUS_EMBED_REFERENCE=/tmp/ref.json NEXUS_EMBED_MODEL=../shared/data/minilm-static-256 \
      cargo test -p nexus-daemon embed::tests::wide_reference_check -- --ignored --nocapture
"""

import argparse
import json
from pathlib import Path

from model2vec import StaticModel
from tokenizers import Tokenizer

LONG_WORD = "pneumonoultramicroscopicsilicovolcanoconiosis" * 3  # 135 chars: [UNK]
LONG_TEXT = " ".join(f"Sentence {i}: we talked about hiking, painting and the new puppy again." for i in range(60))

HANDCRAFTED = [
    "",
    " ",
    "\t\n\r  ",
    "Hello",
    "Caroline went to the LGBTQ support group yesterday and said it was powerful.",
    "Melanie: I painted a lake sunrise last year, it's special to me!",
    "What did Caroline research? When is she going to the conference?",
    "Héllo wörld, ça va? Ünïcödé àccénts are strïppéd.",
    "İstanbul, ΣΊΣΥΦΟΣ and Straße: ligatures like ﬁne ﬂight.",
    "野口里佳 went to 東京 in 2023; 我喜欢猫。",
    "한국어 문장입니다. 日本語のテキストです。",
    "Emoji: 😀🎉👍🏽 and newer ones 🥲🫠 between words😀end",
    "Control\u0000chars\u0007here\u001b[0m and zero\u200bwidth\ufeffjoiners\u200d.",
    "Private use \ue000\uf8ff and replacement \ufffd chars.",
    LONG_WORD,
    "short " + LONG_WORD + " word",
    "Punctuation!!! ...and—dashes–and “quotes” «guillemets» ¿question? ¡bang! (paren) [bracket] {brace}",
    "e-mail me at jane.doe@example.com or see https://example.org/path?q=1&x=2#frag",
    "Numbers: 3.14159, 1,000,000, 42nd, 7:30pm, 2023-05-08, $19.99, 100%",
    "Tabs\tand\nnewlines\r\nand   multiple    spaces",
    "Арабский: مرحبا بالعالم. Hindi: नमस्ते दुनिया। Thai: สวัสดีชาวโลก",
    "Combining: e\u0301 a\u0308 n\u0303 and precomposed é ä ñ",
    "Fullwidth ＡＢＣ １２３ and math ∑∫√∞ ≤ ≥ ≠",
    "[PAD] special [UNK] tokens [CLS] inside text [SEP] [MASK]",
    "UPPER CASE SHOUTING ABOUT THE WEEKEND TRIP TO THE MOUNTAINS",
    "don't won't can't I'm you're it's",
    "a",
    "##ing ## # ###",
    "unaffable unbelievably transformers tokenization",
    "Я люблю читать книги по вечерам.",
    "Ελληνικά κείμενα με τόνους: άέήίόύώ",
    LONG_TEXT,
    "Wait... what?! No way!!!",
    "\u00a0non-breaking\u00a0spaces\u2003em\u3000ideographic",
    "x" * 101,
    "x" * 100,
    "Ǆ ǅ ǆ ﬀ ẞ ß Ω K Å",
    "The quick brown fox jumps over the lazy dog.",
    "My kids loved the camping trip; we roasted marshmallows and told stories.",
    "I adopted a rescue dog named Oscar last month.",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--vectors", type=int, default=32, help="store vectors for the first N texts")
    parser.add_argument("--locomo", type=Path, help="turns.jsonl: add every 17th dialog turn")
    args = parser.parse_args()

    texts = list(HANDCRAFTED)
    if args.locomo:
        turns = [json.loads(line)["text"] for line in args.locomo.read_text().splitlines()]
        texts += turns[::17]

    tokenizer = Tokenizer.from_file(str(args.model_dir / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    model = StaticModel.from_pretrained(str(args.model_dir))
    vectors = model.encode(texts[: args.vectors]).astype("float32")

    entries = []
    for i, text in enumerate(texts):
        entry = {"text": text, "ids": tokenizer.encode(text, add_special_tokens=False).ids}
        if i < len(vectors):
            entry["vector"] = [round(float(x), 6) for x in vectors[i]]
        entries.append(entry)
    out = {"model": args.model_dir.name, "texts": entries}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, ensure_ascii=False, separators=(",", ":")) + "\n")
    print(f"{len(entries)} texts, {len(vectors)} vectors -> {args.out}")


if __name__ == "__main__":
    main()
