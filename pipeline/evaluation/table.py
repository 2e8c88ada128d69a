"""The denoisers table that `baselines` starts and `evaluate` completes: one row per method, best
PSNR first, and the lines both stages print."""

from __future__ import annotations

from pipeline.artifacts.baseline_results import NOISY_INPUT


def table_row(method: str, psnr: float, ssim: float, parameter: str = "", value="") -> dict:
    """One row of the denoisers table (`parameter` and `value`: what tuning chose)."""
    return {"method": method, "parameter": parameter, "value": value, "psnr": psnr, "ssim": ssim}


def noisy_input_row(scores: dict[str, float]) -> dict:
    return table_row(NOISY_INPUT, scores["psnr"], scores["ssim"])


def best_first(rows: list[dict]) -> list[dict]:
    return sorted(rows, key=lambda row: -row["psnr"])


def score_lines(table: list[dict], accuracies: dict[str, float]) -> list[str]:
    """The denoisers table and the probe accuracies, as the stages print them."""
    lines = [
        f"{row['method']:22s} PSNR {row['psnr']:6.2f} dB  SSIM {row['ssim']:.3f}" for row in table
    ]
    scores = ", ".join(f"{name} {accuracy:.4f}" for name, accuracy in accuracies.items())
    return [*lines, f"probe accuracy {scores}"]
