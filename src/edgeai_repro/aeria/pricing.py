"""Prior-free pricing primitives on batches of net bids, vectorised in torch.

All functions take bids of shape (..., n): the last axis is one auction, leading axes are
independent auctions (markets x providers). Invalid bidders carry a bid of 0, which never wins
because every price below is positive or the bidder is masked out by the caller.

The leave-one-out optimal revenue F(s_-i) for all i costs one sort and two scans: removing the
bidder at sorted position r leaves k*s_(k) for k < r and k*s_(k+1) for k >= r.
"""

from __future__ import annotations

import numpy as np
import torch


def sort_desc(s: torch.Tensor, stable: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Values sorted in decreasing order along the last axis, and the permutation.

    Equal bids are interchangeable for every price computed here (each depends on the sorted
    values only), so the order among ties matters only where a rule ranks bidders (stable=True).
    On a CPU, numpy's vectorised argsort is several times faster than torch's sort for long rows.
    """
    if s.device.type == "cpu" and not stable and s.shape[-1] >= 4096 and not s.requires_grad:
        order = torch.from_numpy(np.argsort(-s.numpy(), axis=-1))
        return s.gather(-1, order), order
    return torch.sort(s, dim=-1, descending=True, stable=stable)


def _k(n: int, like: torch.Tensor) -> torch.Tensor:
    return torch.arange(1, n + 1, dtype=like.dtype, device=like.device)


def optimal_revenue(s: torch.Tensor, min_winners: int = 1) -> torch.Tensor:
    """F(s) = max_k k*s_(k) (min_winners=1) or F2 (min_winners=2); 0 if there are too few bids."""
    sd, _ = sort_desc(s)
    rev = _k(s.shape[-1], s) * sd
    if rev.shape[-1] < min_winners:
        return torch.zeros(s.shape[:-1], dtype=s.dtype, device=s.device)
    return rev[..., min_winners - 1 :].amax(dim=-1).clamp_min(0)


def optimal_price(s: torch.Tensor) -> torch.Tensor:
    """The single price that earns F(s); +inf when no bid is positive."""
    sd, _ = sort_desc(s)
    rev = _k(s.shape[-1], s) * sd
    best = rev.argmax(dim=-1, keepdim=True)
    price = sd.gather(-1, best).squeeze(-1)
    return torch.where(price > 0, price, torch.full_like(price, float("inf")))


def _suffix_cummax(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Suffix maxima of x along the last axis, each with the LARGEST index attaining it.

    torch.cummax breaks ties toward the last index it scans, which on a flipped array is the
    smallest original index; the largest one is the end of the run of equal suffix maxima (the
    suffix maximum only drops right after an element that attains it), found by binary search.
    """
    n = x.shape[-1]
    vals = torch.cummax(x.flip(-1), dim=-1).values.flip(-1)  # non-increasing
    ascending = vals.flip(-1).contiguous()
    first = torch.searchsorted(ascending, vals.contiguous(), right=False)  # first ascending index >= v
    return vals, (n - 1 - first).clamp(0, n - 1)


def _leave_one_out_sorted(sd: torch.Tensor, min_winners: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """For sorted bids, F of all bids but position r, and the price that reaches it, for each r
    (F2 with min_winners=2: the others' single-price revenue with at least two of them buying).

    The others' revenue curve is k*s_(k) for k < r+1 (prefix) and k*s_(k+1) beyond (suffix). Ties
    between revenue-maximising prices always go to the lowest price (the largest k), whatever the
    bidder's own position: that makes the price a function of the others' bids alone, which is
    what DOP's truthfulness needs (integer bids with ties included; see tests).
    """
    n = sd.shape[-1]
    k = _k(n, sd)
    a = k * sd  # k*s_(k): bidders before r stay in place
    b = torch.zeros_like(sd)
    b[..., :-1] = k[:-1] * sd[..., 1:]  # k*s_(k+1): bidders after r move up
    if min_winners == 2:  # k = 1 is a_1 (prefix) or b_1 (suffix, r = 0)
        a[..., 0] = 0.0
        b[..., 0] = 0.0
    pa_vals, pa_idx = torch.cummax(a, dim=-1)  # inclusive prefix max, last index on ties
    prefix = torch.zeros_like(sd)
    prefix[..., 1:] = pa_vals[..., :-1]
    prefix_price = torch.zeros_like(sd)
    prefix_price[..., 1:] = sd.gather(-1, pa_idx[..., :-1])
    suffix, sb_idx = _suffix_cummax(b)
    suffix_price = torch.zeros_like(sd)
    suffix_price[..., :-1] = sd.gather(-1, (sb_idx[..., :-1] + 1).clamp_max(n - 1))
    use_prefix = prefix > suffix  # equal: the suffix's larger k wins
    f_loo = torch.where(use_prefix, prefix, suffix)
    price = torch.where(use_prefix, prefix_price, suffix_price)
    return f_loo, price


def _unsort(values_sorted: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(values_sorted)
    return out.scatter_(-1, order, values_sorted)


def leave_one_out_revenue(
    s: torch.Tensor, min_winners: int = 1, presorted: tuple[torch.Tensor, torch.Tensor] | None = None
) -> torch.Tensor:
    """F(s_-i) (or F2(s_-i) with min_winners=2) for every bidder i, in the bidders' original order.
    O(n log n); `presorted` = sort_desc(s) when the caller has it."""
    sd, order = sort_desc(s) if presorted is None else presorted
    f_loo, _ = _leave_one_out_sorted(sd, min_winners)
    return _unsort(f_loo, order)


def leave_one_out_price(s: torch.Tensor) -> torch.Tensor:
    """The optimal single price of the other bidders, for every bidder (+inf when they bid 0)."""
    sd, order = sort_desc(s)
    _, price = _leave_one_out_sorted(sd)
    price = _unsort(price, order)
    return torch.where(price > 0, price, torch.full_like(price, float("inf")))


def consensus_round(x: torch.Tensor, u: torch.Tensor, c: float) -> torch.Tensor:
    """Round x down to the random grid {c^(j+u)}: the largest c^(j+u) <= x (0 for x <= 0).

    u in [0, 1) is shared by every bidder of an auction and broadcast against x.
    """
    logc = torch.log(x.clamp_min(torch.finfo(x.dtype).tiny)) / torch.log(torch.tensor(c, dtype=x.dtype))
    r = torch.pow(torch.tensor(c, dtype=x.dtype, device=x.device), torch.floor(logc - u) + u)
    return torch.where(x > 0, r, torch.zeros_like(x))


def cost_share_winners(
    s: torch.Tensor, target: torch.Tensor, sd: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Equal-share profit extraction of `target` (one value per bidder, bid-independent).

    Bidder i is offered the price target_i / k where k is the largest number of bidders that
    can each pay target_i / k; with the other bidders' bids held fixed this offer does not depend
    on s_i (see tests). `sd`: s already sorted in decreasing order, when the caller has it.
    Returns (wins, price) with price 0 for losers.
    """
    n = s.shape[-1]
    sd = sort_desc(s)[0] if sd is None else sd
    a = _k(n, s) * sd  # k*s_(k): k bidders can each pay t iff a_k >= t*k
    suffix = torch.cummax(a.flip(-1), dim=-1).values.flip(-1)  # suffix maxima: non-increasing in k
    # K(t) = #{k : max_{k'>=k} a_k' >= t} = largest k with a_k >= t, via binary search.
    ascending = suffix.flip(-1).contiguous()
    k_star = n - torch.searchsorted(ascending, target.contiguous(), right=False)
    k_star_f = k_star.to(s.dtype)
    price = torch.where(k_star > 0, target / k_star_f.clamp_min(1), torch.full_like(target, float("inf")))
    wins = (s >= price) & (target > 0)
    return wins, torch.where(wins, price, torch.zeros_like(price))


def leave_one_out_revenue_sorted(sd: torch.Tensor, min_winners: int = 1) -> torch.Tensor:
    """F (or F2) of all sorted bids but position r, for each r, in sorted order: the values of
    `_leave_one_out_sorted` without its prices (two scans, no search). Non-decreasing in r: removing a
    higher bid leaves pointwise lower bids."""
    n = sd.shape[-1]
    k = _k(n, sd)
    a = k * sd
    b = torch.zeros_like(sd)
    b[..., :-1] = k[:-1] * sd[..., 1:]
    if min_winners == 2:
        a[..., 0] = 0.0
        b[..., 0] = 0.0
    prefix = torch.zeros_like(sd)
    prefix[..., 1:] = torch.cummax(a, dim=-1).values[..., :-1]
    suffix = torch.cummax(b.flip(-1), dim=-1).values.flip(-1)
    return torch.maximum(prefix, suffix)


def cost_share_prices_sorted(sd: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Equal-share extraction in sorted coordinates: for the bidder at sorted position r with target
    t_r (bid-independent), the price t_r / K(t_r), K(t) the largest k with k s_(k) >= t (+inf when
    none; 0 for a target of 0). The same numbers as `cost_share_winners`, with the binary search run
    once per distinct target: targets rounded to the grid are few, and non-decreasing in r."""
    n = sd.shape[-1]
    a = _k(n, sd) * sd
    ascending = torch.cummax(a.flip(-1), dim=-1).values.contiguous()  # suffix maxima, read from the end
    if targets[..., 0].numel() == 1:  # one long auction: one search per distinct target
        values, counts = torch.unique_consecutive(targets.reshape(-1), return_counts=True)
        k_row = n - torch.searchsorted(ascending.reshape(-1), values, right=False)
        k_star = torch.repeat_interleave(k_row, counts).view_as(targets)
    else:  # many short auctions (markets x providers): one batched search
        k_star = n - torch.searchsorted(ascending, targets.contiguous(), right=False)
    return torch.where(
        k_star > 0, targets / k_star.to(sd.dtype).clamp_min(1), torch.full_like(targets, float("inf"))
    )


def core_prices(s: torch.Tensor, u: torch.Tensor, c: float, min_winners: int = 1) -> torch.Tensor:
    """CORE's offer to every bidder, in the bidders' order: F (or F2) of the others' bids rounded down
    to the random grid, extracted by equal cost sharing. One sort, two scans, one search per distinct
    target, one scatter (the per-bidder composition of consensus_targets and cost_share_winners,
    which tests keep as its reference)."""
    sd, order = sort_desc(s)
    targets = consensus_round(leave_one_out_revenue_sorted(sd, min_winners), u, c)
    return _unsort(cost_share_prices_sorted(sd, targets), order)
