"""Best of N / Top K and Tournament."""

from __future__ import annotations

from comfy_api.latest import io

from ..backend import node_logic as nl
from ..backend.holding import holding
from .common import SUMMARY_TOOLTIP, criteria_input, preview_ui, prompt_input, reward_model_input
from .progress import progress_for
from .types import SELECTION

INDICES_TOOLTIP = "0-based batch indices of the kept items, best first (like ImageFromBatch's batch_index)"


class BestOfN(io.ComfyNode):
    """Keep the top-k images (or videos) by reward, with their latents, indices and scores, best first.

    It takes its inputs as lists (`is_input_list`) so a scoring node's `scores` list arrives whole rather than one
    number per run; every other input is a list of one value.
    """

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="RewardDanceBestOfN",
            display_name="Best of N / Top K",
            category=SELECTION,
            description="Score a batch (or take the scores output of Score Images, Score Video or Compare to "
            "Reference) and pass on the best top_k images in rank order, their latents, indices and scores. "
            "Items under the threshold are dropped (the best one is always kept). Stacked videos: set "
            "frames_per_video.",
            inputs=[
                io.Image.Input("images", tooltip="the batch to choose from (stacked frames for videos)"),
                prompt_input(),
                io.Int.Input("top_k", default=1, min=1, max=4096, tooltip="how many of the best items to keep"),
                io.Float.Input(
                    "threshold",
                    default=0.0,
                    min=0.0,
                    max=1.0,
                    step=0.01,
                    tooltip="minimum score to keep (0: keep the top_k whatever their score)",
                ),
                reward_model_input(optional=True, tooltip="scores the images (not needed when scores is connected)"),
                criteria_input(),
                io.Latent.Input(
                    "latent", optional=True, tooltip="the latents the images were decoded from (passed through)"
                ),
                io.Float.Input(
                    "scores",
                    optional=True,
                    force_input=True,
                    tooltip="the scores output of a scoring node for these same images (skips scoring here)",
                ),
                io.Int.Input(
                    "frames_per_video", default=1, min=1, max=100000, tooltip="frames per video; 1 for still images"
                ),
                io.Float.Input("fps", default=16.0, min=0.1, max=240.0, tooltip="frame rate, for videos"),
            ],
            outputs=[
                io.Image.Output(tooltip="the kept images, best first"),
                io.Latent.Output(tooltip="their latents, best first (when the latent input is connected)"),
                io.Int.Output(display_name="indices", is_output_list=True, tooltip=INDICES_TOOLTIP),
                io.Float.Output(display_name="scores", is_output_list=True, tooltip="the kept items' scores"),
                io.String.Output(display_name="summary", tooltip=SUMMARY_TOOLTIP),
            ],
            is_input_list=True,
            is_output_node=True,
        )

    @classmethod
    def execute(
        cls,
        images: list,
        text: list[str],
        top_k: list[int],
        threshold: list[float],
        frames_per_video: list[int],
        fps: list[float],
        reward_model: list | None = None,
        criteria: list | None = None,
        latent: list | None = None,
        scores: list[float] | None = None,
    ) -> io.NodeOutput:
        images = nl.one_value(images, "images")
        per_video, model = (
            nl.one_value(frames_per_video, "frames_per_video"),
            nl.one_value(reward_model, "reward_model"),
        )
        with holding(model):
            result = nl.best_of_n(
                model,
                images,
                nl.one_value(text, "text"),
                nl.one_value(top_k, "top_k"),
                nl.one_value(criteria, "criteria"),
                nl.one_value(threshold, "threshold") or None,
                nl.one_value(latent, "latent"),
                scores,
                per_video,
                nl.one_value(fps, "fps"),
                progress=progress_for(images.shape[0] // max(1, per_video)),
            )
        data = preview_ui(cls, result.images, result.rows)
        return io.NodeOutput(result.images, result.latent, result.indices, result.scores, result.summary, ui=data)


class Tournament(io.ComfyNode):
    """Pairwise round robin: every candidate against every other; ranked by wins."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="RewardDanceTournament",
            display_name="Reward Tournament",
            category=SELECTION,
            description="Rank candidates by pairwise wins (RewardDance picks its reference images this way). "
            "N candidates cost N x (N - 1) comparisons.",
            inputs=[
                reward_model_input(),
                io.Image.Input("images", tooltip="the candidates (a batch of at least 2)"),
                prompt_input(),
                criteria_input(),
            ],
            outputs=[
                io.Image.Output(display_name="ranked_images", tooltip="the candidates, best first"),
                io.Int.Output(
                    display_name="ranking",
                    is_output_list=True,
                    tooltip="0-based batch indices of the candidates, best first",
                ),
                io.Int.Output(
                    display_name="wins", is_output_list=True, tooltip="each candidate's wins, in input order"
                ),
                io.String.Output(display_name="summary", tooltip="the ranking as text (candidates numbered from 1)"),
            ],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, reward_model, images, text: str, criteria=None) -> io.NodeOutput:
        progress = progress_for(1)
        with holding(reward_model):
            ranked = nl.tournament(reward_model, images, text, criteria)
        progress(1, 1)
        data = preview_ui(cls, ranked.images, ranked.rows)
        return io.NodeOutput(ranked.images, ranked.ranking, ranked.wins, ranked.summary, ui=data)
