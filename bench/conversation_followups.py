"""Follow-up questions on CISI: retrieval nDCG@10 of the standalone form, of the follow-up
through the conversation, and of the follow-up alone, on the shipped retrieval path
(``PipelineSearchSystem``: build_services, chunk_elements, records_for, the Retriever).

    .venv/bin/python -m bench.conversation_followups                 # carry-forward rewrite
    .venv/bin/python -m bench.conversation_followups --llm           # + the packaged SmolLM2
    .venv/bin/python -m bench.conversation_followups --llm --json-out /tmp/followups.json
    .venv/bin/python -m bench.conversation_followups --collection cacm   # the held-out set

The corpus is indexed once; each rewrite variant is then measured on the same index. With
``--llm`` the packaged SmolLM2-135M GGUF is started behind llama-cpp-python's server (as
``perimeter up`` does) and the per-turn rewrite time is that server's.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import CISI_DIR

CACM_DIR = Path(os.environ.get("PERIMETER_CACM_DIR", str(CISI_DIR.parent / "cacm")))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
# The CISI set is the development set; the CACM set was written afterwards, from CACM's queries,
# before any rewrite was measured on it, to check that a change generalises (BENCHMARKS.md).
SETS = {"cisi": DATA / "cisi_followups.jsonl", "cacm": DATA / "cacm_followups.jsonl"}


def _collection(name: str) -> tuple[list[Any], dict[str, dict[str, int]]]:
    """(documents, judgments) of CISI or CACM, from their SMART files."""
    from perimeter.eval.beir import CorpusDoc
    from perimeter.eval.smart import parse_rel, parse_smart

    folder, docs_file, rel_file = (
        (CISI_DIR, "CISI.ALL", "CISI.REL")
        if name == "cisi"
        else (CACM_DIR, "cacm.all", "qrels.text")
    )
    records = parse_smart((folder / docs_file).read_text(encoding="latin-1"))
    docs = [CorpusDoc(r.id, r.get("T"), r.get("W")) for r in records]
    qrels = parse_rel((folder / rel_file).read_text(encoding="latin-1"))
    known = {d.id for d in docs}
    return docs, {q: {d: v for d, v in rels.items() if d in known} for q, rels in qrels.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--collection", default="cisi", choices=sorted(SETS))
    ap.add_argument(
        "--set", type=Path, default=None, help="follow-up pairs (JSONL); default: the collection's"
    )
    ap.add_argument("--mode", default="hybrid", choices=["dense", "sparse", "hybrid"])
    ap.add_argument("--llm", action="store_true", help="also measure the LLM rewrite (SmolLM2)")
    ap.add_argument("--llm-threads", type=int, default=2)
    ap.add_argument(
        "--llm-url",
        default=None,
        help="an OpenAI-compatible server already running (e.g. vLLM, or llama_cpp.server "
        "started by hand) instead of starting the packaged SmolLM2",
    )
    ap.add_argument("--llm-model", default="smollm2-135m-instruct")
    ap.add_argument(
        "--history-weights",
        type=lambda text: [float(w) for w in text.split(",") if w.strip()],
        default=[0.0],
        help="further conversation.history_weight values measured on the same index, "
        "comma-separated (default 0: the rewritten query alone)",
    )
    ap.add_argument(
        "--own-shares",
        type=lambda text: [float(w) for w in text.split(",") if w.strip()],
        default=[],
        help="further conversation.own_terms_share values measured (split sides, the shipped "
        "history_weight), comma-separated",
    )
    ap.add_argument("--json-out", type=Path, default=None)
    args = ap.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    logging.basicConfig(level=logging.WARNING)

    from perimeter.eval.followups import load_followups, run_followup_eval
    from perimeter.eval.pipeline_system import PipelineSearchSystem
    from perimeter.retrieval.conversation import ConversationRewriter
    from perimeter.settings import Settings

    set_path = args.set if args.set is not None else SETS[args.collection]
    pairs = load_followups(set_path)
    docs, qrels = _collection(args.collection)

    results: dict[str, Any] = {
        "collection": args.collection,
        "set": str(set_path),
        "documents": len(docs),
        "runs": {},
    }
    settings = Settings()
    with PipelineSearchSystem(settings) as system:
        t0 = time.perf_counter()
        system.index(docs)
        index_s = time.perf_counter() - t0
        print(
            f"indexed {len(docs)} documents ({system.chunk_count} chunks) in {index_s:.1f}s",
            file=sys.stderr,
        )
        results["index_seconds"] = round(index_s, 1)
        # The shipped weight of the earlier turns' own queries first, then the others asked for
        # (0: the rewritten query alone, as before conversation.history_weight).
        conv = settings.conversation
        weights = [conv.history_weight]
        weights += [w for w in args.history_weights if w not in weights]
        shares = [conv.own_terms_share]
        shares += [x for x in args.own_shares if x not in shares]
        # The shipped rewrite first; then each history weight with and without split sides
        # (conversation.split_sides), then the further own-term shares.
        variants: list[tuple[str, ConversationRewriter]] = []
        for w in weights:
            for split in (conv.split_sides, not conv.split_sides):
                label = f"split sides, own share {conv.own_terms_share}" if split else "one string"
                variants.append(
                    (
                        f"carry, {label}, history_weight {w}",
                        ConversationRewriter(
                            None,
                            use_llm=False,
                            history_weight=w,
                            split_sides=split,
                            own_terms_share=conv.own_terms_share,
                        ),
                    )
                )
        for x in shares[1:]:
            variants.append(
                (
                    f"carry, split sides, own share {x}, history_weight {conv.history_weight}",
                    ConversationRewriter(
                        None,
                        use_llm=False,
                        history_weight=conv.history_weight,
                        split_sides=True,
                        own_terms_share=x,
                    ),
                )
            )
        server = None
        if args.llm or args.llm_url:
            from perimeter.backends.llama_server import LlamaServer
            from perimeter.backends.model_paths import default_gguf_path
            from perimeter.backends.openai_llm import OpenAICompatibleLLM

            base_url = args.llm_url
            if base_url is None:
                log = Path(tempfile.mkdtemp(prefix="followups-llm-")) / "llama.log"
                server = LlamaServer(
                    default_gguf_path(),
                    port=_free_port(),
                    model_alias=args.llm_model,
                    n_threads=args.llm_threads,
                    log_path=log,
                )
                server.start()
                base_url = server.base_url
            llm = OpenAICompatibleLLM(
                base_url=base_url,
                model=args.llm_model,
                api_key="not-needed",
                timeout_s=60,
                max_retries=0,
                max_tokens=64,
                temperature=0.0,
            )
            variants.append(
                (
                    "llm",
                    ConversationRewriter(
                        llm,
                        use_llm=True,
                        history_weight=conv.history_weight,
                        split_sides=conv.split_sides,
                        own_terms_share=conv.own_terms_share,
                    ),
                )
            )
        try:
            for name, rewriter in variants:
                report = run_followup_eval(system, pairs, qrels, rewriter, mode=args.mode)
                print(f"## {name}")
                print(report.to_table())
                print()
                results["runs"][name] = report.to_dict()
        finally:
            if server is not None:
                server.stop()
    if args.json_out is not None:
        args.json_out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json_out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
