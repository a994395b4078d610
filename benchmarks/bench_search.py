"""Search at scale: ``SimCSE.build_index`` + ``search`` against sentence-transformers' ``util.semantic_search`` on
the same embeddings of wiki sentences.

    python benchmarks/bench_search.py                                  # 10,000 and 100,000 sentences
    python benchmarks/bench_search.py --sentences 10000,100000,1000000
    python benchmarks/bench_search.py --encode-limit 100000            # encode every sentence (about 25 min here)

The corpus is encoded once with all-MiniLM-L6-v2 (``SimCSE.encode``, fp32: the peer's embeddings to 1e-7), the
query vectors too (``--queries`` wiki sentences outside the corpus). Encoding 100,000 wiki sentences takes about 25
minutes on 2 CPU cores, so by default only the first ``--encode-limit`` corpus sentences are encoded and the rows
beyond are **synthetic**: a copy of an encoded row plus Gaussian noise (norm ``--noise``), scaled to unit length,
labelled ``synthetic <i>``. Search time does not depend on what the vectors mean; recall@10 of the approximate
index does, a little, so the output says how many rows are real. Embeddings are cached under ``--cache-dir``
(default ``/tmp/simcse_bench_search``) and reused by the next run with the same sentences.

For each corpus size and each method, in its own process (so each peak memory is its own): the index build time;
the latency of single queries (one query vector per call; p50 and p99 over ``--single-queries`` calls) and of
batches of 64 query vectors (p50 and p99 over all ``--queries``); recall@10 against exact search (exact top-10 by
one float64 product in this process); the peak resident memory, and what building and searching added to it.
Methods: the peer (``util.semantic_search``, its defaults, on float32 tensors), simcse_hub before (the numpy search
of commit dca8e8e: one product, then a stable ``argsort`` of every score), simcse_hub exact (torch: one product and
``topk`` per chunk of queries, on unit rows stored once), and, with faiss installed, faiss ``IndexFlatIP`` (exact)
and ``IndexIVFFlat`` (``faiss_fast=True``, approximate: ``num_cells=100``, 10 visited).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as common

METHODS = {
    "peer": "sentence-transformers util.semantic_search",
    "before": "simcse_hub before (numpy, argsort)",
    "exact": "simcse_hub exact (torch topk)",
    "faiss": "simcse_hub faiss IndexFlatIP",
    "faiss-ivf": "simcse_hub faiss IVF (faiss_fast)",
}
BATCH = 64


def percentile(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(values), q))


def peak_rss_of_this_process() -> int:
    """Bytes: the high-water mark of this process's own memory (``VmHWM``; ``ru_maxrss`` would carry over the peak
    of the parent that started it, which Linux keeps across ``exec``)."""
    try:
        with open("/proc/self/status", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return common.peak_rss_bytes()


def worker(args: argparse.Namespace) -> dict:
    """Build one method's index over the corpus vectors, time its searches, return latencies and result ids."""
    import numpy as np
    import psutil
    import torch

    corpus = np.load(args.corpus_file, mmap_mode=None)  # (n, dim) unit rows, float32
    queries = np.load(args.queries_file)  # (q, dim) unit rows, float32
    k = args.top_k
    if args.method == "peer":
        from sentence_transformers import util

        def build():
            return torch.from_numpy(corpus)

        def search(index, vectors):
            hits = util.semantic_search(torch.from_numpy(vectors), index, top_k=k)
            return [[hit["corpus_id"] for hit in row] for row in hits]
    elif args.method == "before":
        def build():
            return np.asarray(corpus, dtype=np.float32).copy()  # what build_index kept: encode's numpy output

        def search(index, vectors):  # simcse_hub/tool.py at dca8e8e, SimCSE.search without faiss
            all_scores = vectors @ index.T  # (q, n)
            ids = np.argsort(-all_scores, axis=1, kind="stable")[:, :k]  # (q, k)
            scores = np.take_along_axis(all_scores, ids, axis=1)  # (q, k)
            return [[i for i, s in zip(row_ids, row_scores) if s >= -1.0]
                    for row_ids, row_scores in zip(ids.tolist(), scores.tolist())]
    else:
        from simcse_hub import SimCSE

        tool = SimCSE(args.model, device="cpu")
        labels = [f"{i}" for i in range(len(corpus))]  # the sentences do not matter to search; ids do
        options = {"use_faiss": args.method != "exact", "faiss_fast": args.method == "faiss-ivf"}

        def build():
            tool.build_index(labels, embeddings=corpus, **options)
            return tool

        def search(index, vectors):
            results = index.search(vectors, threshold=-1.0, top_k=k)
            return [[int(text) for text, _ in row] for row in results]
    rss_before = psutil.Process().memory_info().rss
    start = time.perf_counter()
    index = build()
    build_seconds = time.perf_counter() - start
    for _ in range(3):  # warm-up: first-call allocations
        search(index, queries[:BATCH])
        search(index, queries[:1])
    single = []
    for row in range(args.single_queries):
        vector = queries[row % len(queries)][None, :]  # (1, dim)
        start = time.perf_counter()
        search(index, vector)
        single.append(time.perf_counter() - start)
    batched, ids = [], []
    for start_row in range(0, len(queries), BATCH):
        vectors = queries[start_row:start_row + BATCH]  # (64, dim)
        start = time.perf_counter()
        ids += search(index, vectors)
        batched.append(time.perf_counter() - start)
    peak = peak_rss_of_this_process()
    return {"build_seconds": build_seconds, "single": single, "batched": batched, "ids": ids, "peak_rss": peak,
            "added_rss": max(0, peak - rss_before)}


