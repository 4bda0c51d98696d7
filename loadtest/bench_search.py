"""Embedded vector index libraries for `POST /v1/search`, measured against exact numpy search.

    /work/bench-venv/bin/python loadtest/bench_search.py --n 100000 --dim 512 --queries 1000 --k 10 \\
        --out loadtest/results/search.json
    python loadtest/bench_search.py --markdown loadtest/results/search.json   # prints the tables

Standalone: needs numpy and psutil, plus whichever of `usearch`, `faiss-cpu`, `lancedb` are installed
(a candidate whose library is missing is recorded as skipped). Run it from a venv of its own so that
the project's venv stays clean.

Data: synthetic clip embeddings, not uniform noise: a mixture of `--clusters` Gaussian clusters with
unequal sizes (log-normal weights) and unequal spreads, with a decaying spectrum in a random rotation
and a component shared by all clusters (so that unrelated clips still have cosine > 0, as CLAP's do),
L2-normalised. Queries are fresh draws from the same mixture, never copies of indexed vectors. Fixed
seed. The truth is exact inner-product top-k (numpy float32 matmul + argpartition), which is also
the baseline every speed is divided by, measured in the same run.

Each candidate runs in a fresh subprocess (so that its RSS growth is its own): build (timed, RSS
growth from psutil and the peak from getrusage), recall@k and queries/s one query at a time
(`--single-budget-s` per setting) and batched (all queries in one call, `--threads` threads) for
each search setting, the saved file's bytes, load time (and a memory-mapped open where the library
has one), then an incremental add of `--add-fraction` more vectors to the loaded index (time, and
recall against the exact top-k of the grown set). Per-million figures are linear extrapolations
from `--n` and say so; HNSW builds grow faster than linearly, which a second run at a larger `--n`
shows. Every worker records the CPU that other processes took meanwhile (from /proc/stat), since
the machine may be shared.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from functools import partial
from importlib import metadata
from pathlib import Path

import numpy as np
import psutil

# name -> (family, build parameters, search settings swept). The first setting of each sweep is the
# cheapest; the report picks the cheapest setting that reaches recall >= RECALL_BAR.
CANDIDATES: dict[str, tuple[str, dict, list]] = {
    "usearch-f32-M16": ("usearch", {"dtype": "f32", "connectivity": 16, "expansion_add": 128}, [16, 32, 64, 128]),
    "usearch-f16-M16": ("usearch", {"dtype": "f16", "connectivity": 16, "expansion_add": 128}, [16, 32, 64, 128]),
    "usearch-f16-M32": ("usearch", {"dtype": "f16", "connectivity": 32, "expansion_add": 128}, [16, 32, 64, 128]),
    "usearch-bf16-M16": ("usearch", {"dtype": "bf16", "connectivity": 16, "expansion_add": 128}, [16, 32, 64, 128]),
    "usearch-i8-M16": ("usearch", {"dtype": "i8", "connectivity": 16, "expansion_add": 128}, [16, 32, 64, 128]),
    "faiss-hnsw-M16": ("faiss_hnsw", {"M": 16, "efConstruction": 40}, [16, 32, 64, 128]),
    "faiss-hnsw-M32": ("faiss_hnsw", {"M": 32, "efConstruction": 40}, [16, 32, 64, 128]),
    "faiss-ivfflat-1024": ("faiss_ivf", {"nlist": 1024, "pq_m": 0}, [4, 8, 16, 32, 64]),
    "faiss-ivfpq-1024-m64": ("faiss_ivf", {"nlist": 1024, "pq_m": 64}, [4, 8, 16, 32, 64]),
    "lancedb-ivfpq": ("lancedb", {"index": "IVF_PQ"}, [[20, 0], [20, 10], [20, 20], [20, 40]]),
}
DEFAULT_CONFIGS = ",".join(CANDIDATES)
RECALL_BAR = 0.95
PACKAGES = ["numpy", "psutil", "usearch", "numkong", "faiss-cpu", "lancedb", "pyarrow"]


# --- data -----------------------------------------------------------------------------------------


class Mixture:
    """A mixture of Gaussian clusters that looks like a catalog's embeddings (see the module docstring)."""

    def __init__(self, dim: int, clusters: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        rotation = np.linalg.qr(rng.standard_normal((dim, dim)))[0]
        self.spectrum = (1.0 + np.arange(dim)) ** -0.35  # amplitude per principal direction
        self.spectrum /= np.linalg.norm(self.spectrum)  # a noise draw has norm ~1 before its spread
        self.rotation = rotation
        shared = rng.standard_normal(dim)
        centres = (rng.standard_normal((clusters, dim)) * self.spectrum) @ rotation
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
        centres += 0.6 * shared / np.linalg.norm(shared)
        self.centres = centres / np.linalg.norm(centres, axis=1, keepdims=True)
        weights = rng.lognormal(0.0, 1.0, clusters)
        self.weights = weights / weights.sum()
        self.spread = rng.uniform(0.35, 1.1, clusters)  # noise norm / centre norm: tight to diffuse

    def draw(self, n: int, seed: int, chunk: int = 50_000) -> np.ndarray:
        rng = np.random.default_rng(seed)
        out = np.empty((n, self.centres.shape[1]), dtype=np.float32)
        for start in range(0, n, chunk):
            m = min(chunk, n - start)
            c = rng.choice(len(self.weights), size=m, p=self.weights)
            noise = (rng.standard_normal((m, out.shape[1])) * self.spectrum) @ self.rotation
            x = self.centres[c] + noise * self.spread[c, None]
            out[start : start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
        return out


def exact_topk(base: np.ndarray, queries: np.ndarray, k: int, chunk: int = 250) -> np.ndarray:
    """Exact inner-product top-k ids, best first: float32 matmul + argpartition, queries in chunks."""
    out = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), chunk):
        scores = queries[start : start + chunk] @ base.T
        part = np.argpartition(-scores, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1)
        out[start : start + chunk] = np.take_along_axis(part, order, axis=1)
    return out


