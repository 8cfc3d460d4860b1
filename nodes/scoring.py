"""Reward Criteria, Score Images, Score Video and Compare to Reference."""

from __future__ import annotations

from typing import Any

from comfy_api.latest import io

from ..backend import node_logic as nl
from ..backend.holding import holding
from ..backend.scoring.config import COT_MODES, MAX_SAMPLES, MAX_TEMPERATURE
from ..backend.scoring.criteria import CRITERIA_PRESETS
from .common import criteria_input, preview_ui, prompt_input, reward_model_input, scored_outputs
from .progress import progress_for
from .types import SCORING, CriteriaType

PRESET_CHOICES = ["none", *CRITERIA_PRESETS]
PREPROCESS_TOOLTIP = (
    "exact: 8-bit PIL like the checkpoint's processor (same scores as files); fast: batched tensor ops on the GPU"
)


def score_ui(cls: type, scored: nl.Scored) -> dict:
    """Preview images plus the per-item scores the web extension draws on the node."""
    return preview_ui(cls, scored.preview, scored.rows)


def common_inputs() -> list:
    """Inputs every scoring node has."""
    return [reward_model_input(), prompt_input(), criteria_input()]


class RewardCriteria(io.ComfyNode):
    """What the reward model judges: presets, free text, chain of thought, few-shot examples."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="RewardDanceCriteria",
            display_name="Reward Criteria",
            category=SCORING,
            description="Criteria for the scoring nodes: up to three presets plus free text; optional example "
            "images with yes/no verdicts (few-shot), a chain-of-thought mode, and sampled judgements (samples).",
            inputs=[
                io.Combo.Input(
                    "preset", options=PRESET_CHOICES, default="alignment", tooltip="a built-in criterion to judge"
                ),
                io.Combo.Input("preset_2", options=PRESET_CHOICES, default="none", tooltip="a second preset"),
                io.Combo.Input("preset_3", options=PRESET_CHOICES, default="none", tooltip="a third preset"),
                io.String.Input(
                    "custom",
                    multiline=True,
                    default="",
                    placeholder="free-form criteria (optional)",
                    tooltip="your own criteria in words, added to the presets",
                ),
                io.Combo.Input(
                    "chain_of_thought",
                    options=list(COT_MODES),
                    default="none",
                    tooltip="let the model reason before (or after) its yes/no answer; slower",
                ),
                io.Image.Input("examples", optional=True, tooltip="few-shot example images"),
                io.String.Input("verdicts", default="", tooltip="one yes/no per example image, comma-separated"),
                io.String.Input(
                    "example_text", default="", tooltip="the prompt of the examples (default: the scored prompt)"
                ),
                # sampled judgements (added last, so saved workflows keep their widget order)
                io.Int.Input(
                    "samples",
                    default=1,
                    min=1,
                    max=MAX_SAMPLES,
                    optional=True,
                    tooltip="k reasoning-first judgements per image, the score their mean P(yes) (needs "
                    "chain_of_thought reasoning_first and temperature > 0); k times slower",
                ),
                io.Float.Input(
                    "temperature",
                    default=0.0,
                    min=0.0,
                    max=MAX_TEMPERATURE,
                    step=0.05,
                    optional=True,
                    tooltip="sampling temperature of the reasoning (0: greedy)",
                ),
                io.Float.Input(
                    "top_p", default=1.0, min=0.01, max=1.0, step=0.01, optional=True, tooltip="nucleus sampling mass"
                ),
                io.Int.Input(
                    "seed",
                    default=0,
                    min=0,
                    max=2**31 - 1,
                    optional=True,
                    tooltip="sampling seed: the same seed gives the same judgements",
                ),
            ],
            outputs=[CriteriaType.Output(tooltip="connect to the criteria input of the scoring and selection nodes")],
        )

    @classmethod
    def execute(
        cls,
        preset: str,
        preset_2: str,
        preset_3: str,
        custom: str,
        chain_of_thought: str,
        verdicts: str,
        example_text: str,
        examples=None,
        samples: int = 1,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int = 0,
    ) -> io.NodeOutput:
        presets = list(dict.fromkeys(p for p in (preset, preset_2, preset_3) if p != "none"))
        criteria = nl.build_criteria(
            presets, custom, chain_of_thought, examples, verdicts, example_text, samples, temperature, top_p, seed
        )
        return io.NodeOutput(criteria)


class ScoreImages(io.ComfyNode):
    """P("yes") for every image of a batch, with a preview that shows each score and rank."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="RewardDanceScoreImages",
            display_name="Score Images",
            category=SCORING,
            description="Score each image against the prompt (and criteria) with the reward model.",
            inputs=[
                *common_inputs(),
                io.Image.Input("images", tooltip="the images to score (a batch)"),
                io.Combo.Input(
                    "preprocess",
                    options=["exact", "fast"],
                    default="exact",
                    tooltip=PREPROCESS_TOOLTIP,
                ),
                io.Boolean.Input("reasons", default=False, tooltip="also generate the model's explanation"),
            ],
            outputs=[
                *scored_outputs(),
                io.String.Output(display_name="reasons", tooltip="the model's explanations (when reasons is on)"),
            ],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, reward_model, text: str, images, preprocess: str, reasons: bool, criteria=None) -> io.NodeOutput:
        with holding(reward_model):
            scored = nl.score_images(
                reward_model, images, text, criteria, preprocess == "exact", reasons, progress_for(images.shape[0])
            )
        return io.NodeOutput(
            scored.scores, scored.summary, scored.preview, "\n\n".join(scored.reasons or []), ui=score_ui(cls, scored)
        )