def load_or_encode(model: str, sentences: list[str], cache_dir: Path, label: str):
    """Unit embeddings of ``sentences`` (``(n, dim)`` float32), from the cache or encoded now; and the seconds
    encoding took (``None`` when cached)."""
    import numpy as np

    key = hashlib.sha256(json.dumps([model, sentences]).encode("utf-8")).hexdigest()[:16]
    path = cache_dir / f"{label}-{len(sentences)}-{key}.npy"
    if path.is_file():
        return np.load(path), None
    from simcse_hub import SimCSE

    tool = SimCSE(model, device="cpu", max_length=128)
    start = time.perf_counter()
    vectors = tool.encode(sentences, batch_size=64, return_numpy=True, show_progress_bar=True)
    seconds = time.perf_counter() - start
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return vectors, seconds


def corpus_of(encoded, size: int, noise: float, seed: int):
    """``size`` unit rows: the encoded ones, then synthetic ones (an encoded row plus noise, renormalised)."""
    import numpy as np

    if size <= len(encoded):
        return np.ascontiguousarray(encoded[:size])
    rng = np.random.default_rng(seed)
    extra = size - len(encoded)
    base = encoded[np.arange(extra) % len(encoded)]
    synthetic = base + rng.standard_normal(base.shape, dtype=np.float32) * (noise / np.sqrt(base.shape[1]))
    synthetic /= np.linalg.norm(synthetic, axis=1, keepdims=True)
    return np.ascontiguousarray(np.concatenate([encoded, synthetic]).astype(np.float32))