def exact_one(base: np.ndarray, query: np.ndarray, k: int) -> np.ndarray:
    scores = base @ query
    part = np.argpartition(-scores, k)[:k]
    return part[np.argsort(-scores[part])]


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    hits = sum(len(np.intersect1d(f[:k], t)) for f, t in zip(found, truth, strict=True))
    return hits / truth.size


def data_stats(base: np.ndarray, queries: np.ndarray, truth: np.ndarray) -> dict:
    """What the synthetic data looks like: cosines to neighbours and to random rows, spectrum spread."""
    rng = np.random.default_rng(1)
    sample = base[rng.choice(len(base), size=min(20_000, len(base)), replace=False)]
    eig = np.clip(np.linalg.eigvalsh(np.cov(sample.T.astype(np.float64))), 0, None)
    q = queries[:200]
    rows = np.arange(len(q))[:, None]
    top = (q[:, None, :] * base[truth[:200]]).sum(-1)
    random_cos = q @ sample[:2000].T
    return {
        "query_top1_cosine_mean": round(float(top[rows[:, 0], 0].mean()), 4),
        "query_top10_cosine_mean": round(float(top[:, -1].mean()), 4),
        "query_to_random_row_cosine_mean": round(float(random_cos.mean()), 4),
        "query_to_random_row_cosine_p99": round(float(np.quantile(random_cos, 0.99)), 4),
        "participation_ratio_dims": round(float(eig.sum() ** 2 / (eig**2).sum()), 1),
    }


# --- measuring ------------------------------------------------------------------------------------


