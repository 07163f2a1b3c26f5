"""Log-probabilities of chosen tokens without an fp32 copy of the logits in the graph.

    logp[n, t] = logits[n, t, ids[n, t]] / T - logsumexp(logits[n, t] / T)

Autograd through `log_softmax(logits.float() / T)` saves the fp32 [T, V] copy of every
row for backward (at 7B, 152k vocabulary: 0.6 MB a token). `SelectedLogProbs` saves only
what the caller already holds (the logits, in their own dtype) and the [N, T] logsumexp,
and works a chunk of rows at a time in fp32, forward and backward, as TRL's and torchtune's
chunked losses do.
"""

from __future__ import annotations

import torch

CHUNK_ROWS = 256
"""Token rows turned to fp32 at once ([256, V] fp32: 156 MB at a 152k vocabulary)."""


def _chunks(n: int):
    for start in range(0, n, CHUNK_ROWS):
        yield slice(start, min(start + CHUNK_ROWS, n))


class SelectedLogProbs(torch.autograd.Function):
    """logits [M, V] (any float dtype), ids [M] long, temperature -> logp [M] fp32."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, ids: torch.Tensor, temperature: float):
        picked = torch.empty(ids.shape, dtype=torch.float32, device=logits.device)
        lse = torch.empty_like(picked)
        for rows in _chunks(logits.shape[0]):
            scaled = logits[rows].float() / temperature  # [C, V]
            lse[rows] = torch.logsumexp(scaled, dim=-1)
            picked[rows] = scaled.gather(-1, ids[rows, None]).squeeze(-1)
        ctx.save_for_backward(logits, ids, lse)
        ctx.temperature = temperature
        return picked - lse

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        logits, ids, lse = ctx.saved_tensors
        temperature = ctx.temperature
        grad_logits = torch.empty_like(logits)
        for rows in _chunks(logits.shape[0]):
            # d logp / d logits = (onehot(id) - softmax(logits / T)) / T
            probs = torch.exp(logits[rows].float() / temperature - lse[rows, None])  # [C, V]
            probs.neg_().scatter_add_(-1, ids[rows, None], torch.ones_like(probs[:, :1]))
            grad_logits[rows] = (probs * (grad[rows, None] / temperature)).to(logits.dtype)
        return grad_logits, None, None


def token_logps(logits: torch.Tensor, input_ids: torch.Tensor, temperature: float = 1.0):
    """Log-probability of each next token under softmax(logits / temperature).

    logits [N, K, V] for the last K positions (a model called with `logits_to_keep=K`),
    input_ids [N, T] -> [N, K-1]: the log-probs of input_ids[:, T-K+1:]."""
    n, keep, vocabulary = logits.shape
    ids = input_ids[:, input_ids.shape[1] - keep + 1 :]  # [N, K-1]
    # every row of the logits as a view (no copy); the last row's token is a stand-in
    ids = torch.cat([ids, ids[:, -1:]], dim=1).reshape(-1)  # [N*K]
    logps = SelectedLogProbs.apply(logits.reshape(-1, vocabulary), ids, temperature)
    return logps.view(n, keep)[:, :-1]


@torch.no_grad()
def subset_logmass(logits: torch.Tensor, token_ids: list[int], temperature: float = 1.0):
    """log of the probability softmax(logits / temperature) puts on `token_ids`, per row:
    logits [N, K, V] -> [N, K-1], aligned with `token_logps` (chunked, no graph)."""
    n, keep, vocabulary = logits.shape
    rows = logits.reshape(-1, vocabulary)
    out = torch.empty(rows.shape[0], dtype=torch.float32, device=logits.device)
    for part in _chunks(rows.shape[0]):
        scaled = rows[part].float() / temperature
        out[part] = torch.logsumexp(scaled[:, token_ids], -1) - torch.logsumexp(scaled, -1)
    return out.view(n, keep)[:, :-1]
