"""Markdown tables from ``cnnc bench --json`` documents (used for docs/performance.md).

python bench/report.py results/*.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

STOCK = ("channels_last", "bf16", "channels_last+bf16", "compile", "channels_last+bf16+compile")


def detail(doc: dict[str, Any], key: str = "variants") -> str:
    """One spec's full table: every variant's step time, ratio, throughput and compile time."""
    lines = [
        "| variant | ms/step | x eager | images/s | GFLOP/s | % of matmul peak | compile s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in doc[key]:
        gflops = f"{row['gflops']:.1f}" if row["gflops"] is not None else "-"
        peak = f"{row['peak_percent']:.0f}" if row["peak_percent"] is not None else "-"
        lines.append(
            f"| {row['name']} | {row['step_ms']:.2f} | {row['ratio_vs_eager']:.2f} | "
            f"{row['images_per_s']:.0f} | {gflops} | {peak} | {row['compile_s']:.1f} |"
        )
    return "\n".join(lines)


def summary(docs: list[dict[str, Any]]) -> str:
    """One line per spec: auto against eager and against the best stock configuration."""
    lines = [
        "| spec | batch | eager ms | best stock (x eager) | auto (x eager) | auto / best stock "
        "| auto chose |",
        "|---|---:|---:|---|---:|---:|---|",
    ]
    for doc in docs:
        rows = {row["name"]: row for row in doc["variants"]}
        stock = max(
            (rows[name] for name in STOCK if name in rows), key=lambda row: row["ratio_vs_eager"]
        )
        auto = rows["auto"]
        chose = doc["auto"]["reason"].split(":", 1)[0]
        lines.append(
            f"| {doc['spec']} | {doc['batch']} | {rows['eager']['step_ms']:.2f} | "
            f"{stock['name']} ({stock['ratio_vs_eager']:.2f}) | {auto['ratio_vs_eager']:.2f} | "
            f"{auto['ratio_vs_eager'] / stock['ratio_vs_eager']:.2f} | {chose} |"
        )
    return "\n".join(lines)


def main(paths: list[str]) -> None:
    docs = [json.loads(Path(path).read_text()) for path in paths]
    sys.stdout.write(summary(docs) + "\n")
    for doc in docs:
        sys.stdout.write(f"\n### {doc['spec']} (batch {doc['batch']}, {doc['device']})\n\n")
        sys.stdout.write(detail(doc) + "\n")
        if "inference" in doc:
            sys.stdout.write("\nInference:\n\n" + detail(doc, "inference") + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
