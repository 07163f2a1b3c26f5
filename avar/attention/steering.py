"""Training-free intervention: steer attention toward image keys at inference.

PAI-style: in layers A to B (both included: `1-3` is layers 1, 2 and 3, where PAI's
(start, end) leaves out end), the pre-softmax score of every image key is raised by
`alpha * |score|` (and, with beta > 0, every system key lowered by `beta * |score|`).
Steered rows are those whose output is an answer token, as in PAI: the prompt's last row
(it yields the first generated token) and every generated row; in a teacher-forced pass,
the row before the first response token and the response rows. The other prompt rows keep
the kernel's output. Steered rows are recomputed explicitly ([H, R, T] scores for R rows;
one row per sequence per step while generating); no layer switches to eager attention.

    with steer(model, spec, prompt_batch["segment_ids"]):
        model.generate(**inputs)
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from avar.attention.hooks import allowed_keys, attention_hooks, decoder_attention
from avar.attention.mass import full_precision, row_probabilities
from avar.config.specs import InterventionSpec, layer_list
from avar.segments import Segment


class Steering:
    """Per-layer score adjustment, keyed on the segments of the first `P` positions."""

    def __init__(self, spec: InterventionSpec, segment_ids: torch.Tensor, n_layers: int):
        self.spec = spec
        self.layers = layer_list(spec.layers, n_layers)
        self.image_keys = segment_ids == Segment.IMAGE  # [B, P]
        self.system_keys = segment_ids == Segment.SYSTEM  # [B, P]
        self.response_rows = segment_ids == Segment.RESPONSE  # [B, P]

    def _extend(self, mask: torch.Tensor, length: int) -> torch.Tensor:
        """A [P] mask grown (with False: generated tokens) or cut to `length`."""
        if length <= mask.shape[0]:
            return mask[:length]
        return torch.cat([mask, mask.new_zeros(length - mask.shape[0])])

    def steered_rows(self, batch_index: int, positions: torch.Tensor) -> torch.Tensor:
        """[R] bool: rows at an answer position or just before one (their output is the
        answer token); answer positions are those past the prompt and its response ones."""
        response = self.response_rows[batch_index].to(positions.device)
        length = response.shape[0]

        def answer(at: torch.Tensor) -> torch.Tensor:
            return (at >= length) | response[at.clamp(max=length - 1)] & (at < length)

        return answer(positions) | answer(positions + 1)

    def adjust_for(self, batch_index: int):
        """scores [..., R, T] at row positions [R] -> steered scores."""

        def adjust(scores: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
            length = scores.shape[-1]
            image = self._extend(self.image_keys[batch_index], length).to(scores.device)
            shift = torch.where(image, self.spec.alpha * scores.abs(), 0.0)  # [..., R, T]
            if self.spec.beta:
                system = self._extend(self.system_keys[batch_index], length).to(scores.device)
                shift = shift - torch.where(system, self.spec.beta * scores.abs(), 0.0)
            rows = self.steered_rows(batch_index, positions).to(scores.dtype)  # [R]
            return scores + shift * rows[:, None]

        return adjust

    def steer(self, query, key, value, attention_mask, scaling: float, output):
        """Replace the steered rows of `output` ([B, Tq, H, D]) with steered attention."""
        batch, heads, q_len, dim = query.shape
        kv_heads, kv_len = key.shape[1], key.shape[2]
        positions = torch.arange(q_len, device=query.device) + (kv_len - q_len)
        output = output.clone()
        for b in range(batch):
            rows = self.steered_rows(b, positions).nonzero().squeeze(1)  # [R] indices into Tq
            if rows.numel() == 0:
                continue
            q = query[b, :, rows].float().reshape(kv_heads, heads // kv_heads, len(rows), dim)
            allowed = allowed_keys(attention_mask, b, rows, q_len, kv_len)  # [R, T]
            probs = row_probabilities(
                q, key[b].float(), allowed, scaling, self.adjust_for(b), positions[rows]
            )
            with full_precision(query.device):
                steered = torch.matmul(probs, value[b].float()[:, None])  # [Hkv, G, R, D]
            output[b, rows] = steered.reshape(heads, len(rows), dim).transpose(0, 1).to(output)
        return output


@contextmanager
def steer(model, spec: InterventionSpec | None, segment_ids: torch.Tensor):
    """Apply the intervention (no-op for None) to the forward passes inside."""
    if spec is None:
        yield None
        return
    steering = Steering(spec, segment_ids, len(decoder_attention(model)))
    with attention_hooks(model, steering=steering):
        yield steering
