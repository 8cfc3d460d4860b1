"""Best of N / Top K and Tournament."""

from __future__ import annotations

from comfy_api.latest import io

from ..backend import node_logic as nl
from ..backend.holding import holding
from .common import preview_ui, prompt_input
from .progress import progress_for
from .types import CATEGORY, CriteriaType, RewardModelType


class BestOfN(io.ComfyNode):
    """Keep the top-k images (or videos) by reward, with their latents, indices and scores, best first."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="RewardDanceBestOfN",
            display_name="Best of N / Top K",
            category=CATEGORY,
            description="Score a batch (or take precomputed scores) and pass on the best top_k images in rank order, "
            "their latents, indices and scores. Items under the threshold are dropped (the best one is "
            "always kept). Stacked videos: set frames_per_video.",
            inputs=[
                io.Image.Input("images"),
                prompt_input(),
                io.Int.Input("top_k", default=1, min=1, max=4096),
                io.Float.Input(
                    "threshold",
                    default=0.0,
                    min=0.0,
                    max=1.0,
                    step=0.01,
                    tooltip="minimum score to keep (0: keep the top_k whatever their score)",
                ),
                RewardModelType.Input("reward_model", optional=True),
                CriteriaType.Input("criteria", optional=True),
                io.Latent.Input(
                    "latent", optional=True, tooltip="the latents the images were decoded from (passed through)"
                ),
                io.String.Input(
                    "scores",
                    optional=True,
                    force_input=True,
                    tooltip="precomputed scores, comma-separated (skips scoring)",
                ),
                io.Int.Input("frames_per_video", default=1, min=1, max=100000, tooltip="1 for still images"),
                io.Float.Input("fps", default=16.0, min=0.1, max=240.0, tooltip="frame rate, for videos"),
            ],
            outputs=[
                io.Image.Output(display_name="images"),
                io.Latent.Output(display_name="latent"),
                io.Int.Output(display_name="indices", is_output_list=True),
                io.Float.Output(display_name="scores", is_output_list=True),
                io.String.Output(display_name="summary"),
            ],
            is_output_node=True,
        )

    @classmethod
    def execute(
        cls,
        images,
        text: str,
        top_k: int,
        threshold: float,
        frames_per_video: int,
        fps: float,
        reward_model=None,
        criteria=None,
        latent=None,
        scores: str = "",
    ) -> io.NodeOutput:
        n = images.shape[0] // max(1, frames_per_video)
        with holding(reward_model):
            result = nl.best_of_n(
                reward_model,
                images,
                text,
                top_k,
                criteria,
                threshold or None,
                latent,
                scores or "",
                frames_per_video,
                fps,
                progress=progress_for(n),
            )
        ranks = nl.ranks_of(result.all_scores)
        data = preview_ui(
            cls,
            result.images,
            [
                {"index": i, "score": s, "rank": ranks[i], "kept": i in result.indices}
                for i, s in enumerate(result.all_scores)
            ],
        )
        return io.NodeOutput(result.images, result.latent, result.indices, result.scores, result.summary, ui=data)


class Tournament(io.ComfyNode):
    """Pairwise round robin: every candidate against every other; ranked by wins."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="RewardDanceTournament",
            display_name="Reward Tournament",
            category=CATEGORY,
            description="Rank candidates by pairwise wins (RewardDance picks its reference images this way). "
            "N candidates cost N x (N - 1) comparisons.",
            inputs=[
                RewardModelType.Input("reward_model"),
                io.Image.Input("images"),
                prompt_input(),
                CriteriaType.Input("criteria", optional=True),
            ],
            outputs=[
                io.Image.Output(display_name="ranked_images"),
                io.Int.Output(display_name="ranking", is_output_list=True),
                io.Int.Output(display_name="wins", is_output_list=True),
                io.String.Output(display_name="summary"),
            ],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, reward_model, images, text: str, criteria=None) -> io.NodeOutput:
        progress = progress_for(1)
        with holding(reward_model):
            ranked = nl.tournament(reward_model, images, text, criteria)
        progress(1, 1)
        position = {j: r for r, j in enumerate(ranked.ranking, 1)}
        data = preview_ui(
            cls,
            ranked.images,
            [
                {"index": j, "score": ranked.mean_win_probability[j], "rank": position[j], "wins": ranked.wins[j]}
                for j in range(len(ranked.wins))
            ],
        )
        return io.NodeOutput(ranked.images, ranked.ranking, ranked.wins, ranked.summary, ui=data)