class ScoreVideo(io.ComfyNode):
    """P("yes") for videos given as frames (IMAGE batch + fps) or a VIDEO."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="RewardDanceScoreVideo",
            display_name="Score Video",
            category=SCORING,
            description="Score videos: connect frames (an IMAGE batch) with their fps, or a VIDEO. Several videos of "
            "equal length can be stacked: set frames_per_video.",
            inputs=[
                *common_inputs(),
                io.Image.Input("frames", optional=True, tooltip="the video frames as an IMAGE batch"),
                io.Video.Input("video", optional=True, tooltip="a VIDEO (instead of frames; its own fps is used)"),
                io.Float.Input("fps", default=16.0, min=0.1, max=240.0, tooltip="frame rate of the frames input"),
                io.Int.Input(
                    "frames_per_video",
                    default=0,
                    min=0,
                    max=100000,
                    tooltip="frames per video when several are stacked (0: all frames are one video)",
                ),
                io.Int.Input(
                    "max_frames", default=32, min=1, max=1024, tooltip="frames sampled per video (frame budget)"
                ),
            ],
            outputs=scored_outputs(),
            is_output_node=True,
        )

    @classmethod
    def execute(
        cls,
        reward_model,
        text: str,
        fps: float,
        frames_per_video: int,
        max_frames: int,
        criteria=None,
        frames=None,
        video=None,
    ) -> io.NodeOutput:
        frames, fps = video_frames(frames, video, fps)
        per_video = frames_per_video or frames.shape[0]
        if frames.shape[0] % per_video:
            raise ValueError(
                f"frames_per_video: {frames.shape[0]} frames do not split into videos of {per_video} frames; set it "
                "to the length of each stacked video (0: all frames are one video)"
            )
        frames, fps, per_video = nl.limit_frames(frames, fps, per_video, max_frames)
        with holding(reward_model):
            scored = nl.score_videos(
                reward_model,
                frames,
                fps,
                per_video,
                text,
                criteria,
                progress=progress_for(frames.shape[0] // per_video),
            )
        return io.NodeOutput(scored.scores, scored.summary, scored.preview, ui=score_ui(cls, scored))


def video_frames(frames: Any, video: Any, fps: float) -> tuple[Any, float]:
    """Score Video's frames [T, H, W, 3] and frame rate: the IMAGE batch and the fps input, or a VIDEO's own."""
    if frames is not None and video is not None:
        raise ValueError("frames / video: connect either the frames (IMAGE) or a VIDEO, not both")
    if video is not None:
        components = video.get_components()  # a VIDEO from Load Video decodes its file here
        frames, fps = components.images, float(components.frame_rate)
    if frames is None:
        raise ValueError("frames / video: connect the video frames (IMAGE) or a VIDEO")
    if frames.shape[0] == 0:
        raise ValueError(f"{'frames' if video is None else 'video'}: there are no frames to score")
    return frames, fps


class CompareToReference(io.ComfyNode):
    """P(candidate beats the reference) for every candidate image (pairwise)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="RewardDanceCompareToReference",
            display_name="Compare to Reference",
            category=SCORING,
            description="Pairwise reward: image 1 = the reference, image 2 = each candidate; the score is "
            "P(candidate is better).",
            inputs=[
                *common_inputs(),
                io.Image.Input("candidates", tooltip="the images to compare, each against the reference"),
                io.Image.Input("reference", tooltip="one reference image"),
                io.Combo.Input("preprocess", options=["exact", "fast"], default="exact", tooltip=PREPROCESS_TOOLTIP),
            ],
            outputs=scored_outputs(),
            is_output_node=True,
        )

    @classmethod
    def execute(cls, reward_model, text: str, candidates, reference, preprocess: str, criteria=None) -> io.NodeOutput:
        with holding(reward_model):
            scored = nl.compare_to_reference(
                reward_model,
                candidates,
                reference,
                text,
                criteria,
                preprocess == "exact",
                progress=progress_for(candidates.shape[0]),
            )
        return io.NodeOutput(scored.scores, scored.summary, scored.preview, ui=score_ui(cls, scored))
