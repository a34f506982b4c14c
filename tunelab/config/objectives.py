"""The `objective:` section: what the training optimizes, beside `method:` (which weights train).

An objective is not a method: DPO with LoRA and DPO with full fine-tuning are both valid. Each objective's
options nest under it (a discriminated union on `name`, like `method:`), so an option of another objective
fails by structure. `sft` (the default) learns the answers in the data; the preference objectives learn from
an answer preferred over another (dpo, orpo) or from answers labelled good or bad (kto), and grpo from rewards
on answers it samples itself, through TRL's trainers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Union

from pydantic import Field, field_validator

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


class RewardBase(Strict):
    weight: float = Field(1.0, gt=0, description="This reward's weight in the sum GRPO maximizes.")


class ValidJsonReward(RewardBase):
    """1 when the answer is a JSON object (a ``` fence forgiven), else 0."""

    name: Literal["valid_json"]


class RegexReward(RewardBase):
    """1 when the answer matches `pattern` (Python `re.search`; anchor it with ^...$ for the whole answer)."""

    name: Literal["regex"]
    pattern: str = Field(..., min_length=1, description="A Python regular expression.")


class LengthReward(RewardBase):
    """1 when the answer's length in characters is within [min_chars, max_chars], else 0."""

    name: Literal["length"]
    min_chars: int = Field(0, ge=0)
    max_chars: int = Field(..., ge=1)


class ExactMatchReward(RewardBase):
    """1 when the answer equals the row's reference (surrounding whitespace ignored), else 0."""

    name: Literal["exact_match"]


class FieldMatchReward(RewardBase):
    """The share of the reference JSON's fields (or of `fields`) that the answer's JSON has with equal values."""

    name: Literal["field_match"]
    fields: list[str] | None = Field(None, description="The fields compared; default: every field of the reference.")


class PythonReward(RewardBase):
    """Your own reward: `function: path/to/rewards.py:name`, loaded from that file only (never from an installed
    module, never from a path a data row gives). It is called as TRL calls rewards: name(prompts, completions,
    **columns) -> one float (or None) per completion, the row's other fields (`reference`, ...) as columns."""

    name: Literal["python"]
    function: str = Field(..., description="FILE.py:FUNCTION, the file relative to the working directory.")

    @field_validator("function")
    @classmethod
    def _file_and_name(cls, v: str) -> str:
        path, _, name = v.rpartition(":")
        if not path.endswith(".py") or not name.isidentifier():
            raise ValueError("write it as path/to/file.py:function_name")
        return v

    @property
    def file(self) -> Path:
        return Path(self.function.rpartition(":")[0])


REWARD_CLASSES = (ValidJsonReward, RegexReward, LengthReward, ExactMatchReward, FieldMatchReward, PythonReward)
RewardConfig = Annotated[Union[REWARD_CLASSES], Field(discriminator="name")]  # noqa: UP007


class GrpoObjective(Strict):
    """Group Relative Policy Optimization (TRL's GRPOTrainer): for each prompt, sample a group of answers, score
    them with the rewards, and move the model toward the answers that beat their group's mean. Online: it
    generates while it trains, so a step costs num_generations answers per prompt."""

    name: Literal["grpo"]
    rewards: list[RewardConfig] = Field(..., min_length=1, description="What a good answer is: summed, weighted.")
    num_generations: int = Field(4, ge=2, description="Answers sampled per prompt (the group).")
    max_completion_length: int = Field(64, ge=1, description="Tokens per sampled answer.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature for the group's answers.")
    beta: float = Field(
        0.0, ge=0, description="KL penalty toward the reference (the model before training); 0: no reference needed."
    )


# Every objective's options class, in registry order: a new objective is its class above and one entry here.
OBJECTIVE_CLASSES: tuple[type[Strict], ...] = (SftObjective, DpoObjective, OrpoObjective, KtoObjective, GrpoObjective)
OBJECTIVE_MODELS: dict[str, type[Strict]] = {
    cls.model_fields["name"].annotation.__args__[0]: cls for cls in OBJECTIVE_CLASSES
}
PREFERENCE_OBJECTIVES = tuple(name for name in OBJECTIVE_MODELS if name != "sft")

ObjectiveConfig = Annotated[Union[OBJECTIVE_CLASSES], Field(discriminator="name")]  # noqa: UP007
