"""The `objective:` section: what the training optimizes, beside `method:` (which weights train).

An objective is not a method: DPO with LoRA and DPO with full fine-tuning are both valid. Each objective's
options nest under it (a discriminated union on `name`, like `method:`), so an option of another objective
fails by structure. `sft` (the default) learns the answers in the data; the preference objectives learn from
an answer preferred over another (dpo, orpo) or from answers labelled good or bad (kto), through TRL's trainers.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field

from tunelab.config.methods import Strict


class SftObjective(Strict):
    """Supervised fine-tuning: the answers in the data, token by token."""

    name: Literal["sft"] = "sft"


class DpoObjective(Strict):
    """Direct Preference Optimization (TRL's DPOTrainer): raise the chosen answer's likelihood over the rejected
    one's, relative to the model before training (the reference)."""

    name: Literal["dpo"]
    beta: float = Field(
        0.1, gt=0, description="How far from the reference the model may move: higher stays closer (IPO: tau)."
    )
    loss_type: Literal["sigmoid", "ipo", "hinge", "robust", "bco_pair", "sppo_hard", "apo_zero", "apo_down"] = Field(
        "sigmoid",
        description="`sigmoid`: the DPO paper's loss; `ipo`: identity preference optimization (bounded, for data "
        "where one answer always wins); `hinge`: SLiC's hinge loss; the others as TRL documents them.",
    )
    sft_weight: float = Field(
        0.0,
        ge=0,
        description="Add the chosen answers' supervised loss at this weight (TRL's `sft` loss beside the DPO loss; "
        "RPO): keeps the chosen answers likely, against forgetting and against both likelihoods falling. 0: off.",
    )


class OrpoObjective(Strict):
    """Odds Ratio Preference Optimization (TRL's ORPOTrainer): the chosen answer's supervised loss plus an
    odds-ratio term against the rejected one; no reference model at all."""

    name: Literal["orpo"]
    beta: float = Field(0.1, gt=0, description="Weight of the odds-ratio term (the paper's lambda).")


class KtoObjective(Strict):
    """Kahneman-Tversky Optimization (TRL's KTOTrainer): answers labelled desirable or undesirable, unpaired."""

    name: Literal["kto"]
    beta: float = Field(0.1, gt=0, description="How far from the reference the model may move.")
    desirable_weight: float = Field(1.0, gt=0, description="Loss weight of desirable answers.")
    undesirable_weight: float = Field(
        1.0,
        gt=0,
        description="Loss weight of undesirable answers. With unbalanced data, set the weights so that "
        "desirable_weight x n_desirable / (undesirable_weight x n_undesirable) is between 1 and 4/3 (the KTO paper).",
    )


# Every objective's options class, in registry order: a new objective is its class above and one entry here.
OBJECTIVE_CLASSES: tuple[type[Strict], ...] = (SftObjective, DpoObjective, OrpoObjective, KtoObjective)
OBJECTIVE_MODELS: dict[str, type[Strict]] = {
    cls.model_fields["name"].annotation.__args__[0]: cls for cls in OBJECTIVE_CLASSES
}
PREFERENCE_OBJECTIVES = tuple(name for name in OBJECTIVE_MODELS if name != "sft")

ObjectiveConfig = Annotated[Union[OBJECTIVE_CLASSES], Field(discriminator="name")]  # noqa: UP007