def exact_top_k(corpus, queries, k: int):
    """Ground truth: the ``k`` best corpus ids of each query, by a float64 product, in chunks of queries."""
    import numpy as np

    corpus64, out = corpus.astype(np.float64), []
    for start in range(0, len(queries), 256):
        scores = queries[start:start + 256].astype(np.float64) @ corpus64.T  # (chunk, n)
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        out += [set(row) for row in top.tolist()]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = common.add_common_arguments(argparse.ArgumentParser(description=__doc__.split("\n\n")[0]))
    parser.add_argument("--sentences", default="10000,100000",
                        help="corpus sizes, comma-separated; the largest is the corpus (default: 10000,100000)")
    parser.add_argument("--encode-limit", type=int, default=10_000,
                        help="corpus sentences actually encoded; rows beyond are synthetic (default: 10000)")
    parser.add_argument("--queries", type=int, default=1000, help="query sentences, outside the corpus (default: 1000)")
    parser.add_argument("--single-queries", type=int, default=200,
                        help="timed single-query calls per method and size (default: 200)")
    parser.add_argument("--top-k", type=int, default=10, help="results per query (default: 10)")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help=f"comma-separated, of {', '.join(METHODS)} (default: all; faiss ones need faiss)")
    parser.add_argument("--noise", type=float, default=0.5, help="norm of the noise of synthetic rows (default: 0.5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the wiki sample and the noise (default: 0)")
    parser.add_argument("--cache-dir", default=os.path.join(tempfile.gettempdir(), "simcse_bench_search"),
                        help="where embeddings are cached (default: /tmp/simcse_bench_search)")
    parser.add_argument("--worker", choices=list(METHODS), help=argparse.SUPPRESS)
    parser.add_argument("--corpus-file", help=argparse.SUPPRESS)
    parser.add_argument("--queries-file", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        common.set_threads(args.threads)
        args.method = args.worker
        args.model = common.model_path(args.model)
        common.emit(worker(args))
        return 0

    import importlib.util

    import numpy as np

    sizes = sorted({int(item) for item in args.sentences.split(",") if item.strip()})
    methods = [item.strip() for item in args.methods.split(",") if item.strip()]
    if not sizes or min(sizes) < args.top_k or set(methods) - set(METHODS):
        parser.error(f"--sentences: sizes >= --top-k; --methods: of {', '.join(METHODS)}.")
    if importlib.util.find_spec("faiss") is None:
        skipped = [method for method in methods if method.startswith("faiss")]
        methods = [method for method in methods if not method.startswith("faiss")]
        if skipped:
            print(f"faiss is not installed: {', '.join(skipped)} skipped (pip install faiss-cpu)")
    folder = common.data_dir(args.data_dir)
    model = common.model_path(args.model)
    encoded_count = min(args.encode_limit, sizes[-1])
    drawn = common.wiki_sentences(folder, encoded_count + args.queries, args.seed,
                                  pool=max(200_000, encoded_count + args.queries))
    corpus_sentences, query_sentences = drawn[:encoded_count], drawn[encoded_count:]
    print(common.machine_line(args.threads))
    print(f"encoder: {model}\nsettings: corpus sizes {', '.join(f'{size:,}' for size in sizes)}; {encoded_count:,} "
          f"wiki sentences encoded for the corpus, {args.queries:,} other wiki sentences as queries; top-{args.top_k}; "
          f"{args.single_queries} timed single queries and {args.queries:,} queries in batches of {BATCH} per method "
          "and size", flush=True)
    cache = Path(args.cache_dir)
    encoded, seconds = load_or_encode(model, corpus_sentences, cache, "corpus")
    queries, query_seconds = load_or_encode(model, query_sentences, cache, "queries")
    if seconds is None:
        print(f"corpus embeddings: {encoded_count:,} rows from the cache in {cache} (encoded by an earlier run)")
    else:
        print(f"encoding (SimCSE.encode, fp32, batch 64, max length 128): {encoded_count:,} corpus sentences in "
              f"{seconds:.1f} s ({encoded_count / seconds:.1f} sentences/s); {args.queries:,} queries in "
              f"{query_seconds:.1f} s", flush=True)
    if sizes[-1] > encoded_count:
        print(f"NOTE: rows {encoded_count:,} to {sizes[-1]:,} of the corpus are synthetic (an encoded row plus noise "
              f"of norm {args.noise}, renormalised), not encoded sentences: pass --encode-limit {sizes[-1]} to "
              "encode them all.", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_search_") as work_dir:
        work = Path(work_dir)
        np.save(work / "queries.npy", queries)
        for size in sizes:
            corpus = corpus_of(encoded, size, args.noise, args.seed)
            np.save(work / "corpus.npy", corpus)
            truth = exact_top_k(corpus, queries, args.top_k)
            results = {}
            for method in methods:
                worker_args = [method, "--corpus-file", str(work / "corpus.npy"), "--queries-file",
                               str(work / "queries.npy"), "--top-k", str(args.top_k), "--single-queries",
                               str(args.single_queries), "--model", model]
                if args.threads:
                    worker_args += ["--threads", str(args.threads)]
                result = common.run_worker(Path(__file__), worker_args)
                hits = sum(len(truth[row] & set(ids)) for row, ids in enumerate(result["ids"]))
                result["recall"] = hits / (len(truth) * args.top_k)
                results[method] = result
                print(f"  {size:,} {method}: build {result['build_seconds'] * 1000:.1f} ms, single p50 "
                      f"{percentile(result['single'], 50) * 1000:.2f} ms, batch-64 p50 "
                      f"{percentile(result['batched'], 50) * 1000:.2f} ms, recall@{args.top_k} "
                      f"{result['recall']:.4f}, peak RSS {result['peak_rss'] / 2**20:,.0f} MiB "
                      f"(load average {os.getloadavg()[0]:.1f})", flush=True)
            peer = results.get("peer")
            real = f"{min(size, encoded_count):,} real" + (f" + {size - encoded_count:,} synthetic"
                                                           if size > encoded_count else "")
            for method, result in results.items():
                single50 = percentile(result["single"], 50)
                figures = [
                    ("build (ms)", result["build_seconds"] * 1000, peer and peer["build_seconds"] * 1000, 1),
                    ("single query p50 (ms)", single50 * 1000, peer and percentile(peer["single"], 50) * 1000, 2),
                    ("single query p99 (ms)", percentile(result["single"], 99) * 1000,
                     peer and percentile(peer["single"], 99) * 1000, 2),
                    ("batch of 64 p50 (ms)", percentile(result["batched"], 50) * 1000,
                     peer and percentile(peer["batched"], 50) * 1000, 2),
                    ("batch of 64 p99 (ms)", percentile(result["batched"], 99) * 1000,
                     peer and percentile(peer["batched"], 99) * 1000, 2),
                ]
                cells = [f"{size:,} ({real})", METHODS[method]]
                for _, value, peer_value, digits in figures:
                    speed = "" if method == "peer" or not peer_value else f" ({common.ratio(peer_value, value)})"
                    cells.append(common.fmt(value, digits) + speed)
                cells += [f"{result['recall']:.4f}", common.fmt(result["peak_rss"] / 2**20, 0),
                          common.fmt(result["added_rss"] / 2**20, 0)]
                rows.append(cells)
    print()
    print("(x): speed against the peer in the same run, peer time / our time (above 1: ours is faster)")
    print(common.table(rows, ["corpus", "method", "build (ms)", "single query p50 (ms)", "single query p99 (ms)",
                              "batch of 64 p50 (ms)", "batch of 64 p99 (ms)", f"recall@{args.top_k}",
                              "peak RSS (MiB)", "added by build + search (MiB)"]))
    print(common.machine_line(args.threads))
    return 0


if __name__ == "__main__":
    sys.exit(main())