def rss() -> int:
    return psutil.Process().memory_info().rss


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def busy_jiffies() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat."""
    fields = [float(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / tick, sum(fields[:8]) / tick


def single_qps(search_one, queries: np.ndarray, budget_s: float, minimum: int = 20) -> tuple[float, float]:
    """Queries/s one query at a time (and the p50 latency in ms), for budget_s or all the queries."""
    search_one(queries[0])
    latencies = []
    began = time.perf_counter()
    for q in queries:
        t = time.perf_counter()
        search_one(q)
        latencies.append(time.perf_counter() - t)
        if len(latencies) >= minimum and time.perf_counter() - began > budget_s:
            break
    return len(latencies) / (time.perf_counter() - began), 1000 * float(np.median(latencies))


def dir_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# --- candidates -----------------------------------------------------------------------------------


class UsearchIndex:
    def __init__(self, dim: int, params: dict, threads: int) -> None:
        from usearch.index import Index

        self.Index, self.params, self.threads, self.dim = Index, params, threads, dim
        self.index = None

    def build(self, base: np.ndarray) -> dict:
        p = self.params
        self.index = self.Index(
            ndim=self.dim,
            metric="ip",
            dtype=p["dtype"],
            connectivity=p["connectivity"],
            expansion_add=p["expansion_add"],
        )
        self.index.add(np.arange(len(base), dtype=np.uint64), base, threads=self.threads)
        return {
            "hardware_acceleration": str(self.index.hardware_acceleration),
            "memory_usage_bytes": int(self.index.memory_usage),
        }

    def set_search(self, setting) -> None:
        self.index.expansion_search = int(setting)

    def search(self, queries: np.ndarray, k: int) -> np.ndarray:
        return self.index.search(queries, k, threads=self.threads).keys.astype(np.int64)

    def search_one(self, query: np.ndarray, k: int):
        return self.index.search(query, k, threads=1).keys

    def save(self, path: Path) -> Path:
        path = path / "index.usearch"
        self.index.save(str(path))
        return path

    def load(self, path: Path) -> None:
        self.index = self.Index.restore(str(path))

    def view(self, path: Path) -> None:
        self.index = self.Index.restore(str(path), view=True)

    def add(self, vectors: np.ndarray, first_id: int) -> None:
        keys = np.arange(first_id, first_id + len(vectors), dtype=np.uint64)
        self.index.add(keys, vectors, threads=self.threads)

    def close(self) -> None:
        self.index = None


class FaissIndex:
    def __init__(self, dim: int, params: dict, threads: int, family: str) -> None:
        import faiss

        faiss.omp_set_num_threads(threads)
        self.faiss, self.params, self.dim, self.family = faiss, params, dim, family
        self.index = None

    def build(self, base: np.ndarray) -> dict:
        faiss, p = self.faiss, self.params
        info = {}
        if self.family == "faiss_hnsw":
            self.index = faiss.IndexHNSWFlat(self.dim, p["M"], faiss.METRIC_INNER_PRODUCT)
            self.index.hnsw.efConstruction = p["efConstruction"]
        else:
            quantizer = faiss.IndexFlatIP(self.dim)
            if p["pq_m"]:
                self.index = faiss.IndexIVFPQ(quantizer, self.dim, p["nlist"], p["pq_m"], 8, faiss.METRIC_INNER_PRODUCT)
            else:
                self.index = faiss.IndexIVFFlat(quantizer, self.dim, p["nlist"], faiss.METRIC_INNER_PRODUCT)
            self._quantizer = quantizer  # the index does not own its quantizer: keep it alive with it
            t = time.perf_counter()
            self.index.train(base)
            info["train_s"] = round(time.perf_counter() - t, 2)
        self.index.add(base)
        return info

    def set_search(self, setting) -> None:
        if self.family == "faiss_hnsw":
            self.index.hnsw.efSearch = int(setting)
        else:
            self.index.nprobe = int(setting)

    def search(self, queries: np.ndarray, k: int) -> np.ndarray:
        return self.index.search(queries, k)[1]

    def search_one(self, query: np.ndarray, k: int):
        return self.index.search(query[None, :], k)[1]

    def save(self, path: Path) -> Path:
        path = path / "index.faiss"
        self.faiss.write_index(self.index, str(path))
        return path

    def load(self, path: Path) -> None:
        self.index = self.faiss.read_index(str(path))

    def view(self, path: Path) -> None:
        self.index = self.faiss.read_index(str(path), self.faiss.IO_FLAG_MMAP)

    def add(self, vectors: np.ndarray, first_id: int) -> None:
        assert self.index.ntotal == first_id
        self.index.add(vectors)

    def close(self) -> None:
        self.index = None


class LanceIndex:
    """LanceDB: a table on disk (the raw vectors are stored with it) with an IVF-PQ index on the column."""

    def __init__(self, dim: int, params: dict, threads: int) -> None:
        import lancedb
        import pyarrow as pa

        self.lancedb, self.pa, self.params, self.dim = lancedb, pa, params, dim
        self.table = None
        self.setting = (20, 0)

    def _arrow(self, vectors: np.ndarray, first_id: int):
        pa = self.pa
        ids = pa.array(np.arange(first_id, first_id + len(vectors), dtype=np.int64))
        column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), self.dim)
        return pa.table({"id": ids, "vector": column})

    def build(self, base: np.ndarray, where: Path) -> dict:
        from lancedb.index import IvfPq

        self.where = where / "lancedb"
        t = time.perf_counter()
        db = self.lancedb.connect(str(self.where))
        self.table = db.create_table("clips", self._arrow(base, 0))
        write_s = time.perf_counter() - t
        self.table.create_index("vector", config=IvfPq(distance_type="dot"))
        details = self.table.list_indices()[0].index_details
        return {
            "table_write_s": round(write_s, 2),
            "index_details": details,
            "index_bytes": int(self.table.list_indices()[0].size_bytes or 0),
        }

    def set_search(self, setting) -> None:
        self.setting = tuple(setting)

    def _query(self, q):
        nprobes, refine = self.setting
        query = self.table.search(q).distance_type("dot").nprobes(nprobes)
        if refine:
            query = query.refine_factor(refine)
        return query

    def search(self, queries: np.ndarray, k: int) -> np.ndarray:
        result = self._query(queries).limit(k).select(["id"]).to_arrow()
        out = np.full((len(queries), k), -1, dtype=np.int64)
        qi = result["query_index"].to_numpy()
        ids = result["id"].to_numpy()
        dist = result["_distance"].to_numpy()
        for i in range(len(queries)):
            rows = np.flatnonzero(qi == i)
            rows = rows[np.argsort(dist[rows])][:k]
            out[i, : len(rows)] = ids[rows]
        return out

    def search_one(self, query: np.ndarray, k: int):
        return self._query(query).limit(k).select(["id"]).to_arrow()

    def save(self, path: Path) -> Path:
        return self.where  # already on disk: the table (raw vectors) and its index

    def load(self, path: Path) -> None:
        self.table = self.lancedb.connect(str(path)).open_table("clips")

    def add(self, vectors: np.ndarray, first_id: int) -> None:
        self.table.add(self._arrow(vectors, first_id))

    def optimize(self) -> None:
        self.table.optimize()

    def close(self) -> None:
        self.table = None


def make(family: str, dim: int, params: dict, threads: int):
    if family == "usearch":
        return UsearchIndex(dim, params, threads)
    if family.startswith("faiss"):
        return FaissIndex(dim, params, threads, family)
    return LanceIndex(dim, params, threads)


def sweep(
    index, settings: list, queries: np.ndarray, truth: np.ndarray, k: int, budget_s: float, single: bool = True
) -> list[dict]:
    rows = []
    for setting in settings:
        index.set_search(setting)
        index.search(queries[:10], k)  # warm
        t = time.perf_counter()
        found = index.search(queries, k)
        batch_s = time.perf_counter() - t
        row = {
            "setting": setting,
            "recall": round(recall(found, truth), 4),
            "batch_qps": round(len(queries) / batch_s, 1),
        }
        if single:
            qps, p50 = single_qps(lambda q: index.search_one(q, k), queries, budget_s)
            row |= {"single_qps": round(qps, 1), "single_p50_ms": round(p50, 3)}
        rows.append(row)
    return rows


def worker(name: str, data: Path, out: Path, k: int, threads: int, budget_s: float) -> None:
    family, params, settings = CANDIDATES[name]
    base = np.load(data / "base.npy")
    extra = np.load(data / "extra.npy")
    queries = np.load(data / "queries.npy")
    truth = np.load(data / "truth.npy")
    truth_after = np.load(data / "truth_after.npy")
    work = Path(tempfile.mkdtemp(prefix=f"search-{name}-", dir=data))
    report: dict = {"family": family, "params": params}
    try:
        index = make(family, base.shape[1], params, threads)
    except ImportError as e:
        out.write_text(json.dumps({"family": family, "params": params, "skipped": f"not installed: {e}"}))
        return
    gc.collect()
    rss0, peak0 = rss(), peak_rss()
    t = time.perf_counter()
    info = index.build(base, work) if family == "lancedb" else index.build(base)
    report["build_s"] = round(time.perf_counter() - t, 2)
    report["build_info"] = info
    report["rss_growth_build_bytes"] = rss() - rss0
    report["peak_rss_growth_build_bytes"] = max(0, peak_rss() - max(rss0, peak0))
    report["search"] = sweep(index, settings, queries, truth, k, budget_s)

    saved = index.save(work)
    report["file_bytes"] = dir_bytes(saved)
    index.close()
    del index
    gc.collect()

    index = make(family, base.shape[1], params, threads)
    if hasattr(index, "view"):
        rss1 = rss()
        t = time.perf_counter()
        index.view(saved)
        report["view_s"] = round(time.perf_counter() - t, 4)
        report["rss_growth_view_bytes"] = rss() - rss1
        view_rows = sweep(index, settings, queries, truth, k, budget_s, single=False)
        report["view_search"] = view_rows
        report["rss_growth_view_after_queries_bytes"] = rss() - rss1
        index.close()
        gc.collect()

    rss1 = rss()
    t = time.perf_counter()
    index.load(saved)
    if family == "lancedb":
        index.set_search(settings[-1])
        index.search_one(queries[0], k)  # LanceDB opens its index lazily: count the first query
    report["load_s"] = round(time.perf_counter() - t, 4)
    report["rss_growth_load_bytes"] = rss() - rss1

    t = time.perf_counter()
    index.add(extra, len(base))
    report["add_s"] = round(time.perf_counter() - t, 3)
    report["add_rows"] = len(extra)
    if family == "lancedb":
        # Rows added after the index was built are searched flat until optimize() indexes them: a
        # 1000-query sweep in that state would take minutes, so only 100 queries at the last setting.
        few = slice(0, 100)
        report["search_after_add_before_optimize_100_queries"] = sweep(
            index, settings[-1:], queries[few], truth_after[few], k, budget_s, single=False
        )
        t = time.perf_counter()
        index.optimize()
        report["optimize_after_add_s"] = round(time.perf_counter() - t, 3)
        report["search_after_optimize"] = sweep(index, settings, queries, truth_after, k, budget_s, single=False)
    else:
        report["search_after_add"] = sweep(index, settings, queries, truth_after, k, budget_s, single=False)
    index.close()
    shutil.rmtree(work, ignore_errors=True)
    out.write_text(json.dumps(report))


# --- the report -----------------------------------------------------------------------------------


def machine() -> dict:
    info: dict = {}
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name":
            info.setdefault("cpu_model", value.strip())
        elif key == "flags" and "cpu_flags" not in info:
            flags = set(value.split())
            wanted = [
                "avx2",
                "fma",
                "f16c",
                "avx512f",
                "avx512bw",
                "avx512vl",
                "avx512_vnni",
                "avx512_bf16",
                "avx512_fp16",
                "amx_tile",
                "amx_bf16",
                "amx_int8",
            ]
            info["cpu_flags"] = {f: f in flags for f in wanted}
    info["logical_cpus"] = os.cpu_count()
    info["affinity_cpus"] = len(os.sched_getaffinity(0))
    info["physical_cores"] = psutil.cpu_count(logical=False)
    info["memory_bytes"] = psutil.virtual_memory().total
    info["platform"] = platform.platform()
    info["python"] = platform.python_version()
    return info


def installed() -> dict:
    """Version, installed bytes and declared requirements of each library involved."""
    out = {}
    for name in PACKAGES:
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        size = 0
        for f in dist.files or []:
            p = Path(dist.locate_file(f))
            if p.is_file():
                size += p.stat().st_size
        requires = [r for r in (dist.requires or []) if "extra ==" not in r]
        out[name] = {"version": dist.version, "installed_bytes": size, "requires": requires}
    return out


def run_worker(name: str, data: Path, args) -> dict:
    out = data / f"{name}.json"
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        name,
        "--data",
        str(data),
        "--k",
        str(args.k),
        "--threads",
        str(args.threads),
        "--single-budget-s",
        str(args.single_budget_s),
        "--worker-out",
        str(out),
    ]
    env = os.environ | {"RUST_LOG": "error", "LANCE_LOG": "error", "PYTHONWARNINGS": "ignore"}
    busy0, _ = busy_jiffies()
    own0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    load0 = os.getloadavg()[0]
    t = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    busy1, _ = busy_jiffies()
    own1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    own = (own1.ru_utime - own0.ru_utime) + (own1.ru_stime - own0.ru_stime)
    if proc.returncode != 0 or not out.exists():
        lines = [line for line in (proc.stderr or proc.stdout).splitlines() if " WARN " not in line]
        result = {"error": "\n".join(lines)[-2000:], "returncode": proc.returncode}
    else:
        result = json.loads(out.read_text())
    result["worker_wall_s"] = round(wall, 1)
    result["worker_cpu_cores"] = round(own / wall, 2)
    result["other_procs_cores"] = round(max(0.0, (busy1 - busy0 - own) / wall), 2)
    result["load_avg_start_end"] = [round(load0, 2), round(os.getloadavg()[0], 2)]
    return result


def summarise(result: dict, exact: dict, n: int) -> None:
    """Add the derived figures: extrapolations per million, the cheapest setting that reaches the bar, ratios."""
    if "build_s" not in result:
        return
    per_m = 1e6 / n
    result["extrapolated_linearly_from_n"] = n
    result["build_s_per_million_extrapolated"] = round(result["build_s"] * per_m, 1)
    result["file_bytes_per_million_extrapolated"] = int(result["file_bytes"] * per_m)
    result["rss_growth_build_bytes_per_million_extrapolated"] = int(result["rss_growth_build_bytes"] * per_m)
    result["add_rows_per_s"] = round(result["add_rows"] / result["add_s"], 1)
    for row in result["search"]:
        row["batch_qps_vs_exact"] = round(row["batch_qps"] / exact["batch_qps"], 2)
        row["single_qps_vs_exact"] = round(row["single_qps"] / exact["single_qps"], 2)
    passing = [r for r in result["search"] if r["recall"] >= RECALL_BAR]
    result["chosen"] = passing[0] if passing else max(result["search"], key=lambda r: r["recall"])
    result["chosen_meets_bar"] = bool(passing)
    after = {json.dumps(r["setting"]): r for r in result.get("search_after_optimize") or result["search_after_add"]}
    result["chosen_recall_after_add"] = after[json.dumps(result["chosen"]["setting"])]["recall"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="vectors in the index before the incremental add")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--clusters", type=int, default=3000)
    parser.add_argument("--add-fraction", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--single-budget-s", type=float, default=0.5, help="seconds of one-at-a-time queries per setting"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--configs", default=DEFAULT_CONFIGS, help=f"comma-separated subset of: {DEFAULT_CONFIGS}")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "search.json")
    parser.add_argument(
        "--merge",
        action="store_true",
        help="add this run's candidates (and its own exact baseline) to an existing --out of the same data",
    )
    parser.add_argument("--markdown", type=Path, help="print the tables of an existing result and exit")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.data, args.worker_out, args.k, args.threads, args.single_budget_s)
        return
    if args.markdown:
        print(markdown(json.loads(args.markdown.read_text())))
        return
    names = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = set(names) - set(CANDIDATES)
    if unknown:
        parser.error(f"unknown configs: {sorted(unknown)}")
    data_key = {
        "n": args.n,
        "dim": args.dim,
        "queries": args.queries,
        "k": args.k,
        "clusters": args.clusters,
        "seed": args.seed,
        "add_fraction": args.add_fraction,
    }
    report: dict = {"data_key": data_key, "runs": [], "candidates": {}}
    if args.merge and args.out.exists():
        report = json.loads(args.out.read_text())
        if report.get("data_key") != data_key:
            parser.error(f"--merge: {args.out} was made from other data: {report.get('data_key')}")

    began = time.perf_counter()
    run: dict = {
        "run": len(report["runs"]) + 1,
        "command": " ".join(["python", *sys.argv]),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "load_avg_start": [round(v, 2) for v in os.getloadavg()],
        "threads": args.threads,
        "single_budget_s": args.single_budget_s,
    }
    report["machine"], report["libraries"] = machine(), installed()
    data = Path(tempfile.mkdtemp(prefix="bench-search-"))
    try:
        t = time.perf_counter()
        mixture = Mixture(args.dim, args.clusters, args.seed)
        n_extra = int(round(args.n * args.add_fraction))
        base = mixture.draw(args.n, args.seed + 1)
        extra = mixture.draw(n_extra, args.seed + 2)
        queries = mixture.draw(args.queries, args.seed + 3)
        run["data_s"] = round(time.perf_counter() - t, 1)

        t = time.perf_counter()
        truth = exact_topk(base, queries, args.k)
        exact_batch_s = time.perf_counter() - t
        qps, p50 = single_qps(partial(exact_one, base, k=args.k), queries, max(2.0, args.single_budget_s))
        grown = np.concatenate([base, extra])
        truth_after = exact_topk(grown, queries, args.k)
        run["exact"] = {
            "batch_qps": round(args.queries / exact_batch_s, 1),
            "single_qps": round(qps, 1),
            "single_p50_ms": round(p50, 3),
            "recall": 1.0,
            "bytes": int(base.nbytes),
            "bytes_per_million": int(base.nbytes * 1e6 / args.n),
        }
        report["data"] = {
            "n": args.n,
            "n_added": n_extra,
            "dim": args.dim,
            "queries": args.queries,
            "k": args.k,
            "clusters": args.clusters,
            "seed": args.seed,
            **data_stats(base, queries, truth),
        }
        for name, array in (
            ("base", base),
            ("extra", extra),
            ("queries", queries),
            ("truth", truth),
            ("truth_after", truth_after),
        ):
            np.save(data / f"{name}.npy", array)
        del grown, base, extra
        gc.collect()
        print(f"data {report['data']}\nexact {run['exact']}", flush=True)

        for name in names:
            result = run_worker(name, data, args)
            result["run"] = run["run"]
            summarise(result, run["exact"], args.n)
            report["candidates"][name] = result
            keys = (
                "build_s",
                "file_bytes",
                "chosen",
                "add_s",
                "chosen_recall_after_add",
                "other_procs_cores",
                "worker_wall_s",
                "error",
                "skipped",
            )
            print(name, json.dumps({k: result.get(k) for k in keys}), flush=True)
            # written after every candidate, so that a run cut short keeps what it measured
            partial_run = run | {"configs": names, "finished": False}
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(report | {"runs": [*report["runs"], partial_run]}, indent=2) + "\n")
    finally:
        shutil.rmtree(data, ignore_errors=True)
    run["configs"] = names
    run["finished"] = True
    run["load_avg_end"] = [round(v, 2) for v in os.getloadavg()]
    run["total_s"] = round(time.perf_counter() - began, 1)
    report["runs"].append(run)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(markdown(report))
    print(f"total {run['total_s']} s")


def markdown(report: dict) -> str:
    n = report["data"]["n"]
    head = (
        "| index (settings) | run | build s | build s per 1M (extrapolated) | file MB | bytes per 1M (extrapolated) "
        "| RSS growth in build MB | load s | mmap open s | search setting | recall@10 | single q/s (vs exact) "
        "| batch q/s (vs exact) | add 10% s | recall after add | others' cores |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for run in report["runs"]:
        ex = run["exact"]
        lines.append(
            f"| exact numpy (float32 matmul + argpartition) | {run['run']} | - | - | {ex['bytes'] / 1e6:.0f} | "
            f"{ex['bytes_per_million'] / 1e9:.2f} GB | - | - | - | - | 1.0 | {ex['single_qps']:.0f} (1.00) | "
            f"{ex['batch_qps']:.0f} (1.00) | - | 1.0 | - |"
        )
    for name, r in report["candidates"].items():
        if "build_s" not in r:
            lines.append(f"| {name} | {r.get('run')} | {r.get('skipped') or 'error'} |" + " |" * 13)
            continue
        c = r["chosen"]
        view = f"{r['view_s']:.3f}" if "view_s" in r else "-"
        bar = "" if r["chosen_meets_bar"] else " (below bar)"
        lines.append(
            f"| {name} | {r['run']} | {r['build_s']:.1f} | {r['build_s_per_million_extrapolated']:.0f} | "
            f"{r['file_bytes'] / 1e6:.0f} | {r['file_bytes_per_million_extrapolated'] / 1e9:.2f} GB | "
            f"{r['rss_growth_build_bytes'] / 1e6:.0f} | {r['load_s']:.2f} | {view} | {c['setting']} | "
            f"{c['recall']:.3f}{bar} | {c['single_qps']:.0f} ({c['single_qps_vs_exact']:.1f}) | "
            f"{c['batch_qps']:.0f} ({c['batch_qps_vs_exact']:.1f}) | {r['add_s']:.2f} | "
            f"{r['chosen_recall_after_add']:.3f} | {r['other_procs_cores']:.2f} |"
        )
    lines += ["", f"Sweeps (n = {n}): recall@10, queries/s one at a time and batched, recall after the add", ""]
    lines += [
        "| index | setting | recall@10 | single q/s (vs exact) | batch q/s (vs exact) | recall after add |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in report["candidates"].items():
        if "search" not in r:
            continue
        after = r.get("search_after_optimize") or r["search_after_add"]
        for row, a in zip(r["search"], after, strict=True):
            lines.append(
                f"| {name} | {row['setting']} | {row['recall']:.3f} | {row['single_qps']:.0f} "
                f"({row['single_qps_vs_exact']:.1f}) | {row['batch_qps']:.0f} ({row['batch_qps_vs_exact']:.1f}) | "
                f"{a['recall']:.3f} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
