"""The AdamW every trainable copy gets, fit to the dtype its weights are stored in.

fp32 weights: torch's AdamW. bf16 or fp16 weights (DeepFusion at scale=paper keeps its trainable
copies in bf16, the paper's precision): torch-optimi's AdamW with Kahan-compensated updates. Half an
ulp of bf16 at |w| = 0.02 is 6e-5, so a plain AdamW step of lr 2e-5 (the paper's full fine-tuning
rate) rounds away on most weights and every norm weight: the model trains nothing. The Kahan
buffer keeps what each rounding lost and adds it back, so the weights follow the fp32 trajectory
(tests/test_optim.py) for one more tensor per weight in its own dtype (2 bytes per bf16 parameter,
where fp32 master weights would add 4 plus fp32 gradients). Same update as torch's AdamW otherwise:
betas (0.9, 0.999), eps 1e-8, weight decay scaled by the learning rate.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

LOW_PRECISION = (torch.bfloat16, torch.float16)


def state_bytes(dtype: torch.dtype) -> int:
    """Bytes `adamw` keeps per trainable parameter stored in `dtype`: the two moments in that dtype,
    and for bf16 or fp16 the Kahan compensation too (fp32: 8; bf16: 6)."""
    size = torch.empty(0, dtype=dtype).element_size()
    return size * (3 if dtype in LOW_PRECISION else 2)


def adamw(
    params: Iterable[torch.nn.Parameter], lr: float, weight_decay: float = 0.0
) -> torch.optim.Optimizer:
    """AdamW over `params`; Kahan-compensated when any of them is stored in bf16 or fp16."""
    params = list(params)
    if any(p.dtype in LOW_PRECISION for p in params):
        import optimi  # only where weights are low precision: tiny cells never import it

        return optimi.AdamW(
            params,
            lr=lr,
            betas=(0.9, 0.999),
            eps=1e-8,
            weight_decay=weight_decay,
            kahan_sum=True,
            foreach=True,
        )
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
