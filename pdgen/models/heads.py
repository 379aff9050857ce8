"""The three training heads on one BAGEL trunk: planner (CE), inspector (CE), generator (rectified-flow MSE).

All three read the same `TrunkOutput` of one packed forward pass; none owns a tensor of its own by default:
the planner and the inspector share the trunk's `lm_head` (`BagelTrunk.lm_logits`), the generator reads
`llm2vae` (`BagelTrunk.velocity`). What separates them is *which tokens* each one is scored on:

- `PlannerHead`: CE labels of role `CeRole.PLAN` (the `<ins>…</ins><des>…</des>` text and its closing
  `<|im_end|>`), plus the `CeRole.SPECIAL` labels whose target is `<|vision_start|>`: the decision, at the
  end of a plan, to draw now. BAGEL was never trained to emit it; this loss teaches the model *when to draw*.
- `InspectorHead`: CE labels of role `CeRole.INSPECT` (critique and `<refine>…</refine>`), plus every other
  `CeRole.SPECIAL` label: after a generated image, `<|im_start|>` (continue) or `<|im_end|>` (stop, the last
  image is the answer), and after an inspection the `<|im_start|>` that opens the next plan. Those are the
  inspector's continue/stop decisions. SPECIAL labels are split by their target id, so the rule is one line
  (`special_owner`) and needs nothing but the tokenizer's `<|vision_start|>` id.
- `GeneratorHead`: the velocity `llm2vae(h)` at the noised VAE tokens against the flow target `eps - x0`
  that the trunk computed while noising (`TrunkOutput.velocity_target`): rectified-flow MSE. Timesteps are
  drawn by the caller (`pdgen.models.bagel.flow.sample_timesteps`, logit-normal + shift) before the pass.

Each head returns a `HeadLoss`: the loss *sum* over its tokens and their count, so the module can average CE
over all CE tokens of the pack together (the paper's eq. 3/6, BAGEL's `ce_avg`), plus its metrics.

Shapes: T = packed tokens, C = hidden, V = vocabulary, N = labels of one head, P = latent patch dim.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from pdgen.data.packing import CeRole, PackedBatch
from pdgen.models.bagel.trunk import BagelTrunk, TrunkOutput


@dataclass
class HeadLoss:
    """One head's contribution to a step.

    Attributes:
        loss_sum: scalar, the loss summed over the head's tokens (CE) or latent values per token (MSE, see
            `GeneratorHead`); zero (still in the graph) when the pack has none.
        count: how many tokens it was summed over.
        metrics: detached scalars for logging (e.g. `acc`, `special_acc`).
    """

    loss_sum: torch.Tensor
    count: int
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def mean(self) -> torch.Tensor:
        """The per-token loss (0 when the head had no tokens in this pack)."""
        return self.loss_sum / max(self.count, 1)


def special_owner(label_ids: torch.Tensor, vision_start_id: int) -> torch.Tensor:
    """(N,) bool: True where a SPECIAL label belongs to the planner (its target is `<|vision_start|>`)."""
    return label_ids == vision_start_id


class _LanguageHead(nn.Module):
    """CE over one role's labels (+ its share of SPECIAL ones), through the shared or its own lm_head."""

    role: CeRole
    owns_vision_start: bool

    def __init__(
        self, vision_start_id: int, lm_head: nn.Linear | None = None, content_ids: list[int] | None = None
    ) -> None:
        """
        Args:
            vision_start_id: the tokenizer's `<|vision_start|>` id; splits the SPECIAL labels between heads.
            lm_head: a separate output projection for this head; None shares the trunk's `lm_head`.
            content_ids: token ids of content words (`pdgen.data.tokenizer.content_token_ids`); when given,
                the CE and accuracy on labels that are one of them are reported apart (`content_loss`,
                `content_acc`), because the template words of a plan dominate its mean CE.
        """
        super().__init__()
        self.vision_start_id = vision_start_id
        self.lm_head = lm_head
        self.content_ids = None if content_ids is None else torch.tensor(sorted(content_ids))

    def select(self, batch: PackedBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(N,) bool over `batch.ce_loss_indexes`: this head's labels; and (N,) bool: which are SPECIAL."""
        roles = batch.ce_roles
        special = roles == CeRole.SPECIAL
        planner_special = special_owner(batch.packed_label_ids, self.vision_start_id)
        mine_special = special & (planner_special if self.owns_vision_start else ~planner_special)
        return (roles == self.role) | mine_special, special

    def forward(self, trunk: BagelTrunk, out: TrunkOutput, batch: PackedBatch) -> HeadLoss:
        mine, special = self.select(batch)
        indexes = batch.ce_loss_indexes[mine]  # (N,)
        labels = batch.packed_label_ids[mine]  # (N,)
        if self.lm_head is None:
            logits = trunk.lm_logits(out.hidden_states, indexes)  # (N, V)
        else:
            logits = self.lm_head(out.hidden_states[indexes])  # (N, V)
        losses = F.cross_entropy(logits.float(), labels, reduction="none")  # (N,)
        loss_sum = losses.sum()
        with torch.no_grad():
            correct = logits.argmax(-1) == labels
            is_special = special[mine]
            metrics = {
                "acc": correct.float().mean() if labels.numel() else correct.new_zeros((), dtype=torch.float),
            }
            if is_special.any():
                metrics["special_acc"] = correct[is_special].float().mean()
            if self.content_ids is not None:
                is_content = torch.isin(labels, self.content_ids.to(labels.device))
                if is_content.any():
                    metrics["content_loss"] = losses[is_content].mean()
                    metrics["content_acc"] = correct[is_content].float().mean()
        return HeadLoss(loss_sum, int(labels.numel()), metrics)


class PlannerHead(_LanguageHead):
    """CE over plan text and the `<|vision_start|>` decisions (see the module docstring)."""

    role = CeRole.PLAN
    owns_vision_start = True


class InspectorHead(_LanguageHead):
    """CE over critique / refine text and the continue-or-stop decisions (see the module docstring)."""

    role = CeRole.INSPECT
    owns_vision_start = False


class GeneratorHead(nn.Module):
    """Rectified-flow MSE of `llm2vae`'s velocity at the noised latent tokens.

    BAGEL averages the squared error over every latent value of every noised token (`mse.mean()`); so
    `loss_sum` sums the per-token mean over P, and `count` is the number of tokens: `HeadLoss.mean` is BAGEL's
    MSE exactly.
    """

    def forward(self, trunk: BagelTrunk, out: TrunkOutput, batch: PackedBatch) -> HeadLoss:
        velocity = trunk.velocity(out.hidden_states, batch.mse_loss_indexes)  # (N_mse, P)
        per_token = (velocity.float() - out.velocity_target.float()).pow(2).mean(-1)  # (N_mse,)
        return HeadLoss(per_token.sum(), int(per_token.numel()))
