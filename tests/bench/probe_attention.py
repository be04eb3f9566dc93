"""Time the ring attention variants on a GPU at real shapes (a benchmark, not a test).

python tests/bench/probe_attention.py   # prints ms per call for each variant and shape
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def timed(fn: object, reps: int = 20) -> float:
    for _ in range(3):
        fn()  # type: ignore[operator]
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        fn()  # type: ignore[operator]
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / reps


def main() -> None:
    shapes = {"135m": (9, 3, 64), "8b": (32, 8, 128)}
    for name, (heads, kv, dim) in shapes.items():
        for q_len, slots in ((2048, 4 + 2044 + 2048 + 176), (1, 4 + 2044 + 2048 + 176)):
            q = torch.randn(1, heads, q_len, dim, device="cuda", dtype=torch.bfloat16)
            k = torch.randn(1, kv, slots, dim, device="cuda", dtype=torch.bfloat16)
            v = torch.randn_like(k)
            mask = torch.rand(1, 1, q_len, slots, device="cuda") > 0.5
            rep = heads // kv

            def native(q=q, k=k, v=v, mask=mask) -> torch.Tensor:  # type: ignore[no-untyped-def]
                return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)

            def repeated(q=q, k=k, v=v, mask=mask, rep=rep) -> torch.Tensor:  # type: ignore[no-untyped-def]
                kr = k.repeat_interleave(rep, dim=1)
                vr = v.repeat_interleave(rep, dim=1)
                return F.scaled_dot_product_attention(q, kr, vr, attn_mask=mask)

            print(
                f"{name} q={q_len} slots={slots}: enable_gqa {timed(native):.3f} ms, "
                f"repeat_kv {timed(repeated):.3f} ms"
            )


if __name__ == "__main__":
    main()
